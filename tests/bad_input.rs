//! Bad input at the edges: malformed or oversized WHIP requests, missing or
//! wrong join tokens, and junk datagrams on the media port during a call.

mod common;

use std::net::UdpSocket;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{admit, clip_ivf, clip_ogg, create_room, TestServer, JOIN_TOKEN_SECRET};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use reqwest::StatusCode;
use vpr_bench::client::{prepare_publish_offer, PublisherMedia, WhepSubscriber, WhipPublisher};
use vpr_control::pb::Role;
use vpr_control::{JoinClaims, JoinTokenSigner};

const DROPPED_METRIC: &str = "vpr_udp_datagrams_dropped_total";

/// POSTs `body` as SDP to `url` with an optional bearer token; returns the
/// status and body.
async fn post_sdp(
    url: &str,
    token: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> (StatusCode, String) {
    let mut request = reqwest::Client::new()
        .post(url)
        .header(CONTENT_TYPE, "application/sdp")
        .body(body);
    if let Some(token) = token {
        request = request.header(AUTHORIZATION, format!("Bearer {token}"));
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|error| panic!("POST {url} failed: {error}"));
    let status = response.status();
    (status, response.text().await.unwrap_or_default())
}

fn unix_now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_rejects_bad_requests() {
    let server = TestServer::start().await;
    let mut grpc = server.grpc_client().await;
    let room_a = create_room(&mut grpc, "INC-bad-input-a").await;
    let room_b = create_room(&mut grpc, "INC-bad-input-b").await;
    let resident_a = admit(&mut grpc, &room_a.room_id, "resident-a", Role::Resident).await;
    let resident_b = admit(&mut grpc, &room_b.room_id, "resident-b", Role::Resident).await;
    let whip_url = &resident_a.whip_url;

    // A valid offer, so that only the part under test is wrong.
    let offer = prepare_publish_offer()
        .await
        .expect("building a WHIP offer failed");
    let valid_sdp = offer.sdp.clone();

    let (status, body) = post_sdp(
        whip_url,
        Some(&resident_a.join_token),
        "this is not an SDP offer",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "malformed SDP: {body}");
    assert!(
        body.to_ascii_lowercase().contains("sdp"),
        "400 body does not name the SDP: {body:?}"
    );

    let (status, body) = post_sdp(whip_url, None, valid_sdp.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "no token: {body}");

    let (status, body) = post_sdp(whip_url, Some("not-a-jwt"), valid_sdp.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "garbage token: {body}");

    let now = unix_now_s();
    let claims = JoinClaims {
        room_id: room_a.room_id.clone(),
        participant_id: resident_a.participant_id.clone(),
        identity: "resident-a".to_owned(),
        role: vpr_control::Role::Resident,
        iat: now - 120,
        exp: now + 600,
        publish: None,
        subscribe: None,
    };
    let wrong_secret = JoinTokenSigner::new(b"not-the-server-secret")
        .mint(claims.clone())
        .expect("minting failed");
    let (status, body) = post_sdp(whip_url, Some(&wrong_secret), valid_sdp.clone()).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "token signed with another secret: {body}"
    );

    let expired = JoinTokenSigner::new(JOIN_TOKEN_SECRET.as_bytes())
        .mint(JoinClaims {
            exp: now - 60,
            ..claims
        })
        .expect("minting failed");
    let (status, body) = post_sdp(whip_url, Some(&expired), valid_sdp.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "expired token: {body}");

    let (status, body) = post_sdp(whip_url, Some(&resident_b.join_token), valid_sdp.clone()).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "token for another room: {body}"
    );

    let oversized = vec![b'a'; 64 * 1024 + 1];
    let (status, body) = post_sdp(whip_url, Some(&resident_a.join_token), oversized).await;
    assert_eq!(
        status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "body over 64 KiB: {body}"
    );

    let _ = offer.peer.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_datagrams_do_not_break_call() {
    let server = TestServer::start().await;
    let mut grpc = server.grpc_client().await;
    let room = create_room(&mut grpc, "INC-junk-datagrams").await;
    let resident = admit(&mut grpc, &room.room_id, "resident-c", Role::Resident).await;
    let officer = admit(&mut grpc, &room.room_id, "officer-c", Role::Officer).await;

    let publisher = WhipPublisher::start(
        &resident.whip_url,
        &resident.join_token,
        PublisherMedia::looping(clip_ivf(), clip_ogg()),
    )
    .await
    .unwrap_or_else(|error| panic!("WHIP publish failed: {error}\n{}", server.log_tail(40)));
    let subscriber = WhepSubscriber::start(&officer.whep_url, &officer.join_token)
        .await
        .unwrap_or_else(|error| panic!("WHEP subscribe failed: {error}\n{}", server.log_tail(40)));
    let (flowing, before) = subscriber
        .wait_until(Duration::from_secs(10), |stats| stats.video.frames >= 30)
        .await;
    assert!(
        flowing,
        "media did not flow before the junk: {before:?}\n{}",
        server.log_tail(40)
    );
    let dropped_before = server.metric_sum(DROPPED_METRIC).await.unwrap_or(0.0);

    let stun_binding_request: [u8; 20] = [
        0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
    ];
    let datagrams: [&[u8]; 6] = [
        &[],
        &[0x00],
        &[0x00, 0x01],
        &stun_binding_request[..10],
        &[22, 0xFE, 0xFD, 0x00, 0x00],
        &[0x80, 0x60, 0x00, 0x01, 0x00, 0x00],
    ];
    let socket = UdpSocket::bind("127.0.0.1:0").expect("binding a UDP socket failed");
    for datagram in datagrams {
        socket
            .send_to(datagram, server.media_addr())
            .expect("sending a datagram failed");
    }

    let frames_before = before.video.frames;
    let (still_flowing, after) = subscriber
        .wait_until(Duration::from_secs(5), |stats| {
            stats.video.frames >= frames_before + 60
        })
        .await;
    assert!(
        still_flowing,
        "video stalled after the junk: before {before:?}, after {after:?}\n{}",
        server.log_tail(40)
    );
    assert_eq!(
        after.video.missing_packets, 0,
        "video sequence gaps: {:?}",
        after.video
    );
    assert_eq!(
        after.audio.missing_packets, 0,
        "audio sequence gaps: {:?}",
        after.audio
    );

    let sent = datagrams.len() as f64;
    let mut dropped_after = dropped_before;
    for _ in 0..30 {
        dropped_after = server.metric_sum(DROPPED_METRIC).await.unwrap_or(0.0);
        if dropped_after - dropped_before >= sent {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        dropped_after - dropped_before >= sent,
        "{DROPPED_METRIC} grew from {dropped_before} to {dropped_after}, expected at least {sent} more\n{}",
        server.metrics_text().await
    );

    let stats = publisher.stats();
    assert_eq!(stats.media_error, None, "publisher media task failed");
    subscriber.stop().await.expect("WHEP DELETE failed");
    publisher.stop().await.expect("WHIP DELETE failed");
}
