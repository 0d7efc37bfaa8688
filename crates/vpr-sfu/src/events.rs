//! Events the media plane reports for the session record.

use std::time::{SystemTime, UNIX_EPOCH};

/// Kind of media a track carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrackKind {
    /// Audio.
    Audio,
    /// Video.
    Video,
}

impl TrackKind {
    /// Returns the RTP clock rate of the kind's codecs: 90 kHz for every
    /// video codec the server negotiates, 48 kHz for Opus.
    pub fn clock_rate(self) -> u32 {
        match self {
            TrackKind::Audio => 48_000,
            TrackKind::Video => 90_000,
        }
    }

    /// Returns the lower-case name used in the store and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            TrackKind::Audio => "audio",
            TrackKind::Video => "video",
        }
    }
}

/// A change in a room that the session record keeps. Times are unix
/// milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub enum MediaEvent {
    /// The participant's first peer connection reached the connected state.
    ParticipantJoined {
        /// Room id.
        room_id: String,
        /// Participant id.
        participant_id: String,
        /// When it happened.
        at_ms: i64,
    },
    /// The participant's last peer connection ended.
    ParticipantLeft {
        /// Room id.
        room_id: String,
        /// Participant id.
        participant_id: String,
        /// Why, such as "client ended session" or "connection failed".
        reason: String,
        /// When it happened.
        at_ms: i64,
    },
    /// The room had no connected participant for its empty timeout; the
    /// media plane closed it.
    RoomEmptyTimeout {
        /// Room id.
        room_id: String,
        /// When it happened.
        at_ms: i64,
    },
    /// The loudest participant changed.
    ActiveSpeaker {
        /// Room id.
        room_id: String,
        /// The new active speaker.
        participant_id: String,
        /// When it happened.
        at_ms: i64,
    },
    /// A new connection of the participant replaced an older one in the
    /// same direction; the participant stays in the room.
    SessionReplaced {
        /// Room id.
        room_id: String,
        /// Participant id.
        participant_id: String,
        /// When it happened.
        at_ms: i64,
    },
    /// Quality of a participant's connections over the last interval.
    QualityReport {
        /// Room id.
        room_id: String,
        /// Participant id.
        participant_id: String,
        /// Media bitrate to and from the participant, in kbit/s.
        bitrate_kbps: f64,
        /// Worst loss fraction of its connections, 0 to 1.
        packet_loss: f64,
        /// Worst round-trip time in milliseconds; 0 when unknown.
        rtt_ms: f64,
        /// Worst interarrival jitter of the media from the participant and
        /// of what it reports receiving, in ms; 0 when unknown.
        jitter_ms: f64,
        /// RID of the simulcast layer the participant receives of the video
        /// it watches first; empty when none.
        video_layer: String,
        /// Simulcast layer switches of the participant's down-tracks so far.
        layer_changes: u64,
        /// When it was measured.
        at_ms: i64,
    },
    /// A participant's quality crossed an alert threshold (`raised`) or
    /// came back under the clear thresholds.
    QualityAlert {
        /// Room id.
        room_id: String,
        /// Participant id.
        participant_id: String,
        /// True when raised, false when cleared.
        raised: bool,
        /// Loss fraction of the interval that changed the state.
        packet_loss: f64,
        /// Round-trip time in milliseconds; 0 when unknown.
        rtt_ms: f64,
        /// When it happened.
        at_ms: i64,
    },
    /// The first packet of a published track arrived.
    TrackPublished {
        /// Room id.
        room_id: String,
        /// Publishing participant.
        participant_id: String,
        /// Track id, unique on this server.
        track_id: String,
        /// Audio or video.
        kind: TrackKind,
        /// MIME type of the codec, such as `video/VP8`.
        codec: String,
        /// When it happened.
        at_ms: i64,
    },
    /// A published track ended.
    TrackUnpublished {
        /// Room id.
        room_id: String,
        /// Publishing participant.
        participant_id: String,
        /// Track id.
        track_id: String,
        /// When it happened.
        at_ms: i64,
    },
}

/// Returns the current time in unix milliseconds.
pub fn unix_ms_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
