//! Draining on SIGTERM: the server reports not-ready and takes no new rooms,
//! participants or sessions, while the open call keeps its media until the
//! drain time ends.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{start_live_call, LiveCall, TestServer, DRAIN_TIMEOUT};
use reqwest::StatusCode;
use vpr_control::pb::CreateRoomRequest;

#[tokio::test]
async fn sigterm_drains_before_closing() {
    let mut server = TestServer::start().await;
    let mut grpc = server.grpc_client().await;
    let LiveCall { publisher, subscriber, .. } = start_live_call(&mut grpc, "INC-drain").await;
    let (reached, _) = subscriber.wait_until(Duration::from_secs(5), |s| s.video.frames >= 10).await;
    assert!(reached, "no video before SIGTERM");

    let pid = server.pid().expect("server pid").to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
    assert!(killed.success(), "kill -TERM failed");
    tokio::time::sleep(Duration::from_millis(300)).await;

    let readyz = reqwest::get(format!("{}/readyz", server.http_base())).await.expect("GET /readyz");
    assert_eq!(readyz.status(), StatusCode::SERVICE_UNAVAILABLE, "readyz while draining");

    let refused = grpc
        .create_room(CreateRoomRequest {
            incident_id: "INC-drain-late".to_owned(),
            request_id: "late-1".to_owned(),
            ..Default::default()
        })
        .await
        .expect_err("CreateRoom while draining");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused}");

    // The open call keeps flowing during the drain.
    let during = subscriber.stats().video.frames;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(subscriber.stats().video.frames > during + 10, "media stopped while draining");

    let exit = server.sigterm(DRAIN_TIMEOUT + Duration::from_secs(5)).await;
    assert!(exit.success(), "server exit status {exit}");
    publisher.abandon().await;
    subscriber.abandon().await;
}
