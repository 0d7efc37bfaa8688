//! Test harness shared by the store's integration tests. Each test gets a
//! fresh database: an SQLite file in a temporary folder, or a PostgreSQL
//! database created on the server named by `VPR_TEST_POSTGRES_URL`. The
//! `on_both_backends!` macro runs a test body on each, and the builders
//! return rows with typical values.

#![allow(dead_code)]

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};
use vpr_store::{NewEvent, NewParticipant, NewSession, NewTrack};

/// Environment variable naming the PostgreSQL server for the tests.
pub const POSTGRES_URL_VAR: &str = "VPR_TEST_POSTGRES_URL";

/// One test's private database, removed on drop.
pub enum TestDb {
    /// A database file in its own temporary folder.
    Sqlite { dir: PathBuf },
    /// A database created for this test on the PostgreSQL server.
    Postgres {
        admin_url: String,
        name: String,
        url: String,
    },
}

/// Returns a name unique to this process and call, such as `close_all_1234_17_3`.
fn unique_name(test: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{test}_{}_{nanos}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

impl TestDb {
    /// Creates a temporary folder for an SQLite database file.
    pub fn sqlite(test: &str) -> TestDb {
        let dir = std::env::temp_dir().join(format!("vpr-store-{}", unique_name(test)));
        std::fs::create_dir_all(&dir).unwrap();
        TestDb::Sqlite { dir }
    }

    /// Creates an empty database `vpr_test_<test>_<unique>` on the server
    /// named by `VPR_TEST_POSTGRES_URL`. Panics when the variable is unset,
    /// so that the PostgreSQL tests fail instead of passing without a server.
    pub async fn postgres(test: &str) -> TestDb {
        let admin_url = std::env::var(POSTGRES_URL_VAR).unwrap_or_else(|_| {
            panic!(
                "{POSTGRES_URL_VAR} is not set, so the PostgreSQL store tests cannot run. \
                 Set it to a role that may create databases, for example \
                 {POSTGRES_URL_VAR}=postgres://vpr:vpr@127.0.0.1:5432/vpr_test \
                 (tests/run.sh installs and starts such a server when the variable is unset)."
            )
        });

        // PostgreSQL folds unquoted names to lower case and allows 63 bytes.
        let mut name = format!("vpr_test_{}", unique_name(test)).to_lowercase();
        name.truncate(63);

        let admin = PgConnectOptions::from_str(&admin_url).unwrap();
        let mut conn = admin.connect().await.unwrap_or_else(|err| {
            panic!("cannot connect to the server in {POSTGRES_URL_VAR}: {err}")
        });
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();

        let url = admin.database(&name).to_url_lossy().to_string();
        TestDb::Postgres {
            admin_url,
            name,
            url,
        }
    }

    /// Returns the store URL of this database.
    pub fn url(&self) -> String {
        match self {
            TestDb::Sqlite { dir } => format!("sqlite://{}", dir.join("sessions.db").display()),
            TestDb::Postgres { url, .. } => url.clone(),
        }
    }

    /// Runs one SQL statement on a connection of its own, outside the store,
    /// and returns the number of rows it changed.
    pub async fn execute_raw(&self, sql: &str) -> u64 {
        match self {
            TestDb::Sqlite { .. } => {
                let mut conn = sqlx::SqliteConnection::connect(&self.url()).await.unwrap();
                let done = sqlx::query(sql).execute(&mut conn).await.unwrap();
                conn.close().await.unwrap();
                done.rows_affected()
            }
            TestDb::Postgres { url, .. } => {
                let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
                let done = sqlx::query(sql).execute(&mut conn).await.unwrap();
                conn.close().await.unwrap();
                done.rows_affected()
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        match self {
            TestDb::Sqlite { dir } => {
                let _ = std::fs::remove_dir_all(dir);
            }
            TestDb::Postgres {
                admin_url, name, ..
            } => {
                // Drop runs inside the test's runtime, which cannot block on
                // a future, so the database is dropped from a thread of its own.
                let admin_url = admin_url.clone();
                let drop_sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                let dropped = std::thread::spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    runtime.block_on(async {
                        let mut conn = sqlx::PgConnection::connect(&admin_url).await?;
                        sqlx::query(&drop_sql).execute(&mut conn).await?;
                        conn.close().await
                    })
                })
                .join();
                if !matches!(dropped, Ok(Ok(()))) {
                    eprintln!("could not drop test database {name}: {dropped:?}");
                }
            }
        }
    }
}

/// Defines, for each named `async fn NAME(db: &TestDb)` in the calling file,
/// a test `sqlite::NAME` and a test `postgres::NAME` that run it on a fresh
/// database of that backend.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = $crate::common::TestDb::sqlite(stringify!($name));
                    super::$name(&db).await;
                }
            )*
        }

        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = $crate::common::TestDb::postgres(stringify!($name)).await;
                    super::$name(&db).await;
                }
            )*
        }
    };
}

pub fn new_session(room_id: &str, incident_id: &str, request_id: &str, at_ms: i64) -> NewSession {
    NewSession {
        room_id: room_id.to_owned(),
        incident_id: incident_id.to_owned(),
        request_id: request_id.to_owned(),
        call_type: "welfare-check".to_owned(),
        max_participants: 4,
        metadata: r#"{"district":"north"}"#.to_owned(),
        created_at_ms: at_ms,
    }
}

/// Builds a participant whose identity is `<participant_id>@example.test`.
/// Officers get badge "4711", and everyone may publish and subscribe.
pub fn new_participant(
    participant_id: &str,
    room_id: &str,
    role: &str,
    at_ms: i64,
) -> NewParticipant {
    NewParticipant {
        participant_id: participant_id.to_owned(),
        room_id: room_id.to_owned(),
        identity: format!("{participant_id}@example.test"),
        display_name: format!("Name of {participant_id}"),
        role: role.to_owned(),
        admitted_at_ms: at_ms,
        badge_id: if role == "officer" { "4711" } else { "" }.to_owned(),
        can_publish: true,
        can_subscribe: true,
    }
}

pub fn new_track(
    track_id: &str,
    room_id: &str,
    participant_id: &str,
    kind: &str,
    at_ms: i64,
) -> NewTrack {
    NewTrack {
        track_id: track_id.to_owned(),
        room_id: room_id.to_owned(),
        participant_id: participant_id.to_owned(),
        kind: kind.to_owned(),
        codec: if kind == "video" {
            "video/VP8"
        } else {
            "audio/opus"
        }
        .to_owned(),
        published_at_ms: at_ms,
    }
}

pub fn new_event(room_id: &str, kind: &str, at_ms: i64) -> NewEvent {
    NewEvent {
        room_id: room_id.to_owned(),
        kind: kind.to_owned(),
        participant_id: None,
        track_id: None,
        detail: String::new(),
        at_ms,
    }
}
