//! Sessions: creating, closing and reading the record of one room.

use crate::backend::{on_pool, Backend};
use crate::consents::CONSENTS_IN_ROOM;
use crate::snapshots::SNAPSHOTS_IN_ROOM;
use crate::error::is_unique_violation;
use crate::events::EVENTS_IN_ROOM;
use crate::participants::PARTICIPANTS_IN_ROOM;
use crate::quality::QUALITY_IN_ROOM;
use crate::rows::{SessionRecord, SessionRow, STATE_CLOSED, STATE_OPEN};
use crate::tracks::TRACKS_IN_ROOM;
use crate::{NewSession, Store, StoreError};

/// Columns of `sessions` in [`SessionRow`] field order.
macro_rules! session_columns {
    () => {
        "room_id, incident_id, request_id, call_type, max_participants, metadata, state, \
         created_at_ms, ended_at_ms, end_reason, disposition, notes"
    };
}
pub(crate) use session_columns;

impl Store {
    /// Creates an open session, or returns the existing one for the same
    /// `(incident_id, request_id)` with `false`, so that a retried request is
    /// harmless. A retry returns the stored row even if its other fields differ.
    ///
    /// Fails with [`StoreError::Conflict`] if `room_id` belongs to another session.
    pub async fn create_session(&self, new: NewSession) -> Result<(SessionRow, bool), StoreError> {
        let inserted = on_pool!(&self.backend, pool => {
            sqlx::query(
                "INSERT INTO sessions \
                 (room_id, incident_id, request_id, call_type, max_participants, metadata, state, \
                  created_at_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (incident_id, request_id) DO NOTHING",
            )
            .bind(&new.room_id)
            .bind(&new.incident_id)
            .bind(&new.request_id)
            .bind(&new.call_type)
            .bind(new.max_participants)
            .bind(&new.metadata)
            .bind(STATE_OPEN)
            .bind(new.created_at_ms)
            .execute(pool)
            .await
            .map(|done| done.rows_affected())
        });

        let created = match inserted {
            Ok(affected) => affected == 1,
            Err(err) if is_unique_violation(&err) => {
                return Err(StoreError::Conflict {
                    what: "session",
                    id: new.room_id,
                    reason: "room id already exists",
                });
            }
            Err(err) => return Err(err.into()),
        };

        // Sessions are never deleted, so the row that won the insert is there.
        let row: SessionRow = on_pool!(&self.backend, pool => {
            sqlx::query_as(concat!(
                "SELECT ",
                session_columns!(),
                " FROM sessions WHERE incident_id = $1 AND request_id = $2"
            ))
            .bind(&new.incident_id)
            .bind(&new.request_id)
            .fetch_one(pool)
            .await?
        });

        if created {
            tracing::info!(room_id = %row.room_id, incident_id = %row.incident_id, "session created");
        } else {
            tracing::info!(
                room_id = %row.room_id,
                incident_id = %row.incident_id,
                request_id = %row.request_id,
                "session create retried, returning the existing session"
            );
        }
        Ok((row, created))
    }

    /// Returns the session row of `room_id`, if it exists.
    pub async fn session_row(&self, room_id: &str) -> Result<Option<SessionRow>, StoreError> {
        let row = on_pool!(&self.backend, pool => {
            sqlx::query_as(concat!(
                "SELECT ",
                session_columns!(),
                " FROM sessions WHERE room_id = $1"
            ))
            .bind(room_id)
            .fetch_optional(pool)
            .await?
        });
        Ok(row)
    }

    /// Returns every open session, oldest first.
    pub async fn open_sessions(&self) -> Result<Vec<SessionRow>, StoreError> {
        let rows = on_pool!(&self.backend, pool => {
            sqlx::query_as(concat!(
                "SELECT ",
                session_columns!(),
                " FROM sessions WHERE state = $1 ORDER BY created_at_ms, room_id"
            ))
            .bind(STATE_OPEN)
            .fetch_all(pool)
            .await?
        });
        Ok(rows)
    }

    /// Closes an open session at `at_ms` with `reason`, and in the same
    /// transaction marks every participant that has not left as left (with the
    /// same reason) and every track still published as unpublished, both at `at_ms`.
    ///
    /// Fails with [`StoreError::AlreadyClosed`] if the session is closed and
    /// [`StoreError::NotFound`] if it does not exist.
    pub async fn close_session(
        &self,
        room_id: &str,
        reason: &str,
        disposition: Option<&str>,
        notes: Option<&str>,
        at_ms: i64,
    ) -> Result<SessionRow, StoreError> {
        // The first statement writes, so SQLite takes the write lock at once
        // and waits for other writers instead of failing on a stale snapshot.
        let closed: Option<(SessionRow, u64, u64)> = on_pool!(&self.backend, pool => {
            let mut tx = pool.begin().await?;
            let closed: Option<SessionRow> = sqlx::query_as(concat!(
                "UPDATE sessions \
                 SET state = $1, ended_at_ms = $2, end_reason = $3, disposition = $4, notes = $5 \
                 WHERE room_id = $6 AND state = $7 RETURNING ",
                session_columns!()
            ))
            .bind(STATE_CLOSED)
            .bind(at_ms)
            .bind(reason)
            .bind(disposition)
            .bind(notes)
            .bind(room_id)
            .bind(STATE_OPEN)
            .fetch_optional(&mut *tx)
            .await?;

            match closed {
                None => {
                    tx.rollback().await?;
                    None
                }
                Some(row) => {
                    let left = sqlx::query(
                        "UPDATE participants SET left_at_ms = $1, leave_reason = $2 \
                         WHERE room_id = $3 AND left_at_ms IS NULL",
                    )
                    .bind(at_ms)
                    .bind(reason)
                    .bind(room_id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();

                    let unpublished = sqlx::query(
                        "UPDATE tracks SET unpublished_at_ms = $1 \
                         WHERE room_id = $2 AND unpublished_at_ms IS NULL",
                    )
                    .bind(at_ms)
                    .bind(room_id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();

                    tx.commit().await?;
                    Some((row, left, unpublished))
                }
            }
        });

        let Some((row, left, unpublished)) = closed else {
            return Err(self.not_open_error(room_id).await);
        };
        tracing::info!(
            room_id,
            reason,
            participants_left = left,
            tracks_unpublished = unpublished,
            "session closed"
        );
        Ok(row)
    }

    /// Closes every open session as [`Store::close_session`] does, in one
    /// transaction, and returns the room ids closed. Used at start-up after a
    /// crash ("server restart") and at shutdown ("server shutdown").
    pub async fn close_all_open(
        &self,
        reason: &str,
        at_ms: i64,
    ) -> Result<Vec<String>, StoreError> {
        let (mut room_ids, left, unpublished): (Vec<String>, u64, u64) = on_pool!(&self.backend, pool => {
            let mut tx = pool.begin().await?;

            // Participants and tracks first, while their sessions are still open.
            let left = sqlx::query(
                "UPDATE participants SET left_at_ms = $1, leave_reason = $2 \
                 WHERE left_at_ms IS NULL \
                 AND room_id IN (SELECT room_id FROM sessions WHERE state = $3)",
            )
            .bind(at_ms)
            .bind(reason)
            .bind(STATE_OPEN)
            .execute(&mut *tx)
            .await?
            .rows_affected();

            let unpublished = sqlx::query(
                "UPDATE tracks SET unpublished_at_ms = $1 \
                 WHERE unpublished_at_ms IS NULL \
                 AND room_id IN (SELECT room_id FROM sessions WHERE state = $2)",
            )
            .bind(at_ms)
            .bind(STATE_OPEN)
            .execute(&mut *tx)
            .await?
            .rows_affected();

            let room_ids: Vec<String> = sqlx::query_scalar(
                "UPDATE sessions SET state = $1, ended_at_ms = $2, end_reason = $3 \
                 WHERE state = $4 RETURNING room_id",
            )
            .bind(STATE_CLOSED)
            .bind(at_ms)
            .bind(reason)
            .bind(STATE_OPEN)
            .fetch_all(&mut *tx)
            .await?;

            tx.commit().await?;
            (room_ids, left, unpublished)
        });

        room_ids.sort();
        tracing::info!(
            reason,
            sessions_closed = room_ids.len(),
            participants_left = left,
            tracks_unpublished = unpublished,
            "closed all open sessions"
        );
        Ok(room_ids)
    }

    /// Returns the full record of `room_id`: the session row, its participants,
    /// tracks, events, consents and quality summaries, read from one snapshot.
    pub async fn session(&self, room_id: &str) -> Result<Option<SessionRecord>, StoreError> {
        // PostgreSQL's default READ COMMITTED takes a new snapshot per
        // statement. An SQLite read transaction keeps one snapshot already.
        let begin = match &self.backend {
            Backend::Sqlite(_) => "BEGIN",
            Backend::Postgres(_) => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
        };
        let record = on_pool!(&self.backend, pool => {
            let mut tx = pool.begin_with(begin).await?;

            let session: Option<SessionRow> = sqlx::query_as(concat!(
                "SELECT ",
                session_columns!(),
                " FROM sessions WHERE room_id = $1"
            ))
            .bind(room_id)
            .fetch_optional(&mut *tx)
            .await?;

            match session {
                None => {
                    tx.rollback().await?;
                    None
                }
                Some(session) => {
                    let participants = sqlx::query_as(PARTICIPANTS_IN_ROOM)
                        .bind(room_id)
                        .fetch_all(&mut *tx)
                        .await?;
                    let tracks = sqlx::query_as(TRACKS_IN_ROOM)
                        .bind(room_id)
                        .fetch_all(&mut *tx)
                        .await?;
                    let events = sqlx::query_as(EVENTS_IN_ROOM)
                        .bind(room_id)
                        .fetch_all(&mut *tx)
                        .await?;
                    let consents = sqlx::query_as(CONSENTS_IN_ROOM)
                        .bind(room_id)
                        .fetch_all(&mut *tx)
                        .await?;
                    let quality = sqlx::query_as(QUALITY_IN_ROOM)
                        .bind(room_id)
                        .fetch_all(&mut *tx)
                        .await?;
                    let snapshots = sqlx::query_as(SNAPSHOTS_IN_ROOM)
                        .bind(room_id)
                        .fetch_all(&mut *tx)
                        .await?;
                    tx.commit().await?;

                    Some(SessionRecord {
                        session,
                        participants,
                        tracks,
                        events,
                        consents,
                        quality,
                        snapshots,
                    })
                }
            }
        });
        Ok(record)
    }

    /// Builds the error for an operation that needs `room_id` open but found
    /// no open session: not found, or already closed.
    pub(crate) async fn not_open_error(&self, room_id: &str) -> StoreError {
        let state: Result<Option<String>, sqlx::Error> = on_pool!(&self.backend, pool => {
            sqlx::query_scalar("SELECT state FROM sessions WHERE room_id = $1")
                .bind(room_id)
                .fetch_optional(pool)
                .await
        });

        match state {
            Err(err) => err.into(),
            Ok(None) => StoreError::NotFound {
                what: "session",
                id: room_id.to_owned(),
            },
            Ok(Some(state)) if state == STATE_CLOSED => StoreError::AlreadyClosed {
                room_id: room_id.to_owned(),
            },
            // Sessions never reopen, so this is reached only if the row was
            // changed outside this store.
            Ok(Some(_)) => StoreError::Conflict {
                what: "session",
                id: room_id.to_owned(),
                reason: "session state changed during the update",
            },
        }
    }
}
