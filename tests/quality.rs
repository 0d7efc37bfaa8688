//! The session record keeps a quality summary per participant, measured by
//! the media plane from each connection's statistics.

mod common;

use std::time::{Duration, Instant};

use common::{start_live_call, LiveCall, TestServer};
use vpr_control::pb::{GetSessionRequest, Role};

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

/// Quality-alert events of `participant_id` in the session record, as
/// (state, round trip in ms) pairs in the order they happened.
async fn alerts_of(grpc: &mut common::RoomClient, room_id: &str, participant_id: &str) -> Vec<(String, f64)> {
    let session = grpc
        .get_session(GetSessionRequest { room_id: room_id.to_owned() })
        .await
        .expect("GetSession")
        .into_inner();
    session
        .events
        .iter()
        .filter(|event| event.kind == "quality_alert" && event.participant_id == participant_id)
        .map(|event| {
            let detail: serde_json::Value = serde_json::from_str(&event.detail).expect("alert detail is JSON");
            let state = detail["state"].as_str().unwrap_or_default().to_owned();
            (state, detail["rtt_ms"].as_f64().unwrap_or_default())
        })
        .collect()
}

/// An officer whose link gains a 450 ms delay gets a quality alert with the
/// round trip in its detail, and the alert clears once the delay is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quality_alert_raised_and_cleared() {
    use vpr_bench::client::{PublisherMedia, WhipPublisher};
    use vpr_bench::relay::{Direction, Impairment, Relay, RelayedSubscriber};

    const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
    const ALERT_DEADLINE: Duration = Duration::from_secs(12);
    let slow_link = Duration::from_millis(450);

    let server = TestServer::start().await;
    let mut grpc = server.grpc_client().await;
    let room = common::create_room(&mut grpc, "INC-quality-alert").await;
    let resident = common::admit(&mut grpc, &room.room_id, "resident-alert", Role::Resident).await;
    let officer = common::admit(&mut grpc, &room.room_id, "officer-alert", Role::Officer).await;
    let publisher = WhipPublisher::start(
        &resident.whip_url,
        &resident.join_token,
        PublisherMedia::looping(common::clip_ivf(), common::clip_ogg()),
    )
    .await
    .expect("WHIP publish");
    publisher.wait_connected(CONNECT_TIMEOUT).await.expect("publisher connects");
    let (relay, relay_addr) = Relay::start_seeded(server.media_addr(), 1).await.expect("starting the relay failed");
    let subscriber = RelayedSubscriber::start(&officer.whep_url, &officer.join_token, relay_addr)
        .await
        .expect("WHEP subscribe through the relay");
    subscriber.wait_connected(CONNECT_TIMEOUT).await.expect("subscriber connects");

    relay.set(Direction::Downstream, Impairment::none().with_delay(slow_link));
    let delayed = Instant::now();
    let mut alerts = Vec::new();
    while alerts.is_empty() && delayed.elapsed() < ALERT_DEADLINE {
        tokio::time::sleep(Duration::from_millis(250)).await;
        alerts = alerts_of(&mut grpc, &room.room_id, &officer.participant_id).await;
    }
    println!("alerts {:?} after {:?} on the slow link", alerts, delayed.elapsed());
    assert_eq!(alerts.len(), 1, "alerts on the slow link: {alerts:?}\n{}", server.log_tail(30));
    assert_eq!(alerts[0].0, "raised");
    assert!(alerts[0].1 >= 450.0, "round trip in the raised alert: {alerts:?}");

    relay.set(Direction::Downstream, Impairment::none());
    let restored = Instant::now();
    while alerts.len() < 2 && restored.elapsed() < ALERT_DEADLINE {
        tokio::time::sleep(Duration::from_millis(250)).await;
        alerts = alerts_of(&mut grpc, &room.room_id, &officer.participant_id).await;
    }
    println!("alerts {:?} after {:?} on the restored link", alerts, restored.elapsed());
    assert_eq!(alerts.len(), 2, "alerts after the delay ended: {alerts:?}");
    assert_eq!(alerts[1].0, "cleared");
    assert!(alerts[1].1 < 300.0, "round trip in the cleared alert: {alerts:?}");

    let resident_alerts = alerts_of(&mut grpc, &room.room_id, &resident.participant_id).await;
    assert_eq!(resident_alerts, Vec::new(), "the resident's link was never impaired");
    subscriber.stop().await.expect("WHEP DELETE failed");
    publisher.stop().await.expect("WHIP DELETE failed");
}
