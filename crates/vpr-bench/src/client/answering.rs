//! Subscriber for servers that send the SDP offer, such as Janus VideoRoom.
//! It applies the server's offer, creates an answer with every ICE
//! candidate in the SDP, and measures the received video and audio with the
//! same counters as the WHEP subscriber, without decoding.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{PeerConnection, RTCSessionDescription};

use super::error::ClientError;
use super::peer::{build_loopback_peer, PeerEvents};
use super::subscriber::{FrameRecord, SubscriberStats};
use super::vp8::SequenceTracker;
use crate::relay::ReorderingFrameCounter;

/// How long the subscriber waits for ICE gathering.
const GATHERING_TIMEOUT: Duration = Duration::from_secs(10);

/// A subscriber whose SDP answer replied to the server's offer.
pub struct AnsweringSubscriber {
    peer: Arc<dyn PeerConnection>,
    events: Arc<PeerEvents>,
    stats: Arc<Mutex<SubscriberStats>>,
    track_router: JoinHandle<()>,
}

impl AnsweringSubscriber {
    /// Applies `offer_sdp`, creates the answer and waits for ICE gathering.
    /// Returns the subscriber and the complete answer SDP, which the caller
    /// sends to the server.
    pub async fn answer(offer_sdp: String) -> Result<(Self, String), ClientError> {
        let (events, remote_tracks) = PeerEvents::with_remote_tracks();
        let peer = build_loopback_peer(events.clone()).await?;
        let stats = Arc::new(Mutex::new(SubscriberStats::default()));
        let track_router = tokio::spawn(route_tracks(remote_tracks, stats.clone()));

        peer.set_remote_description(RTCSessionDescription::offer(offer_sdp)?)
            .await?;
        let answer = peer.create_answer(None).await?;
        peer.set_local_description(answer).await?;
        events.wait_gathering_complete(GATHERING_TIMEOUT).await?;
        let local = peer
            .local_description()
            .await
            .ok_or(ClientError::NoLocalDescription)?;
        let subscriber = Self {
            peer,
            events,
            stats,
            track_router,
        };
        Ok((subscriber, local.sdp))
    }

    /// Waits until ICE and DTLS are done and returns when that happened.
    pub async fn wait_connected(&self, timeout: Duration) -> Result<Instant, ClientError> {
        self.events.wait_connected(timeout).await
    }

    /// Returns a snapshot of what has arrived so far.
    pub fn stats(&self) -> SubscriberStats {
        let mut stats = lock(&self.stats).clone();
        stats.connected_at = self.events.connected_at();
        stats
    }

    /// Closes the peer connection; the caller ends the server's session.
    pub async fn stop(self) -> SubscriberStats {
        let stats = self.stats();
        if let Err(error) = self.peer.close().await {
            tracing::warn!(%error, "closing the subscriber peer connection failed");
        }
        self.track_router.abort();
        stats
    }
}

impl Drop for AnsweringSubscriber {
    fn drop(&mut self) {
        self.track_router.abort();
    }
}

fn lock(stats: &Mutex<SubscriberStats>) -> std::sync::MutexGuard<'_, SubscriberStats> {
    stats.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// Starts one reader task per remote track; they end with their tracks.
async fn route_tracks(
    mut remote_tracks: mpsc::UnboundedReceiver<Arc<dyn TrackRemote>>,
    stats: Arc<Mutex<SubscriberStats>>,
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
            let mut stats = lock(&stats);
            stats.tracks += 1;
            match kind {
                RtpCodecKind::Video => stats.video.codec_mime = codec_mime,
                RtpCodecKind::Audio => stats.audio.codec_mime = codec_mime,
                _ => {}
            }
        }
        match kind {
            RtpCodecKind::Video => {
                tokio::spawn(read_video(track, stats.clone()));
            }
            RtpCodecKind::Audio => {
                tokio::spawn(read_audio(track, stats.clone()));
            }
            _ => {}
        }
    }
}

async fn read_video(track: Arc<dyn TrackRemote>, stats: Arc<Mutex<SubscriberStats>>) {
    let mut frames = ReorderingFrameCounter::new();
    let mut sequence = SequenceTracker::default();
    while let Some(event) = track.poll().await {
        let TrackRemoteEvent::OnRtpPacket(packet) = event else {
            continue;
        };
        let now = Instant::now();
        let header = &packet.header;
        let late_before = sequence.late_or_duplicate();
        let abandoned_before = frames.abandoned_frames();
        let malformed_before = frames.malformed_packets();
        let skipped = sequence.record(header.sequence_number);
        let frame = if packet.payload.is_empty() {
            None
        } else {
            frames.push(header.sequence_number, header.timestamp, header.marker, &packet.payload)
        };

        let mut stats = lock(&stats);
        let video = &mut stats.video;
        video.packets += 1;
        if skipped > 0 {
            video.missing_packets += u64::from(skipped);
            video.sequence_gaps += 1;
        }
        video.late_packets += sequence.late_or_duplicate() - late_before;
        video.incomplete_frames += frames.abandoned_frames() - abandoned_before;
        video.malformed_packets += frames.malformed_packets() - malformed_before;
        if let Some(frame) = frame {
            video.frames += 1;
            if frame.keyframe {
                video.keyframes += 1;
            }
            video.frame_log.push(FrameRecord::new(&frame, now));
            if video.first_frame_at.is_none() {
                video.first_frame_at = Some(now);
                video.first_frame_keyframe = Some(frame.keyframe);
            }
        }
    }
}

async fn read_audio(track: Arc<dyn TrackRemote>, stats: Arc<Mutex<SubscriberStats>>) {
    let mut sequence = SequenceTracker::default();
    while let Some(event) = track.poll().await {
        let TrackRemoteEvent::OnRtpPacket(packet) = event else {
            continue;
        };
        let now = Instant::now();
        let skipped = sequence.record(packet.header.sequence_number);
        let mut stats = lock(&stats);
        let audio = &mut stats.audio;
        audio.packets += 1;
        audio.first_packet_at.get_or_insert(now);
        if skipped > 0 {
            audio.missing_packets += u64::from(skipped);
            audio.sequence_gaps += 1;
        }
    }
}
