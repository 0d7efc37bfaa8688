//! Events: the append-only log of what happened in each room.

use crate::backend::{on_pool, Backend};
use crate::error::is_foreign_key_violation;
use crate::rows::EventRow;
use crate::{NewEvent, Store, StoreError};

/// PostgreSQL advisory lock key held while appending an event ("VPREVENT" in ASCII).
const EVENT_ADVISORY_LOCK: i64 = 0x5650_5245_5645_4e54;

/// Columns of `events` in [`EventRow`] field order.
macro_rules! event_columns {
    () => {
        "seq, room_id, kind, participant_id, track_id, detail, at_ms"
    };
}

/// Selects every event of the room bound to `$1`, in seq order.
pub(crate) const EVENTS_IN_ROOM: &str = concat!(
    "SELECT ",
    event_columns!(),
    " FROM events WHERE room_id = $1 ORDER BY seq"
);

const INSERT_EVENT: &str = "INSERT INTO events \
    (room_id, kind, participant_id, track_id, detail, at_ms) \
    VALUES ($1, $2, $3, $4, $5, $6) RETURNING seq";

impl Store {
    /// Appends one event and returns its sequence number, which is greater than
    /// that of every event committed before it. Closed rooms still take events.
    /// After the commit, [`Store::event_sequence`] moves to the new seq.
    ///
    /// On PostgreSQL, appends take turns on an advisory lock, so events commit
    /// in seq order and a reader resuming with [`Store::events_after`] skips
    /// none. SQLite's single writer gives the same order.
    ///
    /// Fails with [`StoreError::NotFound`] if the room does not exist.
    pub async fn append_event(&self, e: NewEvent) -> Result<i64, StoreError> {
        let inserted: Result<i64, sqlx::Error> = match &self.backend {
            Backend::Sqlite(pool) => {
                sqlx::query_scalar(INSERT_EVENT)
                    .bind(&e.room_id)
                    .bind(&e.kind)
                    .bind(&e.participant_id)
                    .bind(&e.track_id)
                    .bind(&e.detail)
                    .bind(e.at_ms)
                    .fetch_one(pool)
                    .await
            }
            Backend::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(EVENT_ADVISORY_LOCK)
                    .execute(&mut *tx)
                    .await?;
                let inserted = sqlx::query_scalar(INSERT_EVENT)
                    .bind(&e.room_id)
                    .bind(&e.kind)
                    .bind(&e.participant_id)
                    .bind(&e.track_id)
                    .bind(&e.detail)
                    .bind(e.at_ms)
                    .fetch_one(&mut *tx)
                    .await;
                match inserted {
                    Ok(seq) => tx.commit().await.map(|()| seq),
                    // Dropping the transaction rolls it back.
                    Err(err) => Err(err),
                }
            }
        };

        match inserted {
            Ok(seq) => {
                self.event_seq.send_if_modified(|highest| {
                    let raised = seq > *highest;
                    if raised {
                        *highest = seq;
                    }
                    raised
                });
                Ok(seq)
            }
            Err(err) if is_foreign_key_violation(&err) => Err(StoreError::NotFound {
                what: "session",
                id: e.room_id,
            }),
            Err(err) => Err(err.into()),
        }
    }

    /// Returns up to `limit` events with `seq > after_seq` in seq order, from
    /// one room or from all rooms when `room_id` is `None`. To resume, pass the
    /// seq of the last event received. A `limit` of zero or less returns nothing.
    pub async fn events_after(
        &self,
        room_id: Option<&str>,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<EventRow>, StoreError> {
        if limit <= 0 {
            return Ok(Vec::new());
        }

        let rows = on_pool!(&self.backend, pool => match room_id {
            Some(room_id) => {
                sqlx::query_as(concat!(
                    "SELECT ",
                    event_columns!(),
                    " FROM events WHERE room_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
                ))
                .bind(room_id)
                .bind(after_seq)
                .bind(limit)
                .fetch_all(pool)
                .await?
            }
            None => {
                sqlx::query_as(concat!(
                    "SELECT ",
                    event_columns!(),
                    " FROM events WHERE seq > $1 ORDER BY seq LIMIT $2"
                ))
                .bind(after_seq)
                .bind(limit)
                .fetch_all(pool)
                .await?
            }
        });
        Ok(rows)
    }
}
