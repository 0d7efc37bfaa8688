//! A subscriber without transport-cc that reports REMB: headless Chromium
//! receives over WHEP with transport-cc left out of its offer, so it sends
//! its receive-side estimate in REMB messages. A second Chromium window
//! publishes three simulcast encodings (320, 640 and 1280 wide). The server
//! must take its estimate from the REMB values: on a clean link the
//! subscriber receives the top layer, and behind a relay capped at
//! 300 kbit/s the falling REMB moves it to a lower layer that fits.
//!
//! The test re-runs itself inside a network namespace with only `lo`. Needs
//! root and Debian's `chromium` and `chromium-driver` packages.

#[allow(dead_code)]
mod chromium;
mod common;

use std::time::{Duration, Instant};

use chromium::rerun::{assert_only_loopback, run_in_namespace};
use chromium::test_page::{chromium_simulcast_room, ChromiumSimulcastRoom};
use chromium::webdriver::Session;
use common::{log_field, newest_estimate_line, TestServer};
use serde_json::Value;
use vpr_bench::relay::{Direction, Impairment, Relay};

const RUN_TIMEOUT: Duration = Duration::from_secs(90);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Rate of the capped link, in kbit/s.
const CAP_KBPS: u32 = 300;
/// Width of Chromium's top encoding.
const TOP_WIDTH: u64 = 1280;
/// Maximum time on the clean link for REMB and the top layer to arrive.
/// Chromium sent its first REMB 5.5 to 6 s after it started receiving in
/// the runs on a 2-core VM.
const CLEAN_DEADLINE: Duration = Duration::from_secs(15);
/// Length of the capped phase.
const CAPPED: Duration = Duration::from_secs(10);
/// Maximum time from the cap to a lower layer at the subscriber.
const SWITCH_DEADLINE: Duration = Duration::from_secs(5);
/// Final part of the capped phase in which the lower layer must play on.
const STEADY: Duration = Duration::from_secs(4);
/// Minimum share of the received encoding's frames decoded in that part.
const STEADY_MIN_SHARE: f64 = 0.8;

#[test]
fn chromium_subscriber_with_remb() {
    run_in_namespace("chromium_subscriber_with_remb", RUN_TIMEOUT, remb_inside);
}

/// Reads the REMB value of the server's newest estimate line for
/// `participant_id`, 0 when there is none.
fn remb_bps(server: &TestServer, participant_id: &str) -> u64 {
    newest_estimate_line(server, participant_id).and_then(|line| log_field(&line, "remb_bps")).unwrap_or(0)
}

/// Returns the server's last log lines about `participant_id` and layer targets.
fn estimate_lines(server: &TestServer, participant_id: &str) -> String {
    let log = server.log_tail(600);
    let lines: Vec<&str> = log
        .lines()
        .filter(|line| line.contains(participant_id) || line.contains("layer target changed"))
        .collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Reads the frames each encoding of the publisher window has produced, and
/// switches back to the subscriber window.
async fn frames_encoded(browser: &Session, publisher: &str, subscriber: &str) -> std::collections::HashMap<String, u64> {
    browser.switch_to_window(publisher).await.expect("switching to the publisher failed");
    let stats = browser.call("simulcastStats", &[]).await.expect("simulcastStats failed");
    browser.switch_to_window(subscriber).await.expect("switching to the subscriber failed");
    let encodings = stats["encodings"].as_object().cloned().unwrap_or_default();
    encodings
        .into_iter()
        .map(|(rid, encoding)| (rid, encoding["framesEncoded"].as_u64().unwrap_or(0)))
        .collect()
}

/// Reads Chromium's counters of the received video (`inboundVideo` of the
/// page's `stats()`).
async fn inbound(browser: &Session) -> Value {
    browser.call("stats", &[]).await.expect("stats failed")["inboundVideo"].clone()
}

async fn remb_inside() {
    assert_only_loopback();
    let ChromiumSimulcastRoom { server, officer, page, browser, driver: _driver, temp: _temp, .. } =
        chromium_simulcast_room("INC-remb", CONNECT_TIMEOUT).await;

    let publisher_window = browser.window_handle().await.expect("reading the window handle failed");
    let (relay, relay_addr) = Relay::start_seeded(server.media_addr(), 1).await.expect("starting the relay failed");
    let subscriber_window = browser.new_window().await.expect("opening a second window failed");
    browser.switch_to_window(&subscriber_window).await.expect("switching windows failed");
    browser.navigate(&page.url()).await.expect("loading the test page failed");
    let args = [
        officer.whep_url.as_str().into(),
        officer.join_token.as_str().into(),
        relay_addr.to_string().into(),
        true.into(),
    ];
    let negotiation = browser
        .call("subscribe", &args)
        .await
        .unwrap_or_else(|error| panic!("{error}\n{}", server.log_tail(40)));
    assert_eq!(negotiation["status"], 201, "WHEP status: {negotiation}");
    let offer = negotiation["offerSdp"].as_str().unwrap_or_default();
    let answer = negotiation["answerSdp"].as_str().unwrap_or_default();
    assert!(!offer.contains("transport-wide-cc"), "the offer kept transport-cc:\n{offer}");
    assert!(!answer.contains("transport-wide-cc"), "the answer has transport-cc:\n{answer}");
    assert!(answer.contains("goog-remb"), "the answer offers no REMB:\n{answer}");

    // Clean link: REMB values arrive, the server takes its estimate from
    // them, and Chromium decodes the top layer.
    let participant = officer.participant_id.as_str();
    let started = Instant::now();
    let mut video = inbound(&browser).await;
    while started.elapsed() < CLEAN_DEADLINE {
        video = inbound(&browser).await;
        if remb_bps(&server, participant) > 0 && video["frameWidth"] == TOP_WIDTH {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Both figures from one line, so the estimate is the one the REMB capped.
    let line = newest_estimate_line(&server, participant).unwrap_or_default();
    let remb = log_field(&line, "remb_bps").unwrap_or(0);
    let estimate = log_field(&line, "estimate_bps").unwrap_or(0);
    println!("clean link after {:?}: REMB {remb} bit/s, estimate {estimate} bit/s, video {video}", started.elapsed());
    assert!(remb > 0, "no REMB from Chromium within {CLEAN_DEADLINE:?}\n{}", estimate_lines(&server, participant));
    assert!(estimate > 0, "no estimate logged for the officer");
    assert!(estimate <= remb, "estimate {estimate} bit/s above the REMB value {remb} bit/s");
    assert_eq!(video["frameWidth"], TOP_WIDTH, "Chromium did not decode the top layer: {video}");

    // Capped link: the REMB values fall and take the subscriber to a lower
    // layer that fits, where it keeps decoding.
    relay.set(Direction::Downstream, Impairment::none().with_rate_kbps(CAP_KBPS));
    let capped = Instant::now();
    let mut lowered = None;
    let mut steady_start = None;
    while capped.elapsed() < CAPPED {
        tokio::time::sleep(Duration::from_millis(250)).await;
        video = inbound(&browser).await;
        let width = video["frameWidth"].as_u64().unwrap_or(0);
        if lowered.is_none() && width > 0 && width < TOP_WIDTH {
            lowered = Some(capped.elapsed());
        }
        if capped.elapsed() >= CAPPED - STEADY && steady_start.is_none() {
            let encoded = frames_encoded(&browser, &publisher_window, &subscriber_window).await;
            steady_start = Some((video["framesDecoded"].as_u64().unwrap_or(0), encoded));
        }
    }
    let encoded_end = frames_encoded(&browser, &publisher_window, &subscriber_window).await;
    let decoded_end = video["framesDecoded"].as_u64().unwrap_or(0);
    let (decoded_start, encoded_start) = steady_start.expect("the capped phase ended before its last part");
    let steady_frames = decoded_end - decoded_start;
    // Chromium's encoder may lower its frame rate under CPU load, so the
    // subscriber's frames count against the frames the encoding it receives
    // produced over the same time.
    let rid = if video["frameWidth"] == 320 { "q" } else { "h" };
    let produced = encoded_end[rid] - encoded_start[rid];
    let remb = remb_bps(&server, participant);
    println!(
        "cap {CAP_KBPS} kbit/s: a lower layer after {lowered:?}; at the end REMB {remb} bit/s, video {video}, \
         {steady_frames} frames decoded of {produced} that `{rid}` produced in the last {STEADY:?}; relay {:?}",
        relay.stats().downstream
    );
    assert_eq!(relay.stats().flows, 1, "Chromium did not receive through the relay");
    let lowered = lowered.unwrap_or_else(|| panic!("no lower layer behind the cap\n{}", estimate_lines(&server, participant)));
    assert!(lowered <= SWITCH_DEADLINE, "the lower layer took {lowered:?} (limit {SWITCH_DEADLINE:?})");
    // Chromium repeats its REMB every 200 ms or so, and the server must see
    // each one: a value that stops arriving no longer caps the estimate.
    assert!(remb > 0, "no REMB reached the estimator at the end of the cap\n{}", estimate_lines(&server, participant));
    assert!(remb < u64::from(CAP_KBPS) * 1000, "REMB {remb} bit/s behind a {CAP_KBPS} kbit/s cap");
    let width = video["frameWidth"].as_u64().unwrap_or(0);
    assert!(width > 0, "no frame width at the end of the cap: {video}");
    assert!(width < TOP_WIDTH, "layer {width} pixels wide at the end of the cap");
    assert!(produced > 0, "the `{rid}` encoding produced no frame in the last {STEADY:?}");
    assert!(
        steady_frames as f64 >= produced as f64 * STEADY_MIN_SHARE,
        "{steady_frames} frames decoded of {produced} produced in the last {STEADY:?} of the cap\n{}",
        estimate_lines(&server, participant)
    );

    browser.delete().await.expect("closing Chromium failed");
}
