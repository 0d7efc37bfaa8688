//! Snapshots: still frames an officer saves from a call, recorded with the
//! SHA-256 of the stored file.

use crate::backend::on_pool;
use crate::rows::SnapshotRow;
use crate::{Store, StoreError};

/// Selects the snapshots of the room bound to `$1`, oldest first.
pub(crate) const SNAPSHOTS_IN_ROOM: &str = "SELECT snapshot_id, room_id, participant_id, sha256, \
     content_type, size_bytes, path, taken_at_ms FROM snapshots WHERE room_id = $1 \
     ORDER BY taken_at_ms, snapshot_id";

impl Store {
    /// Records a snapshot whose file is already written.
    ///
    /// Fails with [`StoreError::NotFound`] if the participant is not in the room.
    pub async fn record_snapshot(&self, snapshot: SnapshotRow) -> Result<(), StoreError> {
        let written = on_pool!(&self.backend, pool => {
            sqlx::query(
                "INSERT INTO snapshots \
                 (snapshot_id, room_id, participant_id, sha256, content_type, size_bytes, path, taken_at_ms) \
                 SELECT $1, room_id, participant_id, $2, $3, $4, $5, $6 FROM participants \
                 WHERE participant_id = $7 AND room_id = $8",
            )
            .bind(&snapshot.snapshot_id)
            .bind(&snapshot.sha256)
            .bind(&snapshot.content_type)
            .bind(snapshot.size_bytes)
            .bind(&snapshot.path)
            .bind(snapshot.taken_at_ms)
            .bind(&snapshot.participant_id)
            .bind(&snapshot.room_id)
            .execute(pool)
            .await?
            .rows_affected()
        });
        if written == 0 {
            return Err(StoreError::NotFound { what: "participant", id: snapshot.participant_id });
        }
        tracing::info!(room_id = %snapshot.room_id, participant_id = %snapshot.participant_id,
            snapshot_id = %snapshot.snapshot_id, "snapshot recorded");
        Ok(())
    }
}
