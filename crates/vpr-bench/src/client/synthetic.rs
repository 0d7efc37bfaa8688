//! Synthetic VP8 publisher: sends RTP packets of a fixed payload size at a
//! fixed rate on one video track. The packets are shaped like VP8, with a
//! payload descriptor, a frame tag, the marker on each frame's last packet
//! and a keyframe at a fixed interval, so subscribers and SFUs treat them as
//! video. It loads a server at a known packet rate, which the test clip
//! cannot.
//!
//! The publisher only builds the offer and sends media; signaling is the
//! caller's: [`SyntheticPublisher::start_whip`] uses WHIP, and other
//! targets pass their answer to [`SyntheticOffer::start`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use reqwest::Url;
use rtc::media_stream::MediaStreamTrack;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use tokio::task::JoinHandle;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::peer_connection::{PeerConnection, RTCSessionDescription};
use webrtc::rtp_transceiver::RtpSender;

use super::capture_time;
use super::error::ClientError;
use super::peer::{build_loopback_peer, create_complete_offer, vp8_codec, PeerEvents};
use super::signaling::{delete_session, post_offer};
use super::vp8::VP8_CLOCK_RATE;

/// How long the publisher waits for ICE gathering and for the connection.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);


/// VP8 payload descriptor byte of a frame's first packet: S bit, PID 0.
const DESCRIPTOR_START: u8 = 0x10;
/// VP8 payload descriptor byte of a frame's later packets.
const DESCRIPTOR_CONTINUATION: u8 = 0x00;

/// Shape and rate of the synthetic stream.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SyntheticConfig {
    /// RTP packets per second.
    pub packets_per_second: u32,
    /// RTP payload bytes per packet, VP8 payload descriptor included.
    pub payload_bytes: usize,
    /// Nominal frame rate; a frame spans `packets_per_second / frame_rate`
    /// packets (at least one).
    pub frame_rate: u32,
    /// Time between keyframes.
    pub keyframe_interval: Duration,
    /// Picture width written into each keyframe's VP8 header, in pixels.
    pub width: u16,
    /// Picture height written into each keyframe's VP8 header, in pixels.
    pub height: u16,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        Self {
            packets_per_second: 1000,
            payload_bytes: 1200,
            frame_rate: 30,
            keyframe_interval: Duration::from_secs(1),
            width: 320,
            height: 240,
        }
    }
}

impl SyntheticConfig {
    /// Smallest payload that contains the descriptor and a keyframe header.
    pub const MIN_PAYLOAD_BYTES: usize = 16;

    /// Packets in one frame.
    pub fn packets_per_frame(&self) -> u32 {
        (self.packets_per_second / self.frame_rate.max(1)).max(1)
    }

    /// Frames between two keyframes (at least 1: every frame is a keyframe).
    fn frames_per_keyframe(&self) -> u64 {
        let frame_s = f64::from(self.packets_per_frame()) / f64::from(self.packets_per_second);
        ((self.keyframe_interval.as_secs_f64() / frame_s).round() as u64).max(1)
    }

    fn check(&self) -> Result<(), ClientError> {
        let invalid = |reason: String| ClientError::Media {
            path: "synthetic stream".to_owned(),
            reason,
        };
        if self.packets_per_second == 0 {
            return Err(invalid(
                "the packet rate must be at least 1 per second".to_owned(),
            ));
        }
        if self.payload_bytes < Self::MIN_PAYLOAD_BYTES {
            return Err(invalid(format!(
                "the payload must be at least {} bytes",
                Self::MIN_PAYLOAD_BYTES
            )));
        }
        Ok(())
    }
}

/// Builds the packets of a VP8-shaped stream, one at a time.
#[derive(Debug, Clone)]
pub struct Vp8PacketSource {
    config: SyntheticConfig,
    filler: Bytes,
    sequence_number: u16,
    timestamp: u32,
    packet_in_frame: u32,
    frame_index: u64,
}

/// One packet of the stream and what it carries.
#[derive(Debug, Clone)]
pub struct SourcePacket {
    /// The packet; SSRC and payload type are the caller's to set.
    pub packet: rtp::Packet,
    /// It is the first packet of a frame.
    pub starts_frame: bool,
    /// It belongs to a keyframe.
    pub keyframe: bool,
}

impl Vp8PacketSource {
    /// Creates a source starting at a random sequence number and timestamp.
    pub fn new(config: SyntheticConfig) -> Self {
        Self::starting_at(config, rand::random(), rand::random())
    }

    /// Creates a source starting at the given sequence number and timestamp.
    pub fn starting_at(config: SyntheticConfig, sequence_number: u16, timestamp: u32) -> Self {
        let filler: Vec<u8> = (0..config.payload_bytes)
            .map(|index| (index % 251) as u8)
            .collect();
        Self {
            config,
            filler: Bytes::from(filler),
            sequence_number,
            timestamp,
            packet_in_frame: 0,
            frame_index: 0,
        }
    }

    /// Returns the next packet.
    pub fn next_packet(&mut self) -> SourcePacket {
        let packets_per_frame = self.config.packets_per_frame();
        let starts_frame = self.packet_in_frame == 0;
        let ends_frame = self.packet_in_frame + 1 == packets_per_frame;
        let keyframe = self
            .frame_index
            .is_multiple_of(self.config.frames_per_keyframe());

        let payload = self.payload(starts_frame, keyframe);
        let packet = rtp::Packet {
            header: rtp::header::Header {
                version: 2,
                marker: ends_frame,
                sequence_number: self.sequence_number,
                timestamp: self.timestamp,
                ..Default::default()
            },
            payload,
        };

        self.sequence_number = self.sequence_number.wrapping_add(1);
        self.packet_in_frame += 1;
        if ends_frame {
            self.packet_in_frame = 0;
            self.frame_index += 1;
            let ticks = u64::from(VP8_CLOCK_RATE) * u64::from(packets_per_frame)
                / u64::from(self.config.packets_per_second);
            self.timestamp = self.timestamp.wrapping_add(ticks as u32);
        }
        SourcePacket {
            packet,
            starts_frame,
            keyframe,
        }
    }

    /// Builds a payload. It starts with the descriptor. A frame's first
    /// packet then carries a VP8 frame tag (RFC 6386 section 9.1), and a
    /// keyframe's also the start code and the configured size. The filler pattern
    /// makes up the rest.
    fn payload(&self, starts_frame: bool, keyframe: bool) -> Bytes {
        let mut payload = BytesMut::with_capacity(self.config.payload_bytes);
        if starts_frame {
            payload.put_u8(DESCRIPTOR_START);
            // Frame tag: P bit (0 = keyframe), version 0, show_frame, and a
            // first partition size of 64 bytes.
            let tag: u32 = u32::from(!keyframe) | (1 << 4) | (64 << 5);
            payload.put_slice(&tag.to_le_bytes()[..3]);
            if keyframe {
                payload.put_slice(&[0x9d, 0x01, 0x2a]);
                payload.put_u16_le(self.config.width);
                payload.put_u16_le(self.config.height);
            }
        } else {
            payload.put_u8(DESCRIPTOR_CONTINUATION);
        }
        let rest = self.config.payload_bytes - payload.len();
        payload.put_slice(&self.filler[..rest]);
        payload.freeze()
    }
}

/// Counters of what the synthetic publisher has sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyntheticStats {
    /// RTP packets handed to the track.
    pub packets_sent: u64,
    /// Frames started.
    pub frames_sent: u64,
    /// Of those, keyframes.
    pub keyframes_sent: u64,
}

#[derive(Debug, Default)]
struct Counters {
    packets_sent: AtomicU64,
    frames_sent: AtomicU64,
    keyframes_sent: AtomicU64,
    error: Mutex<Option<String>>,
}

/// A loopback peer with one VP8 send track and its complete offer, before
/// signaling.
pub struct SyntheticOffer {
    /// The complete SDP offer (ICE gathered).
    pub sdp: String,
    peer: Arc<dyn PeerConnection>,
    events: Arc<PeerEvents>,
    track: Arc<TrackLocalStaticRTP>,
    sender: Arc<dyn RtpSender>,
    ssrc: u32,
    config: SyntheticConfig,
}

impl SyntheticOffer {
    /// Builds the peer and its offer.
    pub async fn new(config: SyntheticConfig) -> Result<Self, ClientError> {
        config.check()?;
        let events = PeerEvents::new();
        let peer = build_loopback_peer(events.clone()).await?;
        let ssrc: u32 = rand::random();
        let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
            "vpr-bench-synthetic".to_owned(),
            "vpr-bench-synthetic-video".to_owned(),
            "vpr-bench-synthetic-video".to_owned(),
            RtpCodecKind::Video,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                codec: vp8_codec(),
                ..Default::default()
            }],
        )));
        let sender = peer.add_track(track.clone() as Arc<dyn TrackLocal>).await?;
        let sdp = create_complete_offer(&peer, &events, SETUP_TIMEOUT).await?;
        Ok(Self {
            sdp,
            peer,
            events,
            track,
            sender,
            ssrc,
            config,
        })
    }

    /// Applies the answer and starts sending once the connection is up.
    pub async fn start(self, answer_sdp: String) -> Result<SyntheticPublisher, ClientError> {
        self.peer
            .set_remote_description(RTCSessionDescription::answer(answer_sdp)?)
            .await?;
        let counters = Arc::new(Counters::default());
        let task = tokio::spawn(run_media(
            self.track,
            self.sender,
            self.ssrc,
            self.config,
            self.events.clone(),
            counters.clone(),
        ));
        Ok(SyntheticPublisher {
            peer: self.peer,
            events: self.events,
            counters,
            task,
            whip: None,
        })
    }
}

/// The WHIP session of a publisher, to end with DELETE.
struct WhipSession {
    http: reqwest::Client,
    url: Url,
    token: String,
}

/// A running synthetic publisher.
pub struct SyntheticPublisher {
    peer: Arc<dyn PeerConnection>,
    events: Arc<PeerEvents>,
    counters: Arc<Counters>,
    task: JoinHandle<()>,
    whip: Option<WhipSession>,
}

impl SyntheticPublisher {
    /// Publishes over WHIP to `whip_url` with `token` as bearer.
    pub async fn start_whip(
        whip_url: &str,
        token: &str,
        config: SyntheticConfig,
    ) -> Result<Self, ClientError> {
        let offer = SyntheticOffer::new(config).await?;
        let http = reqwest::Client::new();
        let session = post_offer(&http, whip_url, token, offer.sdp.clone()).await?;
        let mut publisher = offer.start(session.answer_sdp).await?;
        tracing::info!(session_url = %session.session_url, "synthetic WHIP session created");
        publisher.whip = Some(WhipSession {
            http,
            url: session.session_url,
            token: token.to_owned(),
        });
        Ok(publisher)
    }

    /// Waits until ICE and DTLS are done and returns when that happened.
    pub async fn wait_connected(&self, timeout: Duration) -> Result<Instant, ClientError> {
        self.events.wait_connected(timeout).await
    }

    /// Returns what has been sent so far.
    pub fn stats(&self) -> SyntheticStats {
        SyntheticStats {
            packets_sent: self.counters.packets_sent.load(Ordering::Relaxed),
            frames_sent: self.counters.frames_sent.load(Ordering::Relaxed),
            keyframes_sent: self.counters.keyframes_sent.load(Ordering::Relaxed),
        }
    }

    /// Returns the first error of the media task, if it stopped early.
    pub fn media_error(&self) -> Option<String> {
        self.counters
            .error
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone()
    }

    /// Stops sending, ends a WHIP session with DELETE and closes the peer
    /// connection (even if DELETE fails).
    pub async fn stop(self) -> Result<SyntheticStats, ClientError> {
        self.task.abort();
        let stats = self.stats();
        let deleted = match &self.whip {
            Some(session) => delete_session(&session.http, &session.url, &session.token).await,
            None => Ok(()),
        };
        if let Err(error) = self.peer.close().await {
            tracing::warn!(%error, "closing the synthetic publisher's peer connection failed");
        }
        deleted.map(|()| stats)
    }

    /// Stops sending and closes the peer connection without signaling.
    pub async fn abandon(self) -> SyntheticStats {
        self.task.abort();
        if let Err(error) = self.peer.close().await {
            tracing::warn!(%error, "closing the synthetic publisher's peer connection failed");
        }
        self.stats()
    }
}

impl Drop for SyntheticPublisher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run_media(
    track: Arc<TrackLocalStaticRTP>,
    sender: Arc<dyn RtpSender>,
    ssrc: u32,
    config: SyntheticConfig,
    events: Arc<PeerEvents>,
    counters: Arc<Counters>,
) {
    if let Err(error) = send_packets(&track, &sender, ssrc, config, &events, &counters).await {
        tracing::warn!(%error, "synthetic media task stopped");
        let mut slot = counters
            .error
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        slot.get_or_insert(error);
    }
}

/// Sends packets at the configured rate until aborted. Ticks missed under
/// load are caught up, so the average rate holds.
async fn send_packets(
    track: &TrackLocalStaticRTP,
    sender: &Arc<dyn RtpSender>,
    ssrc: u32,
    config: SyntheticConfig,
    events: &PeerEvents,
    counters: &Counters,
) -> Result<(), String> {
    events
        .wait_connected(SETUP_TIMEOUT)
        .await
        .map_err(|error| error.to_string())?;
    let parameters = sender
        .get_parameters()
        .await
        .map_err(|error| error.to_string())?;
    let payload_type = parameters
        .rtp_parameters
        .codecs
        .first()
        .map(|codec| codec.payload_type)
        .ok_or_else(|| "sender has no negotiated codec".to_owned())?;

    let capture_time_id = parameters
        .rtp_parameters
        .header_extensions
        .iter()
        .find(|extension| extension.uri == capture_time::ABS_CAPTURE_TIME_URI)
        .and_then(|extension| u8::try_from(extension.id).ok());

    let mut source = Vp8PacketSource::new(config);
    let mut interval = tokio::time::interval(Duration::from_secs_f64(
        1.0 / f64::from(config.packets_per_second),
    ));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    loop {
        interval.tick().await;
        let SourcePacket {
            mut packet,
            starts_frame,
            keyframe,
        } = source.next_packet();
        packet.header.ssrc = ssrc;
        packet.header.payload_type = payload_type;
        if let (Some(id), true) = (capture_time_id, starts_frame) {
            // The frame's first packet carries its capture time, for
            // end-to-end delay at the subscriber.
            packet
                .header
                .set_extension(id, capture_time::encode(std::time::SystemTime::now()))
                .map_err(|error| format!("setting abs-capture-time failed: {error}"))?;
        }
        track
            .write_rtp(packet)
            .await
            .map_err(|error| format!("writing an RTP packet failed: {error}"))?;
        counters.packets_sent.fetch_add(1, Ordering::Relaxed);
        if starts_frame {
            counters.frames_sent.fetch_add(1, Ordering::Relaxed);
            if keyframe {
                counters.keyframes_sent.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::vp8::{Vp8Descriptor, Vp8FrameAssembler};

    #[test]
    fn frames_reassemble_with_keyframes_at_the_interval() {
        let config = SyntheticConfig::default();
        assert_eq!(config.packets_per_frame(), 33);
        let mut source = Vp8PacketSource::starting_at(config, u16::MAX - 5, 1000);
        let mut assembler = Vp8FrameAssembler::default();
        let mut frames = Vec::new();
        for _ in 0..33 * 61 {
            let SourcePacket { packet, .. } = source.next_packet();
            assert_eq!(packet.payload.len(), 1200);
            assert!(Vp8Descriptor::parse(&packet.payload).is_some());
            let header = &packet.header;
            if let Some(frame) = assembler.push(
                header.sequence_number,
                header.timestamp,
                header.marker,
                &packet.payload,
            ) {
                frames.push(frame);
            }
        }
        assert_eq!(frames.len(), 61);
        let keyframes: Vec<usize> = (0..frames.len())
            .filter(|&index| frames[index].keyframe)
            .collect();
        // 33 packets at 1000/s is 33 ms a frame, so 30 frames to a second.
        assert_eq!(keyframes, vec![0, 30, 60]);
        assert_eq!(frames[1].rtp_timestamp - frames[0].rtp_timestamp, 2970);
        assert!(frames.iter().all(|frame| frame.packets == 33));
    }

    #[test]
    fn keyframe_header_carries_the_configured_size() {
        let config = SyntheticConfig { width: 1280, height: 720, ..SyntheticConfig::default() };
        let SourcePacket { packet, keyframe, .. } = Vp8PacketSource::new(config).next_packet();
        assert!(keyframe);
        // Descriptor, 3-byte frame tag, start code, then width and height.
        assert_eq!(&packet.payload[4..7], &[0x9d, 0x01, 0x2a]);
        assert_eq!(u16::from_le_bytes([packet.payload[7], packet.payload[8]]), 1280);
        assert_eq!(u16::from_le_bytes([packet.payload[9], packet.payload[10]]), 720);
    }

    #[test]
    fn too_small_payload_is_rejected() {
        let config = SyntheticConfig {
            payload_bytes: 8,
            ..SyntheticConfig::default()
        };
        assert!(config.check().is_err());
    }
}
