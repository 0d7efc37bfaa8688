//! A room with an empty timeout closes once nobody has been connected for
//! that long, and stays open while someone is.

mod common;

use std::time::Duration;

use common::{admit, clip_ivf, clip_ogg, TestServer};
use reqwest::StatusCode;
use vpr_bench::client::{prepare_publish_offer, PublisherMedia, WhipPublisher};
use vpr_control::pb::{CreateRoomRequest, GetRoomRequest, Role, RoomState};

#[tokio::test]
async fn empty_room_closes_after_timeout() {
    let server = TestServer::start().await;
    let mut grpc = server.grpc_client().await;
    let create = |incident: &str| CreateRoomRequest {
        incident_id: incident.to_owned(),
        request_id: format!("{incident}-1"),
        empty_timeout_seconds: 1,
        ..Default::default()
    };
    let idle = grpc.create_room(create("INC-idle")).await.expect("CreateRoom").into_inner().room.expect("room");
    let busy = grpc.create_room(create("INC-busy")).await.expect("CreateRoom").into_inner().room.expect("room");
    let late = admit(&mut grpc, &idle.room_id, "late-resident", Role::Resident).await;
    let resident = admit(&mut grpc, &busy.room_id, "resident", Role::Resident).await;

    let publisher = WhipPublisher::start(
        &resident.whip_url,
        &resident.join_token,
        PublisherMedia::looping(clip_ivf(), clip_ogg()),
    )
    .await
    .expect("WHIP");
    publisher.wait_connected(Duration::from_secs(10)).await.expect("publisher connects");

    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let room = |room_id: &str| GetRoomRequest { room_id: room_id.to_owned() };
    let idle_now = grpc.get_room(room(&idle.room_id)).await.expect("GetRoom").into_inner();
    assert_eq!(idle_now.state, RoomState::Closed as i32, "idle room: {idle_now:?}");
    assert_eq!(idle_now.end_reason, "empty timeout");
    let busy_now = grpc.get_room(room(&busy.room_id)).await.expect("GetRoom").into_inner();
    assert_eq!(busy_now.state, RoomState::Open as i32, "room with a connected participant closed: {busy_now:?}");

    // A join never lands in the closed room.
    let offer = prepare_publish_offer().await.expect("offer");
    let response = reqwest::Client::new()
        .post(&late.whip_url)
        .header("authorization", format!("Bearer {}", late.join_token))
        .header("content-type", "application/sdp")
        .body(offer.sdp.clone())
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), StatusCode::NOT_FOUND, "join into the closed room");
    let _ = offer.peer.close().await;

    // Once the resident leaves, the busy room closes too.
    publisher.stop().await.expect("WHIP stop");
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    let busy_after = grpc.get_room(room(&busy.room_id)).await.expect("GetRoom").into_inner();
    assert_eq!(busy_after.state, RoomState::Closed as i32, "room after the last participant left: {busy_after:?}");
    assert_eq!(busy_after.end_reason, "empty timeout");
}
