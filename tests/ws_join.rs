//! WebSocket join: an officer joins over one peer connection and the server
//! renegotiates it as publishers come and go, with no reconnect; and an ICE
//! restart over the same socket moves the connection to a new address while
//! the participant stays the same. A session whose socket drops is resumed
//! on a new socket with its peer connection.

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
use vpr_bench::relay::{rewrite_answer_candidates, Relay};
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

/// Returns the `a=ice-ufrag` value of an SDP description.
fn ice_ufrag(sdp: &str) -> String {
    sdp.lines()
        .find_map(|line| line.trim_end().strip_prefix("a=ice-ufrag:"))
        .expect("no a=ice-ufrag in the SDP")
        .to_owned()
}

/// Messages the ICE restart test reads from the server.
#[derive(Default, Debug)]
struct RestartSignals {
    /// SDP of every `answer`, in order.
    answers: Vec<String>,
    /// Participant ids of the last `room` message.
    participants: Vec<String>,
    errors: Vec<String>,
    /// `restart_ice` messages received.
    restart_requests: usize,
}

#[tokio::test]
async fn ice_restart_keeps_participant() {
    let server = TestServer::start().await;
    let mut grpc = server.grpc_client().await;
    let room = create_room(&mut grpc, "INC-ws-restart").await;
    let resident = admit(&mut grpc, &room.room_id, "resident", Role::Resident).await;
    let officer = admit(&mut grpc, &room.room_id, "officer", Role::Officer).await;

    let publisher = WhipPublisher::start(
        &resident.whip_url,
        &resident.join_token,
        PublisherMedia::looping(clip_ivf(), clip_ogg()),
    )
    .await
    .expect("WHIP");
    publisher.wait_connected(CONNECT_TIMEOUT).await.expect("publisher connects");

    // The officer's media goes through relay A first and, after the
    // restart, through relay B: the server sees STUN from a new address.
    let (relay_a, relay_a_addr) = Relay::start(server.media_addr()).await.expect("relay A");
    let (relay_b, relay_b_addr) = Relay::start_seeded(server.media_addr(), 7).await.expect("relay B");

    let ws_url = format!("{}/ws?token={}", server.http_base().replace("http://", "ws://"), officer.join_token);
    let (socket, _) = tokio_tungstenite::connect_async(ws_url).await.expect("WebSocket upgrade");
    let (mut outgoing, mut incoming) = socket.split();

    let (events, tracks) = PeerEvents::with_remote_tracks();
    let peer = build_loopback_peer(events.clone()).await.expect("peer");
    let init = RTCRtpTransceiverInit { direction: RTCRtpTransceiverDirection::Recvonly, ..Default::default() };
    peer.add_transceiver_from_kind(RtpCodecKind::Audio, Some(init)).await.expect("transceiver");
    let offer = create_complete_offer(&peer, &events, CONNECT_TIMEOUT).await.expect("offer");
    outgoing
        .send(Message::Text(json!({"v": 1, "type": "offer", "sdp": offer}).to_string().into()))
        .await
        .expect("send offer");
    let outgoing = Arc::new(tokio::sync::Mutex::new(outgoing));

    let received = Arc::new(Mutex::new(Received::default()));
    tokio::spawn(count_tracks(tracks, received.clone()));
    let signals = Arc::new(Mutex::new(RestartSignals::default()));
    // Where the client sends its media: the relay the last answer points at.
    let relay_for_answers = Arc::new(Mutex::new(relay_a_addr));

    let signalling = {
        let peer = peer.clone();
        let received = received.clone();
        let signals = signals.clone();
        let outgoing = outgoing.clone();
        let relay_for_answers = relay_for_answers.clone();
        tokio::spawn(async move {
            while let Some(Ok(frame)) = incoming.next().await {
                let Message::Text(text) = frame else { continue };
                let message: Value = serde_json::from_str(&text).expect("server JSON");
                match message["type"].as_str() {
                    Some("answer") => {
                        let sdp = message["sdp"].as_str().expect("sdp").to_owned();
                        signals.lock().unwrap().answers.push(sdp.clone());
                        let relay = *relay_for_answers.lock().unwrap();
                        let sdp = rewrite_answer_candidates(&sdp, relay);
                        peer.set_remote_description(RTCSessionDescription::answer(sdp).unwrap()).await.expect("answer");
                    }
                    Some("restart_ice") => signals.lock().unwrap().restart_requests += 1,
                    Some("offer") => {
                        let relay = *relay_for_answers.lock().unwrap();
                        let sdp = rewrite_answer_candidates(message["sdp"].as_str().expect("sdp"), relay);
                        peer.set_remote_description(RTCSessionDescription::offer(sdp).unwrap()).await.expect("remote offer");
                        let answer = peer.create_answer(None).await.expect("create answer");
                        peer.set_local_description(answer).await.expect("local answer");
                        let sdp = peer.local_description().await.expect("local description").sdp;
                        received.lock().unwrap().offers += 1;
                        let reply = json!({"v": 1, "type": "answer", "sdp": sdp}).to_string();
                        outgoing.lock().await.send(Message::Text(reply.into())).await.expect("send answer");
                    }
                    Some("room") => {
                        let ids = message["participants"]
                            .as_array()
                            .map(|list| list.iter().filter_map(|p| p["participant_id"].as_str().map(str::to_owned)).collect())
                            .unwrap_or_default();
                        signals.lock().unwrap().participants = ids;
                    }
                    Some("error") => signals.lock().unwrap().errors.push(message["message"].to_string()),
                    _ => {}
                }
            }
        })
    };

    events.wait_connected(CONNECT_TIMEOUT).await.expect("officer connects through relay A");
    wait_for("the resident's media through relay A", Duration::from_secs(8), || total_packets(&received) > 100).await;
    wait_for("a server offer for the resident's tracks to be answered", Duration::from_secs(8), || {
        received.lock().unwrap().offers >= 1
    })
    .await;
    let relay_a_stats = relay_a.stats();
    assert!(relay_a_stats.upstream.forwarded_packets > 0, "nothing went through relay A: {relay_a_stats:?}");

    // Relay A goes dark: media stops.
    relay_a.set_outage(true);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let during_outage = total_packets(&received);
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert!(
        total_packets(&received) <= during_outage + 5,
        "media kept arriving during relay A's outage: {during_outage} -> {}",
        total_packets(&received)
    );

    // The server's side goes disconnected after 5 s without checks, and it
    // asks for an ICE restart.
    wait_for("the server's restart_ice message", Duration::from_secs(10), || {
        signals.lock().unwrap().restart_requests > 0
    })
    .await;

    // ICE restart over the same socket; the answer points at relay B.
    *relay_for_answers.lock().unwrap() = relay_b_addr;
    let first_offer_ufrag = ice_ufrag(&offer);
    let restart = peer
        .create_offer(Some(rtc::peer_connection::configuration::RTCOfferOptions { ice_restart: true }))
        .await
        .expect("restart offer");
    peer.set_local_description(restart).await.expect("local restart offer");
    let _ = events.wait_gathering_complete(Duration::from_secs(2)).await;
    let restart_sdp = peer.local_description().await.expect("local description").sdp;
    assert_ne!(ice_ufrag(&restart_sdp), first_offer_ufrag, "the restart offer kept the client's ufrag");
    let answers_before = signals.lock().unwrap().answers.len();
    outgoing
        .lock()
        .await
        .send(Message::Text(json!({"v": 1, "type": "offer", "sdp": restart_sdp}).to_string().into()))
        .await
        .expect("send restart offer");
    wait_for("the server's answer to the restart offer", Duration::from_secs(5), || {
        signals.lock().unwrap().answers.len() > answers_before
    })
    .await;
    {
        let state = signals.lock().unwrap();
        let first_answer_ufrag = ice_ufrag(&state.answers[0]);
        let restart_answer_ufrag = ice_ufrag(state.answers.last().expect("restart answer"));
        assert_ne!(restart_answer_ufrag, first_answer_ufrag, "the server kept its ICE credentials on restart");
    }

    let before_restart = total_packets(&received);
    wait_for("media through relay B after the restart", Duration::from_secs(10), || {
        total_packets(&received) > before_restart + 100
    })
    .await;
    let relay_b_stats = relay_b.stats();
    assert!(relay_b_stats.upstream.forwarded_packets > 0, "nothing went through relay B: {relay_b_stats:?}");
    assert!(relay_b_stats.downstream.forwarded_packets > 100, "little media came back through relay B: {relay_b_stats:?}");

    // Still one officer: in the room message and in the session record.
    {
        let state = signals.lock().unwrap();
        assert!(state.errors.is_empty(), "server errors: {:?}", state.errors);
        let officers = state.participants.iter().filter(|id| **id == officer.participant_id).count();
        assert_eq!(officers, 1, "officer entries in the last room message: {:?}", state.participants);
        assert_eq!(state.participants.len(), 2, "participants in the last room message: {:?}", state.participants);
    }
    let session = grpc
        .get_session(vpr_control::pb::GetSessionRequest { room_id: room.room_id.clone() })
        .await
        .expect("GetSession")
        .into_inner();
    let officers: Vec<_> = session.participants.iter().filter(|p| p.role == Role::Officer as i32).collect();
    assert_eq!(officers.len(), 1, "officers in the session record: {officers:?}");
    assert_eq!(officers[0].participant_id, officer.participant_id, "officer participant id");
    assert!(officers[0].joined_at_unix_ms > 0, "the officer never joined: {:?}", officers[0]);
    assert_eq!(officers[0].left_at_unix_ms, 0, "the officer left during the restart: {:?}", officers[0]);
    let officer_events: Vec<&str> = session
        .events
        .iter()
        .filter(|event| event.participant_id == officer.participant_id)
        .map(|event| event.kind.as_str())
        .collect();
    assert_eq!(
        officer_events.iter().filter(|kind| **kind == "participant_joined").count(),
        1,
        "officer events: {officer_events:?}"
    );
    assert!(!officer_events.contains(&"participant_left"), "officer events: {officer_events:?}");
    assert_eq!(
        events.connection_state(),
        webrtc::peer_connection::RTCPeerConnectionState::Connected,
        "the officer's connection after the restart"
    );

    publisher.stop().await.expect("WHIP stop");
    signalling.abort();
    let _ = peer.close().await;
}

/// Reads server messages until one of type `kind` arrives; returns it.
async fn next_of_type<S>(incoming: &mut S, kind: &str) -> Value
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let frame = tokio::time::timeout_at(deadline, incoming.next())
            .await
            .unwrap_or_else(|_| panic!("no {kind} message within 5 s"))
            .expect("socket closed")
            .expect("frame");
        let Message::Text(text) = frame else { continue };
        let message: Value = serde_json::from_str(&text).expect("server JSON");
        if message["type"] == kind {
            return message;
        }
    }
}

#[tokio::test]
async fn resume_keeps_session_after_socket_drop() {
    let server = TestServer::start().await;
    let mut grpc = server.grpc_client().await;
    let room = create_room(&mut grpc, "INC-ws-resume").await;
    let resident = admit(&mut grpc, &room.room_id, "resident", Role::Resident).await;
    let officer = admit(&mut grpc, &room.room_id, "officer", Role::Officer).await;
    let publisher = WhipPublisher::start(
        &resident.whip_url,
        &resident.join_token,
        PublisherMedia::looping(clip_ivf(), clip_ogg()),
    )
    .await
    .expect("WHIP");
    publisher.wait_connected(CONNECT_TIMEOUT).await.expect("publisher connects");

    let ws_url = format!("{}/ws?token={}", server.http_base().replace("http://", "ws://"), officer.join_token);

    // A socket with no session has nothing to resume.
    let (mut fresh, _) = tokio_tungstenite::connect_async(ws_url.as_str()).await.expect("WebSocket upgrade");
    fresh.send(Message::Text(json!({"v": 1, "type": "resume"}).to_string().into())).await.expect("send resume");
    let error = next_of_type(&mut fresh, "error").await;
    assert!(error["message"].as_str().unwrap_or("").contains("nothing to resume"), "reply to an early resume: {error}");
    drop(fresh);

    let (mut socket, _) = tokio_tungstenite::connect_async(ws_url.as_str()).await.expect("WebSocket upgrade");
    let (events, tracks) = PeerEvents::with_remote_tracks();
    let peer = build_loopback_peer(events.clone()).await.expect("peer");
    let init = RTCRtpTransceiverInit { direction: RTCRtpTransceiverDirection::Recvonly, ..Default::default() };
    peer.add_transceiver_from_kind(RtpCodecKind::Audio, Some(init)).await.expect("transceiver");
    let offer = create_complete_offer(&peer, &events, CONNECT_TIMEOUT).await.expect("offer");
    socket.send(Message::Text(json!({"v": 1, "type": "offer", "sdp": offer}).to_string().into())).await.expect("send offer");
    let answer = next_of_type(&mut socket, "answer").await;
    let sdp = answer["sdp"].as_str().expect("sdp").to_owned();
    peer.set_remote_description(RTCSessionDescription::answer(sdp).unwrap()).await.expect("answer");
    events.wait_connected(CONNECT_TIMEOUT).await.expect("officer connects");

    // The socket drops without `leave` before the server's offer is answered.
    let first_offer = next_of_type(&mut socket, "offer").await;
    drop(socket);

    // A new socket resumes the session; the server repeats its waiting offer.
    let (resumed, _) = tokio_tungstenite::connect_async(ws_url.as_str()).await.expect("WebSocket upgrade");
    let (mut outgoing, mut incoming) = resumed.split();
    outgoing.send(Message::Text(json!({"v": 1, "type": "resume"}).to_string().into())).await.expect("send resume");
    next_of_type(&mut incoming, "resumed").await;
    let repeated = next_of_type(&mut incoming, "offer").await;
    assert_eq!(repeated["sdp"], first_offer["sdp"], "the offer repeated after the resume");

    let received = Arc::new(Mutex::new(Received::default()));
    tokio::spawn(count_tracks(tracks, received.clone()));
    let sdp = repeated["sdp"].as_str().expect("sdp").to_owned();
    peer.set_remote_description(RTCSessionDescription::offer(sdp).unwrap()).await.expect("remote offer");
    let answer = peer.create_answer(None).await.expect("create answer");
    peer.set_local_description(answer).await.expect("local answer");
    let sdp = peer.local_description().await.expect("local description").sdp;
    outgoing.send(Message::Text(json!({"v": 1, "type": "answer", "sdp": sdp}).to_string().into())).await.expect("send answer");
    let signalling = tokio::spawn(async move { while let Some(Ok(_)) = incoming.next().await {} });

    wait_for("the resident's media after the resume", Duration::from_secs(8), || total_packets(&received) > 100).await;
    let session = grpc
        .get_session(vpr_control::pb::GetSessionRequest { room_id: room.room_id.clone() })
        .await
        .expect("GetSession")
        .into_inner();
    let officers: Vec<_> = session.participants.iter().filter(|p| p.role == Role::Officer as i32).collect();
    assert_eq!(officers.len(), 1, "officers in the session record: {officers:?}");
    assert_eq!(officers[0].left_at_unix_ms, 0, "the officer left when the socket dropped: {:?}", officers[0]);
    assert_eq!(
        events.connection_state(),
        webrtc::peer_connection::RTCPeerConnectionState::Connected,
        "the officer's connection after the resume"
    );

    publisher.stop().await.expect("WHIP stop");
    signalling.abort();
    let _ = peer.close().await;
}
