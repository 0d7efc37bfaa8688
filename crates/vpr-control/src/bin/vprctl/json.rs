//! JSON forms of the `vpr.control.v1` messages that vprctl prints, with enum
//! values by name.

use serde_json::{json, Value};
use vpr_control::pb;

fn state_name(state: i32) -> &'static str {
    pb::RoomState::try_from(state)
        .map(|state| state.as_str_name())
        .unwrap_or("UNKNOWN")
}

fn disposition_name(disposition: i32) -> &'static str {
    pb::Disposition::try_from(disposition)
        .map(|disposition| disposition.as_str_name())
        .unwrap_or("UNKNOWN")
}

fn role_name(role: i32) -> &'static str {
    pb::Role::try_from(role)
        .map(|role| role.as_str_name())
        .unwrap_or("UNKNOWN")
}

pub fn room(room: Option<&pb::Room>) -> Value {
    let Some(room) = room else { return json!({}) };
    json!({
        "room_id": room.room_id,
        "incident_id": room.incident_id,
        "call_type": room.call_type,
        "max_participants": room.max_participants,
        "metadata": room.metadata,
        "state": state_name(room.state),
        "created_at_unix_ms": room.created_at_unix_ms,
        "ended_at_unix_ms": room.ended_at_unix_ms,
        "end_reason": room.end_reason,
        "disposition": disposition_name(room.disposition),
        "notes": room.notes,
        "empty_timeout_seconds": room.empty_timeout_seconds,
    })
}

pub fn participant(participant: &pb::Participant) -> Value {
    json!({
        "participant_id": participant.participant_id,
        "identity": participant.identity,
        "display_name": participant.display_name,
        "role": role_name(participant.role),
        "badge_id": participant.badge_id,
        "can_publish": participant.can_publish,
        "can_subscribe": participant.can_subscribe,
        "admitted_at_unix_ms": participant.admitted_at_unix_ms,
        "joined_at_unix_ms": participant.joined_at_unix_ms,
        "left_at_unix_ms": participant.left_at_unix_ms,
        "leave_reason": participant.leave_reason,
        "removed_at_unix_ms": participant.removed_at_unix_ms,
        "removed_reason": participant.removed_reason,
    })
}

pub fn track(track: &pb::Track) -> Value {
    json!({
        "track_id": track.track_id,
        "participant_id": track.participant_id,
        "kind": track.kind,
        "codec": track.codec,
        "muted": track.muted,
        "published_at_unix_ms": track.published_at_unix_ms,
        "unpublished_at_unix_ms": track.unpublished_at_unix_ms,
    })
}

pub fn event(event: &pb::Event) -> Value {
    json!({
        "seq": event.seq,
        "room_id": event.room_id,
        "kind": event.kind,
        "participant_id": event.participant_id,
        "track_id": event.track_id,
        "detail": event.detail,
        "at_unix_ms": event.at_unix_ms,
    })
}

fn consent(record: &pb::ConsentRecord) -> Value {
    let consent = record.consent.clone().unwrap_or_default();
    json!({
        "participant_id": record.participant_id,
        "live_video": consent.live_video,
        "audio": consent.audio,
        "recording": consent.recording,
        "channel": consent.channel,
        "consented_at_unix_ms": consent.consented_at_unix_ms,
    })
}

fn quality(quality: &pb::ParticipantQuality) -> Value {
    json!({
        "participant_id": quality.participant_id,
        "bitrate_kbps": quality.bitrate_kbps,
        "packet_loss": quality.packet_loss,
        "rtt_ms": quality.rtt_ms,
        "layer_changes": quality.layer_changes,
        "jitter_ms": quality.jitter_ms,
        "video_layer": quality.video_layer,
        "updated_at_unix_ms": quality.updated_at_unix_ms,
    })
}

pub fn session(session: &pb::Session) -> Value {
    json!({
        "room": room(session.room.as_ref()),
        "participants": session.participants.iter().map(participant).collect::<Vec<_>>(),
        "tracks": session.tracks.iter().map(track).collect::<Vec<_>>(),
        "consents": session.consents.iter().map(consent).collect::<Vec<_>>(),
        "quality": session.quality.iter().map(quality).collect::<Vec<_>>(),
        "events": session.events.iter().map(event).collect::<Vec<_>>(),
    })
}

pub fn admitted(response: &pb::AdmitParticipantResponse) -> Value {
    json!({
        "participant_id": response.participant_id,
        "join_url": response.join_url,
        "join_token": response.join_token,
        "whip_url": response.whip_url,
        "whep_url": response.whep_url,
        "expires_at_unix_ms": response.expires_at_unix_ms,
        "can_publish": response.can_publish,
        "can_subscribe": response.can_subscribe,
        "readmitted": response.readmitted,
    })
}
