//! Codecs, header extensions and interceptors that every peer connection of
//! the media plane negotiates.
//!
//! The SFU forwards payloads without decoding them, so it offers every codec
//! browsers send: Opus, VP8, VP9, H264 and AV1. H264 is registered once per
//! profile browsers use (constrained baseline 42e0, baseline 4200, main 4d00,
//! constrained high 640c, high 6400). The library matches H264 on profile
//! alone and answers with the offered fmtp line, so an offer at any level
//! keeps H264 and the answer never names a higher level than the offer.

use rtc::interceptor::{Registry, Slot};
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;

use crate::bwe::{register_send_side_bwe, ReportQueue};
use crate::nack_filter::{NackFilter, NackFilterHandle};
use crate::packet_hook::PacketHook;
use crate::repair::{RepairParams, RestoredCount, RidStreams};
use crate::rtcp_route::DeliverRtcp;
use rtc::peer_connection::configuration::media_engine::{
    MediaEngine, MIME_TYPE_AV1, MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_VP8, MIME_TYPE_VP9,
};
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpHeaderExtensionCapability,
    RtpCodecKind,
};
use rtc::shared::error::Error;

const MIME_TYPE_RTX: &str = "video/rtx";

/// Header extensions negotiated besides those the default interceptors
/// register (mid, rid and repaired rid for video; transport-cc).
const EXTRA_EXTENSIONS: &[(&str, RtpCodecKind)] = &[
    ("urn:ietf:params:rtp-hdrext:sdes:mid", RtpCodecKind::Audio),
    ("urn:ietf:params:rtp-hdrext:ssrc-audio-level", RtpCodecKind::Audio),
    ("urn:3gpp:video-orientation", RtpCodecKind::Video),
    ("http://www.webrtc.org/experiments/rtp-hdrext/abs-capture-time", RtpCodecKind::Video),
    ("http://www.webrtc.org/experiments/rtp-hdrext/abs-capture-time", RtpCodecKind::Audio),
    ("http://www.webrtc.org/experiments/rtp-hdrext/playout-delay", RtpCodecKind::Video),
];

fn video_feedback() -> Vec<RTCPFeedback> {
    [("goog-remb", ""), ("ccm", "fir"), ("nack", ""), ("nack", "pli")]
        .into_iter()
        .map(|(typ, parameter)| RTCPFeedback { typ: typ.into(), parameter: parameter.into() })
        .collect()
}

fn codec(mime: &str, clock_rate: u32, channels: u16, fmtp: &str, payload_type: u8) -> RTCRtpCodecParameters {
    let rtcp_feedback = if mime.starts_with("video/") && mime != MIME_TYPE_RTX {
        video_feedback()
    } else {
        vec![]
    };
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: mime.to_owned(),
            clock_rate,
            channels,
            sdp_fmtp_line: fmtp.to_owned(),
            rtcp_feedback,
        },
        payload_type,
    }
}

/// Building blocks of one peer connection.
pub struct MediaSetup {
    /// Codecs and header extensions.
    pub engine: MediaEngine,
    /// Interceptor chain.
    pub registry: Registry,
    /// Transport-wide feedback on what the connection sends.
    pub reports: ReportQueue,
    /// Round-trip input of the connection's NACK filter.
    pub nack_filter: NackFilterHandle,
    /// Retransmissions restored onto the simulcast layer their RID names.
    pub restored: RestoredCount,
}

/// Builds the media engine and interceptor registry for one peer connection.
/// Every video codec has an RTX codec (RFC 4588) paired by `apt`. `repair`
/// gives the offer's numbering of both, so that retransmissions of a
/// simulcast layer named only by RID reach that layer. `renegotiated`
/// sessions withhold receiver report blocks about RID-named layers (see
/// [`RidStreams`]). The registry numbers
/// outgoing packets with transport-wide sequence numbers, and the feedback
/// on them goes to the returned queue.
pub fn media_setup(repair: RepairParams, renegotiated: bool) -> Result<MediaSetup, Error> {
    let mut engine = MediaEngine::default();
    engine.register_codec(
        codec(MIME_TYPE_OPUS, 48_000, 2, "minptime=10;useinbandfec=1", 111),
        RtpCodecKind::Audio,
    )?;

    let video: &[(&str, &str, u8)] = &[
        (MIME_TYPE_VP8, "", 96),
        (MIME_TYPE_VP9, "profile-id=0", 98),
        (MIME_TYPE_H264, "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f", 102),
        (MIME_TYPE_H264, "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f", 104),
        (MIME_TYPE_H264, "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=4d001f", 106),
        (MIME_TYPE_H264, "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=640c1f", 108),
        (MIME_TYPE_H264, "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=64001f", 112),
        (MIME_TYPE_H264, "level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42e01f", 114),
        (MIME_TYPE_AV1, "", 45),
    ];
    for &(mime, fmtp, payload_type) in video {
        engine.register_codec(codec(mime, 90_000, 0, fmtp, payload_type), RtpCodecKind::Video)?;
        let rtx_fmtp = format!("apt={payload_type}");
        engine.register_codec(
            codec(MIME_TYPE_RTX, 90_000, 0, &rtx_fmtp, payload_type + 1),
            RtpCodecKind::Video,
        )?;
    }

    for &(uri, kind) in EXTRA_EXTENSIONS {
        engine.register_header_extension(
            RTCRtpHeaderExtensionCapability { uri: uri.to_owned() },
            kind,
            None,
        )?;
    }

    // Keyframe requests, REMB and reports from subscribers must reach the
    // forwarder, so mark inbound RTCP for delivery before the default chain
    // consumes it, with a first SSRC the library routes.
    let registry = Registry::new().with(Slot::from(14_000), PacketHook::new(DeliverRtcp::default()));
    // Between the pacer (3 000) and the NACK responder (4 000), so the filter
    // receives subscribers' NACKs before the responder does.
    let nack_filter = NackFilterHandle::default();
    let registry = registry.with(Slot::from(3_500), PacketHook::new(NackFilter::new(nack_filter.clone())));
    // After the FEC decoder and before the NACK generator, which then counts
    // a restored retransmission as the packet it asked for.
    let restored = RestoredCount::default();
    let registry = registry.with(Slot::from(6_500), PacketHook::new(RidStreams::new(repair, restored.clone(), renegotiated)));
    let registry = register_default_interceptors(registry, &mut engine)?;
    let (registry, reports) = register_send_side_bwe(registry, &mut engine)?;
    Ok(MediaSetup { engine, registry, reports, nack_filter, restored })
}
