//! Quality: the media quality summary of each participant, written by the
//! media plane.

use crate::backend::on_pool;
use crate::error::is_foreign_key_violation;
use crate::rows::QualityRow;
use crate::{Store, StoreError};

/// Columns of `quality` in [`QualityRow`] field order.
macro_rules! quality_columns {
    () => {
        "participant_id, bitrate_kbps, packet_loss, rtt_ms, layer_changes, updated_at_ms, jitter_ms, video_layer"
    };
}

/// Selects the quality rows of the participants of the room bound to `$1`,
/// ordered by participant id.
pub(crate) const QUALITY_IN_ROOM: &str = "SELECT q.participant_id, q.bitrate_kbps, \
    q.packet_loss, q.rtt_ms, q.layer_changes, q.updated_at_ms, q.jitter_ms, q.video_layer \
    FROM quality q JOIN participants p ON p.participant_id = q.participant_id \
    WHERE p.room_id = $1 ORDER BY q.participant_id";

impl Store {
    /// Writes the quality summary of a participant, replacing the one stored before.
    ///
    /// Fails with [`StoreError::NotFound`] for an unknown participant.
    pub async fn upsert_quality(&self, q: QualityRow) -> Result<(), StoreError> {
        let written = on_pool!(&self.backend, pool => {
            sqlx::query(concat!(
                "INSERT INTO quality (",
                quality_columns!(),
                ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (participant_id) DO UPDATE SET \
                 bitrate_kbps = excluded.bitrate_kbps, packet_loss = excluded.packet_loss, \
                 rtt_ms = excluded.rtt_ms, layer_changes = excluded.layer_changes, \
                 updated_at_ms = excluded.updated_at_ms, jitter_ms = excluded.jitter_ms, \
                 video_layer = excluded.video_layer"
            ))
            .bind(&q.participant_id)
            .bind(q.bitrate_kbps)
            .bind(q.packet_loss)
            .bind(q.rtt_ms)
            .bind(q.layer_changes)
            .bind(q.updated_at_ms)
            .bind(q.jitter_ms)
            .bind(&q.video_layer)
            .execute(pool)
            .await
            .map(|done| done.rows_affected())
        });

        match written {
            Ok(_) => {
                tracing::trace!(participant_id = %q.participant_id, "quality summary written");
                Ok(())
            }
            Err(err) if is_foreign_key_violation(&err) => Err(StoreError::NotFound {
                what: "participant",
                id: q.participant_id,
            }),
            Err(err) => Err(err.into()),
        }
    }

    /// Returns the quality summary of `participant_id`, if one was written.
    pub async fn quality(&self, participant_id: &str) -> Result<Option<QualityRow>, StoreError> {
        let row = on_pool!(&self.backend, pool => {
            sqlx::query_as(concat!(
                "SELECT ",
                quality_columns!(),
                " FROM quality WHERE participant_id = $1"
            ))
            .bind(participant_id)
            .fetch_optional(pool)
            .await?
        });
        Ok(row)
    }
}
