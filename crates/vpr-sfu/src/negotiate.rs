//! Building a peer connection and answering one offer.
//!
//! This runs on the signalling task, not on the media worker, because
//! creating a peer connection generates a DTLS certificate. The worker then
//! receives a connection whose local description is complete.

use std::net::SocketAddr;
use std::time::Instant;

use rtc::ice::mdns::MulticastDnsMode;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_OPUS, MIME_TYPE_VP8};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::{CandidateConfig, CandidateHostConfig, RTCIceCandidate};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::RTCRtpSenderId;

use crate::bwe::ReportQueue;
use crate::codecs::{media_setup, MediaSetup};
use crate::nack_filter::NackFilterHandle;
use crate::repair::RestoredCount;
use crate::config::MediaConfig;
use crate::error::MediaError;
use crate::events::TrackKind;
use crate::offer::{bundle_lone_section, unbundle_answer, OfferSummary};

/// Whether a session sends media into the room or receives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// WHIP: the client publishes.
    Publish,
    /// WHEP: the client receives the room's media.
    Subscribe,
    /// WebSocket join: the client publishes and receives over one peer
    /// connection, and the server offers again as tracks come and go.
    Participate,
}

/// A sender added for a subscriber: one per offered m-section.
#[derive(Debug, Clone)]
pub struct SenderSlot {
    /// Audio or video.
    pub kind: TrackKind,
    /// The library's sender id.
    pub sender_id: RTCRtpSenderId,
    /// Local track id; RTCP feedback from the subscriber names it.
    pub local_track_id: String,
    /// SSRC the down-track sends on.
    pub ssrc: u32,
}

/// A peer connection with its answer, ready for the media worker.
pub struct Negotiated {
    /// The peer connection, local description set.
    pub pc: RTCPeerConnection,
    /// SDP answer for the client.
    pub answer_sdp: String,
    /// Local ICE username fragment: STUN from the client names it.
    pub local_ufrag: String,
    /// Senders of a subscribing session.
    pub slots: Vec<SenderSlot>,
    /// Transport-wide feedback on what the connection sends.
    pub reports: ReportQueue,
    /// Round-trip input of the connection's NACK filter.
    pub nack_filter: NackFilterHandle,
    /// Retransmissions restored onto the simulcast layer their RID names.
    pub restored: RestoredCount,
}

/// Creates a peer connection for `offer_sdp` and answers it.
pub fn negotiate(
    config: &MediaConfig,
    local_addr: SocketAddr,
    session_id: &str,
    direction: Direction,
    offer_sdp: &str,
    summary: &OfferSummary,
) -> Result<Negotiated, MediaError> {
    let now = Instant::now();
    // The library draws the local ICE credentials, and draws new ones when
    // a later offer restarts ICE; fixing them here would keep them.
    let setting_engine = SettingEngineBuilder::new()
        .with_lite(true)
        .with_multicast_dns_mode(MulticastDnsMode::Disabled)
        .build();
    let MediaSetup { engine: media_engine, registry, reports, nack_filter, restored } =
        media_setup(summary.repair.clone(), direction == Direction::Participate)?;
    let mut pc = RTCPeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_setting_engine(setting_engine)
        .with_media_engine(media_engine)
        .with_interceptor_registry(registry)
        .build(now)?;

    let mut slots = Vec::new();
    if direction == Direction::Subscribe {
        for (index, &is_video) in summary.sections_are_video.iter().enumerate() {
            let (kind, rtc_kind, mime, clock_rate, channels) = if is_video {
                (TrackKind::Video, RtpCodecKind::Video, MIME_TYPE_VP8, TrackKind::Video.clock_rate(), 0)
            } else {
                (TrackKind::Audio, RtpCodecKind::Audio, MIME_TYPE_OPUS, TrackKind::Audio.clock_rate(), 2)
            };
            let ssrc: u32 = rand::random();
            let local_track_id = format!("{session_id}-{}-{index}", kind.as_str());
            let track = MediaStreamTrack::new(
                format!("vpr-{session_id}"),
                local_track_id.clone(),
                format!("vpr {}", kind.as_str()),
                rtc_kind,
                vec![RTCRtpEncodingParameters {
                    rtp_coding_parameters: RTCRtpCodingParameters {
                        ssrc: Some(ssrc),
                        ..Default::default()
                    },
                    codec: RTCRtpCodec {
                        mime_type: mime.to_owned(),
                        clock_rate,
                        channels,
                        sdp_fmtp_line: String::new(),
                        rtcp_feedback: vec![],
                    },
                    ..Default::default()
                }],
            );
            let sender_id = pc.add_track(track)?;
            slots.push(SenderSlot { kind, sender_id, local_track_id, ssrc });
        }
    }

    let offer = RTCSessionDescription::offer(bundle_lone_section(offer_sdp, summary))?;
    pc.set_remote_description(now, offer)?;

    let announced = if config.announced_ips.is_empty() {
        vec![local_addr.ip()]
    } else {
        config.announced_ips.clone()
    };
    for ip in announced {
        let candidate = CandidateHostConfig {
            base_config: CandidateConfig {
                network: "udp".to_owned(),
                address: ip.to_string(),
                port: local_addr.port(),
                component: 1,
                ..Default::default()
            },
            ..Default::default()
        }
        .new_candidate_host()?;
        pc.add_local_candidate(RTCIceCandidate::from(&candidate).to_json()?)?;
    }

    let answer = pc.create_answer(None)?;
    pc.set_local_description(now, answer)?;
    let answer_sdp = pc
        .local_description()
        .map(|description| unbundle_answer(&description.sdp, summary))
        .ok_or_else(|| MediaError::Negotiation("no local description after answering".into()))?;
    let local_ufrag = answer_sdp
        .lines()
        .find_map(|line| line.trim().strip_prefix("a=ice-ufrag:"))
        .map(str::to_owned)
        .ok_or_else(|| MediaError::Negotiation("the answer has no a=ice-ufrag line".into()))?;

    Ok(Negotiated { pc, answer_sdp, local_ufrag, slots, reports, nack_filter, restored })
}
