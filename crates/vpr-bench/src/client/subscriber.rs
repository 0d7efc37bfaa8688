//! WHEP subscriber: receives a room's audio and video like an officer's
//! browser would, and measures what arrives without decoding it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Url;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{PeerConnection, RTCSessionDescription};

use super::error::ClientError;
use super::peer::{build_loopback_peer, create_complete_offer, PeerEvents};
use super::signaling::{delete_session, post_offer};
use super::vp8::{SequenceTracker, Vp8FrameAssembler};

/// How long the subscriber waits for ICE gathering.
const GATHERING_TIMEOUT: Duration = Duration::from_secs(10);

/// Counters of the received video.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VideoReceiveStats {
    /// Codec MIME type of the last video track announced, e.g. "video/VP8".
    pub codec_mime: Option<String>,
    /// RTP packets received.
    pub packets: u64,
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
    /// Frames started but not completed.
    pub incomplete_frames: u64,
    /// Packets whose VP8 payload descriptor could not be parsed.
    pub malformed_packets: u64,
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
    assembler: Vp8FrameAssembler,
    sequence: SequenceTracker,
}

#[derive(Default)]
struct ReceiveState {
    stats: SubscriberStats,
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
}

impl WhepSubscriber {
    /// Opens a peer connection with a receive-only audio and video
    /// transceiver, POSTs the complete offer to `whep_url` with `token` as
    /// bearer, applies the answer and starts reading every remote track.
    pub async fn start(whep_url: &str, token: &str) -> Result<Self, ClientError> {
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

        let state = Arc::new(Mutex::new(ReceiveState::default()));
        let track_router = tokio::spawn(route_tracks(remote_tracks, state.clone()));
        peer.set_remote_description(RTCSessionDescription::answer(session.answer_sdp)?)
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
        })
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
                tokio::spawn(read_video(track, state.clone()));
            }
            RtpCodecKind::Audio => {
                tokio::spawn(read_audio(track, state.clone()));
            }
            _ => {}
        }
    }
}

async fn read_video(track: Arc<dyn TrackRemote>, state: Arc<Mutex<ReceiveState>>) {
    let mut receiver = VideoReceiver::default();
    while let Some(event) = track.poll().await {
        let TrackRemoteEvent::OnRtpPacket(packet) = event else {
            continue;
        };
        let now = Instant::now();
        let header = &packet.header;

        // Counters are added as deltas so that several video tracks sum up.
        let late_before = receiver.sequence.late_or_duplicate();
        let incomplete_before = receiver.assembler.incomplete_frames();
        let malformed_before = receiver.assembler.malformed_packets();
        let skipped = receiver.sequence.record(header.sequence_number);
        let frame = receiver.assembler.push(
            header.sequence_number,
            header.timestamp,
            header.marker,
            &packet.payload,
        );

        let mut state = lock(&state);
        let video = &mut state.stats.video;
        video.packets += 1;
        if skipped > 0 {
            video.missing_packets += u64::from(skipped);
            video.sequence_gaps += 1;
        }
        video.late_packets += receiver.sequence.late_or_duplicate() - late_before;
        video.incomplete_frames += receiver.assembler.incomplete_frames() - incomplete_before;
        video.malformed_packets += receiver.assembler.malformed_packets() - malformed_before;
        if let Some(frame) = frame {
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
