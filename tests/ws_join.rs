//! WebSocket join: an officer joins over one peer connection and the server
//! renegotiates it as publishers come and go, with no reconnect.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{admit, clip_ivf, clip_ogg, create_room, TestServer};
use futures_util::{SinkExt, StreamExt};
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use vpr_bench::client::{build_loopback_peer, create_complete_offer, PeerEvents, PublisherMedia, WhipPublisher};
use vpr_control::pb::Role;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::RTCSessionDescription;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Packets received per remote track, and the offers answered.
#[derive(Default, Debug)]
struct Received {
    packets: HashMap<String, u64>,
    offers: u32,
    /// Tracks listed by the last `room` message.
    listed_tracks: usize,
    /// Participants listed by the last `room` message.
    listed_participants: usize,
    quality_messages: u32,
}

/// Counts RTP packets of every remote track.
async fn count_tracks(mut tracks: mpsc::UnboundedReceiver<Arc<dyn TrackRemote>>, received: Arc<Mutex<Received>>) {
    while let Some(track) = tracks.recv().await {
        let received = received.clone();
        tokio::spawn(async move {
            let id = format!("{}-{:?}", track.kind().await, track.ssrcs().await.first());
            while let Some(event) = track.poll().await {
                match event {
                    TrackRemoteEvent::OnRtpPacket(_) => {
                        *received.lock().unwrap().packets.entry(id.clone()).or_default() += 1;
                    }
                    TrackRemoteEvent::OnEnded => break,
                    _ => {}
                }
            }
        });
    }
}

fn total_packets(received: &Arc<Mutex<Received>>) -> u64 {
    received.lock().unwrap().packets.values().sum()
}

async fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn websocket_join_renegotiates_tracks() {
    let server = TestServer::start().await;
    let mut grpc = server.grpc_client().await;
    let room = create_room(&mut grpc, "INC-ws").await;
    let resident = admit(&mut grpc, &room.room_id, "resident", Role::Resident).await;
    let officer = admit(&mut grpc, &room.room_id, "officer", Role::Officer).await;
    let second = admit(&mut grpc, &room.room_id, "second-officer", Role::Officer).await;

    // The resident publishes first over WHIP.
    let publisher = WhipPublisher::start(
        &resident.whip_url,
        &resident.join_token,
        PublisherMedia::looping(clip_ivf(), clip_ogg()),
    )
    .await
    .expect("WHIP");
    publisher.wait_connected(CONNECT_TIMEOUT).await.expect("publisher connects");

    // The officer joins over the WebSocket with one receive-only section.
    let ws_url = format!("{}/ws?token={}", server.http_base().replace("http://", "ws://"), officer.join_token);
    let (mut socket, _) = tokio_tungstenite::connect_async(ws_url).await.expect("WebSocket upgrade");
    let joined: Value = match socket.next().await.expect("joined").expect("frame") {
        Message::Text(text) => serde_json::from_str(&text).expect("JSON"),
        other => panic!("unexpected frame {other:?}"),
    };
    assert_eq!(joined["type"], "joined");
    assert_eq!(joined["participant_id"], officer.participant_id.as_str());

    let (events, tracks) = PeerEvents::with_remote_tracks();
    let peer = build_loopback_peer(events.clone()).await.expect("peer");
    let init = RTCRtpTransceiverInit { direction: RTCRtpTransceiverDirection::Recvonly, ..Default::default() };
    peer.add_transceiver_from_kind(RtpCodecKind::Audio, Some(init)).await.expect("transceiver");
    let offer = create_complete_offer(&peer, &events, CONNECT_TIMEOUT).await.expect("offer");
    socket
        .send(Message::Text(json!({"v": 1, "type": "offer", "sdp": offer}).to_string().into()))
        .await
        .expect("send offer");

    let received = Arc::new(Mutex::new(Received::default()));
    tokio::spawn(count_tracks(tracks, received.clone()));

    // Answer every server message: the first answer, then offers.
    let signalling = {
        let peer = peer.clone();
        let received = received.clone();
        tokio::spawn(async move {
            while let Some(Ok(frame)) = socket.next().await {
                let Message::Text(text) = frame else { continue };
                let message: Value = serde_json::from_str(&text).expect("server JSON");
                match message["type"].as_str() {
                    Some("answer") => {
                        let sdp = message["sdp"].as_str().expect("sdp").to_owned();
                        peer.set_remote_description(RTCSessionDescription::answer(sdp).unwrap()).await.expect("answer");
                    }
                    Some("offer") => {
                        let sdp = message["sdp"].as_str().expect("sdp").to_owned();
                        peer.set_remote_description(RTCSessionDescription::offer(sdp).unwrap()).await.expect("remote offer");
                        let answer = peer.create_answer(None).await.expect("create answer");
                        peer.set_local_description(answer).await.expect("local answer");
                        let sdp = peer.local_description().await.expect("local description").sdp;
                        received.lock().unwrap().offers += 1;
                        let reply = json!({"v": 1, "type": "answer", "sdp": sdp}).to_string();
                        socket.send(Message::Text(reply.into())).await.expect("send answer");
                    }
                    Some("room") => {
                        let mut state = received.lock().unwrap();
                        state.listed_tracks = message["tracks"].as_array().map_or(0, Vec::len);
                        state.listed_participants = message["participants"].as_array().map_or(0, Vec::len);
                    }
                    Some("quality") => received.lock().unwrap().quality_messages += 1,
                    Some("error") => panic!("server error: {message}"),
                    _ => {}
                }
            }
        })
    };

    events.wait_connected(CONNECT_TIMEOUT).await.expect("officer connects");
    wait_for("the resident's media over the renegotiated connection", Duration::from_secs(8), || {
        total_packets(&received) > 100
    })
    .await;
    let offers_after_resident = received.lock().unwrap().offers;
    assert!(offers_after_resident >= 1, "no renegotiation offer");
    wait_for("a room message listing the resident's tracks", Duration::from_secs(3), || {
        let state = received.lock().unwrap();
        state.listed_tracks == 2 && state.listed_participants == 2
    })
    .await;

    // A second officer publishes: two more tracks arrive on the same connection.
    let tracks_before = received.lock().unwrap().packets.len();
    let second_publisher = WhipPublisher::start(
        &second.whip_url,
        &second.join_token,
        PublisherMedia::looping(clip_ivf(), clip_ogg()),
    )
    .await
    .expect("second WHIP");
    second_publisher.wait_connected(CONNECT_TIMEOUT).await.expect("second publisher connects");
    wait_for("the second publisher's tracks", Duration::from_secs(8), || {
        received.lock().unwrap().packets.len() >= tracks_before + 2
    })
    .await;

    // It leaves: its tracks go away, the resident's keep flowing.
    // Read before the leave: the server may offer and the client answer
    // before stop() returns.
    let offers_before_leave = received.lock().unwrap().offers;
    second_publisher.stop().await.expect("second WHIP stop");
    let deadline = Instant::now() + Duration::from_secs(8);
    while received.lock().unwrap().offers <= offers_before_leave {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for a renegotiation after the second publisher left\n{}",
            server.log_tail(120)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let counts = |r: &Arc<Mutex<Received>>| r.lock().unwrap().packets.clone();
    let before = counts(&received);
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let after = counts(&received);
    let growing = after.iter().filter(|(id, n)| before.get(*id).is_some_and(|b| *n > b)).count();
    let stopped = after.iter().filter(|(id, n)| before.get(*id) == Some(*n)).count();
    assert_eq!(growing, 2, "the resident's two tracks should keep flowing: {before:?} -> {after:?}");
    assert_eq!(stopped, 2, "the second publisher's two tracks should have stopped: {before:?} -> {after:?}");
    {
        let state = received.lock().unwrap();
        assert_eq!(state.listed_tracks, 2, "room message after the second publisher left");
        assert!(state.quality_messages >= 1, "no quality message in {:?}", *state);
    }
    assert_eq!(
        events.connection_state(),
        webrtc::peer_connection::RTCPeerConnectionState::Connected,
        "the officer's connection was not kept"
    );

    publisher.stop().await.expect("WHIP stop");
    signalling.abort();
    let _ = peer.close().await;
}
