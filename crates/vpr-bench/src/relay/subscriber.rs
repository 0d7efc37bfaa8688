//! WHEP subscriber that reaches the media plane through a relay. The ICE
//! candidates of the server's SDP answer are rewritten to the relay's
//! address before the subscriber applies it. Video frames are counted in any packet
//! order, so frames completed by NACK retransmissions count.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use reqwest::Url;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{PeerConnection, RTCSessionDescription};

use super::frames::{FrameRecord, ReorderingFrameCounter};
use super::stats::RtpPacketId;
use super::sdp::rewrite_answer_candidates;
use crate::client::{
    build_loopback_peer, create_complete_offer, delete_session, post_offer, ClientError, PeerEvents,
};

/// How long the subscriber waits for ICE gathering.
const GATHERING_TIMEOUT: Duration = Duration::from_secs(10);

/// Counters of the received video, summed over video tracks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelayedVideoStats {
    /// RTP packets received, retransmissions and duplicates included.
    pub packets: u64,
    /// Packets at or below the highest sequence number seen; behind the
    /// relay these are retransmissions.
    pub late_packets: u64,
    /// Complete frames, in any packet order.
    pub frames: u64,
    /// Of those, keyframes.
    pub keyframes: u64,
    /// Of those, frames with at least one late packet.
    pub recovered_frames: u64,
    /// Frames started but not (yet) complete.
    pub incomplete_frames: u64,
}

/// Snapshot of what a [`RelayedSubscriber`] measured.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelayedSubscriberStats {
    /// When the peer connection reached `connected`.
    pub connected_at: Option<Instant>,
    /// Remote tracks announced.
    pub tracks: u32,
    /// Video counters.
    pub video: RelayedVideoStats,
    /// Opus RTP packets received.
    pub audio_packets: u64,
}

#[derive(Default)]
struct ReceiveState {
    stats: RelayedSubscriberStats,
    frame_log: Vec<FrameRecord>,
    /// When each frame of `frame_log` completed, in the same order.
    arrivals: Vec<Instant>,
    /// When each video packet first arrived.
    video_packets: HashMap<RtpPacketId, Instant>,
}

fn lock(state: &Mutex<ReceiveState>) -> MutexGuard<'_, ReceiveState> {
    state.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// A WHEP subscriber whose media goes through a relay.
pub struct RelayedSubscriber {
    peer: Arc<dyn PeerConnection>,
    events: Arc<PeerEvents>,
    http: reqwest::Client,
    token: String,
    session_url: Url,
    state: Arc<Mutex<ReceiveState>>,
    track_router: JoinHandle<()>,
}

impl RelayedSubscriber {
    /// Opens a receive-only audio and video peer connection, POSTs the
    /// complete offer to `whep_url` with `token` as bearer, points the
    /// answer's candidates at `relay` and applies it.
    pub async fn start(
        whep_url: &str,
        token: &str,
        relay: SocketAddr,
    ) -> Result<Self, ClientError> {
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
        let answer_sdp = rewrite_answer_candidates(&session.answer_sdp, relay);

        let state = Arc::new(Mutex::new(ReceiveState::default()));
        let track_router = tokio::spawn(route_tracks(remote_tracks, state.clone()));
        peer.set_remote_description(RTCSessionDescription::answer(answer_sdp)?)
            .await?;
        tracing::info!(session_url = %session.session_url, %relay, "WHEP session through relay created");

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

    /// Absolute URL of the WHEP session.
    pub fn session_url(&self) -> &Url {
        &self.session_url
    }

    /// Waits until ICE and DTLS are done and returns when that happened.
    pub async fn wait_connected(&self, timeout: Duration) -> Result<Instant, ClientError> {
        self.events.wait_connected(timeout).await
    }

    /// Returns a snapshot of what has arrived so far.
    pub fn stats(&self) -> RelayedSubscriberStats {
        let mut stats = lock(&self.state).stats.clone();
        stats.connected_at = self.events.connected_at();
        stats
    }

    /// Returns every complete video frame so far, in completion order.
    pub fn frame_log(&self) -> Vec<FrameRecord> {
        lock(&self.state).frame_log.clone()
    }

    /// Complete frames with the instant each one completed, oldest first.
    pub fn timed_frame_log(&self) -> Vec<(Instant, FrameRecord)> {
        let state = lock(&self.state);
        state.arrivals.iter().copied().zip(state.frame_log.iter().copied()).collect()
    }

    /// When the video packet `id` first arrived, if it did.
    pub fn video_packet_arrival(&self, id: RtpPacketId) -> Option<Instant> {
        lock(&self.state).video_packets.get(&id).copied()
    }

    /// SSRCs that video arrived on.
    pub fn video_ssrcs(&self) -> Vec<u32> {
        let mut ssrcs: Vec<u32> = lock(&self.state).video_packets.keys().map(|id| id.ssrc).collect();
        ssrcs.sort_unstable();
        ssrcs.dedup();
        ssrcs
    }

    /// Polls the stats every 10 ms until `done` returns true or `timeout`
    /// passes. Returns the last snapshot and whether `done` returned true.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        done: impl FnMut(&RelayedSubscriberStats) -> bool,
    ) -> (bool, RelayedSubscriberStats) {
        crate::client::poll_until(timeout, || self.stats(), done).await
    }

    /// Ends the WHEP session with DELETE and closes the peer connection,
    /// which is closed even if DELETE fails.
    pub async fn stop(self) -> Result<RelayedSubscriberStats, ClientError> {
        let stats = self.stats();
        let deleted = delete_session(&self.http, &self.session_url, &self.token).await;
        if let Err(error) = self.peer.close().await {
            tracing::warn!(%error, "closing the relayed subscriber peer connection failed");
        }
        self.track_router.abort();
        deleted.map(|()| stats)
    }
}

impl Drop for RelayedSubscriber {
    fn drop(&mut self) {
        self.track_router.abort();
    }
}

/// Starts one reader task per remote track; the readers end with their
/// tracks.
async fn route_tracks(
    mut remote_tracks: mpsc::UnboundedReceiver<Arc<dyn TrackRemote>>,
    state: Arc<Mutex<ReceiveState>>,
) {
    while let Some(track) = remote_tracks.recv().await {
        let kind = track.kind().await;
        tracing::info!(%kind, "remote track received through relay");
        lock(&state).stats.tracks += 1;
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
    let mut counter = ReorderingFrameCounter::new();
    while let Some(event) = track.poll().await {
        let TrackRemoteEvent::OnRtpPacket(packet) = event else {
            continue;
        };
        let header = &packet.header;

        // Counters are added as deltas so that several video tracks sum up.
        let late_before = counter.late_packets();
        let incomplete_before = counter.incomplete_frames();
        let frame = counter.push(
            header.sequence_number,
            header.timestamp,
            header.marker,
            &packet.payload,
        );

        let mut state = lock(&state);
        let id = RtpPacketId {
            ssrc: header.ssrc,
            payload_type: header.payload_type,
            sequence_number: header.sequence_number,
            padding: header.padding,
        };
        state.video_packets.entry(id).or_insert_with(Instant::now);
        let video = &mut state.stats.video;
        video.packets += 1;
        video.late_packets += counter.late_packets() - late_before;
        // Pending frames may complete later, so this counter also goes down.
        video.incomplete_frames =
            video.incomplete_frames + counter.incomplete_frames() - incomplete_before;
        if let Some(frame) = frame {
            video.frames += 1;
            video.keyframes += u64::from(frame.keyframe);
            video.recovered_frames += u64::from(frame.recovered);
            state.frame_log.push(frame);
            state.arrivals.push(Instant::now());
        }
    }
    tracing::debug!("relayed video track ended");
}

async fn read_audio(track: Arc<dyn TrackRemote>, state: Arc<Mutex<ReceiveState>>) {
    while let Some(event) = track.poll().await {
        if let TrackRemoteEvent::OnRtpPacket(_) = event {
            lock(&state).stats.audio_packets += 1;
        }
    }
    tracing::debug!("relayed audio track ended");
}
