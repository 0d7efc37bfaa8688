//! Graceful shutdown: SIGTERM during a live call drains, exits 0, and after a
//! restart the session record shows the room closed by the shutdown.

mod common;

use std::time::{Duration, Instant};

use common::{admit, clip_ivf, clip_ogg, create_room, TestServer, DRAIN_TIMEOUT};
use vpr_bench::client::{PublisherMedia, WhepSubscriber, WhipPublisher};
use vpr_control::pb::{GetSessionRequest, Role, RoomState};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_room_with_shutdown_reason() {
    let mut server = TestServer::start().await;
    let mut grpc = server.grpc_client().await;
    let room = create_room(&mut grpc, "INC-restart").await;
    let resident = admit(&mut grpc, &room.room_id, "resident-r", Role::Resident).await;
    let officer = admit(&mut grpc, &room.room_id, "officer-r", Role::Officer).await;

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
    let (flowing, stats) = subscriber
        .wait_until(Duration::from_secs(10), |stats| stats.video.frames >= 30)
        .await;
    assert!(
        flowing,
        "media did not flow before SIGTERM: {stats:?}\n{}",
        server.log_tail(40)
    );

    let signalled = Instant::now();
    let exit = server.sigterm(DRAIN_TIMEOUT + Duration::from_secs(5)).await;
    let exited_after = signalled.elapsed();
    println!("server exited {exit} after {exited_after:?}");
    assert!(
        exit.success(),
        "server exit status {exit}\n{}",
        server.log_tail(40)
    );
    assert!(
        exited_after <= DRAIN_TIMEOUT + Duration::from_secs(2),
        "server took {exited_after:?} to exit, drain timeout is {DRAIN_TIMEOUT:?}"
    );

    // The server is gone, so DELETE would fail. Close the peers only.
    subscriber.abandon().await;
    publisher.abandon().await;

    server.restart().await;
    let mut grpc = server.grpc_client().await;
    let session = grpc
        .get_session(GetSessionRequest {
            room_id: room.room_id.clone(),
        })
        .await
        .unwrap_or_else(|status| {
            panic!(
                "GetSession after restart failed: {status}\n{}",
                server.log_tail(40)
            )
        })
        .into_inner();

    let record = session.room.expect("GetSession returned no room");
    assert_eq!(
        record.state,
        RoomState::Closed as i32,
        "room state after shutdown: {record:?}"
    );
    assert_eq!(record.end_reason, "server shutdown", "room end reason");
    assert!(
        record.ended_at_unix_ms > 0,
        "room has no end time: {record:?}"
    );

    assert_eq!(
        session.participants.len(),
        2,
        "participants: {:?}",
        session.participants
    );
    for participant in &session.participants {
        assert!(
            participant.joined_at_unix_ms > 0,
            "{} never joined",
            participant.identity
        );
        assert!(
            participant.left_at_unix_ms >= participant.joined_at_unix_ms,
            "{} has no leave time after shutdown: {participant:?}",
            participant.identity
        );
    }
}
