//! Consent: what a participant agreed to share in a call, and how they agreed.

use crate::backend::on_pool;
use crate::rows::{ConsentRow, NewConsent};
use crate::{Store, StoreError};

/// Columns of `consents` in [`ConsentRow`] field order.
macro_rules! consent_columns {
    () => {
        "participant_id, room_id, live_video, audio, recording, channel, consented_at_ms"
    };
}

/// Selects the consents of the room bound to `$1`, ordered by participant id.
pub(crate) const CONSENTS_IN_ROOM: &str = concat!(
    "SELECT ",
    consent_columns!(),
    " FROM consents WHERE room_id = $1 ORDER BY participant_id"
);

impl Store {
    /// Records the consent of a participant of `c.room_id`, replacing any
    /// consent recorded for them before.
    ///
    /// Fails with [`StoreError::NotFound`] if the participant is not in that room.
    pub async fn record_consent(&self, c: NewConsent) -> Result<(), StoreError> {
        // Selecting from the participant row checks room membership in the
        // same statement. The WHERE clause also keeps SQLite from reading
        // ON CONFLICT as a join constraint.
        let written = on_pool!(&self.backend, pool => {
            sqlx::query(
                "INSERT INTO consents \
                 (participant_id, room_id, live_video, audio, recording, channel, consented_at_ms) \
                 SELECT participant_id, room_id, $1, $2, $3, $4, $5 FROM participants \
                 WHERE participant_id = $6 AND room_id = $7 \
                 ON CONFLICT (participant_id) DO UPDATE SET \
                 live_video = excluded.live_video, audio = excluded.audio, \
                 recording = excluded.recording, channel = excluded.channel, \
                 consented_at_ms = excluded.consented_at_ms",
            )
            .bind(c.live_video)
            .bind(c.audio)
            .bind(c.recording)
            .bind(&c.channel)
            .bind(c.consented_at_ms)
            .bind(&c.participant_id)
            .bind(&c.room_id)
            .execute(pool)
            .await?
            .rows_affected()
        });

        if written == 0 {
            return Err(StoreError::NotFound {
                what: "participant",
                id: c.participant_id,
            });
        }
        tracing::info!(
            room_id = %c.room_id,
            participant_id = %c.participant_id,
            live_video = c.live_video,
            audio = c.audio,
            recording = c.recording,
            channel = %c.channel,
            "consent recorded"
        );
        Ok(())
    }

    /// Returns the consent recorded for `participant_id`, if any.
    pub async fn consent(&self, participant_id: &str) -> Result<Option<ConsentRow>, StoreError> {
        let row = on_pool!(&self.backend, pool => {
            sqlx::query_as(concat!(
                "SELECT ",
                consent_columns!(),
                " FROM consents WHERE participant_id = $1"
            ))
            .bind(participant_id)
            .fetch_optional(pool)
            .await?
        });
        Ok(row)
    }
}
