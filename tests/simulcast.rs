//! Simulcast forwarding driven by send-side bandwidth estimation. A
//! publisher sends three layers to a subscriber behind the impairment
//! relay. The subscriber receives the top layer on a clean link and the
//! lowest while the link is capped at 500 kbit/s. After the cap is lifted
//! it receives the top layer again, without freezes at the switches.

mod common;

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use common::frames::{longest_gap, received_kbps, settled_on};
use common::{admit, create_room, log_field, newest_estimate_line, publish_simulcast, ServerOptions, TestServer};
use vpr_bench::client::simulcast::{LayerSpec, SimulcastOptions, SsrcLines};
use vpr_bench::relay::{Direction, Impairment, Relay, RelayedSubscriber};
use vpr_control::pb::Role;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const TOP_LAYER: u8 = 2;
const LOWEST_LAYER: u8 = 0;
/// A gap longer than this between complete frames is a freeze.
const FREEZE: Duration = Duration::from_millis(500);
const CAP_KBPS: u32 = 500;
/// Time allowed to reach the lowest layer after the cap starts.
const DOWN_DEADLINE: Duration = Duration::from_secs(2);
/// Time allowed to reach the top layer on a clean link.
const UP_DEADLINE: Duration = Duration::from_secs(8);
/// Time allowed from connecting to the 2.5 Mbit/s top layer on a clean link.
const INITIAL_RAMP: Duration = Duration::from_secs(3);

/// One sample of the trace kept as a test artifact.
struct Sample {
    at: Duration,
    estimate_kbps: Option<f64>,
    layer: Option<u8>,
    received_kbps: f64,
    capped: bool,
}

/// Returns the newest estimate the server logged for `participant_id`, in kbit/s.
fn logged_estimate_kbps(server: &TestServer, participant_id: &str) -> Option<f64> {
    let line = newest_estimate_line(server, participant_id)?;
    log_field(&line, "estimate_bps").map(|bps| bps as f64 / 1000.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulcast_layers_follow_capped_link() {
    simulcast_call("INC-simulcast-cap", SimulcastOptions::default(), Phases::WithCap).await;
}

/// An offer that declares each layer's SSRC in an `a=ssrc` line beside its
/// `a=rid` line, with the SSRC lines in the reverse order of the RIDs. The
/// server maps layers by the RID each stream carries. So the session record
/// names `f` while the subscriber receives the top layer's frames, and `q`
/// once the cap has moved it to the lowest layer's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_layer_ssrcs_map_by_rid() {
    let options = SimulcastOptions {
        ssrc_lines: SsrcLines::Reversed,
        ..SimulcastOptions::default()
    };
    simulcast_call("INC-simulcast-declared", options, Phases::LayerNames).await;
}

/// The top layer of this set needs an estimate above 2.5 Mbit/s, so
/// reaching it within 3 s shows the estimate ramps that fast from its
/// 300 kbit/s start on a clean link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn estimate_ramps_to_top_layer() {
    let layers = vec![
        LayerSpec::new("q", 150_000, 30),
        LayerSpec::new("h", 600_000, 30),
        LayerSpec::new("f", 2_500_000, 30),
    ];
    simulcast_call("INC-simulcast-ramp", SimulcastOptions::new(layers), Phases::RampOnly).await;
}

/// Waits up to 5 s for the officer's quality summary in the session record
/// to name `rid` as its received layer, and returns the last summary.
async fn wait_video_layer(
    grpc: &mut common::RoomClient,
    room_id: &str,
    participant_id: &str,
    rid: &str,
) -> vpr_control::pb::ParticipantQuality {
    let mut quality = None;
    let waited = Instant::now();
    while waited.elapsed() < Duration::from_secs(5) {
        let session = grpc
            .get_session(vpr_control::pb::GetSessionRequest { room_id: room_id.to_owned() })
            .await
            .expect("GetSession failed")
            .into_inner();
        quality = session.quality.into_iter().find(|q| q.participant_id == participant_id);
        if quality.as_ref().is_some_and(|q| q.video_layer == rid) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    quality.expect("no quality summary for the officer")
}

/// What a simulcast call goes through.
#[derive(PartialEq, Eq)]
enum Phases {
    /// Clean link, then the 500 kbit/s cap, then clean again.
    WithCap,
    /// Only the ramp to the top layer on a clean link, within 3 s.
    RampOnly,
    /// The top layer on a clean link and the lowest behind the cap, each
    /// named by its RID in the session record; no timing goals.
    LayerNames,
}

async fn simulcast_call(incident: &str, options: SimulcastOptions, phases: Phases) {
    let server = TestServer::start_with(ServerOptions::with_estimate_log()).await;
    let mut grpc = server.grpc_client().await;
    let room = create_room(&mut grpc, incident).await;
    let resident = admit(&mut grpc, &room.room_id, "resident-simulcast", Role::Resident).await;
    let officer = admit(&mut grpc, &room.room_id, "officer-simulcast", Role::Officer).await;

    let ssrc_lines = options.ssrc_lines;
    let publisher = publish_simulcast(&server, &resident, options).await;
    if ssrc_lines == SsrcLines::Reversed {
        let offer = publisher.offer_sdp();
        let line_at = |ssrc: u32| {
            offer
                .find(&format!("a=ssrc:{ssrc} "))
                .unwrap_or_else(|| panic!("the offer has no a=ssrc line for {ssrc}:\n{offer}"))
        };
        let layers = publisher.layer_ssrcs();
        let (lowest, top) = (&layers[0], &layers[layers.len() - 1]);
        assert!(
            line_at(top.1) < line_at(lowest.1),
            "the offer declares {} before {}:\n{offer}",
            lowest.0,
            top.0
        );
    }

    let (relay, relay_addr) = Relay::start_seeded(server.media_addr(), 77).await.expect("starting the relay failed");
    let subscriber = RelayedSubscriber::start(&officer.whep_url, &officer.join_token, relay_addr)
        .await
        .unwrap_or_else(|error| panic!("WHEP subscribe failed: {error}\n{}", server.log_tail(40)));
    subscriber
        .wait_connected(CONNECT_TIMEOUT)
        .await
        .unwrap_or_else(|error| panic!("subscriber: {error}\n{}", server.log_tail(40)));
    let start = Instant::now();
    let mut trace: Vec<Sample> = Vec::new();
    let participant = officer.participant_id.clone();
    let sample = |trace: &mut Vec<Sample>, subscriber: &RelayedSubscriber| {
        let now = Instant::now();
        let capped = relay.impairment(Direction::Downstream).rate_kbps.is_some();
        let frames = subscriber.timed_frame_log();
        trace.push(Sample {
            at: now.duration_since(start),
            estimate_kbps: logged_estimate_kbps(&server, &participant),
            layer: frames.last().and_then(|(_, f)| f.layer),
            received_kbps: received_kbps(&frames, now, Duration::from_millis(500)),
            capped,
        });
    };

    // Clean link: the top layer. The estimate starts at 300 kbit/s, so the
    // first frames of the top layer (the first layer to open) do not count:
    // the ramp starts from the first frame of a lower layer.
    let mut reached_top = None;
    let mut ramp_start = None;
    while start.elapsed() < UP_DEADLINE {
        sample(&mut trace, &subscriber);
        let frames = subscriber.timed_frame_log();
        ramp_start = ramp_start.or_else(|| frames.iter().find(|(_, f)| f.layer != Some(TOP_LAYER)).map(|(at, _)| *at));
        reached_top = ramp_start.and_then(|since| settled_on(&frames, TOP_LAYER, since));
        if reached_top.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let reached_top = reached_top.unwrap_or_else(|| {
        panic!(
            "the top layer was not reached on a clean link within {UP_DEADLINE:?}; last layers {:?}\n{}",
            subscriber.timed_frame_log().iter().rev().take(15).map(|(_, f)| f.layer).collect::<Vec<_>>(),
            server.log_tail(60)
        )
    });
    println!("top layer after {:?} on a clean link", reached_top.duration_since(start));
    if phases == Phases::RampOnly {
        println!("estimate {:?} kbit/s", logged_estimate_kbps(&server, &participant));
        assert!(
            reached_top.duration_since(start) <= INITIAL_RAMP,
            "the top layer took {:?} from connecting on a clean link (limit {INITIAL_RAMP:?})",
            reached_top.duration_since(start)
        );
        return;
    }
    if phases == Phases::LayerNames {
        let quality = wait_video_layer(&mut grpc, &room.room_id, &participant, "f").await;
        assert_eq!(quality.video_layer, "f", "layer in the session record on the top layer's frames: {quality:?}");
        relay.set(Direction::Downstream, Impairment::none().with_rate_kbps(CAP_KBPS));
        let cap_started = Instant::now();
        let mut lowest = None;
        while lowest.is_none() && cap_started.elapsed() < DOWN_DEADLINE + Duration::from_secs(3) {
            tokio::time::sleep(Duration::from_millis(100)).await;
            lowest = settled_on(&subscriber.timed_frame_log(), LOWEST_LAYER, cap_started);
        }
        assert!(lowest.is_some(), "the lowest layer's frames did not arrive behind the cap");
        let quality = wait_video_layer(&mut grpc, &room.room_id, &participant, "q").await;
        assert_eq!(quality.video_layer, "q", "layer in the session record on the lowest layer's frames: {quality:?}");
        return;
    }
    // Hold the top layer for 2 s so the estimate settles; a steady layer
    // costs no keyframe request.
    let requests_before_hold = server.metric_sum("vpr_keyframe_requests_sent_total").await.unwrap_or(0.0);
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        sample(&mut trace, &subscriber);
    }
    let requests_after_hold = server.metric_sum("vpr_keyframe_requests_sent_total").await.unwrap_or(0.0);
    assert_eq!(requests_after_hold, requests_before_hold, "keyframe requests while the layer was steady");

    // Capped link: the lowest layer within 2 s.
    relay.set(Direction::Downstream, Impairment::none().with_rate_kbps(CAP_KBPS));
    let cap_started = Instant::now();
    let mut reached_lowest = None;
    while cap_started.elapsed() < DOWN_DEADLINE + Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        sample(&mut trace, &subscriber);
        reached_lowest = settled_on(&subscriber.timed_frame_log(), LOWEST_LAYER, cap_started);
        if reached_lowest.is_some() {
            break;
        }
    }
    // Stay capped for 6 s in all, to see the layer hold.
    while cap_started.elapsed() < Duration::from_secs(6) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        sample(&mut trace, &subscriber);
    }
    let cap_ended = Instant::now();
    let capped_layers: Vec<Option<u8>> = subscriber
        .timed_frame_log()
        .iter()
        .filter(|(at, _)| *at > cap_ended - Duration::from_secs(2) && *at <= cap_ended)
        .map(|(_, f)| f.layer)
        .collect();

    // Lifted cap: the top layer again within 8 s.
    relay.set(Direction::Downstream, Impairment::none());
    let relay_at_lift = relay.stats();
    let mut back_on_top = None;
    while cap_ended.elapsed() < UP_DEADLINE {
        tokio::time::sleep(Duration::from_millis(100)).await;
        sample(&mut trace, &subscriber);
        back_on_top = settled_on(&subscriber.timed_frame_log(), TOP_LAYER, cap_ended);
        if back_on_top.is_some() {
            break;
        }
    }
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        sample(&mut trace, &subscriber);
    }
    let end = Instant::now();
    let frames = subscriber.timed_frame_log();
    let publisher_stats = publisher.stats();
    let keyframe_requests = server.metric_sum("vpr_keyframe_requests_sent_total").await.unwrap_or(0.0);
    let switches = server.metric_sum("vpr_layer_switches_total").await.unwrap_or(0.0);

    // The trace is kept for the plot in BENCHMARKS.md.
    let mut csv = String::from("seconds,estimate_kbps,layer,received_kbps,capped\n");
    for s in &trace {
        let estimate = s.estimate_kbps.map(|e| format!("{e:.0}")).unwrap_or_default();
        let layer = s.layer.map(|l| l.to_string()).unwrap_or_default();
        let _ = writeln!(csv, "{:.2},{estimate},{layer},{:.0},{}", s.at.as_secs_f64(), s.received_kbps, u8::from(s.capped));
    }
    let artifacts = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts/simulcast");
    std::fs::create_dir_all(&artifacts).expect("creating the artifact directory failed");
    std::fs::write(artifacts.join("capped_link.csv"), &csv).expect("writing the trace failed");
    println!("{csv}");
    println!(
        "cap {CAP_KBPS} kbit/s: lowest layer after {:?}; top layer {:?} after the cap was lifted; \
         {switches} layer switches, {keyframe_requests} keyframe requests upstream; publisher {:?}; relay {:?}",
        reached_lowest.map(|at| at.duration_since(cap_started)),
        back_on_top.map(|at| at.duration_since(cap_ended)),
        publisher_stats.layers.iter().map(|l| (l.rid.clone(), l.plis_received, l.keyframes_sent)).collect::<Vec<_>>(),
        relay.stats(),
    );
    println!("relay at the end of the cap: {relay_at_lift:?}");

    let reached_lowest = reached_lowest.unwrap_or_else(|| {
        panic!(
            "the lowest layer was not reached while capped; layers in the last 2 s of the cap {capped_layers:?}\n{}",
            server.log_tail(80)
        )
    });
    assert!(
        reached_lowest.duration_since(cap_started) <= DOWN_DEADLINE,
        "the lowest layer took {:?} after the cap started (limit {DOWN_DEADLINE:?})",
        reached_lowest.duration_since(cap_started)
    );
    assert!(
        capped_layers.iter().all(|layer| *layer == Some(LOWEST_LAYER)),
        "layers above the lowest arrived at the end of the cap: {capped_layers:?}"
    );
    let back_on_top = back_on_top.unwrap_or_else(|| {
        panic!("the top layer was not reached within {UP_DEADLINE:?} after the cap was lifted\n{}", server.log_tail(80))
    });

    // No freeze at either switch: around the arrival of the first frame
    // of the new layer, complete frames keep coming.
    for (name, switched_at) in [("down", reached_lowest), ("up", back_on_top)] {
        let gap = longest_gap(&frames, switched_at - Duration::from_millis(700), switched_at + Duration::from_millis(700));
        println!("longest gap around the {name}ward switch: {gap:?}");
        assert!(gap <= FREEZE, "a {gap:?} freeze at the {name}ward switch");
    }
    // One request starts the first layer; every other one is a switch.
    assert!(
        keyframe_requests <= switches + 2.0,
        "{keyframe_requests} keyframe requests upstream for {switches} layer switches"
    );
    let overall = longest_gap(&frames, reached_top, end);
    println!("longest gap between complete frames from the first top-layer frame on: {overall:?}");

    // The session record counts the officer's layer switches and names the
    // layer it receives, as of the last quality report (every 2 s).
    let quality = wait_video_layer(&mut grpc, &room.room_id, &officer.participant_id, "f").await;
    println!("officer quality in the session record: {quality:?}");
    assert!(quality.layer_changes >= 2, "layer changes in the session record: {quality:?}");
    assert_eq!(quality.video_layer, "f", "layer in the session record: {quality:?}");
    // Its receiver reports carry the jitter of the relay's pacing.
    assert!(quality.jitter_ms > 0.0, "no jitter in the session record: {quality:?}");
    assert!(quality.jitter_ms < 100.0, "jitter in the session record: {quality:?}");

    subscriber.stop().await.expect("WHEP DELETE failed");
    publisher.stop().await.expect("WHIP DELETE failed");
}

/// Cap that keeps the default layer set on its middle layer: 500 kbit/s
/// fits with headroom, 1.5 Mbit/s does not.
const HOLD_CAP_KBPS: u32 = 1_000;
/// Length of the quiet call.
const QUIET_CALL: Duration = Duration::from_secs(60);

/// A subscriber held below the top layer for a quiet minute costs few
/// keyframe requests upstream: probing for the top layer must not make the
/// down-track switch back and forth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_layer_keeps_keyframe_requests_rare() {
    let server = TestServer::start().await;
    let mut grpc = server.grpc_client().await;
    let room = create_room(&mut grpc, "INC-simulcast-quiet").await;
    let resident = admit(&mut grpc, &room.room_id, "resident-simulcast-quiet", Role::Resident).await;
    let officer = admit(&mut grpc, &room.room_id, "officer-simulcast-quiet", Role::Officer).await;
    let publisher = publish_simulcast(&server, &resident, SimulcastOptions::default()).await;

    // The cap is on before the subscriber connects, so the call is held
    // from its first second.
    let (relay, relay_addr) = Relay::start_seeded(server.media_addr(), 60).await.expect("starting the relay failed");
    relay.set(Direction::Downstream, Impairment::none().with_rate_kbps(HOLD_CAP_KBPS));
    let subscriber = RelayedSubscriber::start(&officer.whep_url, &officer.join_token, relay_addr)
        .await
        .unwrap_or_else(|error| panic!("WHEP subscribe failed: {error}\n{}", server.log_tail(40)));
    let connected = subscriber
        .wait_connected(CONNECT_TIMEOUT)
        .await
        .unwrap_or_else(|error| panic!("subscriber: {error}\n{}", server.log_tail(40)));

    tokio::time::sleep(QUIET_CALL).await;
    let requests = server.metric_sum("vpr_keyframe_requests_sent_total").await.unwrap_or(0.0);
    let switches = server.metric_sum("vpr_layer_switches_total").await.unwrap_or(0.0);
    let frames = subscriber.timed_frame_log();
    let held: Vec<Option<u8>> =
        frames.iter().filter(|(at, _)| *at > connected + Duration::from_secs(10)).map(|(_, f)| f.layer).collect();
    let middle = held.iter().filter(|layer| **layer == Some(1)).count();
    println!(
        "quiet {QUIET_CALL:?} call capped at {HOLD_CAP_KBPS} kbit/s: {requests} keyframe requests upstream, \
         {switches} layer switches, {middle} of {} frames after the first 10 s on the middle layer; relay {:?}",
        held.len(),
        relay.stats().downstream
    );
    assert!(requests < 10.0, "{requests} keyframe requests upstream in a quiet {QUIET_CALL:?} ({switches} layer switches)");
    assert!(
        middle * 10 >= held.len() * 9,
        "only {middle} of {} frames after the first 10 s were on the middle layer",
        held.len()
    );
    subscriber.stop().await.expect("WHEP DELETE failed");
    publisher.stop().await.expect("WHIP DELETE failed");
}
