//! Micro-benchmarks of the per-packet media path: down-track rewrite, fan-out,
//! RTP and RTCP parsing, datagram classification, the layer allocator, and
//! the floor every SFU pays per outbound packet here: SRTP protect plus one
//! UDP send to a socket bound on loopback, so the kernel's delivery is
//! counted as it is for the server.
//!
//! Run: `cargo bench --bench media_path`.

use std::hint::black_box;
use std::net::UdpSocket;
use std::time::Instant;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rtc::crypto::default_provider;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::reception_report::ReceptionReport;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::{NackPair, TransportLayerNack};
use rtc::rtp::header::Extension;
use rtc::rtp::packet::Packet;
use rtc::shared::marshal::{Marshal, Unmarshal};
use rtc::srtp::context::Context;
use rtc::srtp::protection_profile::ProtectionProfile;
use vpr_sfu::allocator::{allocate, Demand, Priority};
use vpr_sfu::datagram::classify;
use vpr_sfu::downtrack::{DownTrack, LegParameters, NegotiatedCodec, NegotiatedExtension, TRANSPORT_CC_URI};

const PAYLOAD_BYTES: usize = 1200;
const FANOUT: usize = 10;
const MID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:mid";
const ABS_SEND_TIME_URI: &str = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time";

fn legs() -> (LegParameters, LegParameters) {
    let vp8 = |payload_type| NegotiatedCodec {
        payload_type,
        mime_type: "video/VP8".into(),
        fmtp: String::new(),
        clock_rate: 90_000,
    };
    let extension = |id, uri: &str| NegotiatedExtension { id, uri: uri.into() };
    let publisher = LegParameters {
        codecs: vec![vp8(96)],
        extensions: vec![extension(1, MID_URI), extension(2, ABS_SEND_TIME_URI), extension(3, TRANSPORT_CC_URI)],
    };
    let subscriber = LegParameters {
        codecs: vec![vp8(120)],
        extensions: vec![extension(4, MID_URI), extension(5, ABS_SEND_TIME_URI), extension(6, TRANSPORT_CC_URI)],
    };
    (publisher, subscriber)
}

/// A 1200-byte VP8 keyframe packet with mid, abs-send-time and transport-cc.
fn source_packet(seq: u16) -> Packet {
    let mut packet = Packet::default();
    packet.header.version = 2;
    packet.header.payload_type = 96;
    packet.header.sequence_number = seq;
    packet.header.timestamp = u32::from(seq) * 3000;
    packet.header.ssrc = 0x1234_5678;
    packet.header.extension = true;
    packet.header.extension_profile = 0xBEDE;
    packet.header.extensions = vec![
        Extension { id: 1, payload: Bytes::from_static(b"1") },
        Extension { id: 2, payload: Bytes::from_static(&[1, 2, 3]) },
        Extension { id: 3, payload: Bytes::from_static(&[0, 7]) },
    ];
    let mut payload = vec![0u8; PAYLOAD_BYTES];
    payload[0] = 0x10; // VP8 descriptor: start of partition 0
    payload[1] = 0x00; // VP8 header: keyframe
    packet.payload = Bytes::from(payload);
    packet
}

fn forwarder(c: &mut Criterion) {
    let (publisher, subscriber) = legs();
    let mut group = c.benchmark_group("forwarder");
    group.throughput(Throughput::Elements(1));

    let mut track = DownTrack::new(42, true);
    track.bind(&publisher, &subscriber);
    let mut seq = 0u16;
    let now = Instant::now();
    group.bench_function("rewrite_1200B", |b| {
        b.iter(|| {
            seq = seq.wrapping_add(1);
            let mut packet = source_packet(seq);
            black_box(track.rewrite(&mut packet, now));
            packet
        })
    });

    let mut tracks: Vec<DownTrack> = (0..FANOUT)
        .map(|i| {
            let mut track = DownTrack::new(100 + i as u32, true);
            track.bind(&publisher, &subscriber);
            track
        })
        .collect();
    let mut seq = 0u16;
    group.throughput(Throughput::Elements(FANOUT as u64));
    group.bench_function("fanout_10_down_tracks", |b| {
        b.iter(|| {
            seq = seq.wrapping_add(1);
            let packet = source_packet(seq);
            for track in &mut tracks {
                let mut copy = packet.clone();
                black_box(track.rewrite(&mut copy, now));
                black_box(copy);
            }
        })
    });
    group.finish();
}

fn parsing(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse");
    group.throughput(Throughput::Elements(1));

    let rtp = source_packet(7).marshal().expect("marshal RTP");
    group.bench_function("rtp_1200B", |b| {
        b.iter(|| Packet::unmarshal(&mut black_box(rtp.clone())).expect("parse RTP"))
    });

    let compound: Vec<Box<dyn rtc::rtcp::packet::Packet>> = vec![
        Box::new(ReceiverReport {
            ssrc: 1,
            reports: vec![ReceptionReport { ssrc: 2, ..Default::default() }],
            ..Default::default()
        }),
        Box::new(TransportLayerNack {
            sender_ssrc: 1,
            media_ssrc: 2,
            nacks: vec![NackPair { packet_id: 100, lost_packets: 0b101 }],
        }),
        Box::new(PictureLossIndication { sender_ssrc: 1, media_ssrc: 2 }),
    ];
    let rtcp = rtc::rtcp::packet::marshal(&compound).expect("marshal RTCP");
    group.bench_function("rtcp_rr_nack_pli", |b| {
        b.iter(|| rtc::rtcp::packet::unmarshal(&mut black_box(rtcp.clone())).expect("parse RTCP"))
    });

    let datagram = rtp.to_vec();
    group.bench_function("classify_datagram", |b| b.iter(|| classify(black_box(&datagram)).is_ok()));
    group.finish();
}

/// SRTP protect (AES-128-GCM, the profile browsers prefer) plus one UDP send
/// of the protected 1200-byte packet to another socket on 127.0.0.1.
fn floor(c: &mut Criterion) {
    let provider = default_provider().expect("crypto provider");
    let mut context = Context::new(&[7u8; 16], &[9u8; 12], ProtectionProfile::AeadAes128Gcm, None, None, provider.crypto())
        .expect("SRTP context");
    let sender = UdpSocket::bind("127.0.0.1:0").expect("bind sender");
    let receiver = UdpSocket::bind("127.0.0.1:0").expect("bind receiver");
    let destination = receiver.local_addr().expect("receiver address");
    // A reader on another thread keeps the receive buffer from filling; it
    // stops once nothing arrives for a second.
    receiver
        .set_read_timeout(Some(std::time::Duration::from_secs(1)))
        .expect("read timeout");
    let reader = std::thread::spawn(move || {
        let mut buf = vec![0u8; 2048];
        while receiver.recv_from(&mut buf).is_ok() {}
    });

    let mut group = c.benchmark_group("floor");
    group.throughput(Throughput::Elements(1));
    let mut seq = 0u16;
    group.bench_function("srtp_protect_and_udp_send_1200B", |b| {
        b.iter(|| {
            seq = seq.wrapping_add(1);
            let plain = source_packet(seq).marshal().expect("marshal");
            let protected = context.encrypt_rtp(&plain).expect("protect");
            sender.send_to(&protected, destination).expect("send");
        })
    });
    group.finish();
    let _ = reader.join();
}

/// Measures one subscriber's layer decision: audio, the resident's
/// three-layer video and two officers' three-layer video against an estimate
/// that fits some upgrades but not all. The worker makes one decision per
/// subscriber every 100 ms.
fn allocator(c: &mut Criterion) {
    let video = |priority, current| Demand {
        priority,
        layers: vec![(2, 150_000), (1, 500_000), (0, 1_500_000)],
        current,
        held: None,
        steady: true,
    };
    let demands = vec![
        Demand { priority: Priority::Audio, layers: vec![(0, 40_000)], current: Some(0), held: None, steady: true },
        video(Priority::ResidentVideo, Some(0)),
        video(Priority::OtherVideo, Some(1)),
        video(Priority::OtherVideo, Some(2)),
    ];
    c.bench_function("allocator/decision_4_tracks", |b| {
        b.iter(|| black_box(allocate(black_box(2_400_000.0), black_box(&demands))))
    });
}

criterion_group!(benches, forwarder, parsing, floor, allocator);
criterion_main!(benches);
