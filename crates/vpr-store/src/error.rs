//! Errors returned by the session record store.

/// An error from a [`crate::Store`] operation.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The row that the operation names does not exist.
    #[error("{what} {id} not found")]
    NotFound {
        /// Kind of row: "session", "participant" or "track".
        what: &'static str,
        /// Id that was looked up.
        id: String,
    },

    /// The session was closed before this operation, so it can take no more changes.
    #[error("session {room_id} is already closed")]
    AlreadyClosed {
        /// Room id of the closed session.
        room_id: String,
    },

    /// The operation contradicts a stored row, for example a participant id that
    /// already exists or a track published by a participant who has left.
    #[error("{what} {id}: {reason}")]
    Conflict {
        /// Kind of row: "session", "participant" or "track".
        what: &'static str,
        /// Id of the conflicting row.
        id: String,
        /// Description of the conflict, such as "participant id already exists".
        reason: &'static str,
    },

    /// The database returned an error or could not be reached.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),

    /// The store URL names a database other than SQLite or PostgreSQL.
    #[error("unsupported store URL scheme {scheme:?}: use sqlite://PATH, sqlite::memory: or postgres://USER:PASSWORD@HOST/DATABASE")]
    UnsupportedUrl {
        /// Scheme of the rejected URL, the text before the first ':'.
        scheme: String,
    },

    /// Applying the embedded schema migrations failed.
    #[error("schema migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Returns true when `err` is a UNIQUE or PRIMARY KEY constraint violation.
pub(crate) fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// Returns true when `err` is a FOREIGN KEY constraint violation.
pub(crate) fn is_foreign_key_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_foreign_key_violation())
}
