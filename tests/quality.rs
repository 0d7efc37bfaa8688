//! The session record keeps a quality summary per participant, measured by
//! the media plane from each connection's statistics.

mod common;

use std::time::Duration;

use common::{start_live_call, LiveCall, TestServer};
use vpr_control::pb::GetSessionRequest;

#[tokio::test]
async fn quality_summary_per_participant() {
    let server = TestServer::start().await;
    let mut grpc = server.grpc_client().await;
    let LiveCall { room, resident, officer, publisher, subscriber } = start_live_call(&mut grpc, "INC-quality").await;

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
        println!("quality of {participant}: {quality:?}");
        // The clip is about 300 kbit/s of VP8 plus 32 kbit/s of Opus.
        assert!(
            quality.bitrate_kbps > 150.0 && quality.bitrate_kbps < 1_000.0,
            "bitrate of {participant}: {quality:?}"
        );
        assert!(quality.packet_loss < 0.02, "loss on loopback for {participant}: {quality:?}");
        assert!(quality.updated_at_unix_ms > 0, "no update time: {quality:?}");
        // The officer's receiver reports carry jitter; the server measures
        // the resident's own. A video frame's packets share one timestamp
        // but arrive apart, so it is never exactly zero.
        assert!(quality.jitter_ms > 0.0, "no jitter for {participant}: {quality:?}");
        assert!(quality.jitter_ms < 30.0, "jitter on loopback for {participant}: {quality:?}");
    }
    // The officer receives, so its receiver reports echo the server's sender
    // reports: a round trip on loopback is well under 50 ms but never zero.
    let officer_quality = session.quality.iter().find(|q| q.participant_id == officer.participant_id).expect("officer");
    assert!(
        officer_quality.rtt_ms > 0.0 && officer_quality.rtt_ms < 50.0,
        "officer round trip: {officer_quality:?}"
    );
    assert_eq!(officer_quality.video_layer, "", "a call without simulcast has no layer: {officer_quality:?}");
    let alerts = session.events.iter().filter(|e| e.kind == "quality_alert").count();
    assert_eq!(alerts, 0, "quality alert on a clean loopback call: {:?}", session.events);
}
