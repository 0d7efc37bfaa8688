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

/// The full record of one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub session: SessionRow,
    /// Ordered by admission time, then participant id.
    pub participants: Vec<ParticipantRow>,
    /// Ordered by publication time, then track id.
    pub tracks: Vec<TrackRow>,
    /// Ordered by seq.
    pub events: Vec<EventRow>,
}
