//! Self-test of the simulcast publisher without the VPR server: a WHIP
//! endpoint answered by a plain `webrtc` peer in this process counts what
//! arrives per rid, and sends a PLI for one layer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use axum::Router;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use tokio::sync::mpsc;
use vpr_bench::client::simulcast::{LayerSpec, SimulcastOptions, SimulcastPublisher, SsrcLines};
use vpr_bench::relay::ReorderingFrameCounter;
use vpr_bench::client::{build_loopback_peer, poll_until, FrameLog, FrameRecord, PeerEvents};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{PeerConnection, RTCSessionDescription};

const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

/// What the answering peer received.
#[derive(Default)]
struct Received {
    /// Rid of each video SSRC, from the track's open event.
    rid_by_ssrc: HashMap<u32, String>,
    /// Complete frames per rid.
    frames: HashMap<String, FrameLog>,
    /// RTP packets per rid.
    packets: HashMap<String, u64>,
    /// Opus packets.
    audio_packets: u64,
    /// The simulcast video track, for sending PLI.
    video_track: Option<Arc<dyn TrackRemote>>,
}

struct Endpoint {
    peers: tokio::sync::Mutex<Vec<Arc<dyn PeerConnection>>>,
    received: Arc<Mutex<Received>>,
}

async fn whip(State(endpoint): State<Arc<Endpoint>>, offer: String) -> Response {
    let (events, mut remote_tracks) = PeerEvents::with_remote_tracks();
    let peer = build_loopback_peer(events.clone()).await.unwrap();
    peer.set_remote_description(RTCSessionDescription::offer(offer).unwrap())
        .await
        .unwrap();
    let answer = peer.create_answer(None).await.unwrap();
    peer.set_local_description(answer).await.unwrap();
    events.wait_gathering_complete(SETUP_TIMEOUT).await.unwrap();
    let sdp = peer.local_description().await.unwrap().sdp;
    endpoint.peers.lock().await.push(peer);

    let received = endpoint.received.clone();
    tokio::spawn(async move {
        while let Some(track) = remote_tracks.recv().await {
            tokio::spawn(count(track, received.clone()));
        }
    });
    (
        StatusCode::CREATED,
        [
            (header::LOCATION, "/session/whip".to_owned()),
            (header::CONTENT_TYPE, "application/sdp".to_owned()),
        ],
        sdp,
    )
        .into_response()
}

fn lock(received: &Mutex<Received>) -> std::sync::MutexGuard<'_, Received> {
    received.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// Counts packets and complete frames of `track` per rid.
async fn count(track: Arc<dyn TrackRemote>, received: Arc<Mutex<Received>>) {
    let video = track.kind().await == RtpCodecKind::Video;
    if video {
        lock(&received).video_track = Some(track.clone());
    }
    let mut assemblers: HashMap<u32, ReorderingFrameCounter> = HashMap::new();

    while let Some(event) = track.poll().await {
        match event {
            TrackRemoteEvent::OnOpen(init) if video => {
                let rid = init.rid.unwrap_or_default();
                lock(&received).rid_by_ssrc.insert(init.ssrc, rid);
            }
            TrackRemoteEvent::OnRtpPacket(packet) if video => {
                let now = Instant::now();
                let header = &packet.header;
                let frame = assemblers.entry(header.ssrc).or_default().push(
                    header.sequence_number,
                    header.timestamp,
                    header.marker,
                    &packet.payload,
                );
                let mut received = lock(&received);
                let rid = match received.rid_by_ssrc.get(&header.ssrc) {
                    Some(rid) => rid.clone(),
                    None => format!("unknown ssrc {}", header.ssrc),
                };
                *received.packets.entry(rid.clone()).or_default() += 1;
                if let Some(frame) = frame {
                    let record = FrameRecord::new(&frame, now);
                    received.frames.entry(rid).or_default().push(record);
                }
            }
            TrackRemoteEvent::OnRtpPacket(_) => lock(&received).audio_packets += 1,
            _ => {}
        }
    }
}

async fn end_session() -> StatusCode {
    StatusCode::OK
}

/// Starts the WHIP endpoint and returns its URL with what it receives.
async fn start_endpoint() -> (String, Arc<Endpoint>, mpsc::Sender<()>) {
    let endpoint = Arc::new(Endpoint {
        peers: tokio::sync::Mutex::new(Vec::new()),
        received: Arc::new(Mutex::new(Received::default())),
    });
    let app = Router::new()
        .route("/whip", post(whip))
        .route("/session/{id}", delete(end_session))
        .with_state(endpoint.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/whip", listener.local_addr().unwrap());
    let (stop, mut stop_rx) = mpsc::channel::<()>(1);
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                stop_rx.recv().await;
            })
            .await
            .unwrap();
    });
    (url, endpoint, stop)
}

/// Returns the video m-section of an SDP, up to the next m-line.
fn video_section(sdp: &str) -> String {
    let start = sdp.find("m=video").expect("offer has a video m-section");
    let rest = &sdp[start..];
    let end = rest[1..].find("\nm=").map_or(rest.len(), |index| index + 2);
    rest[..end].to_owned()
}

fn frames_per_rid(endpoint: &Endpoint) -> HashMap<String, usize> {
    lock(&endpoint.received)
        .frames
        .iter()
        .map(|(rid, log)| (rid.clone(), log.len()))
        .collect()
}

async fn wait_for_all_rids(endpoint: &Endpoint, rids: &[&str]) -> HashMap<String, usize> {
    let (_, frames) = poll_until(
        SETUP_TIMEOUT,
        || frames_per_rid(endpoint),
        |frames| {
            rids.iter()
                .all(|rid| frames.get(*rid).is_some_and(|count| *count > 0))
        },
    )
    .await;
    frames
}

fn keyframes(endpoint: &Endpoint, rid: &str) -> usize {
    lock(&endpoint.received)
        .frames
        .get(rid)
        .map_or(0, |log| log.iter().filter(|record| record.keyframe).count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_layers_at_their_bitrates() {
    let (url, endpoint, _stop) = start_endpoint().await;
    let layers = LayerSpec::default_set();
    let options = SimulcastOptions {
        // Only the first keyframe and requested ones in this test.
        keyframe_interval: Duration::from_secs(600),
        ..SimulcastOptions::new(layers.clone())
    };
    let publisher = SimulcastPublisher::start_with(&url, "token", options)
        .await
        .unwrap();

    let video = video_section(publisher.offer_sdp());
    println!("video m-section of the offer:\n{video}");
    assert!(video.contains("a=rid:q send\r\n"));
    assert!(video.contains("a=rid:h send\r\n"));
    assert!(video.contains("a=rid:f send\r\n"));
    assert!(video.contains("a=simulcast:send q;h;f\r\n"));
    assert!(video.contains("urn:ietf:params:rtp-hdrext:sdes:mid\r\n"));
    assert!(video.contains("urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id\r\n"));
    assert!(video.contains("a=sendonly\r\n"));
    assert!(!video.contains("a=ssrc:"));

    publisher.wait_connected(SETUP_TIMEOUT).await.unwrap();
    let frames = wait_for_all_rids(&endpoint, &["q", "h", "f"]).await;
    println!("frames after start: {frames:?}");
    assert_eq!(frames.len(), 3, "rids received: {frames:?}");

    // The receiver learned the publisher's SSRC of each rid.
    let ssrcs = publisher.layer_ssrcs();
    {
        let received = lock(&endpoint.received);
        for (rid, ssrc) in &ssrcs {
            assert_eq!(received.rid_by_ssrc.get(ssrc), Some(rid));
        }
    }

    // Bitrate over 3 s once every layer runs.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let window_start = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let window_end = Instant::now();
    {
        let received = lock(&endpoint.received);
        for (index, layer) in layers.iter().enumerate() {
            let log = &received.frames[&layer.rid];
            let bitrate = log.bitrate_bps(window_start, window_end);
            let expected = f64::from(layer.bitrate_bps);
            println!("rid {}: {bitrate:.0} bit/s, expected {expected}", layer.rid);
            assert!(
                (bitrate - expected).abs() < expected * 0.2,
                "rid {} received {bitrate:.0} bit/s, expected {expected}",
                layer.rid
            );
            assert!(log.iter().all(|record| record.layer == Some(index as u8)));
            assert_eq!(log.latest_layer(), Some(index as u8));
            assert_eq!(log.freezes(window_start, window_end), vec![]);
        }
        assert!(
            received.audio_packets > 100,
            "audio: {}",
            received.audio_packets
        );
    }

    // A PLI for "h" makes "h", and only "h", send a keyframe.
    let before: Vec<usize> = ["q", "h", "f"]
        .iter()
        .map(|rid| keyframes(&endpoint, rid))
        .collect();
    // The endpoint may miss a first keyframe that arrives before its track
    // handler is set up; the publisher's own count below is exact.
    assert!(before.iter().all(|&count| count <= 1), "keyframes before the PLI: {before:?}");
    let h_ssrc = ssrcs.iter().find(|(rid, _)| rid == "h").unwrap().1;
    let track = lock(&endpoint.received).video_track.clone().unwrap();
    let pli_sent = Instant::now();
    track
        .write_rtcp(vec![Box::new(PictureLossIndication {
            sender_ssrc: 1,
            media_ssrc: h_ssrc,
        })])
        .await
        .unwrap();
    let (answered, _) = poll_until(
        Duration::from_secs(2),
        || keyframes(&endpoint, "h"),
        |count| *count > before[1],
    )
    .await;
    let keyframe_delay = pli_sent.elapsed();
    println!("keyframe on h {keyframe_delay:?} after the PLI");
    assert!(answered, "no keyframe on h after the PLI");
    assert!(keyframe_delay < Duration::from_millis(500));
    assert_eq!(keyframes(&endpoint, "q"), before[0], "keyframes on q");
    assert_eq!(keyframes(&endpoint, "f"), before[2], "keyframes on f");

    let stats = publisher.stop().await.unwrap();
    println!("publisher stats: {stats:?}");
    assert_eq!(stats.media_error, None);
    let plis: Vec<u64> = stats
        .layers
        .iter()
        .map(|layer| layer.plis_received)
        .collect();
    assert_eq!(plis, vec![0, 1, 0]);
    let keyframes_sent: Vec<u64> = stats
        .layers
        .iter()
        .map(|layer| layer.keyframes_sent)
        .collect();
    assert_eq!(keyframes_sent, vec![1, 2, 1]);
    assert!(stats.layers.iter().all(|layer| layer.frames_sent > 90));
    assert!(stats.audio_packets_sent > 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_layer_ssrcs_offer() {
    let (url, endpoint, _stop) = start_endpoint().await;
    let options = SimulcastOptions {
        ssrc_lines: SsrcLines::InRidOrder,
        audio: false,
        ..SimulcastOptions::default()
    };
    let publisher = SimulcastPublisher::start_with(&url, "token", options)
        .await
        .unwrap();

    let video = video_section(publisher.offer_sdp());
    println!("video m-section of the offer:\n{video}");
    assert!(video.contains("a=simulcast:send q;h;f\r\n"));
    for (rid, ssrc) in publisher.layer_ssrcs() {
        assert!(video.contains(&format!("a=rid:{rid} send\r\n")));
        assert!(
            video.contains(&format!("a=ssrc:{ssrc} ")),
            "no a=ssrc for {rid}"
        );
    }
    assert!(!publisher.offer_sdp().contains("m=audio"));

    publisher.wait_connected(SETUP_TIMEOUT).await.unwrap();
    let frames = wait_for_all_rids(&endpoint, &["q", "h", "f"]).await;
    println!("frames: {frames:?}");
    for rid in ["q", "h", "f"] {
        assert!(
            frames.get(rid).is_some_and(|count| *count > 0),
            "no frames on {rid}: {frames:?}"
        );
    }
    let stats = publisher.stop().await.unwrap();
    assert_eq!(stats.media_error, None);
}

#[tokio::test]
async fn invalid_layers_rejected() {
    let layers = [
        LayerSpec::new("q", 150_000, 30),
        LayerSpec::new("q", 500_000, 30),
    ];
    let result = SimulcastPublisher::start("http://127.0.0.1:9/whip", "token", &layers).await;
    let error = result.err().expect("duplicate rid is rejected").to_string();
    assert!(error.contains("rid \"q\" is given twice"), "{error}");
}
