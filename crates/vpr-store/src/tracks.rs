//! Tracks: publication and unpublication of a participant's media.

use sqlx::SqliteConnection;

use crate::error::is_unique_violation;
use crate::rows::TrackRow;
use crate::{NewTrack, Store, StoreError};

/// Columns of `tracks` in [`TrackRow`] field order.
macro_rules! track_columns {
    () => {
        "track_id, room_id, participant_id, kind, codec, published_at_ms, unpublished_at_ms"
    };
}

impl Store {
    /// Records a track published by a participant of `t.room_id` who has not left.
    ///
    /// Fails with [`StoreError::NotFound`] if the participant is not in that
    /// room and [`StoreError::Conflict`] if the participant has left or the
    /// track id exists.
    pub async fn track_published(&self, t: NewTrack) -> Result<(), StoreError> {
        // Inserting from the participant row checks room membership and
        // presence in the same statement. Closing a session marks all of its
        // participants left, so this also rejects tracks in closed rooms.
        let inserted = sqlx::query(
            "INSERT INTO tracks \
             (track_id, room_id, participant_id, kind, codec, published_at_ms) \
             SELECT $1, room_id, participant_id, $2, $3, $4 FROM participants \
             WHERE participant_id = $5 AND room_id = $6 AND left_at_ms IS NULL",
        )
        .bind(&t.track_id)
        .bind(&t.kind)
        .bind(&t.codec)
        .bind(t.published_at_ms)
        .bind(&t.participant_id)
        .bind(&t.room_id)
        .execute(&self.pool)
        .await;

        match inserted {
            Ok(done) if done.rows_affected() == 1 => {
                tracing::debug!(
                    room_id = %t.room_id,
                    participant_id = %t.participant_id,
                    track_id = %t.track_id,
                    kind = %t.kind,
                    codec = %t.codec,
                    "track published"
                );
                Ok(())
            }
            Ok(_) => match self.participant_row(&t.participant_id).await? {
                Some(p) if p.room_id == t.room_id => Err(StoreError::Conflict {
                    what: "participant",
                    id: t.participant_id,
                    reason: "participant has already left",
                }),
                _ => Err(StoreError::NotFound {
                    what: "participant",
                    id: t.participant_id,
                }),
            },
            Err(err) if is_unique_violation(&err) => Err(StoreError::Conflict {
                what: "track",
                id: t.track_id,
                reason: "track id already exists",
            }),
            Err(err) => Err(err.into()),
        }
    }

    /// Records that a track was unpublished. Unpublishing twice keeps the first
    /// time and returns `Ok`.
    ///
    /// Fails with [`StoreError::NotFound`] for an unknown track.
    pub async fn track_unpublished(&self, track_id: &str, at_ms: i64) -> Result<(), StoreError> {
        let updated = sqlx::query(
            "UPDATE tracks SET unpublished_at_ms = $1 \
             WHERE track_id = $2 AND unpublished_at_ms IS NULL",
        )
        .bind(at_ms)
        .bind(track_id)
        .execute(&self.pool)
        .await?
        .rows_affected();

        if updated == 1 {
            tracing::debug!(track_id, "track unpublished");
            return Ok(());
        }
        match self.track_row(track_id).await? {
            None => Err(StoreError::NotFound {
                what: "track",
                id: track_id.to_owned(),
            }),
            Some(_) => Ok(()),
        }
    }

    /// Returns the row of `track_id`, if it exists.
    pub async fn track_row(&self, track_id: &str) -> Result<Option<TrackRow>, StoreError> {
        let row = sqlx::query_as(concat!(
            "SELECT ",
            track_columns!(),
            " FROM tracks WHERE track_id = $1"
        ))
        .bind(track_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row)
    }

    /// Returns the tracks of `room_id`, ordered by publication time.
    pub(crate) async fn tracks_in(
        conn: &mut SqliteConnection,
        room_id: &str,
    ) -> Result<Vec<TrackRow>, StoreError> {
        let rows = sqlx::query_as(concat!(
            "SELECT ",
            track_columns!(),
            " FROM tracks WHERE room_id = $1 ORDER BY published_at_ms, track_id"
        ))
        .bind(room_id)
        .fetch_all(conn)
        .await?;
        Ok(rows)
    }
}
