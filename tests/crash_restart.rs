//! SIGKILL during a live call, then a restart on the same database. Every
//! event a WatchEvents stream delivered before the kill is still stored, and
//! the restart closes the room with "server restart". A new stream resumed
//! from the last seq seen returns only the events written after it.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{admit, clip_ivf, clip_ogg, create_room, RoomClient, TestServer};
use tonic::Streaming;
use vpr_bench::client::{PublisherMedia, WhepSubscriber, WhipPublisher};
use vpr_control::pb::{
    Event, GetSessionRequest, MuteTrackRequest, RemoveParticipantRequest, Role, RoomState,
    WatchEventsRequest,
};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Maximum wait for the watcher to see an expected set of events.
const EVENT_TIMEOUT: Duration = Duration::from_secs(5);

/// Seq and kind of each event a watcher received, in arrival order.
type Seen = Arc<Mutex<Vec<(i64, String)>>>;

async fn watch(client: &mut RoomClient, room_id: &str, after_seq: i64) -> Streaming<Event> {
    client
        .watch_events(WatchEventsRequest {
            room_id: room_id.to_owned(),
            after_seq,
        })
        .await
        .unwrap_or_else(|status| panic!("WatchEvents after {after_seq} failed: {status}"))
        .into_inner()
}

fn count(seen: &Seen, kind: &str) -> usize {
    seen.lock().unwrap().iter().filter(|(_, k)| k == kind).count()
}

/// Waits up to [`EVENT_TIMEOUT`] until the watcher has seen at least `n`
/// events of each `(kind, n)`. Panics with the events seen if it times out.
async fn wait_for_events(seen: &Seen, expected_counts: &[(&str, usize)], server: &TestServer) {
    let deadline = Instant::now() + EVENT_TIMEOUT;
    while !expected_counts.iter().all(|(kind, n)| count(seen, kind) >= *n) {
        assert!(
            Instant::now() < deadline,
            "watcher did not see {expected_counts:?} within {EVENT_TIMEOUT:?}, saw {:?}\n{}",
            seen.lock().unwrap(),
            server.log_tail(40)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_nine_keeps_streamed_events() {
    let started = Instant::now();
    let mut server = TestServer::start().await;
    let mut grpc = server.grpc_client().await;
    let room = create_room(&mut grpc, "INC-crash").await;
    let room_id = room.room_id.clone();
    let resident = admit(&mut grpc, &room_id, "resident-k", Role::Resident).await;
    let officer = admit(&mut grpc, &room_id, "officer-k", Role::Officer).await;

    // The watcher records every event until its stream ends or fails.
    let seen: Seen = Arc::default();
    let mut stream = watch(&mut server.grpc_client().await, &room_id, 0).await;
    let watcher = tokio::spawn({
        let seen = Arc::clone(&seen);
        async move {
            loop {
                match stream.message().await {
                    Ok(Some(event)) => seen.lock().unwrap().push((event.seq, event.kind)),
                    Ok(None) => return "stream ended".to_owned(),
                    Err(status) => return format!("stream failed: {status}"),
                }
            }
        }
    });

    let subscriber = WhepSubscriber::start(&officer.whep_url, &officer.join_token)
        .await
        .unwrap_or_else(|error| panic!("WHEP subscribe failed: {error}\n{}", server.log_tail(40)));
    subscriber.wait_connected(CONNECT_TIMEOUT).await.expect("subscriber connects");
    let publisher = WhipPublisher::start(
        &resident.whip_url,
        &resident.join_token,
        PublisherMedia::looping(clip_ivf(), clip_ogg()),
    )
    .await
    .unwrap_or_else(|error| panic!("WHIP publish failed: {error}\n{}", server.log_tail(40)));
    publisher.wait_connected(CONNECT_TIMEOUT).await.expect("publisher connects");
    let (flowing, stats) = subscriber
        .wait_until(Duration::from_secs(5), |stats| stats.video.frames >= 20)
        .await;
    assert!(flowing, "no video reached the officer: {stats:?}\n{}", server.log_tail(40));
    wait_for_events(&seen, &[("participant_joined", 2), ("track_published", 2)], &server).await;

    // More control actions while the call runs.
    let session = grpc
        .get_session(GetSessionRequest { room_id: room_id.clone() })
        .await
        .expect("GetSession during the call")
        .into_inner();
    let video = session
        .tracks
        .iter()
        .find(|track| track.kind == "video")
        .unwrap_or_else(|| panic!("no video track recorded: {:?}", session.tracks));
    let mute = |muted| MuteTrackRequest {
        room_id: room_id.clone(),
        track_id: video.track_id.clone(),
        muted,
    };
    grpc.mute_track(mute(true)).await.expect("MuteTrack");
    grpc.mute_track(mute(false)).await.expect("unmute");
    let observer = admit(&mut grpc, &room_id, "observer-k", Role::Observer).await;
    wait_for_events(
        &seen,
        &[("track_muted", 1), ("track_unmuted", 1), ("participant_admitted", 3)],
        &server,
    )
    .await;
    // The test does not wait for the watcher to see this last event, so the
    // kill may come while it is still being streamed.
    grpc.remove_participant(RemoveParticipantRequest {
        room_id: room_id.clone(),
        participant_id: observer.participant_id.clone(),
        reason: "left the console".to_owned(),
    })
    .await
    .expect("RemoveParticipant");

    server.kill();
    let ended = tokio::time::timeout(Duration::from_secs(5), watcher)
        .await
        .expect("the watch stream did not end within 5 s of SIGKILL (timed out)")
        .expect("the watcher task panicked");
    let received = seen.lock().unwrap().clone();
    println!("watcher: {ended}; received {} events: {received:?}", received.len());
    publisher.abandon().await;
    subscriber.abandon().await;

    server.restart().await;
    let mut grpc = server.grpc_client().await;
    let session = grpc
        .get_session(GetSessionRequest { room_id: room_id.clone() })
        .await
        .unwrap_or_else(|status| {
            panic!("GetSession after restart failed: {status}\n{}", server.log_tail(40))
        })
        .into_inner();
    let stored: Vec<(i64, String)> =
        session.events.iter().map(|event| (event.seq, event.kind.clone())).collect();

    // Nothing streamed was lost.
    let missing: Vec<_> = received.iter().filter(|event| !stored.contains(event)).collect();
    assert!(
        missing.is_empty(),
        "streamed events missing after restart: {missing:?}\nstored: {stored:?}"
    );
    let received_seqs: Vec<i64> = received.iter().map(|(seq, _)| *seq).collect();
    assert!(
        received_seqs.windows(2).all(|pair| pair[0] < pair[1]),
        "watcher received seqs out of order or repeated: {received_seqs:?}"
    );

    // The restart closed the room and everyone in it.
    let record = session.room.clone().expect("GetSession returned no room");
    assert_eq!(record.state, RoomState::Closed as i32, "room after restart: {record:?}");
    assert_eq!(record.end_reason, "server restart", "room end reason");
    assert!(record.ended_at_unix_ms > 0, "room has no end time: {record:?}");
    for id in [&resident.participant_id, &officer.participant_id] {
        let participant = session
            .participants
            .iter()
            .find(|p| &p.participant_id == id)
            .unwrap_or_else(|| panic!("{id} not in the record: {:?}", session.participants));
        assert!(participant.left_at_unix_ms > 0, "no leave time: {participant:?}");
    }
    let closed: Vec<_> = session.events.iter().filter(|e| e.kind == "room_closed").collect();
    assert_eq!(closed.len(), 1, "room_closed events: {closed:?}");
    assert!(closed[0].detail.contains("server restart"), "room_closed detail: {closed:?}");

    // Resuming from the last seq seen returns exactly the later events.
    let last_seen = received_seqs.last().copied().expect("the watcher received no event");
    let expected: Vec<(i64, String)> =
        stored.iter().filter(|(seq, _)| *seq > last_seen).cloned().collect();
    assert!(
        expected.iter().any(|(_, kind)| kind == "room_closed"),
        "no stored event after seq {last_seen} is room_closed: {expected:?}"
    );
    let mut resumed_stream = watch(&mut grpc, &room_id, last_seen).await;
    let mut resumed: Vec<(i64, String)> = Vec::new();
    // Read until the room_closed event, then 500 ms more to catch repeated
    // events. The stream stays open, so every read has a deadline.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut quiet_until = None;
    loop {
        let until = quiet_until.unwrap_or(deadline);
        match tokio::time::timeout_at(until, resumed_stream.message()).await {
            Ok(Ok(Some(event))) => {
                if event.kind == "room_closed" && quiet_until.is_none() {
                    quiet_until = Some(tokio::time::Instant::now() + Duration::from_millis(500));
                }
                resumed.push((event.seq, event.kind));
            }
            Ok(Ok(None)) => break,
            Ok(Err(status)) => panic!("resumed WatchEvents failed: {status}, received so far: {resumed:?}"),
            Err(_) => break,
        }
    }
    println!("resumed after seq {last_seen}: {resumed:?}");
    let unique: HashSet<i64> = resumed.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(unique.len(), resumed.len(), "seq repeated in the resumed stream: {resumed:?}");
    assert!(
        resumed.iter().all(|(seq, _)| *seq > last_seen),
        "resumed stream returned seq at or before {last_seen}: {resumed:?}"
    );
    assert_eq!(resumed, expected, "resumed stream after seq {last_seen}");
    println!("took {:?}", started.elapsed());
}
