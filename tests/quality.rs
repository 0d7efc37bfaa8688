//! The session record keeps a quality summary per participant, measured by
//! the media plane from each connection's statistics.

mod common;

use std::time::Duration;

use common::{admit, clip_ivf, clip_ogg, create_room, TestServer};
use vpr_bench::client::{PublisherMedia, WhepSubscriber, WhipPublisher};
use vpr_control::pb::{GetSessionRequest, Role};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn quality_summary_per_participant() {
    let server = TestServer::start().await;
    let mut grpc = server.grpc_client().await;
    let room = create_room(&mut grpc, "INC-quality").await;
    let resident = admit(&mut grpc, &room.room_id, "resident", Role::Resident).await;
    let officer = admit(&mut grpc, &room.room_id, "officer", Role::Officer).await;

    let subscriber = WhepSubscriber::start(&officer.whep_url, &officer.join_token).await.expect("WHEP");
    subscriber.wait_connected(CONNECT_TIMEOUT).await.expect("subscriber connects");
    let publisher = WhipPublisher::start(
        &resident.whip_url,
        &resident.join_token,
        PublisherMedia::looping(clip_ivf(), clip_ogg()),
    )
    .await
    .expect("WHIP");
    publisher.wait_connected(CONNECT_TIMEOUT).await.expect("publisher connects");

    // Reports come every 2 s; the second one covers a full interval of media.
    tokio::time::sleep(Duration::from_millis(5_000)).await;
    let session = grpc
        .get_session(GetSessionRequest { room_id: room.room_id.clone() })
        .await
        .expect("GetSession")
        .into_inner();
    publisher.stop().await.expect("WHIP stop");
    subscriber.stop().await.expect("WHEP stop");

    for participant in [&resident.participant_id, &officer.participant_id] {
        let quality = session
            .quality
            .iter()
            .find(|q| &q.participant_id == participant)
            .unwrap_or_else(|| panic!("no quality summary for {participant}: {:?}", session.quality));
        // The clip is about 300 kbit/s of VP8 plus 32 kbit/s of Opus.
        assert!(
            quality.bitrate_kbps > 150.0 && quality.bitrate_kbps < 1_000.0,
            "bitrate of {participant}: {quality:?}"
        );
        assert!(quality.packet_loss < 0.02, "loss on loopback for {participant}: {quality:?}");
        assert!(quality.updated_at_unix_ms > 0, "no update time: {quality:?}");
    }
    let alerts = session.events.iter().filter(|e| e.kind == "quality_alert").count();
    assert_eq!(alerts, 0, "quality alert on a clean loopback call: {:?}", session.events);
}
