//! An officer who joins mid-call starts on a keyframe: the down-track waits
//! for one, and the server requests one from the publisher.

mod common;

use std::time::Duration;

use common::{admit, clip_ivf, clip_ogg, create_room, TestServer};
use vpr_bench::client::{PublisherMedia, WhepSubscriber, WhipPublisher};
use vpr_control::pb::Role;

const KEYFRAME_REQUESTS_SENT: &str = "vpr_keyframe_requests_sent_total";

#[tokio::test]
async fn late_subscriber_starts_on_keyframe() {
    let server = TestServer::start().await;
    let mut grpc = server.grpc_client().await;
    let room = create_room(&mut grpc, "INC-late-officer").await;
    let resident = admit(&mut grpc, &room.room_id, "resident", Role::Resident).await;
    let officer = admit(&mut grpc, &room.room_id, "officer", Role::Officer).await;

    let publisher = WhipPublisher::start(
        &resident.whip_url,
        &resident.join_token,
        PublisherMedia::looping(clip_ivf(), clip_ogg()),
    )
    .await
    .expect("WHIP publish");
    publisher.wait_connected(Duration::from_secs(10)).await.expect("publisher connects");

    // The clip has a keyframe each second. Joining 0.88 s in puts the
    // keyframe at 1 s between the WHEP answer and the subscriber's DTLS
    // completion (about 0.2 s here), where it must not count as the start.
    tokio::time::sleep(Duration::from_millis(880)).await;
    let subscriber = WhepSubscriber::start(&officer.whep_url, &officer.join_token)
        .await
        .expect("WHEP subscribe");
    subscriber.wait_connected(Duration::from_secs(10)).await.expect("subscriber connects");

    let (_, received) = subscriber
        .wait_until(Duration::from_secs(5), |stats| stats.video.frames >= 45)
        .await;
    let subscriber_stats = subscriber.stop().await.expect("WHEP stop");
    publisher.stop().await.expect("WHIP stop");

    println!("received: {received:?}");
    assert!(received.video.frames >= 45, "video frames received: {}", received.video.frames);
    assert_eq!(received.video.first_frame_keyframe, Some(true), "first complete frame was not a keyframe");
    assert_eq!(received.video.sequence_gaps, 0, "sequence gaps after the keyframe");
    assert_eq!(subscriber_stats.video.incomplete_frames, 0, "incomplete frames");
    assert!(received.audio.packets > 0, "no audio received");

    let requests = server.metric_sum(KEYFRAME_REQUESTS_SENT).await.unwrap_or(0.0);
    assert!(requests >= 1.0, "no keyframe request sent upstream for the late subscriber");
}
