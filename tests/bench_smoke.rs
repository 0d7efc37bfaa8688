//! `vpr-bench run` against a real server: one room, a resident publishing
//! the test clip, two officers receiving it. A run within its thresholds
//! exits 0 and writes a JSON report with the measured figures. A run with
//! an impossible threshold exits 1 and names the threshold it missed. A run
//! with the synthetic publisher delivers its packet rate to every subscriber
//! and measures the server's CPU per forwarded packet.
//!
//! The `vpr-bench` binary belongs to the vpr-bench package, so this test
//! takes it from the workspace's target directory beside `vpr-server`;
//! `cargo build --workspace --bins` (as tests/run.sh does) puts it there.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::{clip_ivf, clip_ogg, TestServer, API_KEY_ID, API_KEY_SECRET};
use serde_json::Value;

/// Path of the `vpr-bench` binary built by the workspace.
fn vpr_bench_binary() -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_vpr-server")).with_file_name("vpr-bench");
    assert!(
        path.is_file(),
        "{} is missing; build it with `cargo build -p vpr-bench --bin vpr-bench`",
        path.display()
    );
    let help = std::process::Command::new(&path)
        .args(["run", "--help"])
        .output()
        .unwrap_or_else(|error| panic!("running {} failed: {error}", path.display()));
    assert!(
        help.status.success(),
        "{} has no `run` subcommand; it is older than the source, rebuild it with \
         `cargo build -p vpr-bench --bin vpr-bench`",
        path.display()
    );
    path
}

/// Runs `vpr-bench run` for 1 room, 1 resident and 2 officers with `extra`
/// arguments and returns its output.
async fn run_bench(server: &TestServer, report: &Path, duration_s: u64, extra: &[&str]) -> Output {
    let ports = server.ports();
    let pid = server.pid().expect("the server is running").to_string();
    let output = tokio::process::Command::new(vpr_bench_binary())
        .arg("run")
        .args(["--server-grpc", &format!("http://127.0.0.1:{}", ports.grpc)])
        .args(["--server-http", &server.http_base()])
        .args(["--key-id", API_KEY_ID, "--key-secret", API_KEY_SECRET])
        .args(["--rooms", "1", "--residents-per-room", "1", "--officers-per-room", "2"])
        .args(["--join-rate", "10", "--duration-s", &duration_s.to_string()])
        .args(["--server-pid", &pid])
        .arg("--video")
        .arg(clip_ivf())
        .arg("--audio")
        .arg(clip_ogg())
        .arg("--report-json")
        .arg(report)
        .arg("--report-svg")
        .arg(report.with_extension("svg"))
        .args(extra)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("running vpr-bench failed");
    println!(
        "vpr-bench exit {:?}\n--- stdout ---\n{}--- stderr ---\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn read_report(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|error| panic!("reading {}: {error}", path.display()));
    serde_json::from_str(&text).expect("the JSON report is valid JSON")
}

fn number(report: &Value, pointer: &str) -> f64 {
    report
        .pointer(pointer)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("report field {pointer} is missing or not a number"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_run_meets_and_misses_thresholds() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().expect("creating a temp dir failed");

    // The 20-second smoke scenario within reachable thresholds passes.
    let report_path = dir.path().join("pass.json");
    let output = run_bench(
        &server,
        &report_path,
        20,
        &["--min-receive-ratio", "0.9", "--max-first-frame-p95-ms", "3000"],
    )
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", server.log_tail(40));

    let report = read_report(&report_path);
    assert_eq!(number(&report, "/subscribers/requested"), 2.0);
    assert_eq!(number(&report, "/subscribers/connected"), 2.0);
    assert_eq!(number(&report, "/subscribers/failed"), 0.0);
    assert_eq!(number(&report, "/publishers/connected"), 1.0);
    assert_eq!(number(&report, "/rooms/connected"), 1.0);
    assert_eq!(number(&report, "/tracks/expected"), 4.0);
    assert_eq!(number(&report, "/tracks/received"), 4.0);
    let frames_received = number(&report, "/video/frames_received");
    let frames_expected = number(&report, "/video/frames_expected");
    assert!(frames_received > 0.0, "no video frames received");
    // The clip runs at 30 frames/s; two subscribers for most of 20 s.
    assert!(frames_expected > 900.0, "frames expected {frames_expected}");
    assert!(number(&report, "/video/receive_ratio") >= 0.9);
    assert!(number(&report, "/audio/packets_received") > 0.0);
    let first_frame_p95 = number(&report, "/first_frame_ms/p95");
    assert!(first_frame_p95 > 0.0, "first-frame p95 {first_frame_p95} ms");
    assert!(first_frame_p95 <= 3000.0, "first-frame p95 {first_frame_p95} ms");
    assert!(number(&report, "/first_frame_ms/p50") <= first_frame_p95);
    assert_eq!(number(&report, "/subscribers_without_frames"), 0.0);
    assert!(number(&report, "/server/cpu_s") > 0.0, "server CPU time not measured");
    assert!(number(&report, "/server/peak_rss_kib") > 0.0, "server peak RSS not measured");
    assert!(number(&report, "/harness/cpu_s") > 0.0, "harness CPU time not measured");
    assert!(number(&report, "/server_egress/bytes") > 0.0, "server egress not measured");
    let timeline = report["timeline"].as_array().expect("timeline is an array");
    assert!(timeline.len() >= 6, "timeline has {} points", timeline.len());
    assert!(
        timeline.iter().any(|point| point["subscribers_connected"] == 2),
        "no timeline point with both subscribers connected"
    );
    assert_eq!(report["passed"], Value::Bool(true));
    assert_eq!(report["thresholds"].as_array().map(Vec::len), Some(2));
    assert!(report["scenario"].get("key_secret").is_none(), "the report contains the API key secret");
    let svg = std::fs::read_to_string(report_path.with_extension("svg")).expect("reading the SVG failed");
    assert!(svg.starts_with("<svg "), "SVG starts with {:?}", &svg[..svg.len().min(40)]);
    assert_eq!(svg.matches("<polyline").count(), 2);

    // An impossible threshold fails the run and is named.
    let report_path = dir.path().join("fail.json");
    let output = run_bench(&server, &report_path, 4, &["--max-first-frame-p95-ms", "1"]).await;
    assert_eq!(output.status.code(), Some(1), "{}", server.log_tail(40));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("threshold missed: max-first-frame-p95-ms"),
        "stderr does not name the missed threshold: {stderr}"
    );
    let report = read_report(&report_path);
    assert_eq!(report["passed"], Value::Bool(false));
    assert_eq!(report["thresholds"][0]["name"], "max-first-frame-p95-ms");
    assert_eq!(report["thresholds"][0]["passed"], Value::Bool(false));
    assert!(number(&report, "/video/frames_received") > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_run_with_synthetic_publisher_delivers_its_rate() {
    const RATE: f64 = 200.0;
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().expect("creating a temp dir failed");
    let report_path = dir.path().join("synthetic.json");
    let output = run_bench(
        &server,
        &report_path,
        9,
        &["--synthetic-rate", "200", "--payload", "1200", "--steady-after-s", "4"],
    )
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", server.log_tail(40));

    let report = read_report(&report_path);
    assert_eq!(number(&report, "/scenario/synthetic_rate"), RATE);
    assert_eq!(number(&report, "/subscribers/connected"), 2.0);
    assert_eq!(number(&report, "/subscribers_without_frames"), 0.0);
    assert_eq!(number(&report, "/tracks/expected"), 2.0);
    assert_eq!(number(&report, "/tracks/received"), 2.0);
    // 200 packets/s in frames of 6 packets: 33 frames/s, a keyframe a second.
    assert!(number(&report, "/video/keyframes_received") >= 4.0);
    assert_eq!(number(&report, "/video/packets_missing"), 0.0);
    assert_eq!(number(&report, "/audio/packets_received"), 0.0);

    // Over the steady window the server forwards the configured rate to
    // each of the two subscribers, and they receive it. Padding the server
    // may add to probe the link comes on top of the forwarded count.
    let seconds = number(&report, "/steady/seconds");
    assert!((4.0..=5.5).contains(&seconds), "steady window of {seconds} s");
    let forwarded = number(&report, "/steady/server_forwarded_packets");
    let forwarded_per_subscriber = forwarded / seconds / 2.0;
    assert!(
        (0.9 * RATE..=1.1 * RATE).contains(&forwarded_per_subscriber),
        "server forwarded {forwarded_per_subscriber:.1} packets/s per subscriber, expected about {RATE}"
    );
    let received = number(&report, "/steady/packets_received");
    assert!(
        received >= 0.95 * forwarded,
        "subscribers received {received} packets, the server forwarded {forwarded}"
    );
    // Each subscriber receives the publisher's rate of 1200-byte payloads
    // from its first keyframe on (the keyframe interval is 1 s of 8).
    let kbps = number(&report, "/video/kbps_per_subscriber");
    let sent_kbps = RATE * 1200.0 * 8.0 / 1000.0;
    assert!(
        (0.75 * sent_kbps..=1.1 * sent_kbps).contains(&kbps),
        "received {kbps:.0} kbit/s per subscriber, the publisher sent {sent_kbps:.0}"
    );
    // Frame jitter on loopback: the publisher's frames leave on a 1 ms
    // timer, so a little above zero and well under a frame interval.
    let jitter_p50 = number(&report, "/jitter_ms/p50");
    assert!(jitter_p50 > 0.0, "video jitter p50 {jitter_p50} ms");
    assert!(jitter_p50 < 10.0, "video jitter p50 {jitter_p50} ms");
    let cpu_us = number(&report, "/steady/cpu_us_per_packet");
    assert!(cpu_us > 0.0, "server CPU per packet {cpu_us} µs");
    let user_us = number(&report, "/steady/user_us_per_packet");
    assert!(cpu_us >= user_us, "CPU per packet {cpu_us} µs is below its user part {user_us} µs");

    // Every frame is stamped with its capture time, so the subscribers
    // measure end-to-end delay on loopback: above zero, well under 100 ms.
    let delay_p50 = number(&report, "/capture_delay_ms/p50");
    let delay_p99 = number(&report, "/capture_delay_ms/p99");
    assert!(delay_p50 > 0.0, "end-to-end delay p50 {delay_p50} ms");
    assert!(delay_p99 < 100.0, "end-to-end delay p99 {delay_p99} ms");

    // The server timed every RTP packet the publisher sent in the window,
    // from its arrival in the receive queue to the end of its fan-out. On
    // loopback the median is well under the end-to-end delay's 100 ms.
    let timed = number(&report, "/server_residence/count");
    assert!(
        (0.9 * RATE * seconds..=1.1 * RATE * seconds).contains(&timed),
        "server timed {timed} RTP packets in {seconds:.1} s, expected about {RATE}/s"
    );
    let residence_p50 = number(&report, "/server_residence/p50_at_most_ms");
    assert!(residence_p50 > 0.0, "server delay p50 at most {residence_p50} ms");
    assert!(residence_p50 < 100.0, "server delay p50 at most {residence_p50} ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_run_with_simulcast_resident_and_publishing_officers() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().expect("creating a temp dir failed");
    let report_path = dir.path().join("simulcast.json");
    let output = run_bench(&server, &report_path, 8, &["--simulcast", "--officers-publish"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", server.log_tail(40));

    let report = read_report(&report_path);
    assert_eq!(report["scenario"]["simulcast"], true);
    assert_eq!(report["scenario"]["officers_publish"], true);
    assert_eq!(number(&report, "/publishers/connected"), 1.0);
    assert_eq!(number(&report, "/subscribers/connected"), 2.0);
    assert_eq!(number(&report, "/tracks/expected"), 4.0);
    assert_eq!(number(&report, "/tracks/received"), 4.0);
    assert_eq!(number(&report, "/video/packets_missing"), 0.0);
    assert!(number(&report, "/video/receive_ratio") >= 0.9, "{report}");
    // The top layer is 1.5 Mbit/s; the clip the resident would otherwise
    // publish is about 0.5 Mbit/s.
    let per_subscriber = number(&report, "/server_egress/kbps_per_subscriber");
    assert!(per_subscriber > 1000.0, "{per_subscriber:.0} kbit/s per subscriber");

    // The resident and both officers published.
    let log = server.log_tail(usize::MAX);
    let publishing = log.lines().filter(|line| line.contains("session added") && line.contains("direction=Publish")).count();
    assert_eq!(publishing, 3, "publishing sessions\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_run_through_lossy_subscriber_links() {
    const LOSS: f64 = 0.05;
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().expect("creating a temp dir failed");
    let report_path = dir.path().join("lossy.json");
    let nacks_before = server.metric_sum("vpr_nacks_received_total").await.unwrap_or(0.0);
    let output = run_bench(
        &server,
        &report_path,
        9,
        &["--synthetic-rate", "200", "--payload", "1200", "--link-loss", "0.05", "--link-delay-ms", "20"],
    )
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", server.log_tail(40));

    let report = read_report(&report_path);
    assert_eq!(number(&report, "/scenario/link/loss"), LOSS);
    assert_eq!(number(&report, "/subscribers/connected"), 2.0);
    assert_eq!(number(&report, "/subscribers_without_frames"), 0.0);

    // Each subscriber's relay dropped about 5 % of what the server sent it.
    let forwarded = number(&report, "/link/downstream_forwarded");
    let dropped = number(&report, "/link/downstream_dropped");
    let ratio = dropped / (dropped + forwarded);
    assert!(forwarded > 2000.0, "relays forwarded {forwarded} datagrams to the subscribers");
    assert!((0.02..=0.09).contains(&ratio), "relays dropped {ratio:.3} of the datagrams to the subscribers");
    assert!(number(&report, "/link/upstream_forwarded") > 0.0, "no feedback reached the server");

    // The subscribers asked for what was lost, and got most of it back.
    let nacks = server.metric_sum("vpr_nacks_received_total").await.unwrap_or(0.0) - nacks_before;
    assert!(nacks > 0.0, "the server received no NACK from subscribers behind 5 % loss");
    // Retransmissions arrive below the highest sequence number seen, and
    // the frames they complete count as received.
    let missing = number(&report, "/video/packets_missing");
    let late = number(&report, "/video/packets_late");
    assert!(missing > 0.0, "subscribers behind 5 % loss missed no packet");
    assert!(late >= 0.5 * missing, "{late} retransmissions arrived for {missing} missing packets");
    // Every packet came back, so (almost) every frame counts.
    let receive_ratio = number(&report, "/video/receive_ratio");
    assert!(receive_ratio >= 0.95, "receive ratio {receive_ratio} behind 5 % loss: {}", report["video"]);
    assert!(number(&report, "/video/frames_received") > 0.0, "no video frames received");
    // With 20 ms each way, the capture-to-arrival delay includes the link.
    let delay_p50 = number(&report, "/capture_delay_ms/p50");
    assert!(delay_p50 >= 20.0, "end-to-end delay p50 {delay_p50} ms through a 20 ms link");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_run_with_video_profile_sends_its_bitrate() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().expect("creating a temp dir failed");
    let report_path = dir.path().join("profile.json");
    let output = run_bench(&server, &report_path, 9, &["--video-profile", "medium"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", server.log_tail(40));

    let report = read_report(&report_path);
    assert_eq!(report["scenario"]["video_profile"], "medium");
    assert_eq!(number(&report, "/subscribers/connected"), 2.0);
    assert_eq!(number(&report, "/subscribers_without_frames"), 0.0);
    // 640x360 at 500 kbit/s: 30 frames/s of two packets each, received
    // from the first keyframe on (1 s interval, 8 s connected).
    let packets_per_s = number(&report, "/video/packets_per_s_per_subscriber");
    assert!((45.0..=66.0).contains(&packets_per_s), "{packets_per_s} video packets/s per subscriber");
    let kbps = number(&report, "/video/kbps_per_subscriber");
    assert!((375.0..=550.0).contains(&kbps), "received {kbps:.0} kbit/s per subscriber of 500");
}
