//! Prometheus metrics cover the control plane's event streams and the media
//! plane's rooms.

mod common;

use std::time::Duration;

use common::{admit, create_room, TestServer};
use vpr_control::pb::{Role, WatchEventsRequest};

#[tokio::test]
async fn metrics_count_rooms_and_event_streams() {
    let server = TestServer::start().await;
    let mut grpc = server.grpc_client().await;
    let room = create_room(&mut grpc, "INC-metrics").await;

    let mut watcher = server.grpc_client().await;
    let mut stream = watcher
        .watch_events(WatchEventsRequest { room_id: room.room_id.clone(), after_seq: 0 })
        .await
        .expect("WatchEvents")
        .into_inner();
    admit(&mut grpc, &room.room_id, "officer", Role::Officer).await;

    for _ in 0..2 {
        let event = tokio::time::timeout(Duration::from_secs(5), stream.message())
            .await
            .expect("event within 5 s")
            .expect("stream error")
            .expect("stream ended");
        assert!(event.seq > 0, "{event:?}");
    }

    assert_eq!(server.metric_sum("vpr_event_streams").await, Some(1.0), "open streams");
    let streamed = server.metric_sum("vpr_events_streamed_total").await.unwrap_or(0.0);
    assert!(streamed >= 2.0, "events streamed: {streamed}");
    let lag = server.metric_sum("vpr_event_stream_lag_ms").await.expect("lag metric");
    assert!((0.0..5_000.0).contains(&lag), "event stream lag {lag} ms");
    assert_eq!(server.metric_sum("vpr_rooms").await, Some(1.0), "open rooms");

    drop(stream);
    drop(watcher);
}
