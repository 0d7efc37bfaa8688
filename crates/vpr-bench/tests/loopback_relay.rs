//! Self-test of the clients without the VPR server: a WHIP and a WHEP
//! endpoint answered by plain `webrtc` peers in this process, with RTP relayed
//! from the first to the second, show that the publisher sends the whole clip
//! and the subscriber counts it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use axum::Router;
use rtc::media_stream::MediaStreamTrack;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use tokio::sync::{mpsc, Mutex};
use vpr_bench::client::{
    build_loopback_peer, opus_codec, vp8_codec, PeerEvents, PublisherMedia, WhepSubscriber,
    WhipPublisher, OPUS_PAYLOAD_TYPE, VP8_PAYLOAD_TYPE,
};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{PeerConnection, RTCSessionDescription};

const VIDEO_OUT_SSRC: u32 = 0x1111_1111;
const AUDIO_OUT_SSRC: u32 = 0x2222_2222;

fn media_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/media")
}

/// The two answering peers and the relay's output tracks.
struct Relay {
    peers: Mutex<Vec<Arc<dyn PeerConnection>>>,
    video_out: Arc<TrackLocalStaticRTP>,
    audio_out: Arc<TrackLocalStaticRTP>,
}

fn out_track(kind: RtpCodecKind, ssrc: u32) -> Arc<TrackLocalStaticRTP> {
    let codec = match kind {
        RtpCodecKind::Video => vp8_codec(),
        _ => opus_codec(),
    };
    Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        "relay".to_owned(),
        format!("relay-{kind}"),
        format!("relay-{kind}"),
        kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec,
            ..Default::default()
        }],
    )))
}

async fn answer(peer: &Arc<dyn PeerConnection>, events: &PeerEvents, offer: String) -> String {
    peer.set_remote_description(RTCSessionDescription::offer(offer).unwrap())
        .await
        .unwrap();
    let answer = peer.create_answer(None).await.unwrap();
    peer.set_local_description(answer).await.unwrap();
    events
        .wait_gathering_complete(Duration::from_secs(10))
        .await
        .unwrap();
    peer.local_description().await.unwrap().sdp
}

fn created(location: &str, sdp: String) -> Response {
    (
        StatusCode::CREATED,
        [
            (header::LOCATION, location.to_owned()),
            (header::CONTENT_TYPE, "application/sdp".to_owned()),
        ],
        sdp,
    )
        .into_response()
}

async fn whip(State(relay): State<Arc<Relay>>, offer: String) -> Response {
    let (events, mut remote_tracks) = PeerEvents::with_remote_tracks();
    let peer = build_loopback_peer(events.clone()).await.unwrap();
    let sdp = answer(&peer, &events, offer).await;
    relay.peers.lock().await.push(peer);

    let relay_for_tracks = relay.clone();
    tokio::spawn(async move {
        while let Some(track) = remote_tracks.recv().await {
            tokio::spawn(forward(track, relay_for_tracks.clone()));
        }
    });
    created("/session/whip", sdp)
}

async fn forward(track: Arc<dyn TrackRemote>, relay: Arc<Relay>) {
    let (out, ssrc, payload_type) = match track.kind().await {
        RtpCodecKind::Video => (relay.video_out.clone(), VIDEO_OUT_SSRC, VP8_PAYLOAD_TYPE),
        _ => (relay.audio_out.clone(), AUDIO_OUT_SSRC, OPUS_PAYLOAD_TYPE),
    };
    while let Some(event) = track.poll().await {
        if let TrackRemoteEvent::OnRtpPacket(mut packet) = event {
            packet.header.ssrc = ssrc;
            packet.header.payload_type = payload_type;
            packet.header.extension = false;
            packet.header.extensions.clear();
            // Not bound yet means no subscriber yet: drop, as an SFU would.
            let _ = out.write_rtp(packet).await;
        }
    }
}

async fn whep(State(relay): State<Arc<Relay>>, offer: String) -> Response {
    let events = PeerEvents::new();
    let peer = build_loopback_peer(events.clone()).await.unwrap();
    peer.add_track(relay.video_out.clone() as Arc<dyn TrackLocal>)
        .await
        .unwrap();
    peer.add_track(relay.audio_out.clone() as Arc<dyn TrackLocal>)
        .await
        .unwrap();
    let sdp = answer(&peer, &events, offer).await;
    relay.peers.lock().await.push(peer);
    created("/session/whep", sdp)
}

async fn end_session() -> StatusCode {
    StatusCode::OK
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clip_relayed_publisher_to_subscriber() {
    let relay = Arc::new(Relay {
        peers: Mutex::new(Vec::new()),
        video_out: out_track(RtpCodecKind::Video, VIDEO_OUT_SSRC),
        audio_out: out_track(RtpCodecKind::Audio, AUDIO_OUT_SSRC),
    });
    let app = Router::new()
        .route("/whip", post(whip))
        .route("/whep", post(whep))
        .route("/session/{id}", delete(end_session))
        .with_state(relay.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (_stop, stop_rx) = mpsc::channel::<()>(1);
    tokio::spawn(async move {
        let mut stop_rx = stop_rx;
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                stop_rx.recv().await;
            })
            .await
            .unwrap();
    });

    let media =
        PublisherMedia::once(media_dir().join("clip.ivf"), media_dir().join("clip.ogg")).paused();
    let publisher = WhipPublisher::start(&format!("{base}/whip"), "token", media)
        .await
        .unwrap();
    publisher
        .wait_connected(Duration::from_secs(10))
        .await
        .unwrap();
    let subscriber = WhepSubscriber::start(&format!("{base}/whep"), "token")
        .await
        .unwrap();
    subscriber
        .wait_connected(Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(
        subscriber.session_url().as_str(),
        format!("{base}/session/whep")
    );

    let started = Instant::now();
    publisher.resume();
    let sent = publisher
        .wait_media_finished(Duration::from_secs(20))
        .await
        .unwrap();
    let played_for = started.elapsed();
    let (_, received) = subscriber
        .wait_until(Duration::from_secs(3), |stats| {
            stats.video.frames >= sent.video_frames_sent
                && stats.audio.packets >= sent.audio_packets_sent
        })
        .await;
    println!("played for {played_for:?}\nsent: {sent:?}\nreceived: {received:?}");

    assert_eq!(sent.media_error, None);
    assert_eq!(sent.video_frames_sent, 180);
    assert_eq!(sent.video_keyframes_sent, 6);
    assert!(
        sent.audio_packets_sent >= 290,
        "audio packets sent: {}",
        sent.audio_packets_sent
    );
    assert!(
        played_for >= Duration::from_millis(5900),
        "clip played in {played_for:?}, not real time"
    );
    assert_eq!(received.video.frames, 180);
    assert_eq!(received.video.keyframes, 6);
    assert_eq!(received.video.first_frame_keyframe, Some(true));
    assert_eq!(received.video.missing_packets, 0);
    assert_eq!(received.audio.packets, sent.audio_packets_sent);
    assert_eq!(received.audio.codec_mime.as_deref(), Some("audio/opus"));

    subscriber.stop().await.unwrap();
    publisher.stop().await.unwrap();
    for peer in relay.peers.lock().await.iter() {
        let _ = peer.close().await;
    }
}
