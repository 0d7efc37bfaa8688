//! Plain row types that the store reads and writes.
//!
//! Times are unix milliseconds (UTC). Roles, track kinds and session states are
//! strings because callers validate them. The schema checks them as well.

/// Session state while participants may still be admitted.
pub const STATE_OPEN: &str = "open";
/// Session state after the call ended.
pub const STATE_CLOSED: &str = "closed";

/// One room (a call), as stored in `sessions`.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SessionRow {
    pub room_id: String,
    pub incident_id: String,
    pub request_id: String,
    pub call_type: String,
    pub max_participants: i64,
    pub metadata: String,
    /// [`STATE_OPEN`] or [`STATE_CLOSED`].
    pub state: String,
    pub created_at_ms: i64,
    pub ended_at_ms: Option<i64>,
    pub end_reason: Option<String>,
    pub disposition: Option<String>,
    pub notes: Option<String>,
}

impl SessionRow {
    /// Returns true while the session is open.
    pub fn is_open(&self) -> bool {
        self.state == STATE_OPEN
    }
}

/// Input to [`crate::Store::create_session`]. The session starts open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSession {
    /// Room id chosen by the caller, unique across all sessions.
    pub room_id: String,
    pub incident_id: String,
    /// Caller's idempotency key within the incident.
    pub request_id: String,
    pub call_type: String,
    pub max_participants: i64,
    pub metadata: String,
    pub created_at_ms: i64,
}

/// One participant admitted to a room, as stored in `participants`.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ParticipantRow {
    pub participant_id: String,
    pub room_id: String,
    pub identity: String,
    pub display_name: String,
    /// "resident", "officer" or "observer".
    pub role: String,
    pub admitted_at_ms: i64,
    pub joined_at_ms: Option<i64>,
    pub left_at_ms: Option<i64>,
    pub leave_reason: Option<String>,
    /// Officer badge number, or empty for other roles.
    pub badge_id: String,
    pub can_publish: bool,
    pub can_subscribe: bool,
    /// Set when the control plane removed the participant.
    pub removed_at_ms: Option<i64>,
    pub removed_reason: Option<String>,
}

/// Input to [`crate::Store::admit_participant`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewParticipant {
    pub participant_id: String,
    pub room_id: String,
    pub identity: String,
    pub display_name: String,
    /// "resident", "officer" or "observer".
    pub role: String,
    pub admitted_at_ms: i64,
    /// Officer badge number, or empty for other roles.
    pub badge_id: String,
    pub can_publish: bool,
    pub can_subscribe: bool,
}

/// One published track, as stored in `tracks`.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct TrackRow {
    pub track_id: String,
    pub room_id: String,
    pub participant_id: String,
    /// "audio" or "video".
    pub kind: String,
    /// Codec mime type, such as "video/VP8" or "audio/opus".
    pub codec: String,
    pub published_at_ms: i64,
    pub unpublished_at_ms: Option<i64>,
    /// True while the control plane keeps the track muted.
    pub muted: bool,
}

/// Input to [`crate::Store::track_published`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTrack {
    pub track_id: String,
    pub room_id: String,
    pub participant_id: String,
    /// "audio" or "video".
    pub kind: String,
    /// Codec mime type, such as "video/VP8" or "audio/opus".
    pub codec: String,
    pub published_at_ms: i64,
}

/// One entry of the append-only event log, as stored in `events`.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct EventRow {
    /// Sequence number, strictly increasing across all rooms.
    pub seq: i64,
    pub room_id: String,
    pub kind: String,
    pub participant_id: Option<String>,
    pub track_id: Option<String>,
    /// JSON text, or empty.
    pub detail: String,
    pub at_ms: i64,
}

/// Input to [`crate::Store::append_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    pub room_id: String,
    pub kind: String,
    pub participant_id: Option<String>,
    pub track_id: Option<String>,
    /// JSON text, or empty.
    pub detail: String,
    pub at_ms: i64,
}

/// A participant's consent to the parts of a call, as stored in `consents`.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ConsentRow {
    pub participant_id: String,
    pub room_id: String,
    pub live_video: bool,
    pub audio: bool,
    pub recording: bool,
    /// Channel through which consent was given, such as "sms-link" or "verbal".
    pub channel: String,
    pub consented_at_ms: i64,
}

/// Input to [`crate::Store::record_consent`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewConsent {
    pub participant_id: String,
    /// Room of the participant. Consent for a participant of another room is rejected.
    pub room_id: String,
    pub live_video: bool,
    pub audio: bool,
    pub recording: bool,
    /// Channel through which consent was given, such as "sms-link" or "verbal".
    pub channel: String,
    pub consented_at_ms: i64,
}

/// One entry of the hash-chained audit log, as stored in `audit_log`.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AuditRow {
    /// 1 for the first entry, then one more than the entry before.
    pub seq: i64,
    pub at_ms: i64,
    /// Id of the API key that made the call.
    pub key_id: String,
    /// RPC name, such as "CreateRoom".
    pub action: String,
    /// Request arguments as JSON text.
    pub arguments: String,
    /// Hex SHA-256 hash of the entry before, or 64 zeros for the first entry.
    pub prev_hash: String,
    /// Hex SHA-256 hash of this entry, see [`crate::audit_entry_hash`].
    pub hash: String,
}

/// Input to [`crate::Store::append_audit`]. The store assigns seq and the hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAuditEntry {
    pub at_ms: i64,
    /// Id of the API key that made the call.
    pub key_id: String,
    /// RPC name, such as "CreateRoom".
    pub action: String,
    /// Request arguments as JSON text.
    pub arguments: String,
}

/// Media quality summary of one participant, as stored in `quality`.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct QualityRow {
    pub participant_id: String,
    pub bitrate_kbps: f64,
    /// Fraction of packets lost, from 0.0 to 1.0.
    pub packet_loss: f64,
    pub rtt_ms: f64,
    /// Number of simulcast layer switches.
    pub layer_changes: i64,
    pub updated_at_ms: i64,
    /// Worst interarrival jitter to or from the participant, in ms.
    pub jitter_ms: f64,
    /// RID of the simulcast layer the participant receives of the video it
    /// watches first (the resident's); empty when none.
    pub video_layer: String,
}

/// Filter of [`crate::Store::list_sessions`]. Each field that is `Some` must
/// match, and the default matches every session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionFilter {
    /// [`STATE_OPEN`] or [`STATE_CLOSED`].
    pub state: Option<String>,
    pub incident_id: Option<String>,
    pub disposition: Option<String>,
    /// Inclusive lower bound of `created_at_ms`.
    pub created_from_ms: Option<i64>,
    /// Exclusive upper bound of `created_at_ms`.
    pub created_to_ms: Option<i64>,
}

/// The full record of one session.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRecord {
    pub session: SessionRow,
    /// Ordered by admission time, then participant id.
    pub participants: Vec<ParticipantRow>,
    /// Ordered by publication time, then track id.
    pub tracks: Vec<TrackRow>,
    /// Ordered by seq.
    pub events: Vec<EventRow>,
    /// Ordered by participant id.
    pub consents: Vec<ConsentRow>,
    /// Ordered by participant id.
    pub quality: Vec<QualityRow>,
    /// Ordered by time taken.
    pub snapshots: Vec<SnapshotRow>,
}

/// A still frame saved from a call, as stored in `snapshots`.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SnapshotRow {
    pub snapshot_id: String,
    pub room_id: String,
    /// Participant who took it.
    pub participant_id: String,
    /// Lowercase hex SHA-256 of the stored file.
    pub sha256: String,
    pub content_type: String,
    pub size_bytes: i64,
    /// Where the file is stored on the server.
    pub path: String,
    pub taken_at_ms: i64,
}
