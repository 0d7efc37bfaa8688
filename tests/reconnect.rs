//! A resident who connects again (page reload, network change) replaces the
//! old connection: one participant remains, the officer keeps receiving
//! with contiguous sequence numbers, and the record shows the reconnect.

mod common;

use std::time::Duration;

use common::{admit, clip_ivf, clip_ogg, create_room, TestServer};
use vpr_bench::client::{PublisherMedia, WhepSubscriber, WhipPublisher};
use vpr_control::pb::{GetSessionRequest, Role};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn reconnect_replaces_old_connection() {
    let server = TestServer::start().await;
    let mut grpc = server.grpc_client().await;
    let room = create_room(&mut grpc, "INC-reconnect").await;
    let resident = admit(&mut grpc, &room.room_id, "resident", Role::Resident).await;
    let officer = admit(&mut grpc, &room.room_id, "officer", Role::Officer).await;

    let subscriber = WhepSubscriber::start(&officer.whep_url, &officer.join_token)
        .await
        .expect("WHEP subscribe");
    subscriber.wait_connected(CONNECT_TIMEOUT).await.expect("subscriber connects");

    let media = || PublisherMedia::looping(clip_ivf(), clip_ogg());
    let first = WhipPublisher::start(&resident.whip_url, &resident.join_token, media())
        .await
        .expect("first WHIP publish");
    first.wait_connected(CONNECT_TIMEOUT).await.expect("first publisher connects");
    let (reached, before) = subscriber
        .wait_until(Duration::from_secs(5), |stats| stats.video.frames >= 30)
        .await;
    assert!(reached, "no video before the reconnect: {before:?}");

    // Same token, new connection, while the first one is still up.
    let second = WhipPublisher::start(&resident.whip_url, &resident.join_token, media())
        .await
        .expect("second WHIP publish");
    second.wait_connected(CONNECT_TIMEOUT).await.expect("second publisher connects");
    let target = before.video.frames + 60;
    let (reached, after) = subscriber
        .wait_until(Duration::from_secs(6), |stats| stats.video.frames >= target)
        .await;
    first.abandon().await;
    second.stop().await.expect("second WHIP stop");
    subscriber.stop().await.expect("WHEP stop");

    println!("before: {before:?}\nafter: {after:?}");
    assert!(reached, "video did not resume after the reconnect: {after:?}");
    assert_eq!(after.video.sequence_gaps, 0, "sequence gap across the reconnect");
    assert_eq!(after.video.incomplete_frames, 0, "incomplete frames across the reconnect");

    let session = grpc
        .get_session(GetSessionRequest { room_id: room.room_id.clone() })
        .await
        .expect("GetSession")
        .into_inner();
    let residents: Vec<_> = session
        .participants
        .iter()
        .filter(|p| p.participant_id == resident.participant_id)
        .collect();
    assert_eq!(residents.len(), 1, "participants: {:?}", session.participants);
    let reconnects = session
        .events
        .iter()
        .filter(|e| e.kind == "participant_reconnected" && e.participant_id == resident.participant_id)
        .count();
    assert_eq!(reconnects, 1, "events: {:?}", session.events);
    let resident_left_early = session.events.iter().any(|e| {
        e.kind == "participant_left" && e.participant_id == resident.participant_id && e.detail.contains("replaced")
    });
    assert!(!resident_left_early, "the replaced connection was recorded as the resident leaving");
}
