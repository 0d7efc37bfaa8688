//! Participants: admission to a room, joining and leaving.

use sqlx::SqliteConnection;

use crate::error::is_unique_violation;
use crate::rows::{ParticipantRow, STATE_OPEN};
use crate::{NewParticipant, Store, StoreError};

/// Columns of `participants` in [`ParticipantRow`] field order.
macro_rules! participant_columns {
    () => {
        "participant_id, room_id, identity, display_name, role, admitted_at_ms, joined_at_ms, \
         left_at_ms, leave_reason"
    };
}

impl Store {
    /// Admits a participant to an open room.
    ///
    /// Fails with [`StoreError::NotFound`] if the room does not exist,
    /// [`StoreError::AlreadyClosed`] if it is closed and [`StoreError::Conflict`]
    /// if the participant id exists.
    pub async fn admit_participant(&self, p: NewParticipant) -> Result<(), StoreError> {
        // Inserting from the open session row checks the room and inserts in
        // one statement, with no window in which the room can close.
        let inserted = sqlx::query(
            "INSERT INTO participants \
             (participant_id, room_id, identity, display_name, role, admitted_at_ms) \
             SELECT $1, room_id, $2, $3, $4, $5 FROM sessions WHERE room_id = $6 AND state = $7",
        )
        .bind(&p.participant_id)
        .bind(&p.identity)
        .bind(&p.display_name)
        .bind(&p.role)
        .bind(p.admitted_at_ms)
        .bind(&p.room_id)
        .bind(STATE_OPEN)
        .execute(&self.pool)
        .await;

        match inserted {
            Ok(done) if done.rows_affected() == 1 => {
                tracing::debug!(
                    room_id = %p.room_id,
                    participant_id = %p.participant_id,
                    role = %p.role,
                    "participant admitted"
                );
                Ok(())
            }
            Ok(_) => Err(self.not_open_error(&p.room_id).await),
            Err(err) if is_unique_violation(&err) => Err(StoreError::Conflict {
                what: "participant",
                id: p.participant_id,
                reason: "participant id already exists",
            }),
            Err(err) => Err(err.into()),
        }
    }

    /// Records that an admitted participant joined the room. A second call keeps
    /// the first join time, so a reconnect does not overwrite it.
    ///
    /// Fails with [`StoreError::NotFound`] for an unknown participant and
    /// [`StoreError::Conflict`] if the participant has left.
    pub async fn participant_joined(
        &self,
        participant_id: &str,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        let updated = sqlx::query(
            "UPDATE participants SET joined_at_ms = COALESCE(joined_at_ms, $1) \
             WHERE participant_id = $2 AND left_at_ms IS NULL",
        )
        .bind(at_ms)
        .bind(participant_id)
        .execute(&self.pool)
        .await?
        .rows_affected();

        if updated == 1 {
            tracing::debug!(participant_id, "participant joined");
            return Ok(());
        }
        match self.participant_row(participant_id).await? {
            None => Err(StoreError::NotFound {
                what: "participant",
                id: participant_id.to_owned(),
            }),
            Some(_) => Err(StoreError::Conflict {
                what: "participant",
                id: participant_id.to_owned(),
                reason: "participant has already left",
            }),
        }
    }

    /// Records that a participant left, and unpublishes every track of theirs
    /// that is still published, both at `at_ms`. Leaving twice keeps the first
    /// time and reason and returns `Ok`.
    ///
    /// Fails with [`StoreError::NotFound`] for an unknown participant.
    pub async fn participant_left(
        &self,
        participant_id: &str,
        reason: &str,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let updated = sqlx::query(
            "UPDATE participants SET left_at_ms = $1, leave_reason = $2 \
             WHERE participant_id = $3 AND left_at_ms IS NULL",
        )
        .bind(at_ms)
        .bind(reason)
        .bind(participant_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();

        if updated == 0 {
            tx.rollback().await?;
            return match self.participant_row(participant_id).await? {
                None => Err(StoreError::NotFound {
                    what: "participant",
                    id: participant_id.to_owned(),
                }),
                Some(_) => {
                    tracing::debug!(participant_id, "participant already left");
                    Ok(())
                }
            };
        }

        let unpublished = sqlx::query(
            "UPDATE tracks SET unpublished_at_ms = $1 \
             WHERE participant_id = $2 AND unpublished_at_ms IS NULL",
        )
        .bind(at_ms)
        .bind(participant_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();

        tx.commit().await?;
        tracing::debug!(
            participant_id,
            reason,
            tracks_unpublished = unpublished,
            "participant left"
        );
        Ok(())
    }

    /// Returns the row of `participant_id`, if it exists.
    pub async fn participant_row(
        &self,
        participant_id: &str,
    ) -> Result<Option<ParticipantRow>, StoreError> {
        let row = sqlx::query_as(concat!(
            "SELECT ",
            participant_columns!(),
            " FROM participants WHERE participant_id = $1"
        ))
        .bind(participant_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row)
    }

    /// Returns the participants of `room_id`, ordered by admission time.
    pub(crate) async fn participants_in(
        conn: &mut SqliteConnection,
        room_id: &str,
    ) -> Result<Vec<ParticipantRow>, StoreError> {
        let rows = sqlx::query_as(concat!(
            "SELECT ",
            participant_columns!(),
            " FROM participants WHERE room_id = $1 ORDER BY admitted_at_ms, participant_id"
        ))
        .bind(room_id)
        .fetch_all(conn)
        .await?;
        Ok(rows)
    }
}
