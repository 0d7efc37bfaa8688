//! Session record store for VPR: one row per room (a call), its participants,
//! their tracks, consent and media quality, an append-only event log and a
//! hash-chained audit log of control plane calls.
//!
//! The store runs on SQLite (a file, or memory) or PostgreSQL, chosen by the
//! URL given to [`Store::open`]. Each backend applies its own embedded
//! migrations folder, `migrations/sqlite` or `migrations/postgres`, which
//! create the same tables and columns. Queries are checked at run time
//! (`sqlx::query`), and the same SQL runs on both backends. Times are `i64`
//! unix milliseconds (UTC) given by the caller, and ids are strings generated
//! by the caller.

mod audit;
mod audit_chain;
mod backend;
mod consents;
mod error;
mod events;
mod participants;
mod quality;
mod rows;
mod session_list;
mod sessions;
mod snapshots;
mod tracks;

use std::sync::Arc;

use tokio::sync::{watch, Mutex};

use backend::{on_pool, Backend};

pub use audit_chain::{audit_entry_hash, verify_audit_chain, AUDIT_GENESIS_HASH};
pub use error::StoreError;
pub use rows::{
    AuditRow, ConsentRow, EventRow, NewAuditEntry, NewConsent, NewEvent, NewParticipant,
    NewSession, NewTrack, ParticipantRow, QualityRow, SessionFilter, SessionRecord, SessionRow,
    SnapshotRow,
    TrackRow, STATE_CLOSED, STATE_OPEN,
};

/// Handle to the session record store. Clones share one connection pool, one
/// audit append lock and one event sequence channel.
#[derive(Debug, Clone)]
pub struct Store {
    backend: Backend,
    /// Serialises audit appends made through this store, so that they queue
    /// here instead of colliding on the chain head in the database.
    audit_lock: Arc<Mutex<()>>,
    /// Highest event seq committed through this store.
    event_seq: Arc<watch::Sender<i64>>,
}

impl Store {
    /// Opens the store at `url` and applies pending migrations.
    ///
    /// `url` is one of:
    /// - `sqlite://path/to/file.db`: the file is created if missing and runs
    ///   in WAL mode;
    /// - `sqlite::memory:`: one private database that lives as long as the store;
    /// - `postgres://user:password@host:port/database` (or `postgresql://`):
    ///   the database must exist.
    ///
    /// Foreign keys are enforced on both backends.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        let backend = Backend::open(url).await?;

        let max_seq: Option<i64> = on_pool!(&backend, pool => {
            sqlx::query_scalar("SELECT MAX(seq) FROM events")
                .fetch_one(pool)
                .await?
        });
        let (event_seq, _) = watch::channel(max_seq.unwrap_or(0));

        Ok(Store {
            backend,
            audit_lock: Arc::new(Mutex::new(())),
            event_seq: Arc::new(event_seq),
        })
    }

    /// Closes every connection and waits for them to finish, so that an SQLite
    /// WAL is checkpointed into the database file. Later calls on any clone fail.
    pub async fn close(&self) {
        self.backend.close().await;
    }

    /// Returns a watch channel whose value is the highest event seq committed
    /// through this store or any of its clones. It starts at the highest seq
    /// in the database when the store was opened (0 if there is none), and
    /// [`Store::append_event`] raises it after each commit. Events appended by
    /// other processes do not move it.
    pub fn event_sequence(&self) -> watch::Receiver<i64> {
        self.event_seq.subscribe()
    }

    /// Returns true when the store runs on PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        matches!(self.backend, Backend::Postgres(_))
    }
}
