//! Connection pools of the two supported databases, SQLite and PostgreSQL,
//! and the `on_pool!` macro that runs one query body against either.
//!
//! Every store query is written once and compiled once per backend, so both
//! run the same SQL. That SQL sticks to forms both databases accept: `$N`
//! placeholders, `RETURNING`, `ON CONFLICT` and no backend functions.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

use crate::StoreError;

/// Max pooled connections to a file database. In WAL mode readers run
/// beside the one writer, and writers wait on the busy timeout.
const FILE_POOL_MAX_CONNECTIONS: u32 = 4;

/// Max pooled connections to a PostgreSQL server.
const POSTGRES_POOL_MAX_CONNECTIONS: u32 = 8;

/// How long an SQLite writer waits for the write lock before failing.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The pool of one open store.
#[derive(Debug, Clone)]
pub(crate) enum Backend {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to the store's pool, once typed for each
/// backend. The body is usually one query chain ending in `.await`.
macro_rules! on_pool {
    ($backend:expr, $pool:ident => $body:expr) => {
        match $backend {
            $crate::backend::Backend::Sqlite($pool) => $body,
            $crate::backend::Backend::Postgres($pool) => $body,
        }
    };
}
pub(crate) use on_pool;

impl Backend {
    /// Connects to `url` and applies the backend's pending migrations.
    ///
    /// Fails with [`StoreError::UnsupportedUrl`] unless the scheme is `sqlite:`,
    /// `postgres:` or `postgresql:`.
    pub(crate) async fn open(url: &str) -> Result<Backend, StoreError> {
        if url.starts_with("sqlite:") {
            open_sqlite(url).await
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            open_postgres(url).await
        } else {
            // The URL may carry a password, so only its scheme is reported.
            let scheme = url.split(':').next().unwrap_or_default().to_owned();
            Err(StoreError::UnsupportedUrl { scheme })
        }
    }

    /// Closes every connection and waits for them to finish.
    pub(crate) async fn close(&self) {
        on_pool!(self, pool => pool.close().await)
    }
}

/// Opens an SQLite file in WAL mode, or one private in-memory database.
async fn open_sqlite(url: &str) -> Result<Backend, StoreError> {
    let in_memory = url.contains(":memory:") || url.contains("mode=memory");

    let mut options = SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        .foreign_keys(true)
        .busy_timeout(SQLITE_BUSY_TIMEOUT);
    if !in_memory {
        options = options.journal_mode(SqliteJournalMode::Wal);
    }
    let filename = options.get_filename().display().to_string();

    // An in-memory database exists once per connection, so the pool keeps
    // exactly one connection and never closes it.
    let pool_options = if in_memory {
        SqlitePoolOptions::new()
            .min_connections(1)
            .max_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
    } else {
        SqlitePoolOptions::new().max_connections(FILE_POOL_MAX_CONNECTIONS)
    };
    let pool = pool_options.connect_with(options).await?;

    sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
    tracing::info!(database = %filename, "session store opened on SQLite");
    Ok(Backend::Sqlite(pool))
}

/// Opens a pool to a PostgreSQL database, which must exist.
async fn open_postgres(url: &str) -> Result<Backend, StoreError> {
    let options = PgConnectOptions::from_str(url)?;
    let pool = PgPoolOptions::new()
        .max_connections(POSTGRES_POOL_MAX_CONNECTIONS)
        .connect_with(options.clone())
        .await?;

    sqlx::migrate!("./migrations/postgres").run(&pool).await?;
    tracing::info!(
        host = %options.get_host(),
        port = options.get_port(),
        database = options.get_database().unwrap_or_default(),
        "session store opened on PostgreSQL"
    );
    Ok(Backend::Postgres(pool))
}
