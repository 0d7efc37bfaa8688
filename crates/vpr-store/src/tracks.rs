//! Tracks: publication, unpublication and mute of a participant's media.

use crate::backend::on_pool;
use crate::error::is_unique_violation;
use crate::rows::TrackRow;
use crate::{NewTrack, Store, StoreError};

/// Columns of `tracks` in [`TrackRow`] field order.
macro_rules! track_columns {
    () => {
        "track_id, room_id, participant_id, kind, codec, published_at_ms, unpublished_at_ms, muted"
    };
}

/// Selects the tracks of the room bound to `$1`, ordered by publication.
pub(crate) const TRACKS_IN_ROOM: &str = concat!(
    "SELECT ",
    track_columns!(),
    " FROM tracks WHERE room_id = $1 ORDER BY published_at_ms, track_id"
);

impl Store {
    /// Records a track published by a participant of `t.room_id` who has not
    /// left and was not removed. The track starts unmuted.
    ///
    /// Fails with [`StoreError::NotFound`] if the participant is not in that
    /// room and [`StoreError::Conflict`] if the participant has left or the
    /// track id exists.
    pub async fn track_published(&self, t: NewTrack) -> Result<(), StoreError> {
        // Inserting from the participant row checks room membership and
        // presence in the same statement. Closing a session marks all of its
        // participants left, so this also rejects tracks in closed rooms.
        let inserted = on_pool!(&self.backend, pool => {
            sqlx::query(
                "INSERT INTO tracks \
                 (track_id, room_id, participant_id, kind, codec, published_at_ms) \
                 SELECT $1, room_id, participant_id, $2, $3, $4 FROM participants \
                 WHERE participant_id = $5 AND room_id = $6 AND left_at_ms IS NULL \
                 AND removed_at_ms IS NULL",
            )
            .bind(&t.track_id)
            .bind(&t.kind)
            .bind(&t.codec)
            .bind(t.published_at_ms)
            .bind(&t.participant_id)
            .bind(&t.room_id)
            .execute(pool)
            .await
            .map(|done| done.rows_affected())
        });

        match inserted {
            Ok(1) => {
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
                    reason: if p.left_at_ms.is_none() && p.removed_at_ms.is_some() {
                        "participant was removed"
                    } else {
                        "participant has already left"
                    },
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
        let updated = on_pool!(&self.backend, pool => {
            sqlx::query(
                "UPDATE tracks SET unpublished_at_ms = $1 \
                 WHERE track_id = $2 AND unpublished_at_ms IS NULL",
            )
            .bind(at_ms)
            .bind(track_id)
            .execute(pool)
            .await?
            .rows_affected()
        });

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

    /// Sets the mute flag of a track and returns the updated row. Unpublished
    /// tracks can be updated as well.
    ///
    /// Fails with [`StoreError::NotFound`] for an unknown track.
    pub async fn set_track_muted(
        &self,
        track_id: &str,
        muted: bool,
    ) -> Result<TrackRow, StoreError> {
        let row: Option<TrackRow> = on_pool!(&self.backend, pool => {
            sqlx::query_as(concat!(
                "UPDATE tracks SET muted = $1 WHERE track_id = $2 RETURNING ",
                track_columns!()
            ))
            .bind(muted)
            .bind(track_id)
            .fetch_optional(pool)
            .await?
        });

        let Some(row) = row else {
            return Err(StoreError::NotFound {
                what: "track",
                id: track_id.to_owned(),
            });
        };
        tracing::info!(
            room_id = %row.room_id,
            participant_id = %row.participant_id,
            track_id,
            muted,
            "track mute set"
        );
        Ok(row)
    }

    /// Returns the row of `track_id`, if it exists.
    pub async fn track_row(&self, track_id: &str) -> Result<Option<TrackRow>, StoreError> {
        let row = on_pool!(&self.backend, pool => {
            sqlx::query_as(concat!(
                "SELECT ",
                track_columns!(),
                " FROM tracks WHERE track_id = $1"
            ))
            .bind(track_id)
            .fetch_optional(pool)
            .await?
        });
        Ok(row)
    }
}
