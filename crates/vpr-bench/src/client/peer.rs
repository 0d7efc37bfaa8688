//! Loopback-only peer connections for the test clients.
//!
//! Every peer binds one UDP socket on 127.0.0.1, so its only ICE candidate is
//! a loopback host candidate: no STUN servers, no mDNS, no other interface.
//! The media engine offers exactly VP8 and Opus, the codecs of the test clip.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rtc::ice::mdns::MulticastDnsMode;
use rtc::ice::network_type::NetworkType;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpHeaderExtensionCapability, RtpCodecKind,
};
use tokio::sync::{mpsc, watch};
use webrtc::media_stream::track_remote::TrackRemote;
use rtc::interceptor::{NackGeneratorBuilder, NackResponderBuilder, Slot};
use rtc::peer_connection::configuration::interceptor_registry::{
    configure_rtcp_reports, configure_simulcast_extension_headers, configure_twcc_receiver_only,
};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder,
    PeerConnectionEventHandler, RTCConfigurationBuilder, RTCIceGatheringState,
    RTCPeerConnectionState, Registry, SettingEngine, SettingEngineBuilder,
};

use super::error::ClientError;

/// Address every test peer binds: loopback, ephemeral port.
const LOOPBACK_BIND: &str = "127.0.0.1:0";

/// Payload type offered for VP8 (the value browsers commonly use).
pub const VP8_PAYLOAD_TYPE: u8 = 96;
/// Payload type offered for Opus (the value browsers commonly use).
pub const OPUS_PAYLOAD_TYPE: u8 = 111;

/// The VP8 codec as offered by the clients.
pub fn vp8_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: "video/VP8".to_owned(),
        clock_rate: 90_000,
        channels: 0,
        sdp_fmtp_line: String::new(),
        rtcp_feedback: video_feedback(),
    }
}

/// The Opus codec as offered by the clients.
pub fn opus_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: "audio/opus".to_owned(),
        clock_rate: 48_000,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
        rtcp_feedback: vec![],
    }
}

fn video_feedback() -> Vec<RTCPFeedback> {
    [
        ("goog-remb", ""),
        ("ccm", "fir"),
        ("nack", ""),
        ("nack", "pli"),
    ]
    .into_iter()
    .map(|(typ, parameter)| RTCPFeedback {
        typ: typ.to_owned(),
        parameter: parameter.to_owned(),
    })
    .collect()
}

/// Builds the setting engine for loopback tests: IPv4 UDP only, loopback
/// candidates allowed, mDNS disabled.
///
/// NOTE: `rtc` 0.21.1 has no interface or IP filter (the setters are
/// commented out upstream), so the restriction to 127.0.0.1 comes from
/// binding the only socket there, see [`build_loopback_peer`].
pub fn loopback_setting_engine() -> SettingEngine {
    SettingEngineBuilder::new()
        .with_network_types(vec![NetworkType::Udp4])
        .with_include_loopback_candidate(true)
        .with_multicast_dns_mode(MulticastDnsMode::Disabled)
        .build()
}

/// Builds a media engine with VP8 and Opus only.
pub fn vp8_opus_media_engine() -> Result<MediaEngine, ClientError> {
    let mut media_engine = MediaEngine::default();
    media_engine.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: vp8_codec(),
            payload_type: VP8_PAYLOAD_TYPE,
        },
        RtpCodecKind::Video,
    )?;
    media_engine.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: opus_codec(),
            payload_type: OPUS_PAYLOAD_TYPE,
        },
        RtpCodecKind::Audio,
    )?;
    // Publishers stamp frames with their capture time, so subscribers can
    // measure end-to-end delay.
    media_engine.register_header_extension(
        RTCRtpHeaderExtensionCapability { uri: super::capture_time::ABS_CAPTURE_TIME_URI.to_owned() },
        RtpCodecKind::Video,
        None,
    )?;
    Ok(media_engine)
}

/// Time between two rounds of NACKs from a receiving client. The library's
/// default of 100 ms adds up to 100 ms to every repair. Chrome's receiver
/// sends a NACK when the packet after a gap arrives, so a short round is
/// closer to it.
pub const NACK_INTERVAL: Duration = Duration::from_millis(20);

/// Registers the interceptors of `rtc`'s defaults (NACK generator and
/// responder, RTCP reports, transport-wide feedback to the sender, the
/// simulcast header extensions) with NACK rounds every [`NACK_INTERVAL`].
pub fn register_client_interceptors(media_engine: &mut MediaEngine) -> Result<Registry, ClientError> {
    for parameter in ["", "pli"] {
        media_engine.register_feedback(
            RTCPFeedback { typ: "nack".to_owned(), parameter: parameter.to_owned() },
            RtpCodecKind::Video,
        );
    }
    let registry = Registry::new()
        .with(Slot::NackResponder, NackResponderBuilder::new().build())
        .with(Slot::NackGenerator, NackGeneratorBuilder::new().with_interval(NACK_INTERVAL).build());
    configure_simulcast_extension_headers(media_engine)?;
    let registry = configure_twcc_receiver_only(registry, media_engine)?;
    Ok(configure_rtcp_reports(registry))
}

/// Builds a peer connection bound to one UDP socket on 127.0.0.1, with no
/// ICE servers and the client interceptors ([`register_client_interceptors`]).
pub async fn build_loopback_peer(
    events: Arc<PeerEvents>,
) -> Result<Arc<dyn PeerConnection>, ClientError> {
    let mut media_engine = vp8_opus_media_engine()?;
    let registry = register_client_interceptors(&mut media_engine)?;
    let configuration = RTCConfigurationBuilder::new().build();

    let peer = PeerConnectionBuilder::new()
        .with_configuration(configuration)
        .with_media_engine(media_engine)
        .with_setting_engine(loopback_setting_engine())
        .with_interceptor_registry(registry)
        .with_handler(events)
        .with_udp_addrs(vec![LOOPBACK_BIND.to_owned()])
        .build()
        .await?;
    Ok(Arc::new(peer))
}

/// Creates an offer, sets it as the local description, waits until ICE
/// gathering is complete and returns the local SDP with every candidate in it
/// (WHIP and WHEP clients here do not trickle).
pub async fn create_complete_offer(
    peer: &Arc<dyn PeerConnection>,
    events: &PeerEvents,
    timeout: Duration,
) -> Result<String, ClientError> {
    let offer = peer.create_offer(None).await?;
    peer.set_local_description(offer).await?;
    events.wait_gathering_complete(timeout).await?;

    let local = peer
        .local_description()
        .await
        .ok_or(ClientError::NoLocalDescription)?;
    Ok(local.sdp)
}

/// Event sink of one peer connection: ICE gathering state, connection state
/// and, for subscribers, the remote tracks.
pub struct PeerEvents {
    gathering: watch::Sender<RTCIceGatheringState>,
    connection: watch::Sender<(RTCPeerConnectionState, Option<Instant>)>,
    remote_tracks: Option<mpsc::UnboundedSender<Arc<dyn TrackRemote>>>,
}

impl PeerEvents {
    /// Creates a sink that ignores remote tracks (for publishers).
    pub fn new() -> Arc<Self> {
        Arc::new(Self::with_track_sender(None))
    }

    /// Creates a sink that forwards every remote track to the returned
    /// receiver (for subscribers).
    pub fn with_remote_tracks() -> (Arc<Self>, mpsc::UnboundedReceiver<Arc<dyn TrackRemote>>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        (Arc::new(Self::with_track_sender(Some(sender))), receiver)
    }

    fn with_track_sender(
        remote_tracks: Option<mpsc::UnboundedSender<Arc<dyn TrackRemote>>>,
    ) -> Self {
        Self {
            gathering: watch::Sender::new(RTCIceGatheringState::New),
            connection: watch::Sender::new((RTCPeerConnectionState::New, None)),
            remote_tracks,
        }
    }

    /// Returns the current connection state.
    pub fn connection_state(&self) -> RTCPeerConnectionState {
        self.connection.borrow().0
    }

    /// Returns when the connection first reached `connected`, if it has.
    pub fn connected_at(&self) -> Option<Instant> {
        self.connection.borrow().1
    }

    /// Waits until ICE gathering is complete.
    pub async fn wait_gathering_complete(&self, timeout: Duration) -> Result<(), ClientError> {
        let mut receiver = self.gathering.subscribe();
        let wait = receiver.wait_for(|state| *state == RTCIceGatheringState::Complete);
        let reached = tokio::time::timeout(timeout, wait).await.is_ok();
        if reached {
            Ok(())
        } else {
            Err(ClientError::Timeout {
                what: "ICE gathering to complete",
                after: timeout,
            })
        }
    }

    /// Waits until the peer connection is connected (ICE and DTLS done).
    /// Fails early if it reaches `failed` or `closed` first.
    pub async fn wait_connected(&self, timeout: Duration) -> Result<Instant, ClientError> {
        const WHAT: &str = "the peer connection to connect";
        let mut receiver = self.connection.subscribe();
        let wait = receiver.wait_for(|(state, _)| {
            matches!(
                state,
                RTCPeerConnectionState::Connected
                    | RTCPeerConnectionState::Failed
                    | RTCPeerConnectionState::Closed
            )
        });

        let (state, connected_at) = match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(reached)) => *reached,
            Ok(Err(_)) | Err(_) => {
                return Err(ClientError::Timeout {
                    what: WHAT,
                    after: timeout,
                })
            }
        };
        match (state, connected_at) {
            (RTCPeerConnectionState::Connected, Some(at)) => Ok(at),
            (state, _) => Err(ClientError::ConnectionLost {
                what: WHAT,
                state: state.to_string(),
            }),
        }
    }
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for PeerEvents {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        self.gathering.send_replace(state);
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        tracing::debug!(%state, "peer connection state changed");
        self.connection.send_modify(|(current, connected_at)| {
            *current = state;
            if state == RTCPeerConnectionState::Connected && connected_at.is_none() {
                *connected_at = Some(Instant::now());
            }
        });
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        if let Some(sender) = &self.remote_tracks {
            // The receiver is gone only after the subscriber stopped.
            let _ = sender.send(track);
        }
    }
}
