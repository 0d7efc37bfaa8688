//! Audit log: appending control plane calls to the hash chain and reading it back.

use crate::audit_chain::{audit_entry_hash, AUDIT_GENESIS_HASH};
use crate::backend::{on_pool, Backend};
use crate::error::is_unique_violation;
use crate::rows::{AuditRow, NewAuditEntry};
use crate::{Store, StoreError};

/// PostgreSQL advisory lock key held while appending to the audit log, so that
/// appends from several processes take turns ("VPRAUDIT" in ASCII).
const AUDIT_ADVISORY_LOCK: i64 = 0x5650_5241_5544_4954;

/// How often an append is tried when another writer took the same seq first.
const AUDIT_APPEND_ATTEMPTS: u32 = 5;

/// Columns of `audit_log` in [`AuditRow`] field order.
macro_rules! audit_columns {
    () => {
        "seq, at_ms, key_id, action, arguments, prev_hash, hash"
    };
}

/// Reads the chain head and inserts the next entry inside the open
/// transaction `$tx`, evaluating to the inserted [`AuditRow`].
macro_rules! insert_next_entry {
    ($tx:expr, $entry:expr) => {{
        let head: Option<(i64, String)> =
            sqlx::query_as("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
                .fetch_optional(&mut *$tx)
                .await?;
        let (prev_seq, prev_hash) = head.unwrap_or((0, AUDIT_GENESIS_HASH.to_owned()));

        let seq = prev_seq + 1;
        let e: &NewAuditEntry = $entry;
        let hash = audit_entry_hash(&prev_hash, seq, e.at_ms, &e.key_id, &e.action, &e.arguments);

        let row: AuditRow = sqlx::query_as(concat!(
            "INSERT INTO audit_log (",
            audit_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING ",
            audit_columns!()
        ))
        .bind(seq)
        .bind(e.at_ms)
        .bind(&e.key_id)
        .bind(&e.action)
        .bind(&e.arguments)
        .bind(&prev_hash)
        .bind(&hash)
        .fetch_one(&mut *$tx)
        .await?;
        row
    }};
}

impl Store {
    /// Appends one entry to the audit log and returns it with its seq and hashes.
    ///
    /// Appends through one store (and its clones) queue on a mutex. Each
    /// append reads the chain head and inserts the next entry in one
    /// transaction that excludes other writers: `BEGIN IMMEDIATE` on SQLite
    /// and an advisory lock on PostgreSQL. The seq primary key also rejects a
    /// second entry after the same head, so the chain cannot fork.
    pub async fn append_audit(&self, e: NewAuditEntry) -> Result<AuditRow, StoreError> {
        let _turn = self.audit_lock.lock().await;

        let mut attempt = 1;
        loop {
            match self.insert_audit_entry(&e).await {
                Ok(row) => {
                    tracing::debug!(
                        seq = row.seq,
                        key_id = %row.key_id,
                        action = %row.action,
                        "audit entry appended"
                    );
                    return Ok(row);
                }
                Err(StoreError::Database(err))
                    if is_unique_violation(&err) && attempt < AUDIT_APPEND_ATTEMPTS =>
                {
                    tracing::warn!(
                        attempt,
                        action = %e.action,
                        "audit chain head moved during append, retrying"
                    );
                    attempt += 1;
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// Runs one append transaction.
    async fn insert_audit_entry(&self, e: &NewAuditEntry) -> Result<AuditRow, StoreError> {
        let row = match &self.backend {
            Backend::Sqlite(pool) => {
                // IMMEDIATE takes the write lock before the head is read.
                let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                let row = insert_next_entry!(tx, e);
                tx.commit().await?;
                row
            }
            Backend::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(AUDIT_ADVISORY_LOCK)
                    .execute(&mut *tx)
                    .await?;
                let row = insert_next_entry!(tx, e);
                tx.commit().await?;
                row
            }
        };
        Ok(row)
    }

    /// Returns up to `limit` audit entries with `seq > after_seq` in seq order.
    /// To resume, pass the seq of the last entry received. A `limit` of zero or
    /// less returns nothing.
    pub async fn list_audit(
        &self,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<AuditRow>, StoreError> {
        if limit <= 0 {
            return Ok(Vec::new());
        }

        let rows = on_pool!(&self.backend, pool => {
            sqlx::query_as(concat!(
                "SELECT ",
                audit_columns!(),
                " FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2"
            ))
            .bind(after_seq)
            .bind(limit)
            .fetch_all(pool)
            .await?
        });
        Ok(rows)
    }
}
