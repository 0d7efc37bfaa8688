//! Rooms, publications and subscriber slots as the media worker keeps them.
//!
//! A publication is one track a participant sends. A slot is one sender a
//! subscribing session offered (one per m-section). It is bound to at most
//! one publication of its kind at a time and owns the down-track, so that
//! numbering stays continuous when the slot moves to another publication.

use std::collections::HashMap;

use rtc::rtp_transceiver::{RTCRtpReceiverId, RTCRtpSenderId};

use crate::downtrack::{DownTrack, LegParameters};
use crate::events::TrackKind;
use crate::keyframe::VideoCodec;
use crate::layer_pause::LayerPause;
use crate::simulcast::{LayerIndex, LayerSelector, Layers};
use crate::quality::AlertState;
use crate::speaker::SpeakerDetector;
use crate::throttle::KeyframeRequests;
use crate::upgrade_hold::UpgradeHold;
use crate::quality::InterarrivalJitter;

/// Key of a peer connection inside the worker.
pub(crate) type PeerKey = u64;
/// Key of a publication inside the worker.
pub(crate) type PublicationKey = u64;
/// Key of a room inside the worker.
pub(crate) type RoomKey = u64;

/// A subscriber's slot that receives one publication.
pub(crate) struct Binding {
    pub peer: PeerKey,
    pub slot: usize,
}

/// One published track.
pub(crate) struct Publication {
    pub track_id: String,
    pub publisher: PeerKey,
    pub participant_id: String,
    pub is_resident: bool,
    pub receiver_id: RTCRtpReceiverId,
    pub kind: TrackKind,
    /// One layer per encoding; a single one without simulcast.
    pub layers: Layers,
    /// Keyframe requests sent upstream, throttled per layer.
    pub keyframe_requests: KeyframeRequests,
    /// Interarrival jitter of the media from the publisher, per layer.
    pub jitter: Vec<InterarrivalJitter>,
    /// MIME type, known once the first packet arrived.
    pub codec: Option<String>,
    /// Video codec, for keyframe detection.
    pub video_codec: Option<VideoCodec>,
    pub leg: LegParameters,
    pub bindings: Vec<Binding>,
    /// Set by the control plane: nothing is forwarded while muted.
    pub muted: bool,
    /// Publisher's id of the RFC 6464 audio-level extension, if negotiated.
    pub audio_level_id: Option<u8>,
    /// The publisher's mid of the track's m-section.
    pub mid: Option<String>,
    /// Pause state of the simulcast layers at the publisher.
    pub pause: LayerPause,
}

/// One sender of a subscribing session.
pub(crate) struct Slot {
    pub kind: TrackKind,
    pub sender_id: RTCRtpSenderId,
    pub local_track_id: String,
    pub leg: LegParameters,
    pub bound: Option<PublicationKey>,
    pub track: DownTrack,
    /// Choice of the bound publication's layer to forward.
    pub selector: LayerSelector,
    /// When a keyframe of the selector's target was last requested.
    pub switch_requested_at: Option<std::time::Instant>,
    /// Layers held back after congestion moved the down-track down.
    pub upgrade_hold: UpgradeHold,
    /// The sender was removed from the peer connection (renegotiated
    /// sessions); the slot stays as a tombstone so indices stay valid.
    pub removed: bool,
}

impl Publication {
    /// Opens a layer (or updates its SSRC) and gives it a keyframe throttle.
    pub fn open_layer(&mut self, rid: &str, ssrc: u32) -> LayerIndex {
        let index = self.layers.open(rid, ssrc);
        self.keyframe_requests.cover_layers(self.layers.len());
        self.jitter.resize_with(self.layers.len(), InterarrivalJitter::default);
        index
    }

    /// Returns the worst interarrival jitter of the track's layers.
    pub fn worst_jitter(&self) -> Option<std::time::Duration> {
        self.jitter.iter().map(|jitter| jitter.jitter(self.kind.clock_rate())).max()
    }

    /// SSRC to send a keyframe request for `layer` to now, if its throttle
    /// allows one; otherwise the request is deferred by the throttle.
    pub fn keyframe_request(&mut self, layer: LayerIndex, now: std::time::Instant) -> Option<u32> {
        let ssrc = self.layers.get(layer)?.ssrc;
        self.keyframe_requests.request(layer, now).then_some(ssrc)
    }

    /// Returns the layer a down-track starts on before the allocator has
    /// run: the lowest active one, or the first opened.
    pub fn starting_layer(&self, now: std::time::Instant) -> Option<LayerIndex> {
        self.layers.ranked(now).first().map(|&(index, _)| index).or((!self.layers.is_empty()).then_some(0))
    }
}

/// How many sessions a participant has and whether it counted as joined.
#[derive(Default)]
pub(crate) struct Presence {
    pub sessions: usize,
    pub joined: bool,
}

/// A room on this worker.
pub(crate) struct Room {
    pub room_id: String,
    pub peers: Vec<PeerKey>,
    pub publications: HashMap<PublicationKey, Publication>,
    pub presence: HashMap<String, Presence>,
    /// Quality alert state per participant.
    pub alerts: HashMap<String, AlertState>,
    /// How long the room may stay without a connected participant.
    pub empty_timeout: Option<std::time::Duration>,
    /// Since when no participant has been connected.
    pub empty_since: Option<std::time::Instant>,
    pub speakers: SpeakerDetector,
}

impl Room {
    pub fn new(room_id: String, empty_timeout: Option<std::time::Duration>) -> Self {
        Self {
            room_id,
            peers: Vec::new(),
            publications: HashMap::new(),
            presence: HashMap::new(),
            alerts: HashMap::new(),
            empty_timeout,
            empty_since: Some(std::time::Instant::now()),
            speakers: SpeakerDetector::default(),
        }
    }

    /// Picks the publication a free slot of `kind` should receive: the
    /// resident's first, then any other participant's, never the
    /// subscriber's own.
    pub fn best_publication(&self, kind: TrackKind, subscriber_participant: &str) -> Option<PublicationKey> {
        self.publications
            .iter()
            .filter(|(_, p)| p.kind == kind && p.codec.is_some() && p.participant_id != subscriber_participant)
            .min_by_key(|(key, p)| (!p.is_resident, **key))
            .map(|(key, _)| *key)
    }
}
