//! Participant and track calls: AdmitParticipant, RemoveParticipant,
//! MuteTrack, UpdateParticipantPermissions and ListParticipants.

use serde_json::json;
use vpr_store::{NewConsent, NewParticipant, ParticipantRow, SessionRow};

use super::{new_id, room_error, unix_now_ms, EventRecord, RoomServiceImpl};
use crate::convert;
use crate::error::ControlError;
use crate::pb;
use crate::token::JoinClaims;
use crate::validate::{self, AdmitArgs};

impl RoomServiceImpl {
    pub(super) async fn admit_participant_call(
        &self,
        request: pb::AdmitParticipantRequest,
        key_id: &str,
    ) -> Result<pb::AdmitParticipantResponse, ControlError> {
        self.reject_if_draining()?;
        let now_ms = unix_now_ms();
        let max_token_ttl_s =
            u32::try_from(self.config.max_token_ttl.as_secs()).unwrap_or(u32::MAX);
        let args = validate::admit_participant(&request, max_token_ttl_s, now_ms)?;

        let (participant, readmitted) = self.admit_or_readmit(&request, &args, now_ms).await?;

        // Consent is stored before the token exists, so a token is never
        // issued to a resident whose consent is not on record.
        if let Some(consent) = &args.consent {
            self.store
                .record_consent(NewConsent {
                    participant_id: participant.participant_id.clone(),
                    room_id: participant.room_id.clone(),
                    live_video: consent.live_video,
                    audio: consent.audio,
                    recording: consent.recording,
                    channel: consent.channel.clone(),
                    consented_at_ms: consent.consented_at_ms,
                })
                .await?;
        }

        let kind = if readmitted {
            "participant_readmitted"
        } else {
            "participant_admitted"
        };
        let detail = json!({
            "identity": participant.identity,
            "role": participant.role,
            "badge_id": participant.badge_id,
            "can_publish": participant.can_publish,
            "can_subscribe": participant.can_subscribe,
        });
        let event = EventRecord {
            room_id: &participant.room_id,
            kind,
            participant_id: Some(&participant.participant_id),
            track_id: None,
        };
        self.record_event(event, detail, now_ms).await;

        let consent = args.consent.as_ref().map(|consent| {
            json!({
                "live_video": consent.live_video,
                "audio": consent.audio,
                "recording": consent.recording,
                "channel": consent.channel,
                "consented_at_unix_ms": consent.consented_at_ms,
            })
        });
        let arguments = json!({
            "room_id": request.room_id,
            "identity": request.identity,
            "display_name": request.display_name,
            "role": args.role.as_str(),
            "badge_id": request.badge_id,
            "token_ttl_seconds": request.token_ttl_seconds,
            "can_publish": request.can_publish,
            "can_subscribe": request.can_subscribe,
            "consent": consent,
            "participant_id": participant.participant_id,
            "readmitted": readmitted,
        });
        self.audit(key_id, "AdmitParticipant", arguments, now_ms).await;

        let response = self.join_credentials(&participant, &args, request.token_ttl_seconds, now_ms)?;
        tracing::info!(room_id = %participant.room_id, participant_id = %participant.participant_id,
            role = args.role.as_str(), readmitted, "participant admitted");
        Ok(pb::AdmitParticipantResponse {
            readmitted,
            ..response
        })
    }

    /// Returns the participant that `request` admits, and whether it was
    /// admitted before. An identity already in the room, not removed and not
    /// left, keeps its participant. Any other admission creates a new one if
    /// the room has a place.
    async fn admit_or_readmit(
        &self,
        request: &pb::AdmitParticipantRequest,
        args: &AdmitArgs,
        now_ms: i64,
    ) -> Result<(ParticipantRow, bool), ControlError> {
        let _admission = self.admissions.lock().await;
        let room = self.open_room_row(&request.room_id).await?;

        let existing = self
            .store
            .participant_by_identity(&room.room_id, &request.identity)
            .await?
            .filter(|participant| participant.left_at_ms.is_none());
        if let Some(participant) = existing {
            if participant.role != args.role.as_str() {
                return Err(ControlError::RoleMismatch {
                    room_id: room.room_id,
                    identity: request.identity.clone(),
                    role: participant.role,
                });
            }
            return Ok((participant, true));
        }

        self.check_room_has_place(&room).await?;
        let participant_id = new_id("pt_");
        self.store
            .admit_participant(NewParticipant {
                participant_id: participant_id.clone(),
                room_id: room.room_id.clone(),
                identity: request.identity.clone(),
                display_name: request.display_name.clone(),
                role: args.role.as_str().to_owned(),
                admitted_at_ms: now_ms,
                badge_id: request.badge_id.clone(),
                can_publish: args.can_publish,
                can_subscribe: args.can_subscribe,
            })
            .await
            .map_err(|error| room_error(error, &request.room_id))?;

        let participant = self
            .store
            .participant_row(&participant_id)
            .await?
            .ok_or_else(|| ControlError::ParticipantNotFound {
                room_id: room.room_id.clone(),
                participant_id: participant_id.clone(),
            })?;
        Ok((participant, false))
    }

    /// Fails with [`ControlError::RoomFull`] when the participants admitted to
    /// `room`, not removed and not left, reach its maximum.
    async fn check_room_has_place(&self, room: &SessionRow) -> Result<(), ControlError> {
        let present = self
            .store
            .list_participants(&room.room_id)
            .await?
            .iter()
            .filter(|participant| {
                participant.left_at_ms.is_none() && participant.removed_at_ms.is_none()
            })
            .count();

        let max_participants = u32::try_from(room.max_participants).unwrap_or(0);
        if present >= max_participants as usize {
            return Err(ControlError::RoomFull {
                room_id: room.room_id.clone(),
                max_participants,
            });
        }
        Ok(())
    }

    /// Mints the join token of `participant` with its stored permissions and
    /// builds the URLs that use it.
    fn join_credentials(
        &self,
        participant: &ParticipantRow,
        args: &AdmitArgs,
        token_ttl_seconds: u32,
        now_ms: i64,
    ) -> Result<pb::AdmitParticipantResponse, ControlError> {
        let ttl_s = match token_ttl_seconds {
            0 => self.config.default_token_ttl.as_secs(),
            requested => u64::from(requested),
        };
        let issued_at_s = u64::try_from(now_ms / 1000).unwrap_or(0);
        let claims = JoinClaims {
            room_id: participant.room_id.clone(),
            participant_id: participant.participant_id.clone(),
            identity: participant.identity.clone(),
            role: args.role,
            iat: issued_at_s,
            exp: issued_at_s + ttl_s,
            publish: Some(participant.can_publish),
            subscribe: Some(participant.can_subscribe),
        };
        let expires_at_unix_ms = i64::try_from(claims.exp.saturating_mul(1000)).unwrap_or(i64::MAX);
        let join_token = self.signer.mint(claims)?;

        let base = &self.config.public_base_url;
        let room_id = &participant.room_id;
        let url_if = |allowed: bool, path: &str| {
            if allowed {
                format!("{base}/{path}/{room_id}")
            } else {
                String::new()
            }
        };
        Ok(pb::AdmitParticipantResponse {
            participant_id: participant.participant_id.clone(),
            whip_url: url_if(participant.can_publish, "whip"),
            whep_url: url_if(participant.can_subscribe, "whep"),
            join_url: format!("{base}/join?token={join_token}"),
            join_token,
            expires_at_unix_ms,
            can_publish: participant.can_publish,
            can_subscribe: participant.can_subscribe,
            readmitted: false,
        })
    }

    pub(super) async fn remove_participant_call(
        &self,
        request: pb::RemoveParticipantRequest,
        key_id: &str,
    ) -> Result<pb::Participant, ControlError> {
        validate::remove_participant(&request)?;
        let now_ms = unix_now_ms();

        self.open_room_row(&request.room_id).await?;
        let participant = self
            .present_participant(&request.room_id, &request.participant_id)
            .await?;

        let removed = self
            .store
            .remove_participant(&participant.participant_id, &request.reason, now_ms)
            .await?;
        self.media
            .remove_participant(&removed.room_id, &removed.participant_id, &request.reason);

        let event = EventRecord {
            room_id: &removed.room_id,
            kind: "participant_removed",
            participant_id: Some(&removed.participant_id),
            track_id: None,
        };
        self.record_event(event, json!({ "reason": request.reason }), now_ms)
            .await;
        let arguments = json!({
            "room_id": request.room_id,
            "participant_id": request.participant_id,
            "reason": request.reason,
        });
        self.audit(key_id, "RemoveParticipant", arguments, now_ms).await;
        tracing::info!(room_id = %removed.room_id, participant_id = %removed.participant_id,
            reason = %request.reason, "participant removed");

        Ok(convert::participant(&removed))
    }

    pub(super) async fn mute_track_call(
        &self,
        request: pb::MuteTrackRequest,
        key_id: &str,
    ) -> Result<pb::Track, ControlError> {
        validate::mute_track(&request)?;
        let now_ms = unix_now_ms();

        self.open_room_row(&request.room_id).await?;
        let track_not_found = || ControlError::TrackNotFound {
            room_id: request.room_id.clone(),
            track_id: request.track_id.clone(),
        };
        let track = self
            .store
            .track_row(&request.track_id)
            .await?
            .filter(|track| track.room_id == request.room_id)
            .ok_or_else(track_not_found)?;

        let updated = self.store.set_track_muted(&track.track_id, request.muted).await?;
        self.media
            .set_track_muted(&updated.room_id, &updated.track_id, request.muted);

        let kind = if request.muted {
            "track_muted"
        } else {
            "track_unmuted"
        };
        let event = EventRecord {
            room_id: &updated.room_id,
            kind,
            participant_id: Some(&updated.participant_id),
            track_id: Some(&updated.track_id),
        };
        self.record_event(event, json!({ "muted": request.muted }), now_ms)
            .await;
        let arguments = json!({
            "room_id": request.room_id,
            "track_id": request.track_id,
            "muted": request.muted,
        });
        self.audit(key_id, "MuteTrack", arguments, now_ms).await;
        tracing::info!(room_id = %updated.room_id, track_id = %updated.track_id,
            muted = request.muted, "track mute changed");

        Ok(convert::track(&updated))
    }

    pub(super) async fn update_permissions_call(
        &self,
        request: pb::UpdateParticipantPermissionsRequest,
        key_id: &str,
    ) -> Result<pb::Participant, ControlError> {
        validate::update_permissions(&request)?;
        let now_ms = unix_now_ms();

        self.open_room_row(&request.room_id).await?;
        let participant = self
            .present_participant(&request.room_id, &request.participant_id)
            .await?;

        let updated = self
            .store
            .update_permissions(
                &participant.participant_id,
                request.can_publish,
                request.can_subscribe,
            )
            .await?;
        self.media.set_permissions(
            &updated.room_id,
            &updated.participant_id,
            request.can_publish,
            request.can_subscribe,
        );

        let event = EventRecord {
            room_id: &updated.room_id,
            kind: "participant_permissions_updated",
            participant_id: Some(&updated.participant_id),
            track_id: None,
        };
        let detail = json!({
            "can_publish": request.can_publish,
            "can_subscribe": request.can_subscribe,
        });
        self.record_event(event, detail, now_ms).await;
        let arguments = json!({
            "room_id": request.room_id,
            "participant_id": request.participant_id,
            "can_publish": request.can_publish,
            "can_subscribe": request.can_subscribe,
        });
        self.audit(key_id, "UpdateParticipantPermissions", arguments, now_ms)
            .await;
        tracing::info!(room_id = %updated.room_id, participant_id = %updated.participant_id,
            can_publish = request.can_publish, can_subscribe = request.can_subscribe,
            "participant permissions updated");

        Ok(convert::participant(&updated))
    }

    pub(super) async fn list_participants_call(
        &self,
        request: pb::ListParticipantsRequest,
        _key_id: &str,
    ) -> Result<pb::ListParticipantsResponse, ControlError> {
        validate::room_id(&request.room_id)?;
        self.room_row(&request.room_id).await?;

        let rows = self.store.list_participants(&request.room_id).await?;
        Ok(pb::ListParticipantsResponse {
            participants: rows.iter().map(convert::participant).collect(),
        })
    }

    /// Returns the participant `participant_id` of `room_id`, failing if it is
    /// in another room or was removed.
    async fn present_participant(
        &self,
        room_id: &str,
        participant_id: &str,
    ) -> Result<ParticipantRow, ControlError> {
        let participant = self
            .store
            .participant_row(participant_id)
            .await?
            .filter(|participant| participant.room_id == room_id)
            .ok_or_else(|| ControlError::ParticipantNotFound {
                room_id: room_id.to_owned(),
                participant_id: participant_id.to_owned(),
            })?;
        if participant.removed_at_ms.is_some() {
            return Err(ControlError::ParticipantRemoved(participant.participant_id));
        }
        Ok(participant)
    }
}
