//! Events: the append-only log of what happened in each room.

use sqlx::SqliteConnection;

use crate::error::is_foreign_key_violation;
use crate::rows::EventRow;
use crate::{NewEvent, Store, StoreError};

/// Columns of `events` in [`EventRow`] field order.
macro_rules! event_columns {
    () => {
        "seq, room_id, kind, participant_id, track_id, detail, at_ms"
    };
}

impl Store {
    /// Appends one event and returns its sequence number, which is greater than
    /// that of every event appended before it. Closed rooms still take events.
    ///
    /// Fails with [`StoreError::NotFound`] if the room does not exist.
    pub async fn append_event(&self, e: NewEvent) -> Result<i64, StoreError> {
        let inserted: Result<i64, sqlx::Error> = sqlx::query_scalar(
            "INSERT INTO events (room_id, kind, participant_id, track_id, detail, at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING seq",
        )
        .bind(&e.room_id)
        .bind(&e.kind)
        .bind(&e.participant_id)
        .bind(&e.track_id)
        .bind(&e.detail)
        .bind(e.at_ms)
        .fetch_one(&self.pool)
        .await;

        match inserted {
            Ok(seq) => Ok(seq),
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

        let rows = match room_id {
            Some(room_id) => {
                sqlx::query_as(concat!(
                    "SELECT ",
                    event_columns!(),
                    " FROM events WHERE room_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
                ))
                .bind(room_id)
                .bind(after_seq)
                .bind(limit)
                .fetch_all(&self.pool)
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
                .fetch_all(&self.pool)
                .await?
            }
        };
        Ok(rows)
    }

    /// Returns every event of `room_id` in seq order.
    pub(crate) async fn events_in(
        conn: &mut SqliteConnection,
        room_id: &str,
    ) -> Result<Vec<EventRow>, StoreError> {
        let rows = sqlx::query_as(concat!(
            "SELECT ",
            event_columns!(),
            " FROM events WHERE room_id = $1 ORDER BY seq"
        ))
        .bind(room_id)
        .fetch_all(conn)
        .await?;
        Ok(rows)
    }
}
