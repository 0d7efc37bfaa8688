//! WHIP publisher that sends rid-based simulcast like Chrome: one video
//! m-section with `a=rid:<rid> send` lines and `a=simulcast:send q;h;f`,
//! every layer on its own SSRC with the mid and rtp-stream-id header
//! extensions on each packet.
//!
//! The video is synthetic VP8: frames with a valid payload descriptor and
//! frame header, sized to the layer's bitrate, carrying a [`LayerMarker`] so a
//! subscriber can tell which layer and frame it receives. Each layer sends a
//! keyframe at start, every `keyframe_interval`, and on the next frame after a
//! PLI or FIR naming its SSRC. An optional Opus track sends silence.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::Url;
use rtc::ice::mdns::MulticastDnsMode;
use rtc::ice::network_type::NetworkType;
use rtc::interceptor::{Attribute, Interceptor, Packet, Slot, StreamInfo, TaggedPacket};
use rtc::media_stream::MediaStreamTrack;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::sansio::Protocol;
use tokio::task::JoinHandle;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::Track;
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, RTCConfigurationBuilder, RTCSessionDescription,
    SettingEngine, SettingEngineBuilder,
};

use super::error::ClientError;
use super::peer::{
    create_complete_offer, opus_codec, register_client_interceptors, vp8_codec,
    vp8_opus_media_engine, PeerEvents,
};
use super::signaling::{delete_session, post_offer};
use super::unbound_probe::{ProbeLog, ProbeReport, UnboundProbes, UNBOUND_PROBE_SLOT};
use super::vp8::{LayerMarker, VP8_CLOCK_RATE};

/// How long the publisher waits for ICE gathering and for the connection.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest RTP payload (VP8 payload descriptor included) the publisher sends.
pub const MAX_RTP_PAYLOAD: usize = 1200;


/// A keyframe is this many times the size of a delta frame.
const KEYFRAME_SIZE_FACTOR: usize = 3;

/// Resolution written into the keyframe header of the highest layer; each
/// lower layer halves it (`scaleResolutionDownBy` 4, 2, 1 for three layers).
const TOP_LAYER_RESOLUTION: (u16, u16) = (1280, 720);

/// Opus packet of one 20 ms frame of silence (TOC 0xF8: CELT fullband 20 ms,
/// mono, one frame).
const OPUS_SILENCE: [u8; 3] = [0xF8, 0xFF, 0xFE];

/// Opus frame duration and its length in 48 kHz RTP clock ticks.
const OPUS_FRAME: Duration = Duration::from_millis(20);
const OPUS_FRAME_TICKS: u32 = 960;

/// Position of the keyframe-request interceptor in the chain: after every
/// default interceptor (the named slots of `rtc` 0.21.1 end at 13_000), so they all
/// see the RTCP first.
const KEYFRAME_REQUEST_SLOT: usize = 14_500;

/// URIs of the header extensions every video packet carries.
const MID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:mid";
const RID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id";

/// One simulcast layer to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerSpec {
    /// RTP stream id (`a=rid`) of the layer.
    pub rid: String,
    /// Target bitrate of the VP8 payload, in bits per second.
    pub bitrate_bps: u32,
    /// Frame rate, in frames per second.
    pub fps: u32,
}

impl LayerSpec {
    /// Creates a layer spec.
    pub fn new(rid: impl Into<String>, bitrate_bps: u32, fps: u32) -> Self {
        Self {
            rid: rid.into(),
            bitrate_bps,
            fps,
        }
    }

    /// Chrome's three layers for a 720p camera, lowest first: "q" 150 kbit/s,
    /// "h" 500 kbit/s, "f" 1500 kbit/s, all at 30 fps.
    pub fn default_set() -> Vec<LayerSpec> {
        vec![
            LayerSpec::new("q", 150_000, 30),
            LayerSpec::new("h", 500_000, 30),
            LayerSpec::new("f", 1_500_000, 30),
        ]
    }

    /// Size of a delta frame in bytes: the bitrate spread over the frames of
    /// one second, at least large enough for the frame header and marker.
    pub fn delta_frame_bytes(&self) -> usize {
        let bytes = u64::from(self.bitrate_bps) / 8 / u64::from(self.fps.max(1));
        (bytes as usize).max(KEYFRAME_HEADER_LEN + LayerMarker::LEN)
    }
}

/// Invalid simulcast layer specs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayerSpecError {
    /// No layer was given.
    #[error("no simulcast layers given")]
    Empty,
    /// More layers than the one-byte layer index of the marker can name.
    #[error("{count} simulcast layers given, at most 255 are supported")]
    TooMany {
        /// Number of layers given.
        count: usize,
    },
    /// A rid is empty, longer than 16 bytes (the most a one-byte RTP header
    /// extension holds) or has characters other than `A-Z a-z 0-9 - _`
    /// (RFC 8851 rid-id).
    #[error("invalid rid {rid:?}: expected 1 to 16 characters of A-Z a-z 0-9 - _")]
    InvalidRid {
        /// The rid as given.
        rid: String,
    },
    /// Two layers have the same rid.
    #[error("rid {rid:?} is given twice")]
    DuplicateRid {
        /// The repeated rid.
        rid: String,
    },
    /// A layer has a bitrate or frame rate of 0.
    #[error("layer {rid:?} has bitrate {bitrate_bps} bit/s and {fps} fps, both must be above 0")]
    ZeroRate {
        /// Rid of the layer.
        rid: String,
        /// Bitrate given.
        bitrate_bps: u32,
        /// Frame rate given.
        fps: u32,
    },
}

/// Checks that `layers` can be offered and sent.
pub fn validate_layers(layers: &[LayerSpec]) -> Result<(), LayerSpecError> {
    if layers.is_empty() {
        return Err(LayerSpecError::Empty);
    }
    if layers.len() > usize::from(u8::MAX) {
        return Err(LayerSpecError::TooMany {
            count: layers.len(),
        });
    }
    for (index, layer) in layers.iter().enumerate() {
        let valid_rid = (1..=16).contains(&layer.rid.len())
            && layer
                .rid
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_');
        if !valid_rid {
            return Err(LayerSpecError::InvalidRid {
                rid: layer.rid.clone(),
            });
        }
        if layers[..index].iter().any(|other| other.rid == layer.rid) {
            return Err(LayerSpecError::DuplicateRid {
                rid: layer.rid.clone(),
            });
        }
        if layer.bitrate_bps == 0 || layer.fps == 0 {
            return Err(LayerSpecError::ZeroRate {
                rid: layer.rid.clone(),
                bitrate_bps: layer.bitrate_bps,
                fps: layer.fps,
            });
        }
    }
    Ok(())
}

/// Options of a [`SimulcastPublisher`].
#[derive(Debug, Clone)]
pub struct SimulcastOptions {
    /// Layers from lowest to highest; the position is the layer index in the
    /// [`LayerMarker`].
    pub layers: Vec<LayerSpec>,
    /// Time between periodic keyframes of each layer.
    pub keyframe_interval: Duration,
    /// Also send an Opus track of silence, as a resident's phone would.
    pub audio: bool,
    /// Whether and in which order the offer declares the layers' SSRCs.
    pub ssrc_lines: SsrcLines,
    /// Whether to send padding probes on SSRC 0 and on an undeclared SSRC
    /// beside the media, and tally how the server's transport-wide feedback
    /// reports them ([`SimulcastStats::probes`]).
    pub unbound_probes: bool,
}

/// The `a=ssrc` lines a simulcast offer carries for its layers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SsrcLines {
    /// No `a=ssrc` lines, as Chrome offers: the receiver learns each
    /// layer's SSRC from the rtp-stream-id extension.
    #[default]
    None,
    /// One `a=ssrc` line per layer, in the order of the `a=rid` lines, as
    /// Firefox offers.
    InRidOrder,
    /// One `a=ssrc` line per layer, in the reverse order of the `a=rid`
    /// lines, so a receiver that pairs RIDs and SSRCs by position pairs
    /// them wrongly.
    Reversed,
}

impl SimulcastOptions {
    /// Creates options with the given layers, a keyframe every 3 s, audio
    /// on and no `a=ssrc` lines.
    pub fn new(layers: Vec<LayerSpec>) -> Self {
        Self {
            layers,
            keyframe_interval: Duration::from_secs(3),
            audio: true,
            ssrc_lines: SsrcLines::None,
            unbound_probes: false,
        }
    }
}

impl Default for SimulcastOptions {
    fn default() -> Self {
        Self::new(LayerSpec::default_set())
    }
}

/// Counters of one layer: media sent and keyframe requests received.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LayerSendStats {
    /// Rid of the layer.
    pub rid: String,
    /// SSRC of the layer.
    pub ssrc: u32,
    /// RTP packets handed to the sender.
    pub packets_sent: u64,
    /// RTP payload bytes handed to the sender, VP8 payload descriptors
    /// included, RTP headers not.
    pub bytes_sent: u64,
    /// Frames sent.
    pub frames_sent: u64,
    /// Of those, keyframes.
    pub keyframes_sent: u64,
    /// PLIs received for this layer's SSRC.
    pub plis_received: u64,
    /// FIR entries received for this layer's SSRC.
    pub firs_received: u64,
}

/// Snapshot of what a [`SimulcastPublisher`] has sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimulcastStats {
    /// One entry per layer, lowest first.
    pub layers: Vec<LayerSendStats>,
    /// Opus packets sent.
    pub audio_packets_sent: u64,
    /// First error of a media task, if one stopped early.
    pub media_error: Option<String>,
    /// Transport-wide feedback about media and probes, with
    /// [`SimulcastOptions::unbound_probes`].
    pub probes: Option<ProbeReport>,
}

#[derive(Debug, Default)]
struct LayerCounters {
    packets_sent: AtomicU64,
    bytes_sent: AtomicU64,
    frames_sent: AtomicU64,
    keyframes_sent: AtomicU64,
    plis_received: AtomicU64,
    firs_received: AtomicU64,
    keyframe_requested: AtomicBool,
}

/// State shared by the publisher and its tasks.
struct Shared {
    rids: Vec<String>,
    ssrcs: Vec<u32>,
    layers: Vec<LayerCounters>,
    audio_packets_sent: AtomicU64,
    media_error: Mutex<Option<String>>,
    probe_log: Option<Arc<Mutex<ProbeLog>>>,
}

impl Shared {
    fn record_error(&self, error: String) {
        tracing::warn!(%error, "simulcast media task stopped");
        let mut slot = self
            .media_error
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        slot.get_or_insert(error);
    }

    fn layer_of_ssrc(&self, ssrc: u32) -> Option<usize> {
        self.ssrcs.iter().position(|&layer_ssrc| layer_ssrc == ssrc)
    }

    fn snapshot(&self) -> SimulcastStats {
        let layers = self
            .layers
            .iter()
            .enumerate()
            .map(|(index, counters)| LayerSendStats {
                rid: self.rids[index].clone(),
                ssrc: self.ssrcs[index],
                packets_sent: counters.packets_sent.load(Ordering::Relaxed),
                bytes_sent: counters.bytes_sent.load(Ordering::Relaxed),
                frames_sent: counters.frames_sent.load(Ordering::Relaxed),
                keyframes_sent: counters.keyframes_sent.load(Ordering::Relaxed),
                plis_received: counters.plis_received.load(Ordering::Relaxed),
                firs_received: counters.firs_received.load(Ordering::Relaxed),
            })
            .collect();
        SimulcastStats {
            layers,
            audio_packets_sent: self.audio_packets_sent.load(Ordering::Relaxed),
            media_error: self
                .media_error
                .lock()
                .unwrap_or_else(|poison| poison.into_inner())
                .clone(),
            probes: self.probe_log.as_ref().map(|log| {
                log.lock().unwrap_or_else(|poison| poison.into_inner()).report()
            }),
        }
    }
}

/// A participant publishing three (or any number of) simulcast layers over
/// WHIP.
pub struct SimulcastPublisher {
    peer: Arc<dyn PeerConnection>,
    events: Arc<PeerEvents>,
    http: reqwest::Client,
    token: String,
    session_url: Url,
    offer_sdp: String,
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl SimulcastPublisher {
    /// Publishes `layers` (lowest first) with the other options at their
    /// defaults, see [`SimulcastOptions::new`].
    pub async fn start(
        whip_url: &str,
        token: &str,
        layers: &[LayerSpec],
    ) -> Result<Self, ClientError> {
        Self::start_with(whip_url, token, SimulcastOptions::new(layers.to_vec())).await
    }

    /// Opens a peer connection with one simulcast video track (and an Opus
    /// track if `options.audio`), POSTs the complete offer to `whip_url` with
    /// `token` as bearer, applies the answer and starts the media tasks, which
    /// send once the connection is up.
    pub async fn start_with(
        whip_url: &str,
        token: &str,
        options: SimulcastOptions,
    ) -> Result<Self, ClientError> {
        // TODO: map to a dedicated ClientError variant once error.rs has one.
        validate_layers(&options.layers).map_err(|error| {
            ClientError::WebRtc(webrtc::error::Error::Other(format!(
                "invalid simulcast layers: {error}"
            )))
        })?;

        let events = PeerEvents::new();
        let (probes, probe_log) = if options.unbound_probes {
            let (probes, log) = UnboundProbes::new();
            (Some(probes), Some(log))
        } else {
            (None, None)
        };
        let peer = build_simulcast_peer(events.clone(), options.ssrc_lines != SsrcLines::None, probes).await?;

        let audio = if options.audio {
            let ssrc = rand::random();
            let coding = encoding("", ssrc, opus_codec());
            Some((
                add_sendonly_track(&peer, RtpCodecKind::Audio, vec![coding]).await?,
                ssrc,
            ))
        } else {
            None
        };
        let ssrcs: Vec<u32> = options.layers.iter().map(|_| rand::random()).collect();
        let codings = options
            .layers
            .iter()
            .zip(&ssrcs)
            .map(|(layer, &ssrc)| encoding(&layer.rid, ssrc, vp8_codec()))
            .collect();
        let video = add_sendonly_track(&peer, RtpCodecKind::Video, codings).await?;

        let mut offer_sdp = create_complete_offer(&peer, &events, SETUP_TIMEOUT).await?;
        if options.ssrc_lines == SsrcLines::Reversed {
            offer_sdp = reverse_ssrc_lines(&offer_sdp);
        }
        let http = reqwest::Client::new();
        let session = post_offer(&http, whip_url, token, offer_sdp.clone()).await?;
        peer.set_remote_description(RTCSessionDescription::answer(session.answer_sdp)?)
            .await?;
        tracing::info!(
            session_url = %session.session_url,
            layers = options.layers.len(),
            "WHIP simulcast session created"
        );

        let shared = Arc::new(Shared {
            rids: options
                .layers
                .iter()
                .map(|layer| layer.rid.clone())
                .collect(),
            ssrcs,
            layers: options
                .layers
                .iter()
                .map(|_| LayerCounters::default())
                .collect(),
            audio_packets_sent: AtomicU64::new(0),
            media_error: Mutex::new(None),
            probe_log,
        });
        let mut tasks = vec![tokio::spawn(run_video(
            peer.clone(),
            video,
            options.clone(),
            events.clone(),
            shared.clone(),
        ))];
        if let Some((audio, ssrc)) = audio {
            tasks.push(tokio::spawn(run_audio(
                peer.clone(),
                audio,
                ssrc,
                events.clone(),
                shared.clone(),
            )));
        }

        Ok(Self {
            peer,
            events,
            http,
            token: token.to_owned(),
            session_url: session.session_url,
            offer_sdp,
            shared,
            tasks,
        })
    }

    /// Absolute URL of the WHIP session (from the `Location` header).
    pub fn session_url(&self) -> &Url {
        &self.session_url
    }

    /// Returns the SDP offer that was POSTed.
    pub fn offer_sdp(&self) -> &str {
        &self.offer_sdp
    }

    /// Rid and SSRC of each layer, lowest first.
    pub fn layer_ssrcs(&self) -> Vec<(String, u32)> {
        self.shared
            .rids
            .iter()
            .cloned()
            .zip(self.shared.ssrcs.iter().copied())
            .collect()
    }

    /// Waits until ICE and DTLS are done and returns when that happened.
    pub async fn wait_connected(&self, timeout: Duration) -> Result<Instant, ClientError> {
        self.events.wait_connected(timeout).await
    }

    /// Returns what has been sent so far.
    pub fn stats(&self) -> SimulcastStats {
        self.shared.snapshot()
    }

    /// Stops the media tasks, ends the WHIP session with DELETE and closes the
    /// peer connection. The peer connection is closed even if DELETE fails.
    pub async fn stop(self) -> Result<SimulcastStats, ClientError> {
        for task in &self.tasks {
            task.abort();
        }
        let stats = self.stats();
        let deleted = delete_session(&self.http, &self.session_url, &self.token).await;
        if let Err(error) = self.peer.close().await {
            tracing::warn!(%error, "closing the simulcast publisher peer connection failed");
        }
        deleted.map(|()| stats)
    }
}

impl Drop for SimulcastPublisher {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Builds the loopback peer of the publisher: the settings of
/// [`super::build_loopback_peer`] plus an interceptor that hands PLI and FIR
/// to the track.
async fn build_simulcast_peer(
    events: Arc<PeerEvents>,
    declare_layer_ssrcs: bool,
    probes: Option<UnboundProbes>,
) -> Result<Arc<dyn PeerConnection>, ClientError> {
    let mut media_engine = vp8_opus_media_engine()?;
    // The defaults also register the mid and rtp-stream-id extensions.
    let mut registry = register_client_interceptors(&mut media_engine)?.with(
        Slot::from(KEYFRAME_REQUEST_SLOT),
        KeyframeRequestForwarder::default(),
    );
    if let Some(probes) = probes {
        registry = registry.with(Slot::from(UNBOUND_PROBE_SLOT), probes);
    }

    let peer = PeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(media_engine)
        .with_setting_engine(simulcast_setting_engine(declare_layer_ssrcs))
        .with_interceptor_registry(registry)
        .with_handler(events)
        .with_udp_addrs(vec!["127.0.0.1:0".to_owned()])
        .build()
        .await?;
    Ok(Arc::new(peer))
}

/// Reverses the order of the `a=ssrc` line groups (one group per SSRC)
/// within each m-section; every other line keeps its place.
fn reverse_ssrc_lines(sdp: &str) -> String {
    let mut sections: Vec<Vec<&str>> = vec![Vec::new()];
    for line in sdp.split("\r\n").filter(|line| !line.is_empty()) {
        if line.starts_with("m=") {
            sections.push(Vec::new());
        }
        sections.last_mut().expect("one section at least").push(line);
    }
    let mut out = String::with_capacity(sdp.len());
    for section in sections {
        for line in reverse_ssrc_groups(&section) {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out
}

/// Returns one m-section's lines with its `a=ssrc` groups in reverse order,
/// placed where the first `a=ssrc` line was.
fn reverse_ssrc_groups<'a>(section: &[&'a str]) -> Vec<&'a str> {
    let ssrc_of = |line: &str| line.strip_prefix("a=ssrc:").and_then(|rest| rest.split(' ').next().map(str::to_owned));
    let mut groups: Vec<(String, Vec<&'a str>)> = Vec::new();
    let mut others = Vec::with_capacity(section.len());
    let mut first_at = None;
    for &line in section {
        let Some(ssrc) = ssrc_of(line) else {
            others.push(line);
            continue;
        };
        first_at.get_or_insert(others.len());
        match groups.iter_mut().find(|(known, _)| *known == ssrc) {
            Some((_, lines)) => lines.push(line),
            None => groups.push((ssrc, vec![line])),
        }
    }
    if let Some(at) = first_at {
        let reversed: Vec<&str> = groups.into_iter().rev().flat_map(|(_, lines)| lines).collect();
        others.splice(at..at, reversed);
    }
    others
}

/// [`super::loopback_setting_engine`] with the choice of `a=ssrc` lines for
/// the simulcast layers.
fn simulcast_setting_engine(declare_layer_ssrcs: bool) -> SettingEngine {
    SettingEngineBuilder::new()
        .with_network_types(vec![NetworkType::Udp4])
        .with_include_loopback_candidate(true)
        .with_multicast_dns_mode(MulticastDnsMode::Disabled)
        .with_write_ssrc_attributes_for_simulcast(declare_layer_ssrcs)
        .build()
}

fn encoding(rid: &str, ssrc: u32, codec: RTCRtpCodec) -> RTCRtpEncodingParameters {
    RTCRtpEncodingParameters {
        rtp_coding_parameters: RTCRtpCodingParameters {
            rid: rid.to_owned(),
            ssrc: Some(ssrc),
            ..Default::default()
        },
        codec,
        ..Default::default()
    }
}

/// Adds a send-only transceiver (as browsers do for WHIP) with one track
/// whose encodings are `codings`; several encodings with rids make it a
/// simulcast track.
async fn add_sendonly_track(
    peer: &Arc<dyn PeerConnection>,
    kind: RtpCodecKind,
    codings: Vec<RTCRtpEncodingParameters>,
) -> Result<Arc<TrackLocalStaticRTP>, ClientError> {
    let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        "vpr-bench".to_owned(),
        format!("vpr-bench-simulcast-{kind}"),
        format!("vpr-bench-simulcast-{kind}"),
        kind,
        codings,
    )));
    let init = RTCRtpTransceiverInit {
        direction: RTCRtpTransceiverDirection::Sendonly,
        ..Default::default()
    };
    peer.add_transceiver_from_track(track.clone() as Arc<dyn TrackLocal>, Some(init))
        .await?;
    Ok(track)
}

/// Negotiated payload type and header extension ids of a sender.
struct Negotiated {
    payload_type: u8,
    mid: Option<(u8, Bytes)>,
    rid_extension_id: Option<u8>,
}

/// Waits for the connection and reads what the answer negotiated for the
/// transceiver that sends `track`.
async fn negotiated(
    peer: &Arc<dyn PeerConnection>,
    events: &PeerEvents,
    track: &Arc<TrackLocalStaticRTP>,
) -> Result<Negotiated, String> {
    events
        .wait_connected(SETUP_TIMEOUT)
        .await
        .map_err(|error| error.to_string())?;

    let track_id = track.track_id().await;
    for transceiver in peer.get_transceivers().await {
        let Ok(Some(sender)) = transceiver.sender().await else {
            continue;
        };
        if sender.track().track_id().await != track_id {
            continue;
        }
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
        let extension_id = |uri: &str| {
            parameters
                .rtp_parameters
                .header_extensions
                .iter()
                .find(|extension| extension.uri == uri)
                .map(|extension| extension.id as u8)
        };
        let mid = transceiver.mid().await.ok().flatten();
        return Ok(Negotiated {
            payload_type,
            mid: extension_id(MID_URI).zip(mid.map(Bytes::from)),
            rid_extension_id: extension_id(RID_URI),
        });
    }
    Err("no sender for the track".to_owned())
}

/// Sends every layer's frames at its frame rate until aborted.
async fn run_video(
    peer: Arc<dyn PeerConnection>,
    track: Arc<TrackLocalStaticRTP>,
    options: SimulcastOptions,
    events: Arc<PeerEvents>,
    shared: Arc<Shared>,
) {
    let negotiated = match negotiated(&peer, &events, &track).await {
        Ok(negotiated) => Arc::new(negotiated),
        Err(error) => return shared.record_error(format!("video: {error}")),
    };
    // Dropped here so that the task does not keep the connection alive.
    drop(peer);
    if negotiated.mid.is_none() || negotiated.rid_extension_id.is_none() {
        tracing::warn!(
            "the answer did not negotiate the mid and rtp-stream-id extensions, \
             sending simulcast without them"
        );
    }

    let keyframe_requests = tokio::spawn(forward_keyframe_requests(track.clone(), shared.clone()));
    let count = options.layers.len();
    let mut layers = Vec::with_capacity(count);
    for (index, spec) in options.layers.iter().enumerate() {
        let generator = SyntheticVp8Layer::new(
            index as u8,
            spec,
            shared.ssrcs[index],
            negotiated.payload_type,
            layer_resolution(index, count),
        );
        layers.push(tokio::spawn(send_layer(
            generator,
            spec.fps,
            options.keyframe_interval,
            track.clone(),
            negotiated.clone(),
            shared.clone(),
        )));
    }

    // Aborting this task drops the guard, which aborts the layer tasks.
    let _guard = AbortOnDrop(layers.iter().map(JoinHandle::abort_handle).collect());
    let _requests_guard = AbortOnDrop(vec![keyframe_requests.abort_handle()]);
    for layer in layers {
        // A layer task ends only with an error, which it has recorded.
        let _ = layer.await;
    }
}

/// Aborts tasks when dropped.
struct AbortOnDrop(Vec<tokio::task::AbortHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// Resolution of layer `index` of `count`: the top resolution halved once
/// per layer below the highest.
fn layer_resolution(index: usize, count: usize) -> (u16, u16) {
    let halvings = (count - 1 - index).min(8) as u32;
    (
        TOP_LAYER_RESOLUTION.0 >> halvings,
        TOP_LAYER_RESOLUTION.1 >> halvings,
    )
}

async fn send_layer(
    mut generator: SyntheticVp8Layer,
    fps: u32,
    keyframe_interval: Duration,
    track: Arc<TrackLocalStaticRTP>,
    negotiated: Arc<Negotiated>,
    shared: Arc<Shared>,
) {
    let index = usize::from(generator.index);
    let counters = &shared.layers[index];
    let mut ticker = tokio::time::interval(Duration::from_secs(1) / fps);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let rid = Bytes::from(shared.rids[index].clone());
    let started = Instant::now();
    let mut last_keyframe: Option<Instant> = None;

    loop {
        ticker.tick().await;
        let now = Instant::now();
        let requested = counters.keyframe_requested.swap(false, Ordering::Relaxed);
        let periodic = last_keyframe.is_none_or(|at| now - at >= keyframe_interval);
        let keyframe = requested || periodic;
        if keyframe {
            last_keyframe = Some(now);
        }

        for mut packet in generator.next_frame(keyframe, now - started) {
            if let Some((id, mid)) = &negotiated.mid {
                set_extension(&mut packet, *id, mid.clone());
            }
            if let Some(id) = negotiated.rid_extension_id {
                set_extension(&mut packet, id, rid.clone());
            }
            let payload_len = packet.payload.len() as u64;
            if let Err(error) = track.write_rtp(packet).await {
                let rid = &shared.rids[index];
                return shared.record_error(format!("video layer {rid}: {error}"));
            }
            counters.packets_sent.fetch_add(1, Ordering::Relaxed);
            counters
                .bytes_sent
                .fetch_add(payload_len, Ordering::Relaxed);
        }
        counters.frames_sent.fetch_add(1, Ordering::Relaxed);
        if keyframe {
            counters.keyframes_sent.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn set_extension(packet: &mut rtc::rtp::Packet, id: u8, value: Bytes) {
    // Fails only for ids or values a one-byte header cannot carry; both come
    // from a validated rid and a negotiated id in 1..=14.
    if let Err(error) = packet.header.set_extension(id, value) {
        tracing::warn!(%error, id, "setting an RTP header extension failed");
    }
}

/// Counts PLI and FIR per layer SSRC and flags the layer for a keyframe.
async fn forward_keyframe_requests(track: Arc<TrackLocalStaticRTP>, shared: Arc<Shared>) {
    loop {
        // `poll` returns None until the track is bound and after it is
        // unbound; the task is aborted when the publisher stops.
        let Some(event) = track.poll().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let TrackLocalEvent::OnRtcpPacket(packets) = event else {
            continue;
        };
        for packet in packets {
            let any = packet.as_any();
            if let Some(pli) = any.downcast_ref::<PictureLossIndication>() {
                if let Some(index) = shared.layer_of_ssrc(pli.media_ssrc) {
                    let layer = &shared.layers[index];
                    layer.plis_received.fetch_add(1, Ordering::Relaxed);
                    layer.keyframe_requested.store(true, Ordering::Relaxed);
                    tracing::debug!(rid = %shared.rids[index], "PLI received");
                }
            } else if let Some(fir) = any.downcast_ref::<FullIntraRequest>() {
                for entry in &fir.fir {
                    if let Some(index) = shared.layer_of_ssrc(entry.ssrc) {
                        let layer = &shared.layers[index];
                        layer.firs_received.fetch_add(1, Ordering::Relaxed);
                        layer.keyframe_requested.store(true, Ordering::Relaxed);
                        tracing::debug!(rid = %shared.rids[index], "FIR received");
                    }
                }
            }
        }
    }
}

/// Sends a 20 ms Opus silence packet every 20 ms until aborted.
async fn run_audio(
    peer: Arc<dyn PeerConnection>,
    track: Arc<TrackLocalStaticRTP>,
    ssrc: u32,
    events: Arc<PeerEvents>,
    shared: Arc<Shared>,
) {
    let payload_type = match negotiated(&peer, &events, &track).await {
        Ok(negotiated) => negotiated.payload_type,
        Err(error) => return shared.record_error(format!("audio: {error}")),
    };
    drop(peer);

    let mut ticker = tokio::time::interval(OPUS_FRAME);
    let mut sequence_number: u16 = rand::random();
    let mut timestamp: u32 = rand::random();
    loop {
        ticker.tick().await;
        let packet = rtc::rtp::Packet {
            header: rtc::rtp::Header {
                version: 2,
                payload_type,
                sequence_number,
                timestamp,
                ssrc,
                ..Default::default()
            },
            payload: Bytes::from_static(&OPUS_SILENCE),
        };
        if let Err(error) = track.write_rtp(packet).await {
            return shared.record_error(format!("audio: {error}"));
        }
        shared.audio_packets_sent.fetch_add(1, Ordering::Relaxed);
        sequence_number = sequence_number.wrapping_add(1);
        timestamp = timestamp.wrapping_add(OPUS_FRAME_TICKS);
    }
}

/// Length of a keyframe's VP8 header: 3-byte frame tag, 3-byte start code,
/// 2 bytes each of width and height (RFC 6386 section 9.1).
const KEYFRAME_HEADER_LEN: usize = 10;
/// Length of a delta frame's VP8 header: the 3-byte frame tag.
const DELTA_FRAME_HEADER_LEN: usize = 3;
/// Length of the VP8 payload descriptor sent: X bit, then I bit with a
/// 15-bit picture id, as Chrome sends.
const DESCRIPTOR_LEN: usize = 4;

/// Generates one layer's synthetic VP8 frames as RTP packets, without
/// header extensions. Sequence number, timestamp and picture id start at
/// random values, as a browser's do.
pub struct SyntheticVp8Layer {
    index: u8,
    ssrc: u32,
    payload_type: u8,
    delta_frame_bytes: usize,
    resolution: (u16, u16),
    first_timestamp: u32,
    next_sequence_number: u16,
    picture_id: u16,
    frame_number: u32,
}

impl SyntheticVp8Layer {
    /// Creates the generator of layer `index` (0 is the lowest).
    pub fn new(
        index: u8,
        spec: &LayerSpec,
        ssrc: u32,
        payload_type: u8,
        resolution: (u16, u16),
    ) -> Self {
        Self {
            index,
            ssrc,
            payload_type,
            delta_frame_bytes: spec.delta_frame_bytes(),
            resolution,
            first_timestamp: rand::random(),
            next_sequence_number: rand::random(),
            picture_id: rand::random::<u16>() & 0x7FFF,
            frame_number: 0,
        }
    }

    /// Returns the RTP packets of the next frame, captured `elapsed` after
    /// the first one. A keyframe is [`KEYFRAME_SIZE_FACTOR`] times the size of
    /// a delta frame.
    pub fn next_frame(&mut self, keyframe: bool, elapsed: Duration) -> Vec<rtc::rtp::Packet> {
        let frame = self.frame_bytes(keyframe);
        let ticks = elapsed.as_micros() as u64 * u64::from(VP8_CLOCK_RATE) / 1_000_000;
        let timestamp = self.first_timestamp.wrapping_add(ticks as u32);

        let chunk_len = MAX_RTP_PAYLOAD - DESCRIPTOR_LEN;
        let chunk_count = frame.len().div_ceil(chunk_len);
        let mut packets = Vec::with_capacity(chunk_count);
        for (position, chunk) in frame.chunks(chunk_len).enumerate() {
            let mut payload = Vec::with_capacity(DESCRIPTOR_LEN + chunk.len());
            // X=1, S on the first packet, PID 0; then I=1; then M=1 and the
            // 15-bit picture id.
            let start = if position == 0 { 0x10 } else { 0x00 };
            payload.push(0x80 | start);
            payload.push(0x80);
            payload.push(0x80 | (self.picture_id >> 8) as u8);
            payload.push(self.picture_id as u8);
            payload.extend_from_slice(chunk);

            let header = rtc::rtp::Header {
                version: 2,
                marker: position + 1 == chunk_count,
                payload_type: self.payload_type,
                sequence_number: self.next_sequence_number,
                timestamp,
                ssrc: self.ssrc,
                ..Default::default()
            };
            self.next_sequence_number = self.next_sequence_number.wrapping_add(1);
            packets.push(rtc::rtp::Packet {
                header,
                payload: Bytes::from(payload),
            });
        }

        self.picture_id = (self.picture_id + 1) & 0x7FFF;
        self.frame_number = self.frame_number.wrapping_add(1);
        packets
    }

    /// Builds the VP8 frame: frame header, [`LayerMarker`], zero filler.
    fn frame_bytes(&self, keyframe: bool) -> Vec<u8> {
        let size = if keyframe {
            self.delta_frame_bytes * KEYFRAME_SIZE_FACTOR
        } else {
            self.delta_frame_bytes
        };
        let header_len = if keyframe {
            KEYFRAME_HEADER_LEN
        } else {
            DELTA_FRAME_HEADER_LEN
        };
        let mut frame = Vec::with_capacity(size);

        // Frame tag: P bit (0 = keyframe), version 0, show_frame, and the
        // 19-bit size of the first partition, here everything after the header.
        let first_partition = ((size - header_len) as u32).min(0x7_FFFF);
        let tag = u32::from(!keyframe) | (1 << 4) | (first_partition << 5);
        frame.extend_from_slice(&tag.to_le_bytes()[..3]);
        if keyframe {
            frame.extend_from_slice(&[0x9D, 0x01, 0x2A]);
            frame.extend_from_slice(&self.resolution.0.to_le_bytes());
            frame.extend_from_slice(&self.resolution.1.to_le_bytes());
        }
        LayerMarker {
            layer: self.index,
            frame_number: self.frame_number,
        }
        .write(&mut frame);
        frame.resize(size, 0);
        frame
    }
}

/// Interceptor that lets PLI and FIR through to the sending track; the end
/// of the `rtc` chain drops every other inbound RTCP.
#[derive(Default)]
struct KeyframeRequestForwarder {
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for KeyframeRequestForwarder {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, mut message: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &message.message.packet {
            let requests: Vec<_> = packets
                .iter()
                .filter(|packet| {
                    let any = packet.as_any();
                    any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
                })
                .map(|packet| packet.cloned())
                .collect();
            if !requests.is_empty() {
                // The handler routes RTCP by the first packet's media SSRC,
                // so only the requests go on, marked for the application.
                message.message.packet = Packet::Rtcp(requests);
                message.message.add(Attribute::DeliverToApplication);
            }
        }
        self.read_queue.push_back(message);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read_queue.pop_front()
    }

    fn handle_write(&mut self, message: TaggedPacket) -> Result<(), Self::Error> {
        self.write_queue.push_back(message);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write_queue.pop_front()
    }
}

impl Interceptor for KeyframeRequestForwarder {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use super::reverse_ssrc_lines;

    #[test]
    fn reverse_ssrc_lines_swaps_groups_within_each_section() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=ssrc:7 cname:a\r\n\
                   m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rid:q send\r\na=rid:f send\r\n\
                   a=ssrc:1 cname:a\r\na=ssrc:1 msid:s t\r\na=ssrc:2 cname:a\r\na=ssrc:2 msid:s t\r\n\
                   a=simulcast:send q;f\r\n";
        assert_eq!(
            reverse_ssrc_lines(sdp),
            "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=ssrc:7 cname:a\r\n\
             m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rid:q send\r\na=rid:f send\r\n\
             a=ssrc:2 cname:a\r\na=ssrc:2 msid:s t\r\na=ssrc:1 cname:a\r\na=ssrc:1 msid:s t\r\n\
             a=simulcast:send q;f\r\n"
        );
    }
}
