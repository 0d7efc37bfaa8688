//! Participants: admission to a room, joining, leaving, removal by the control
//! plane and publish/subscribe permissions.

use crate::backend::on_pool;
use crate::error::is_unique_violation;
use crate::rows::{ParticipantRow, STATE_OPEN};
use crate::{NewParticipant, Store, StoreError};

/// Columns of `participants` in [`ParticipantRow`] field order.
macro_rules! participant_columns {
    () => {
        "participant_id, room_id, identity, display_name, role, admitted_at_ms, joined_at_ms, \
         left_at_ms, leave_reason, badge_id, can_publish, can_subscribe, removed_at_ms, \
         removed_reason"
    };
}

/// Selects the participants of the room bound to `$1`, ordered by admission.
pub(crate) const PARTICIPANTS_IN_ROOM: &str = concat!(
    "SELECT ",
    participant_columns!(),
    " FROM participants WHERE room_id = $1 ORDER BY admitted_at_ms, participant_id"
);

impl Store {
    /// Admits a participant to an open room.
    ///
    /// Fails with [`StoreError::NotFound`] if the room does not exist,
    /// [`StoreError::AlreadyClosed`] if it is closed and [`StoreError::Conflict`]
    /// if the participant id exists.
    pub async fn admit_participant(&self, p: NewParticipant) -> Result<(), StoreError> {
        // Inserting from the open session row checks the room and inserts in
        // one statement, with no window in which the room can close.
        let inserted = on_pool!(&self.backend, pool => {
            sqlx::query(
                "INSERT INTO participants \
                 (participant_id, room_id, identity, display_name, role, admitted_at_ms, \
                  badge_id, can_publish, can_subscribe) \
                 SELECT $1, room_id, $2, $3, $4, $5, $6, $7, $8 FROM sessions \
                 WHERE room_id = $9 AND state = $10",
            )
            .bind(&p.participant_id)
            .bind(&p.identity)
            .bind(&p.display_name)
            .bind(&p.role)
            .bind(p.admitted_at_ms)
            .bind(&p.badge_id)
            .bind(p.can_publish)
            .bind(p.can_subscribe)
            .bind(&p.room_id)
            .bind(STATE_OPEN)
            .execute(pool)
            .await
            .map(|done| done.rows_affected())
        });

        match inserted {
            Ok(1) => {
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
    /// the first join time, so a reconnect does not overwrite it. A participant
    /// that left and joins again with its link is present again: its leave
    /// time and reason are cleared, and the event log keeps both.
    ///
    /// Fails with [`StoreError::NotFound`] for an unknown participant and
    /// [`StoreError::Conflict`] if the participant was removed or the room is
    /// closed.
    pub async fn participant_joined(
        &self,
        participant_id: &str,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        let updated = on_pool!(&self.backend, pool => {
            sqlx::query(
                "UPDATE participants SET joined_at_ms = COALESCE(joined_at_ms, $1), \
                 left_at_ms = NULL, leave_reason = NULL \
                 WHERE participant_id = $2 AND removed_at_ms IS NULL \
                 AND room_id IN (SELECT room_id FROM sessions WHERE state = 'open')",
            )
            .bind(at_ms)
            .bind(participant_id)
            .execute(pool)
            .await?
            .rows_affected()
        });

        if updated == 1 {
            tracing::debug!(participant_id, "participant joined");
            return Ok(());
        }
        match self.participant_row(participant_id).await? {
            None => Err(StoreError::NotFound {
                what: "participant",
                id: participant_id.to_owned(),
            }),
            Some(row) => Err(StoreError::Conflict {
                what: "participant",
                id: participant_id.to_owned(),
                reason: if row.removed_at_ms.is_some() {
                    "participant was removed"
                } else {
                    "the room is closed"
                },
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
        let unpublished = on_pool!(&self.backend, pool => {
            let mut tx = pool.begin().await?;
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
                None
            } else {
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
                Some(unpublished)
            }
        });

        let Some(unpublished) = unpublished else {
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
        };

        tracing::debug!(
            participant_id,
            reason,
            tracks_unpublished = unpublished,
            "participant left"
        );
        Ok(())
    }

    /// Removes a participant from their room at `at_ms` with `reason`, and
    /// returns the updated row. In the same transaction, a participant who
    /// joined and has not left is marked left with the same time and reason,
    /// and their published tracks are unpublished. Removing twice keeps the
    /// first removal and returns the stored row.
    ///
    /// Fails with [`StoreError::NotFound`] for an unknown participant.
    pub async fn remove_participant(
        &self,
        participant_id: &str,
        reason: &str,
        at_ms: i64,
    ) -> Result<ParticipantRow, StoreError> {
        // The first statement writes, so SQLite takes the write lock at once.
        let removed: Option<(ParticipantRow, u64, u64)> = on_pool!(&self.backend, pool => {
            let mut tx = pool.begin().await?;
            let updated = sqlx::query(
                "UPDATE participants SET removed_at_ms = $1, removed_reason = $2 \
                 WHERE participant_id = $3 AND removed_at_ms IS NULL",
            )
            .bind(at_ms)
            .bind(reason)
            .bind(participant_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();

            if updated == 0 {
                tx.rollback().await?;
                None
            } else {
                let left = sqlx::query(
                    "UPDATE participants SET left_at_ms = $1, leave_reason = $2 \
                     WHERE participant_id = $3 AND joined_at_ms IS NOT NULL \
                     AND left_at_ms IS NULL",
                )
                .bind(at_ms)
                .bind(reason)
                .bind(participant_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();

                let unpublished = sqlx::query(
                    "UPDATE tracks SET unpublished_at_ms = $1 \
                     WHERE participant_id = $2 AND unpublished_at_ms IS NULL",
                )
                .bind(at_ms)
                .bind(participant_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();

                let row: ParticipantRow = sqlx::query_as(concat!(
                    "SELECT ",
                    participant_columns!(),
                    " FROM participants WHERE participant_id = $1"
                ))
                .bind(participant_id)
                .fetch_one(&mut *tx)
                .await?;
                tx.commit().await?;
                Some((row, left, unpublished))
            }
        });

        match removed {
            Some((row, left, unpublished)) => {
                tracing::info!(
                    room_id = %row.room_id,
                    participant_id,
                    reason,
                    marked_left = left == 1,
                    tracks_unpublished = unpublished,
                    "participant removed"
                );
                Ok(row)
            }
            None => match self.participant_row(participant_id).await? {
                None => Err(StoreError::NotFound {
                    what: "participant",
                    id: participant_id.to_owned(),
                }),
                Some(row) => {
                    tracing::debug!(participant_id, "participant already removed");
                    Ok(row)
                }
            },
        }
    }

    /// Sets whether a participant may publish and subscribe, and returns the
    /// updated row. Removed participants can be updated as well.
    ///
    /// Fails with [`StoreError::NotFound`] for an unknown participant.
    pub async fn update_permissions(
        &self,
        participant_id: &str,
        can_publish: bool,
        can_subscribe: bool,
    ) -> Result<ParticipantRow, StoreError> {
        let row: Option<ParticipantRow> = on_pool!(&self.backend, pool => {
            sqlx::query_as(concat!(
                "UPDATE participants SET can_publish = $1, can_subscribe = $2 \
                 WHERE participant_id = $3 RETURNING ",
                participant_columns!()
            ))
            .bind(can_publish)
            .bind(can_subscribe)
            .bind(participant_id)
            .fetch_optional(pool)
            .await?
        });

        let Some(row) = row else {
            return Err(StoreError::NotFound {
                what: "participant",
                id: participant_id.to_owned(),
            });
        };
        tracing::info!(
            room_id = %row.room_id,
            participant_id,
            can_publish,
            can_subscribe,
            "participant permissions updated"
        );
        Ok(row)
    }

    /// Returns the row of `participant_id`, if it exists.
    pub async fn participant_row(
        &self,
        participant_id: &str,
    ) -> Result<Option<ParticipantRow>, StoreError> {
        let row = on_pool!(&self.backend, pool => {
            sqlx::query_as(concat!(
                "SELECT ",
                participant_columns!(),
                " FROM participants WHERE participant_id = $1"
            ))
            .bind(participant_id)
            .fetch_optional(pool)
            .await?
        });
        Ok(row)
    }

    /// Returns every participant ever admitted to `room_id`, including those
    /// who left or were removed, ordered by admission time, then participant
    /// id. An unknown room has no participants.
    pub async fn list_participants(
        &self,
        room_id: &str,
    ) -> Result<Vec<ParticipantRow>, StoreError> {
        let rows = on_pool!(&self.backend, pool => {
            sqlx::query_as(PARTICIPANTS_IN_ROOM)
                .bind(room_id)
                .fetch_all(pool)
                .await?
        });
        Ok(rows)
    }

    /// Returns the participant of `room_id` with `identity` that was admitted
    /// last and has not been removed, if any. Participants who left are
    /// still returned.
    pub async fn participant_by_identity(
        &self,
        room_id: &str,
        identity: &str,
    ) -> Result<Option<ParticipantRow>, StoreError> {
        let row = on_pool!(&self.backend, pool => {
            sqlx::query_as(concat!(
                "SELECT ",
                participant_columns!(),
                " FROM participants \
                 WHERE room_id = $1 AND identity = $2 AND removed_at_ms IS NULL \
                 ORDER BY admitted_at_ms DESC, participant_id DESC LIMIT 1"
            ))
            .bind(room_id)
            .bind(identity)
            .fetch_optional(pool)
            .await?
        });
        Ok(row)
    }
}
