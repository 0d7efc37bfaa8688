//! WHEP subscriber: receives a room's audio and video like an officer's
//! browser would, and measures what arrives without decoding it.
//!
//! Besides counters it keeps a [`FrameLog`] of the last complete video frames
//! (arrival, size, keyframe, simulcast layer) for bitrate, layer and freeze
//! checks.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use reqwest::Url;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{PeerConnection, RTCSessionDescription};

use super::capture_time::{self, extmap_id, DelayHistogram, ABS_CAPTURE_TIME_URI};
use super::error::ClientError;
use super::peer::{build_loopback_peer, create_complete_offer, PeerEvents};
use super::signaling::{delete_session, post_offer};
use super::vp8::{SequenceTracker, VP8_CLOCK_RATE};
use crate::relay::{FrameRecord as CompletedFrame, ReorderingFrameCounter};
use vpr_sfu::quality::InterarrivalJitter;
use crate::relay::{first_udp_candidate, rewrite_answer_candidates, Direction, Impairment, Relay, RelayHandle, RelayStats};

/// How long the subscriber waits for ICE gathering.
const GATHERING_TIMEOUT: Duration = Duration::from_secs(10);

/// Counters of the received video.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VideoReceiveStats {
    /// Codec MIME type of the last video track announced, e.g. "video/VP8".
    pub codec_mime: Option<String>,
    /// RTP packets received.
    pub packets: u64,
    /// RTP payload bytes of the media packets received: first arrivals,
    /// padding-only packets left out.
    pub payload_bytes: u64,
    /// Interarrival jitter of the frames of the last video track: the
    /// RFC 3550 (section 6.4.1) estimate over the first packet of each
    /// frame. A sender that paces a frame's packets apart does not inflate it.
    pub jitter: Duration,
    /// Complete VP8 frames reassembled.
    pub frames: u64,
    /// Of those, keyframes.
    pub keyframes: u64,
    /// Whether the first complete frame was a keyframe; `None` before it.
    pub first_frame_keyframe: Option<bool>,
    /// When the first complete frame arrived.
    pub first_frame_at: Option<Instant>,
    /// Sequence numbers skipped, summed over all gaps.
    pub missing_packets: u64,
    /// Number of sequence number gaps.
    pub sequence_gaps: u64,
    /// Packets that arrived at or below the highest sequence number seen.
    pub late_packets: u64,
    /// Frames given up incomplete: a frame still missing a packet when 128
    /// newer frames have started (about 4 s at 30 fps).
    pub incomplete_frames: u64,
    /// Packets whose VP8 payload descriptor could not be parsed.
    pub malformed_packets: u64,
    /// The last complete frames, oldest first.
    pub frame_log: FrameLog,
    /// End-to-end delay of frames stamped with their capture time
    /// (abs-capture-time), measured when the frame's first packet arrived.
    pub capture_delay: DelayHistogram,
}

/// Gap between complete frames above which the video counts as frozen.
pub const FREEZE_THRESHOLD: Duration = Duration::from_millis(500);

/// One complete video frame as it arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameRecord {
    /// When the frame's last packet arrived.
    pub arrived_at: Instant,
    /// Size of the VP8 frame in bytes, payload descriptors excluded.
    pub bytes: usize,
    /// Whether the frame is a keyframe.
    pub keyframe: bool,
    /// Simulcast layer index from the frame's `VPRL` marker (0 is the
    /// lowest); `None` for frames without the marker, such as the test clip.
    pub layer: Option<u8>,
    /// Frame number within the layer from the marker.
    pub frame_number: Option<u32>,
}

impl FrameRecord {
    /// Builds the record of `frame`, completed at `arrived_at`.
    pub fn new(frame: &CompletedFrame, arrived_at: Instant) -> Self {
        Self {
            arrived_at,
            bytes: frame.bytes,
            keyframe: frame.keyframe,
            layer: frame.layer,
            frame_number: frame.frame_number,
        }
    }
}

/// A period without complete frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freeze {
    /// Arrival of the last frame before the gap, or the start of the range.
    pub from: Instant,
    /// Length of the gap.
    pub duration: Duration,
}

/// The last [`FrameLog::CAPACITY`] complete frames, oldest first.
///
/// Snapshots share the records: cloning the log is O(1), and a push copies
/// them only while a snapshot taken before it is still alive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FrameLog {
    records: Arc<VecDeque<FrameRecord>>,
    evicted: u64,
}

impl FrameLog {
    /// Number of frames kept: 5 minutes at 30 fps. Older ones are evicted.
    pub const CAPACITY: usize = 9_000;

    /// Appends a record, evicting the oldest one when full.
    pub fn push(&mut self, record: FrameRecord) {
        let records = Arc::make_mut(&mut self.records);
        if records.len() == Self::CAPACITY {
            records.pop_front();
            self.evicted += 1;
        }
        records.push_back(record);
    }

    /// Iterates over the records kept, oldest first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &FrameRecord> + '_ {
        self.records.iter()
    }

    /// Number of records kept.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Returns whether no frame has been recorded.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Returns how many records were dropped to keep the log at [`Self::CAPACITY`].
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Returns the most recent frame.
    pub fn last(&self) -> Option<&FrameRecord> {
        self.records.back()
    }

    /// Returns the simulcast layer of the most recent frame, or `None`
    /// before the first frame or when it has no marker.
    pub fn latest_layer(&self) -> Option<u8> {
        self.last().and_then(|record| record.layer)
    }

    /// Iterates over the frames that arrived in `[from, to)`.
    pub fn in_range(&self, from: Instant, to: Instant) -> impl Iterator<Item = &FrameRecord> + '_ {
        self.records
            .iter()
            .filter(move |record| record.arrived_at >= from && record.arrived_at < to)
    }

    /// Computes the received VP8 bitrate in bits per second over `[from, to)`: the bytes
    /// of the frames that arrived in it over its length. Returns 0 for an
    /// empty range.
    pub fn bitrate_bps(&self, from: Instant, to: Instant) -> f64 {
        let seconds = to.saturating_duration_since(from).as_secs_f64();
        if seconds == 0.0 {
            return 0.0;
        }
        let bytes: usize = self.in_range(from, to).map(|record| record.bytes).sum();
        bytes as f64 * 8.0 / seconds
    }

    /// Returns the maximum time in `[from, to]` without a complete frame. The range
    /// edges count as frame boundaries, so a range with no frame returns its
    /// whole length and a stall at its end is included.
    pub fn max_gap(&self, from: Instant, to: Instant) -> Duration {
        self.gaps(from, to)
            .map(|freeze| freeze.duration)
            .max()
            .unwrap_or_default()
    }

    /// Lists the gaps in `[from, to]` longer than [`FREEZE_THRESHOLD`], measured as in
    /// [`Self::max_gap`].
    pub fn freezes(&self, from: Instant, to: Instant) -> Vec<Freeze> {
        self.gaps(from, to)
            .filter(|freeze| freeze.duration > FREEZE_THRESHOLD)
            .collect()
    }

    fn gaps(&self, from: Instant, to: Instant) -> impl Iterator<Item = Freeze> + '_ {
        let arrivals = self
            .records
            .iter()
            .map(|record| record.arrived_at)
            .filter(move |&at| at >= from && at <= to);
        let boundaries = std::iter::once(from)
            .chain(arrivals)
            .chain(std::iter::once(to));
        boundaries
            .clone()
            .zip(boundaries.skip(1))
            .map(|(start, end)| Freeze {
                from: start,
                duration: end.saturating_duration_since(start),
            })
    }
}

/// Counters of the received audio.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AudioReceiveStats {
    /// Codec MIME type of the last audio track announced, e.g. "audio/opus".
    pub codec_mime: Option<String>,
    /// RTP packets received.
    pub packets: u64,
    /// When the first packet arrived.
    pub first_packet_at: Option<Instant>,
    /// Sequence numbers skipped, summed over all gaps.
    pub missing_packets: u64,
    /// Number of sequence number gaps.
    pub sequence_gaps: u64,
}

/// Snapshot of everything a subscriber measured.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscriberStats {
    /// When the peer connection reached `connected`.
    pub connected_at: Option<Instant>,
    /// Remote tracks announced (`on_track`).
    pub tracks: u32,
    /// Video, summed over every video track received.
    pub video: VideoReceiveStats,
    /// Audio, summed over every audio track received.
    pub audio: AudioReceiveStats,
}

/// Per-track state that is not part of the snapshot.
#[derive(Default)]
struct VideoReceiver {
    /// Completes frames in any packet order, so a frame whose missing
    /// packet a retransmission brings counts as received, as a browser's
    /// jitter buffer would show it.
    frames: ReorderingFrameCounter,
    sequence: SequenceTracker,
    /// Frame jitter: the RFC 3550 estimate over each frame's first packet.
    jitter: InterarrivalJitter,
    /// RTP timestamp of the last frame the jitter estimate counted.
    last_frame_timestamp: Option<u32>,
}

#[derive(Default)]
struct ReceiveState {
    stats: SubscriberStats,
}

/// Starts a relay toward the server address in `answer_sdp`, applies
/// `impairment` to both directions, and returns the relay with the SDP
/// rewritten to point at it.
async fn impaired_link(answer_sdp: &str, impairment: Impairment) -> Result<(RelayHandle, String), ClientError> {
    let server = first_udp_candidate(answer_sdp)
        .ok_or_else(|| ClientError::Link("the SDP answer has no UDP candidate".to_owned()))?;
    let (relay, relay_addr) = Relay::start(server).await.map_err(|error| ClientError::Link(error.to_string()))?;
    for direction in Direction::BOTH {
        relay.set(direction, impairment);
    }
    Ok((relay, rewrite_answer_candidates(answer_sdp, relay_addr)))
}

/// A participant receiving a room's media over WHEP.
pub struct WhepSubscriber {
    peer: Arc<dyn PeerConnection>,
    events: Arc<PeerEvents>,
    http: reqwest::Client,
    token: String,
    session_url: Url,
    state: Arc<Mutex<ReceiveState>>,
    track_router: JoinHandle<()>,
    /// The relay that impairs this subscriber's link, when it has one.
    link: Option<RelayHandle>,
}

impl WhepSubscriber {
    /// Opens a peer connection with a receive-only audio and video
    /// transceiver, POSTs the complete offer to `whep_url` with `token` as
    /// bearer, applies the answer and starts reading every remote track.
    pub async fn start(whep_url: &str, token: &str) -> Result<Self, ClientError> {
        Self::start_with_link(whep_url, token, None).await
    }

    /// Starts like [`start`](Self::start); with `link`, the subscriber
    /// reaches the server through a relay of its own that applies `link`
    /// in both directions.
    pub async fn start_with_link(whep_url: &str, token: &str, link: Option<Impairment>) -> Result<Self, ClientError> {
        let (events, remote_tracks) = PeerEvents::with_remote_tracks();
        let peer = build_loopback_peer(events.clone()).await?;
        for kind in [RtpCodecKind::Audio, RtpCodecKind::Video] {
            let init = RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Recvonly,
                ..Default::default()
            };
            peer.add_transceiver_from_kind(kind, Some(init)).await?;
        }

        let offer_sdp = create_complete_offer(&peer, &events, GATHERING_TIMEOUT).await?;
        let http = reqwest::Client::new();
        let session = post_offer(&http, whep_url, token, offer_sdp).await?;
        let capture_time_id = extmap_id(&session.answer_sdp, ABS_CAPTURE_TIME_URI);
        let (answer_sdp, link) = match link {
            Some(impairment) => {
                let (relay, answer_sdp) = impaired_link(&session.answer_sdp, impairment).await?;
                (answer_sdp, Some(relay))
            }
            None => (session.answer_sdp, None),
        };

        let state = Arc::new(Mutex::new(ReceiveState::default()));
        let track_router = tokio::spawn(route_tracks(remote_tracks, state.clone(), capture_time_id));
        peer.set_remote_description(RTCSessionDescription::answer(answer_sdp)?)
            .await?;
        tracing::info!(session_url = %session.session_url, "WHEP session created");

        Ok(Self {
            peer,
            events,
            http,
            token: token.to_owned(),
            session_url: session.session_url,
            state,
            track_router,
            link,
        })
    }

    /// Counters of the relay on this subscriber's link, when it has one.
    pub fn link_stats(&self) -> Option<RelayStats> {
        self.link.as_ref().map(RelayHandle::stats)
    }

    /// Absolute URL of the WHEP session (from the `Location` header).
    pub fn session_url(&self) -> &Url {
        &self.session_url
    }

    /// Waits until ICE and DTLS are done and returns when that happened.
    pub async fn wait_connected(&self, timeout: Duration) -> Result<Instant, ClientError> {
        self.events.wait_connected(timeout).await
    }

    /// Returns a snapshot of what has arrived so far.
    pub fn stats(&self) -> SubscriberStats {
        let mut stats = lock(&self.state).stats.clone();
        stats.connected_at = self.events.connected_at();
        stats
    }

    /// Polls the stats until `done` holds for them or `timeout` passes;
    /// returns the last snapshot either way, with whether `done` held.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        done: impl FnMut(&SubscriberStats) -> bool,
    ) -> (bool, SubscriberStats) {
        super::poll_until(timeout, || self.stats(), done).await
    }

    /// Ends the WHEP session with DELETE and closes the peer connection. The
    /// peer connection is closed even if DELETE fails.
    pub async fn stop(self) -> Result<SubscriberStats, ClientError> {
        let stats = self.stats();
        let deleted = delete_session(&self.http, &self.session_url, &self.token).await;
        if let Err(error) = self.peer.close().await {
            tracing::warn!(%error, "closing the subscriber peer connection failed");
        }
        self.track_router.abort();
        deleted.map(|()| stats)
    }
}

impl WhepSubscriber {
    /// Closes the peer connection without DELETE, as a client that lost its
    /// network would.
    pub async fn abandon(self) -> SubscriberStats {
        let stats = self.stats();
        if let Err(error) = self.peer.close().await {
            tracing::warn!(%error, "closing the subscriber peer connection failed");
        }
        self.track_router.abort();
        stats
    }
}

impl Drop for WhepSubscriber {
    fn drop(&mut self) {
        self.track_router.abort();
    }
}

fn lock(state: &Mutex<ReceiveState>) -> std::sync::MutexGuard<'_, ReceiveState> {
    state.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// Starts one reader task per remote track. The readers end with their
/// tracks; aborting the router does not stop them, closing the peer does.
async fn route_tracks(
    mut remote_tracks: mpsc::UnboundedReceiver<Arc<dyn TrackRemote>>,
    state: Arc<Mutex<ReceiveState>>,
    capture_time_id: Option<u8>,
) {
    while let Some(track) = remote_tracks.recv().await {
        let kind = track.kind().await;
        let ssrc = track.ssrcs().await.first().copied();
        let codec_mime = match ssrc {
            Some(ssrc) => track.codec(ssrc).await.map(|codec| codec.mime_type),
            None => None,
        };
        tracing::info!(%kind, ?ssrc, ?codec_mime, "remote track received");

        {
            let mut state = lock(&state);
            state.stats.tracks += 1;
            match kind {
                RtpCodecKind::Video => state.stats.video.codec_mime = codec_mime,
                RtpCodecKind::Audio => state.stats.audio.codec_mime = codec_mime,
                _ => {}
            }
        }

        match kind {
            RtpCodecKind::Video => {
                tokio::spawn(read_video(track, state.clone(), capture_time_id));
            }
            RtpCodecKind::Audio => {
                tokio::spawn(read_audio(track, state.clone()));
            }
            _ => {}
        }
    }
}

async fn read_video(track: Arc<dyn TrackRemote>, state: Arc<Mutex<ReceiveState>>, capture_time_id: Option<u8>) {
    let mut receiver = VideoReceiver::default();
    while let Some(event) = track.poll().await {
        let TrackRemoteEvent::OnRtpPacket(packet) = event else {
            continue;
        };
        let now = Instant::now();
        let header = &packet.header;

        // Counters are added as deltas so that several video tracks sum up.
        let late_before = receiver.sequence.late_or_duplicate();
        let abandoned_before = receiver.frames.abandoned_frames();
        let malformed_before = receiver.frames.malformed_packets();
        let skipped = receiver.sequence.record(header.sequence_number);
        // A packet at or below the highest sequence number seen is a
        // retransmission or a reordered packet: it may still complete its
        // frame, but it counts neither for the bitrate nor for jitter.
        let repeated = receiver.sequence.late_or_duplicate() > late_before;
        // Padding-only packets (bandwidth probes) carry no VP8 data.
        let padding = packet.payload.is_empty();
        let frame = if padding {
            None
        } else {
            receiver.frames.push(header.sequence_number, header.timestamp, header.marker, &packet.payload)
        };

        let capture_delay = capture_time_id
            .and_then(|id| header.extensions.iter().find(|extension| extension.id == id))
            .and_then(|extension| capture_time::decode(&extension.payload))
            .and_then(|captured| SystemTime::now().duration_since(captured).ok());

        if !(repeated || padding) && receiver.last_frame_timestamp != Some(header.timestamp) {
            receiver.last_frame_timestamp = Some(header.timestamp);
            receiver.jitter.on_packet(now, header.timestamp, VP8_CLOCK_RATE);
        }

        let mut state = lock(&state);
        let video = &mut state.stats.video;
        video.packets += 1;
        if !(repeated || padding) {
            video.payload_bytes += packet.payload.len() as u64;
        }
        video.jitter = receiver.jitter.jitter(VP8_CLOCK_RATE);
        if let (Some(delay), false) = (capture_delay, repeated) {
            video.capture_delay.record(delay);
        }
        if skipped > 0 {
            video.missing_packets += u64::from(skipped);
            video.sequence_gaps += 1;
        }
        video.late_packets += receiver.sequence.late_or_duplicate() - late_before;
        video.incomplete_frames += receiver.frames.abandoned_frames() - abandoned_before;
        video.malformed_packets += receiver.frames.malformed_packets() - malformed_before;
        if let Some(frame) = frame {
            video.frame_log.push(FrameRecord::new(&frame, now));
            video.frames += 1;
            if frame.keyframe {
                video.keyframes += 1;
            }
            if video.first_frame_at.is_none() {
                video.first_frame_at = Some(now);
                video.first_frame_keyframe = Some(frame.keyframe);
            }
        }
    }
    tracing::debug!("video track ended");
}

async fn read_audio(track: Arc<dyn TrackRemote>, state: Arc<Mutex<ReceiveState>>) {
    let mut sequence = SequenceTracker::default();
    while let Some(event) = track.poll().await {
        let TrackRemoteEvent::OnRtpPacket(packet) = event else {
            continue;
        };
        let now = Instant::now();
        let skipped = sequence.record(packet.header.sequence_number);

        let mut state = lock(&state);
        let audio = &mut state.stats.audio;
        audio.packets += 1;
        audio.first_packet_at.get_or_insert(now);
        if skipped > 0 {
            audio.missing_packets += u64::from(skipped);
            audio.sequence_gaps += 1;
        }
    }
    tracing::debug!("audio track ended");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(arrived_at: Instant, bytes: usize, layer: Option<u8>) -> FrameRecord {
        FrameRecord {
            arrived_at,
            bytes,
            keyframe: false,
            layer,
            frame_number: None,
        }
    }

    #[test]
    fn frame_log_bitrate_and_layer() {
        let start = Instant::now();
        let mut log = FrameLog::default();
        for index in 0..10u32 {
            let at = start + Duration::from_millis(100) * index;
            log.push(record(at, 1_000, Some(1)));
        }
        log.push(record(start + Duration::from_millis(1_000), 500, Some(2)));

        let bitrate = log.bitrate_bps(start, start + Duration::from_secs(1));
        assert_eq!(bitrate, 80_000.0);
        assert_eq!(log.latest_layer(), Some(2));
        assert_eq!(log.len(), 11);
        assert_eq!(log.bitrate_bps(start, start), 0.0);
    }

    #[test]
    fn frame_log_gaps_and_freezes() {
        let start = Instant::now();
        let mut log = FrameLog::default();
        for millis in [0, 100, 200, 900, 1_000] {
            log.push(record(start + Duration::from_millis(millis), 100, None));
        }

        let end = start + Duration::from_millis(1_100);
        assert_eq!(log.max_gap(start, end), Duration::from_millis(700));
        let freezes = log.freezes(start, end);
        assert_eq!(freezes.len(), 1);
        assert_eq!(freezes[0].from, start + Duration::from_millis(200));
        assert_eq!(freezes[0].duration, Duration::from_millis(700));

        // A stall at the end of the range counts.
        let late_end = start + Duration::from_millis(2_000);
        assert_eq!(log.max_gap(start, late_end), Duration::from_millis(1_000));
        // A range without frames is one gap.
        let empty_from = start + Duration::from_millis(300);
        let empty_to = start + Duration::from_millis(800);
        assert_eq!(
            log.max_gap(empty_from, empty_to),
            Duration::from_millis(500)
        );
    }

    #[test]
    fn frame_log_is_capped() {
        let start = Instant::now();
        let mut log = FrameLog::default();
        let snapshot = log.clone();
        for index in 0..FrameLog::CAPACITY + 5 {
            log.push(record(start + Duration::from_millis(index as u64), 1, None));
        }
        assert_eq!(log.len(), FrameLog::CAPACITY);
        assert_eq!(log.evicted(), 5);
        assert_eq!(
            log.iter().next().unwrap().arrived_at,
            start + Duration::from_millis(5)
        );
        assert!(snapshot.is_empty());
    }
}
