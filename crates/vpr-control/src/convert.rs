//! Conversions between store rows and `vpr.control.v1` messages, and between
//! proto enums and the strings the store keeps.

use vpr_store::{
    AuditRow, ConsentRow, EventRow, ParticipantRow, QualityRow, SessionRecord, SessionRow,
    TrackRow, STATE_CLOSED, STATE_OPEN,
};

use crate::pb;
use crate::room_settings;
use crate::token::Role;

/// Returns the domain role for a proto role, or `None` for ROLE_UNSPECIFIED.
pub fn role_from_pb(role: pb::Role) -> Option<Role> {
    match role {
        pb::Role::Unspecified => None,
        pb::Role::Resident => Some(Role::Resident),
        pb::Role::Officer => Some(Role::Officer),
        pb::Role::Observer => Some(Role::Observer),
        pb::Role::Dispatcher => Some(Role::Dispatcher),
    }
}

/// Returns the proto role for a domain role.
pub fn role_to_pb(role: Role) -> pb::Role {
    match role {
        Role::Resident => pb::Role::Resident,
        Role::Officer => pb::Role::Officer,
        Role::Observer => pb::Role::Observer,
        Role::Dispatcher => pb::Role::Dispatcher,
    }
}

/// Returns the stored name of a disposition ("resolved_virtually", ...), or
/// `None` for DISPOSITION_UNSPECIFIED.
pub fn disposition_to_str(disposition: pb::Disposition) -> Option<&'static str> {
    match disposition {
        pb::Disposition::Unspecified => None,
        pb::Disposition::ResolvedVirtually => Some("resolved_virtually"),
        pb::Disposition::PatrolDispatched => Some("patrol_dispatched"),
        pb::Disposition::ForensicUnitDispatched => Some("forensic_unit_dispatched"),
        pb::Disposition::Referred => Some("referred"),
        pb::Disposition::Abandoned => Some("abandoned"),
    }
}

/// Returns the proto disposition for a stored name; unknown names map to
/// DISPOSITION_UNSPECIFIED.
pub fn disposition_from_str(name: &str) -> pb::Disposition {
    match name {
        "resolved_virtually" => pb::Disposition::ResolvedVirtually,
        "patrol_dispatched" => pb::Disposition::PatrolDispatched,
        "forensic_unit_dispatched" => pb::Disposition::ForensicUnitDispatched,
        "referred" => pb::Disposition::Referred,
        "abandoned" => pb::Disposition::Abandoned,
        _ => pb::Disposition::Unspecified,
    }
}

fn room_state(state: &str) -> pb::RoomState {
    match state {
        STATE_OPEN => pb::RoomState::Open,
        STATE_CLOSED => pb::RoomState::Closed,
        _ => pb::RoomState::Unspecified,
    }
}

/// Builds the proto room from a session row.
pub fn room(row: &SessionRow) -> pb::Room {
    let disposition = row
        .disposition
        .as_deref()
        .map(disposition_from_str)
        .unwrap_or_default();
    let (metadata, settings) = room_settings::decode(&row.metadata);
    pb::Room {
        room_id: row.room_id.clone(),
        incident_id: row.incident_id.clone(),
        call_type: row.call_type.clone(),
        max_participants: u32::try_from(row.max_participants).unwrap_or(0),
        metadata,
        state: room_state(&row.state) as i32,
        created_at_unix_ms: row.created_at_ms,
        ended_at_unix_ms: row.ended_at_ms.unwrap_or(0),
        end_reason: row.end_reason.clone().unwrap_or_default(),
        disposition: disposition as i32,
        notes: row.notes.clone().unwrap_or_default(),
        empty_timeout_seconds: settings.empty_timeout_s,
    }
}

/// Builds the proto participant from a participant row.
pub fn participant(row: &ParticipantRow) -> pb::Participant {
    let role = row
        .role
        .parse::<Role>()
        .map(role_to_pb)
        .unwrap_or(pb::Role::Unspecified);
    pb::Participant {
        participant_id: row.participant_id.clone(),
        identity: row.identity.clone(),
        display_name: row.display_name.clone(),
        role: role as i32,
        admitted_at_unix_ms: row.admitted_at_ms,
        joined_at_unix_ms: row.joined_at_ms.unwrap_or(0),
        left_at_unix_ms: row.left_at_ms.unwrap_or(0),
        leave_reason: row.leave_reason.clone().unwrap_or_default(),
        badge_id: row.badge_id.clone(),
        can_publish: row.can_publish,
        can_subscribe: row.can_subscribe,
        removed_at_unix_ms: row.removed_at_ms.unwrap_or(0),
        removed_reason: row.removed_reason.clone().unwrap_or_default(),
    }
}

/// Builds the proto track from a track row.
pub fn track(row: &TrackRow) -> pb::Track {
    pb::Track {
        track_id: row.track_id.clone(),
        participant_id: row.participant_id.clone(),
        kind: row.kind.clone(),
        codec: row.codec.clone(),
        published_at_unix_ms: row.published_at_ms,
        unpublished_at_unix_ms: row.unpublished_at_ms.unwrap_or(0),
        muted: row.muted,
    }
}

/// Builds the proto event from an event row.
pub fn event(row: &EventRow) -> pb::Event {
    pb::Event {
        seq: row.seq,
        kind: row.kind.clone(),
        participant_id: row.participant_id.clone().unwrap_or_default(),
        track_id: row.track_id.clone().unwrap_or_default(),
        detail: row.detail.clone(),
        at_unix_ms: row.at_ms,
        room_id: row.room_id.clone(),
    }
}

fn consent(row: &ConsentRow) -> pb::ConsentRecord {
    pb::ConsentRecord {
        participant_id: row.participant_id.clone(),
        consent: Some(pb::Consent {
            live_video: row.live_video,
            audio: row.audio,
            recording: row.recording,
            channel: row.channel.clone(),
            consented_at_unix_ms: row.consented_at_ms,
        }),
    }
}

fn quality(row: &QualityRow) -> pb::ParticipantQuality {
    pb::ParticipantQuality {
        participant_id: row.participant_id.clone(),
        bitrate_kbps: row.bitrate_kbps,
        packet_loss: row.packet_loss,
        rtt_ms: row.rtt_ms,
        layer_changes: row.layer_changes,
        updated_at_unix_ms: row.updated_at_ms,
        jitter_ms: row.jitter_ms,
        video_layer: row.video_layer.clone(),
    }
}

/// Builds the proto audit entry from an audit row.
pub fn audit_entry(row: &AuditRow) -> pb::AuditEntry {
    pb::AuditEntry {
        seq: row.seq,
        at_unix_ms: row.at_ms,
        key_id: row.key_id.clone(),
        action: row.action.clone(),
        arguments: row.arguments.clone(),
        previous_hash: row.prev_hash.clone(),
        hash: row.hash.clone(),
    }
}

/// Builds the store's audit row from a proto audit entry, for checking the
/// chain on the client side.
pub fn audit_row(entry: &pb::AuditEntry) -> AuditRow {
    AuditRow {
        seq: entry.seq,
        at_ms: entry.at_unix_ms,
        key_id: entry.key_id.clone(),
        action: entry.action.clone(),
        arguments: entry.arguments.clone(),
        prev_hash: entry.previous_hash.clone(),
        hash: entry.hash.clone(),
    }
}

/// Builds the proto session from a full session record.
pub fn session(record: &SessionRecord) -> pb::Session {
    pb::Session {
        room: Some(room(&record.session)),
        participants: record.participants.iter().map(participant).collect(),
        tracks: record.tracks.iter().map(track).collect(),
        events: record.events.iter().map(event).collect(),
        consents: record.consents.iter().map(consent).collect(),
        quality: record.quality.iter().map(quality).collect(),
        snapshots: record.snapshots.iter().map(snapshot).collect(),
    }
}

/// Converts a stored snapshot; the server-side file path stays private.
pub fn snapshot(row: &vpr_store::SnapshotRow) -> pb::Snapshot {
    pb::Snapshot {
        snapshot_id: row.snapshot_id.clone(),
        participant_id: row.participant_id.clone(),
        sha256: row.sha256.clone(),
        content_type: row.content_type.clone(),
        size_bytes: row.size_bytes,
        taken_at_unix_ms: row.taken_at_ms,
    }
}
