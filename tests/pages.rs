//! Join pages in headless Chromium: a resident (phone-sized window) and an
//! officer (desktop window) open their join links, join the same room over
//! the WebSocket join and each decodes the other's video and receives the
//! other's audio. Screenshots of both pages at phone and desktop size go to
//! `target/test-artifacts/pages/`. A second test checks that the resident
//! page is in French when Chromium runs with `--lang=fr-CA`.
//!
//! The call test also saves an officer snapshot and checks the stored file
//! against the session record, and lets a second officer join and leave
//! while the resident page keeps its peer connection; meanwhile the
//! officer's snapshot still takes the resident's video and the pages name
//! the active speaker. A third test takes `lo` down for 5 s and checks that
//! the resident page shows the reconnecting state and is live again on the
//! same peer connection (an ICE restart), with the same participant. A
//! fourth checks that the server pauses the resident's unused simulcast
//! encodings and resumes them when a subscriber can take the top layer.
//!
//! Like chromium_whip.rs, each test re-runs itself inside a network
//! namespace with only `lo`, where the server, ChromeDriver and Chromium
//! run. Needs root and Debian's `chromium` and `chromium-driver` packages.

#[allow(dead_code)]
mod chromium;
mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chromium::rerun::{assert_only_loopback, in_namespace, rerun_in_namespace};
use chromium::webdriver::{ChromeDriver, Session};
use common::{admit, create_room, TestServer};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::Digest as _;
use vpr_bench::relay::{Direction, Impairment, Relay, RelayedSubscriber};
use vpr_control::pb::Role;

/// Held by each test while its Chromium runs: on two cores, parallel
/// browsers miss media deadlines.
static CHROMIUM_TESTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Maximum run time of one test's re-run inside its namespace.
const RUN_TIMEOUT: Duration = Duration::from_secs(80);
/// Maximum time of one asynchronous page script.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(15);
/// Maximum time from the resident's click until both pages decode video
/// and receive audio.
const MEDIA_TIMEOUT: Duration = Duration::from_secs(15);
/// Maximum time for a view or a video element to appear.
const VIEW_TIMEOUT: Duration = Duration::from_secs(10);
/// Phone and desktop window sizes, in CSS pixels.
const PHONE: (u32, u32) = (360, 740);
const DESKTOP: (u32, u32) = (1280, 800);
/// Fewest distinct colours in a video's area of a screenshot: a blank or
/// black video has one or two, Chromium's fake camera has hundreds.
const MIN_VIDEO_COLOURS: usize = 16;

#[test]
fn resident_and_officer_call() {
    if in_namespace() {
        runtime().block_on(resident_and_officer_call_inside());
    } else {
        let _one_at_a_time = CHROMIUM_TESTS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        rerun_in_namespace("resident_and_officer_call", RUN_TIMEOUT);
    }
}

#[test]
fn resident_page_in_french() {
    if in_namespace() {
        runtime().block_on(resident_page_in_french_inside());
    } else {
        let _one_at_a_time = CHROMIUM_TESTS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        rerun_in_namespace("resident_page_in_french", RUN_TIMEOUT);
    }
}

#[test]
fn resident_rejoins_after_network_drop() {
    if in_namespace() {
        runtime().block_on(resident_rejoins_after_network_drop_inside());
    } else {
        let _one_at_a_time = CHROMIUM_TESTS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        rerun_in_namespace("resident_rejoins_after_network_drop", RUN_TIMEOUT);
    }
}

#[test]
fn resident_layers_pause_and_resume() {
    if in_namespace() {
        runtime().block_on(resident_layers_pause_and_resume_inside());
    } else {
        let _one_at_a_time = CHROMIUM_TESTS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        rerun_in_namespace("resident_layers_pause_and_resume", RUN_TIMEOUT);
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("building the tokio runtime failed")
}

/// Result of the page's `vprJoinStats()`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct JoinStats {
    role: String,
    state: String,
    connection_state: String,
    remote_videos: u32,
    remote_audios: u32,
    inbound_video: InboundVideo,
    inbound_audio: InboundAudio,
    outbound_video: OutboundVideo,
    #[serde(default)]
    signaling_state: Option<String>,
    #[serde(default)]
    offers_answered: u32,
    #[serde(default)]
    transceivers: Vec<Value>,
    /// Bytes sent and frame width of each simulcast encoding, by RID.
    #[serde(default)]
    encodings: std::collections::BTreeMap<String, Value>,
    /// RIDs of the simulcast encodings the page sends.
    #[serde(default)]
    active_encodings: Vec<String>,
    /// Peer connections the page opened, reconnects included.
    connections: u32,
    /// States the page entered, in order.
    state_history: Vec<String>,
    last_snapshot: Option<SnapshotResult>,
    #[serde(default)]
    participant_id: Option<String>,
    /// The resident's participant id, from the `room` message.
    #[serde(default)]
    resident_id: Option<String>,
    #[serde(default)]
    active_speaker: Option<String>,
    /// Publisher of each remote video, in the page's order.
    #[serde(default)]
    remote_video_participants: Vec<Option<String>>,
    #[serde(default)]
    ice_restarts: u32,
    /// The page's recent warnings.
    #[serde(default)]
    warnings: Vec<String>,
}

/// The page's record of its last snapshot upload.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SnapshotResult {
    ok: bool,
    #[serde(default)]
    snapshot_id: Option<String>,
    #[serde(default)]
    sha256: Option<String>,
    #[serde(default)]
    size_bytes: Option<u64>,
    #[serde(default)]
    detail: Option<String>,
    /// Whose video the snapshot shows.
    #[serde(default)]
    participant_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct InboundVideo {
    frames_decoded: u64,
    bytes_received: u64,
    /// Width of the widest remote video, in pixels.
    #[serde(default)]
    frame_width: u32,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct InboundAudio {
    bytes_received: u64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OutboundVideo {
    frames_encoded: u64,
}

impl JoinStats {
    fn media_flowing(&self) -> bool {
        self.inbound_video.frames_decoded > 0 && self.inbound_audio.bytes_received > 0
    }
}

/// Position of an element in the viewport, in CSS pixels.
#[derive(Debug, Deserialize)]
struct ElementRect {
    x: f64,
    y: f64,
    width: f64,
    height: f64,
    #[serde(rename = "innerWidth")]
    inner_width: f64,
}

async fn resident_and_officer_call_inside() {
    assert_only_loopback();
    let started = Instant::now();
    let step = |what: &str| println!("[{:>6.2?}] {what}", started.elapsed());

    let server = TestServer::start().await;
    let mut grpc = server.grpc_client().await;
    let room = create_room(&mut grpc, "INC-pages").await;
    let resident = admit(&mut grpc, &room.room_id, "resident-pages", Role::Resident).await;
    let officer = admit(&mut grpc, &room.room_id, "officer-pages", Role::Officer).await;
    assert!(
        resident.join_url.starts_with(&format!("{}/join?token=", server.http_base())),
        "unexpected join URL shape: {}",
        resident.join_url
    );
    step("server started, room created, participants admitted");

    let (_temp, _driver, browser) = start_browser(None).await;
    step("Chromium started");

    // Resident: phone-sized window, consent screen, then the camera.
    let resident_window = browser.window_handle().await.expect("reading the window handle failed");
    set_viewport(&browser, PHONE).await;
    browser.navigate(&resident.join_url).await.expect("loading the resident's join link failed");
    wait_visible(&browser, "#consent").await;
    let consent_text = page_text(&browser).await;
    assert!(
        consent_text.contains("This call is not recorded."),
        "the consent screen does not say whether the call is recorded:\n{consent_text}"
    );
    assert!(
        consent_text.contains("Live video from your camera") && consent_text.contains("Live audio from your microphone"),
        "the consent screen does not say what is shared:\n{consent_text}"
    );
    assert_eq!(
        stats(&browser, &server).await.connection_state,
        "closed",
        "the resident page connected before consent"
    );
    browser.click("#start").await.expect("clicking the start button failed");
    step("resident clicked start");

    // Officer: desktop window, joins at once.
    let officer_window = browser.new_window().await.expect("opening a second window failed");
    switch(&browser, &officer_window).await;
    set_viewport(&browser, DESKTOP).await;
    browser.navigate(&officer.join_url).await.expect("loading the officer's join link failed");
    step("officer page loaded");

    let deadline = Instant::now() + MEDIA_TIMEOUT;
    let (resident_stats, officer_stats) = loop {
        switch(&browser, &resident_window).await;
        let resident_stats = stats(&browser, &server).await;
        switch(&browser, &officer_window).await;
        let officer_stats = stats(&browser, &server).await;
        let done = resident_stats.media_flowing() && officer_stats.media_flowing();
        if done || Instant::now() >= deadline {
            break (resident_stats, officer_stats);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    step("media flowing both ways");
    println!("resident: {resident_stats:?}");
    println!("officer: {officer_stats:?}");

    for (name, stats) in [("resident", &resident_stats), ("officer", &officer_stats)] {
        assert!(
            stats.inbound_video.frames_decoded > 0,
            "the {name} page decoded no video within {MEDIA_TIMEOUT:?} (video bytes received: {}, \
             signalling state {:?}, server offers answered {}, transceivers {:?})\n{}",
            stats.inbound_video.bytes_received,
            stats.signaling_state,
            stats.offers_answered,
            stats.transceivers,
            server.log_tail(30)
        );
        assert!(
            stats.inbound_audio.bytes_received > 0,
            "the {name} page received no audio within {MEDIA_TIMEOUT:?}\n{}",
            server.log_tail(30)
        );
        assert!(stats.outbound_video.frames_encoded > 0, "the {name} page encoded no video");
        assert_eq!(stats.connection_state, "connected", "{name} peer connection state");
        assert_eq!(stats.state, "live", "{name} page state");
        assert_eq!(stats.remote_videos, 1, "{name} page remote video elements");
        assert_eq!(stats.remote_audios, 1, "{name} page remote audio elements");
    }
    assert_eq!(resident_stats.role, "resident");
    assert_eq!(officer_stats.role, "officer");

    // The aria-live state region says "Live" on both pages.
    switch(&browser, &resident_window).await;
    assert_eq!(text_of(&browser, "#state").await, "Live", "resident state region");
    switch(&browser, &officer_window).await;
    assert_eq!(text_of(&browser, "#state").await, "Live", "officer state region");

    // The officer saves a snapshot of the resident's video: the server
    // records it and stores the very bytes the page sent.
    save_snapshot_and_check(&browser, &server, &mut grpc, &room.room_id, &officer.participant_id, &resident.participant_id).await;
    step("officer saved a snapshot");

    let participants = [resident.participant_id.as_str(), officer.participant_id.as_str()];
    wait_active_speaker(&browser, &server, &officer_window, &participants).await;
    step("officer page shows an active speaker");

    second_officer_joins_and_leaves(&browser, &server, &mut grpc, &room.room_id, &resident_window, &officer_window, &resident.participant_id).await;
    step("second officer joined and left, resident page kept its connection");

    // Screenshots of both pages at both sizes. The other side's video must
    // show real picture content in each.
    let artifacts = artifacts_dir();
    for (name, window) in [("resident", &resident_window), ("officer", &officer_window)] {
        switch(&browser, window).await;
        for (size_name, (width, height)) in [("phone", PHONE), ("desktop", DESKTOP)] {
            set_viewport(&browser, (width, height)).await;
            wait_video_playing(&browser, "#remote video").await;
            // One more frame painted at the new size.
            tokio::time::sleep(Duration::from_millis(400)).await;
            let png = browser.screenshot_png().await.expect("taking a screenshot failed");
            let path = artifacts.join(format!("{name}-{size_name}.png"));
            std::fs::write(&path, &png).unwrap_or_else(|error| panic!("writing {} failed: {error}", path.display()));

            assert_eq!(png_size(&png), (width, height), "size of {}", path.display());

            let rect: ElementRect = element_rect(&browser, "#remote video").await;
            let colours = distinct_colours(&png, &rect);
            println!("{}: {colours} colours in the remote video", path.display());
            assert!(
                colours >= MIN_VIDEO_COLOURS,
                "the remote video in {} has only {colours} distinct colours (rect {rect:?})",
                path.display()
            );
            if name == "resident" {
                let local = element_rect(&browser, "#local").await;
                let colours = distinct_colours(&png, &local);
                assert!(
                    colours >= MIN_VIDEO_COLOURS,
                    "the resident's own camera in {} has only {colours} distinct colours",
                    path.display()
                );
            }
        }
    }
    step("screenshots taken");

    // The officer reloads the page: the new connection replaces the old one,
    // and the resident ends up with exactly one video and one audio again.
    switch(&browser, &officer_window).await;
    browser.navigate(&officer.join_url).await.expect("reloading the officer's page failed");
    let deadline = Instant::now() + MEDIA_TIMEOUT;
    loop {
        switch(&browser, &officer_window).await;
        let officer_stats = stats(&browser, &server).await;
        switch(&browser, &resident_window).await;
        let resident_stats = stats(&browser, &server).await;
        let settled = officer_stats.media_flowing()
            && resident_stats.inbound_video.frames_decoded > 0
            && resident_stats.remote_videos == 1
            && resident_stats.remote_audios == 1
            && resident_stats.state == "live";
        if settled {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after the officer's reload: officer {officer_stats:?}, resident {resident_stats:?}\n{}",
            server.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    step("officer reloaded and rejoined");

    // The resident's camera goes out in three encodings, and every one the
    // server has not paused still sends after the renegotiations above.
    switch(&browser, &resident_window).await;
    let before = stats(&browser, &server).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = stats(&browser, &server).await;
    assert_eq!(before.encodings.len(), 3, "encodings: {:?}", before.encodings);
    assert!(after.active_encodings.iter().any(|rid| rid == "q"), "the lowest encoding was paused: {after:?}");
    let sent = |stats: &JoinStats, rid: &str| stats.encodings.get(rid).and_then(|e| e["bytesSent"].as_u64()).unwrap_or(0);
    for rid in &after.active_encodings {
        assert!(sent(&after, rid) > sent(&before, rid), "encoding {rid} stopped sending: {before:?} -> {after:?}");
    }
    // The officer's loopback link carries the top layer.
    let deadline = Instant::now() + MEDIA_TIMEOUT;
    loop {
        switch(&browser, &officer_window).await;
        let officer_stats = stats(&browser, &server).await;
        if officer_stats.inbound_video.frame_width == 1280 {
            break;
        }
        assert!(Instant::now() < deadline, "the officer never received the top layer: {officer_stats:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    step("resident's unpaused encodings keep sending, officer gets the top layer");

    // The officer ends the call: the page shows the ended view, and the
    // resident's page loses its remote tracks after the renegotiation.
    switch(&browser, &officer_window).await;
    browser.click("#leave").await.expect("clicking end call failed");
    wait_visible(&browser, "#ended").await;
    assert_eq!(text_of(&browser, "#state").await, "Call ended", "officer state after ending");
    switch(&browser, &resident_window).await;
    let deadline = Instant::now() + VIEW_TIMEOUT;
    loop {
        let stats = stats(&browser, &server).await;
        if stats.remote_videos == 0 && stats.remote_audios == 0 {
            assert_eq!(stats.state, "live", "the resident stays in the call");
            assert!(page_text(&browser).await.contains("Waiting for the officer"), "resident waiting text");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the resident page still shows the officer's tracks {VIEW_TIMEOUT:?} after the officer left: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    step("officer left, resident page dropped the officer's tracks");

    browser.delete().await.expect("closing Chromium failed");
}

/// How long `lo` stays down in the network-drop test.
const OUTAGE: Duration = Duration::from_secs(5);
/// Maximum time from `lo` coming back until the resident page is live and
/// decoding the officer's video again.
const REJOIN_TIMEOUT: Duration = Duration::from_secs(20);

async fn resident_rejoins_after_network_drop_inside() {
    assert_only_loopback();
    let started = Instant::now();
    let step = |what: &str| println!("[{:>6.2?}] {what}", started.elapsed());

    let server = TestServer::start().await;
    let mut grpc = server.grpc_client().await;
    let room = create_room(&mut grpc, "INC-pages-drop").await;
    let resident = admit(&mut grpc, &room.room_id, "resident-drop", Role::Resident).await;
    let officer = admit(&mut grpc, &room.room_id, "officer-drop", Role::Officer).await;

    let (_temp, _driver, browser) = start_browser(None).await;
    let resident_window = browser.window_handle().await.expect("reading the window handle failed");
    set_viewport(&browser, PHONE).await;
    start_resident_call(&browser, &resident.join_url).await;
    let officer_window = browser.new_window().await.expect("opening a second window failed");
    switch(&browser, &officer_window).await;
    set_viewport(&browser, DESKTOP).await;
    browser.navigate(&officer.join_url).await.expect("loading the officer's join link failed");

    let deadline = Instant::now() + MEDIA_TIMEOUT;
    let before = loop {
        switch(&browser, &resident_window).await;
        let resident_stats = stats(&browser, &server).await;
        switch(&browser, &officer_window).await;
        let officer_stats = stats(&browser, &server).await;
        if resident_stats.media_flowing() && officer_stats.media_flowing() && resident_stats.state == "live" {
            break resident_stats;
        }
        assert!(
            Instant::now() < deadline,
            "no media within {MEDIA_TIMEOUT:?}: resident {resident_stats:?}, officer {officer_stats:?}\n{}",
            server.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    switch(&browser, &resident_window).await;
    step("resident and officer live");

    // ChromeDriver is reached over `lo` too, so no WebDriver call happens
    // while it is down.
    set_loopback(false);
    tokio::time::sleep(OUTAGE).await;
    set_loopback(true);
    step("lo down for 5 s and up again");

    let deadline = Instant::now() + REJOIN_TIMEOUT;
    let mut decoded_since_rejoin: Option<u64> = None;
    let after = loop {
        // Retries until the deadline if a WebDriver call right after the
        // outage fails.
        let stats = match browser.call("vprJoinStats", &[]).await {
            Ok(value) => serde_json::from_value::<JoinStats>(value).ok(),
            Err(error) => {
                println!("vprJoinStats failed right after the outage: {error}");
                None
            }
        };
        if let Some(stats) = stats {
            let decoding = stats.state == "live"
                && stats.connection_state == "connected"
                && stats.remote_videos == 1
                && stats.inbound_video.frames_decoded > 0;
            // Frames decoded on the current connection must still grow.
            match (decoding, decoded_since_rejoin) {
                (true, Some(first)) if stats.inbound_video.frames_decoded > first => break stats,
                (true, None) => decoded_since_rejoin = Some(stats.inbound_video.frames_decoded),
                (false, _) => decoded_since_rejoin = None,
                _ => {}
            }
            assert!(
                Instant::now() < deadline,
                "the resident page was not live and decoding {REJOIN_TIMEOUT:?} after lo came up: {stats:?}\n{}",
                server.log_tail(30)
            );
        } else {
            assert!(Instant::now() < deadline, "the resident page did not answer within {REJOIN_TIMEOUT:?} after the outage");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    step("resident live and decoding again");
    println!("resident after the outage: {after:?}");
    println!("resident page warnings: {:?}", after.warnings);
    assert!(
        after.state_history.iter().any(|state| state == "reconnecting"),
        "the resident page never showed the reconnecting state: {:?}",
        after.state_history
    );
    assert_eq!(after.state_history.last().map(String::as_str), Some("live"), "last state");
    assert_eq!(after.connections, before.connections, "the page opened a new peer connection: {before:?} -> {after:?}");
    // The page restarts ICE unless Chromium reports `connected` again on the
    // old candidate pair first, so either path may run here.
    println!("ICE restarts by the resident page: {} -> {}", before.ice_restarts, after.ice_restarts);
    assert_eq!(text_of(&browser, "#state").await, "Live", "resident state region after the outage");

    let session = grpc
        .get_session(vpr_control::pb::GetSessionRequest { room_id: room.room_id.clone() })
        .await
        .unwrap_or_else(|status| panic!("GetSession failed: {status}"))
        .into_inner();
    let residents: Vec<_> = session.participants.iter().filter(|p| p.role == Role::Resident as i32).collect();
    println!("residents after the outage: {residents:?}");
    assert_eq!(residents.len(), 1, "resident participants: {residents:?}");
    assert_eq!(residents[0].participant_id, resident.participant_id, "resident participant id");
    assert!(residents[0].joined_at_unix_ms > 0, "the resident never joined: {:?}", residents[0]);
    assert_eq!(residents[0].left_at_unix_ms, 0, "the resident left during the outage: {:?}", residents[0]);
    let resident_events: Vec<&str> = session
        .events
        .iter()
        .filter(|event| event.participant_id == resident.participant_id)
        .map(|event| event.kind.as_str())
        .collect();
    let joins = resident_events.iter().filter(|kind| **kind == "participant_joined").count();
    assert_eq!(joins, 1, "resident events: {resident_events:?}");
    assert!(!resident_events.contains(&"participant_left"), "resident events: {resident_events:?}");

    // The resident reloads the page with the same link: the new connection
    // replaces the old one and the session still has one resident.
    start_resident_call(&browser, &resident.join_url).await;
    let deadline = Instant::now() + MEDIA_TIMEOUT;
    loop {
        let stats = stats(&browser, &server).await;
        if stats.media_flowing() && stats.state == "live" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the reloaded resident page was not live within {MEDIA_TIMEOUT:?}: {stats:?}\n{}",
            server.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    step("resident reloaded and live again");
    let session = grpc
        .get_session(vpr_control::pb::GetSessionRequest { room_id: room.room_id.clone() })
        .await
        .unwrap_or_else(|status| panic!("GetSession failed: {status}"))
        .into_inner();
    let residents: Vec<_> = session.participants.iter().filter(|p| p.role == Role::Resident as i32).collect();
    assert_eq!(residents.len(), 1, "resident participants after the reload: {residents:?}");
    assert_eq!(residents[0].participant_id, resident.participant_id, "resident participant id after the reload");
    assert_eq!(residents[0].left_at_unix_ms, 0, "the reload counted as leaving: {:?}", residents[0]);

    browser.delete().await.expect("closing Chromium failed");
}

/// Takes `lo` of the test's namespace down or up with `ip link`.
fn set_loopback(up: bool) {
    let state = if up { "up" } else { "down" };
    let status = std::process::Command::new("ip")
        .args(["link", "set", "lo", state])
        .status()
        .unwrap_or_else(|error| panic!("running ip link set lo {state} failed: {error}"));
    assert!(status.success(), "ip link set lo {state} failed: {status}");
}

/// Lets a second officer join in a third window and end the call again: the
/// resident page shows one more video meanwhile, on the same connection, and
/// the first officer's snapshot still takes the resident's video.
async fn second_officer_joins_and_leaves(
    browser: &Session,
    server: &TestServer,
    grpc: &mut common::RoomClient,
    room_id: &str,
    resident_window: &str,
    officer_window: &str,
    resident_id: &str,
) {
    let resident_connections = {
        switch(browser, resident_window).await;
        stats(browser, server).await.connections
    };
    assert_eq!(resident_connections, 1, "the resident page reconnected before the second officer joined");
    let second = admit(grpc, room_id, "officer-pages-2", Role::Officer).await;
    let second_window = browser.new_window().await.expect("opening a third window failed");
    switch(browser, &second_window).await;
    set_viewport(browser, DESKTOP).await;
    browser.navigate(&second.join_url).await.expect("loading the second officer's join link failed");
    wait_remote_videos(browser, server, resident_window, 2, resident_connections).await;
    wait_remote_videos(browser, server, officer_window, 2, 1).await;

    // The officer page maps each video to its publisher and snapshots the resident's.
    let officer_stats = stats(browser, server).await;
    let mut publishers: Vec<String> = officer_stats.remote_video_participants.iter().flatten().cloned().collect();
    publishers.sort();
    let mut expected = vec![resident_id.to_owned(), second.participant_id.clone()];
    expected.sort();
    assert_eq!(publishers, expected, "publishers of the officer page's videos: {officer_stats:?}");
    assert_eq!(officer_stats.resident_id.as_deref(), Some(resident_id), "resident named by the room message");
    let snapshots_before = officer_stats.last_snapshot.as_ref().and_then(|s| s.snapshot_id.clone());
    browser.click("#save-snapshot").await.expect("clicking save snapshot failed");
    let deadline = Instant::now() + VIEW_TIMEOUT;
    let snapshot = loop {
        let stats = stats(browser, server).await;
        if let Some(result) = stats.last_snapshot.filter(|s| s.snapshot_id != snapshots_before || !s.ok) {
            break result;
        }
        assert!(Instant::now() < deadline, "no second snapshot result within {VIEW_TIMEOUT:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(snapshot.ok, "the second snapshot failed: {snapshot:?}");
    assert_eq!(snapshot.participant_id.as_deref(), Some(resident_id), "whose video the snapshot shows: {snapshot:?}");

    switch(browser, &second_window).await;
    browser.click("#leave").await.expect("clicking end call on the second officer's page failed");
    wait_visible(browser, "#ended").await;
    wait_remote_videos(browser, server, resident_window, 1, resident_connections).await;
    wait_remote_videos(browser, server, officer_window, 1, 1).await;
}

/// Clicks "Save snapshot" on the officer page in the current window, then
/// checks the page's message, the session record and the stored file.
async fn save_snapshot_and_check(
    browser: &Session,
    server: &TestServer,
    grpc: &mut common::RoomClient,
    room_id: &str,
    officer_id: &str,
    resident_id: &str,
) {
    wait_visible(browser, "#save-snapshot").await;
    assert_eq!(text_of(browser, "#save-snapshot").await, "Save snapshot", "snapshot button text");
    wait_video_playing(browser, "#remote video").await;
    browser.click("#save-snapshot").await.expect("clicking save snapshot failed");

    // The message stays 4 s, so poll often.
    let deadline = Instant::now() + VIEW_TIMEOUT;
    let (result, message) = loop {
        let message = text_of(browser, "#state").await;
        if message.starts_with("Snapshot saved") || message.contains("could not be saved") {
            let result = stats(browser, server).await.last_snapshot;
            break (result.expect("the page recorded no snapshot result"), message);
        }
        assert!(Instant::now() < deadline, "no snapshot message within {VIEW_TIMEOUT:?}; state region: {message:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    println!("snapshot: {result:?}, message {message:?}");
    assert!(result.ok, "the snapshot upload failed: {:?}\n{}", result.detail, server.log_tail(20));
    assert_eq!(result.participant_id.as_deref(), Some(resident_id), "whose video the snapshot shows");
    let sha256 = result.sha256.expect("no sha256 in the page's snapshot result");
    assert_eq!(message, format!("Snapshot saved ({}).", &sha256[..12]), "snapshot message");

    let session = grpc
        .get_session(vpr_control::pb::GetSessionRequest { room_id: room_id.to_owned() })
        .await
        .unwrap_or_else(|status| panic!("GetSession failed: {status}"))
        .into_inner();
    assert_eq!(session.snapshots.len(), 1, "snapshots in the session: {:?}", session.snapshots);
    let recorded = &session.snapshots[0];
    assert_eq!(recorded.participant_id, officer_id, "snapshot author");
    assert_eq!(Some(&recorded.snapshot_id), result.snapshot_id.as_ref(), "snapshot id");
    assert_eq!(recorded.sha256, sha256, "recorded sha256");
    assert_eq!(recorded.content_type, "image/jpeg", "snapshot content type");
    assert_eq!(Some(recorded.size_bytes as u64), result.size_bytes, "recorded size");

    let path = server.dir().join("snapshots").join(room_id).join(format!("{}.jpg", recorded.snapshot_id));
    let bytes = std::fs::read(&path).unwrap_or_else(|error| panic!("reading {} failed: {error}", path.display()));
    assert!(bytes.starts_with(&[0xff, 0xd8, 0xff]), "{} is not a JPEG", path.display());
    assert_eq!(bytes.len() as i64, recorded.size_bytes, "size of {}", path.display());
    let digest: String = sha2::Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(digest, recorded.sha256, "SHA-256 of {}", path.display());
    // A decoded camera frame, not a blank canvas: a few kilobytes at least.
    assert!(bytes.len() > 2000, "the snapshot is only {} bytes", bytes.len());
}

/// Waits until the page in `window` names an active speaker, one of
/// `participants`, in its speaker line.
async fn wait_active_speaker(browser: &Session, server: &TestServer, window: &str, participants: &[&str]) {
    switch(browser, window).await;
    let deadline = Instant::now() + MEDIA_TIMEOUT;
    let stats = loop {
        let stats = stats(browser, server).await;
        if stats.active_speaker.is_some() {
            break stats;
        }
        assert!(Instant::now() < deadline, "no active speaker within {MEDIA_TIMEOUT:?}: {stats:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let speaker = stats.active_speaker.clone().unwrap_or_default();
    assert!(participants.contains(&speaker.as_str()), "unknown active speaker {speaker:?}: {stats:?}");
    let line = text_of(browser, "#speaker").await;
    let expected = if Some(&speaker) == stats.participant_id.as_ref() {
        "You are speaking"
    } else if Some(&speaker) == stats.resident_id.as_ref() {
        "The resident is speaking"
    } else {
        "Another participant is speaking"
    };
    assert_eq!(line, expected, "speaker line for {speaker}: {stats:?}");
}

/// Waits until the page in `window` shows `videos` remote videos while
/// live, and asserts it kept its `connections` peer connections.
async fn wait_remote_videos(browser: &Session, server: &TestServer, window: &str, videos: u32, connections: u32) {
    switch(browser, window).await;
    let deadline = Instant::now() + MEDIA_TIMEOUT;
    loop {
        let stats = stats(browser, server).await;
        assert_eq!(stats.connections, connections, "the {} page reconnected: {stats:?}", stats.role);
        if stats.remote_videos == videos && stats.state == "live" {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the {} page did not show {videos} remote videos within {MEDIA_TIMEOUT:?}: {stats:?}\n{}",
            stats.role,
            server.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Downstream rate of the officer's link while the higher layers pause.
const PAUSE_CAP_KBPS: u32 = 300;

/// Checks layer pausing. The resident publishes three encodings from the
/// join page. The only subscriber, a WHEP officer behind a relay capped at
/// 300 kbit/s, receives the lowest layer, so once the pause delay has passed
/// the page stops sending the two higher encodings. When the cap is lifted
/// the server resumes them and the officer receives the 1280-wide top layer.
async fn resident_layers_pause_and_resume_inside() {
    assert_only_loopback();
    let started = Instant::now();
    let step = |what: &str| println!("[{:>6.2?}] {what}", started.elapsed());

    let server = TestServer::start().await;
    let mut grpc = server.grpc_client().await;
    let room = create_room(&mut grpc, "INC-pages-pause").await;
    let resident = admit(&mut grpc, &room.room_id, "resident-pause", Role::Resident).await;
    let officer = admit(&mut grpc, &room.room_id, "officer-pause", Role::Officer).await;
    let (relay, relay_addr) = Relay::start_seeded(server.media_addr(), 8853).await.expect("starting the relay failed");
    relay.set(Direction::Downstream, Impairment::none().with_rate_kbps(PAUSE_CAP_KBPS));

    let (_temp, _driver, browser) = start_browser(None).await;
    set_viewport(&browser, PHONE).await;
    start_resident_call(&browser, &resident.join_url).await;
    let deadline = Instant::now() + MEDIA_TIMEOUT;
    while stats(&browser, &server).await.active_encodings.len() < 3 || stats(&browser, &server).await.state != "live" {
        assert!(Instant::now() < deadline, "the resident page never went live: {:?}", stats(&browser, &server).await);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let subscriber = RelayedSubscriber::start(&officer.whep_url, &officer.join_token, relay_addr)
        .await
        .unwrap_or_else(|error| panic!("WHEP subscribe failed: {error}\n{}", server.log_tail(40)));
    step("resident live with three encodings, officer subscribed behind the cap");

    let deadline = Instant::now() + vpr_sfu::layer_pause::PAUSE_AFTER + Duration::from_secs(10);
    loop {
        let resident_stats = stats(&browser, &server).await;
        if resident_stats.active_encodings == ["q"] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the higher encodings were not paused: {resident_stats:?}\n{}",
            server.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    step("h and f paused");
    let before = stats(&browser, &server).await.encodings;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = stats(&browser, &server).await.encodings;
    let sent = |stats: &std::collections::BTreeMap<String, Value>, rid: &str| stats.get(rid).and_then(|e| e["bytesSent"].as_u64()).unwrap_or(0);
    assert!(sent(&after, "q") > sent(&before, "q"), "the lowest encoding stopped: {before:?} -> {after:?}");
    for rid in ["h", "f"] {
        assert_eq!(sent(&after, rid), sent(&before, rid), "paused encoding {rid} still sends: {before:?} -> {after:?}");
    }
    let frames_before = subscriber.stats().video.frames;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(subscriber.stats().video.frames > frames_before + 5, "the officer's video stopped while layers were paused");
    let pauses = server.metric_sum("vpr_layer_pauses_total").await.unwrap_or_default();
    assert_eq!(pauses, 2.0, "vpr_layer_pauses_total");

    relay.set(Direction::Downstream, Impairment::none());
    let lifted = Instant::now();
    let deadline = lifted + Duration::from_secs(15);
    loop {
        let top = subscriber
            .timed_frame_log()
            .into_iter()
            .any(|(at, frame)| at > lifted && frame.width == Some(1280));
        if top {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the officer never received the top layer after the cap; page {:?}\n{}",
            stats(&browser, &server).await,
            server.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    step(&format!("top layer received {:.2?} after the cap was lifted", lifted.elapsed()));
    // The subscriber may go from q straight to f, and then h stays paused.
    let active = stats(&browser, &server).await.active_encodings;
    assert!(active.iter().any(|rid| rid == "f"), "encodings sent after resuming: {active:?}");
    subscriber.stop().await.expect("WHEP DELETE failed");
}

async fn resident_page_in_french_inside() {
    assert_only_loopback();
    let server = TestServer::start().await;
    let mut grpc = server.grpc_client().await;
    let room = create_room(&mut grpc, "INC-pages-fr").await;
    let resident = admit(&mut grpc, &room.room_id, "resident-fr", Role::Resident).await;

    let (_temp, _driver, browser) = start_browser(Some("fr-CA")).await;
    set_viewport(&browser, PHONE).await;
    browser.navigate(&resident.join_url).await.expect("loading the join link failed");
    wait_visible(&browser, "#consent").await;

    let language = browser
        .execute("return document.documentElement.lang;", &[])
        .await
        .expect("reading the page language failed");
    assert_eq!(language, json!("fr-CA"), "<html lang> with --lang=fr-CA");
    let text = page_text(&browser).await;
    assert!(text.contains("Cet appel n'est pas enregistré."), "French consent text missing:\n{text}");
    assert!(text.contains("Démarrer la caméra"), "French start button missing:\n{text}");
    assert!(!text.contains("Start camera"), "English text on the French page:\n{text}");

    let png = browser.screenshot_png().await.expect("taking a screenshot failed");
    let path = artifacts_dir().join("resident-consent-fr-phone.png");
    std::fs::write(&path, &png).unwrap_or_else(|error| panic!("writing {} failed: {error}", path.display()));

    // The visible switch turns the page to English.
    browser.click("#language").await.expect("clicking the language switch failed");
    let language = browser
        .execute("return document.documentElement.lang;", &[])
        .await
        .expect("reading the page language failed");
    assert_eq!(language, json!("en-CA"), "<html lang> after switching to English");
    assert!(page_text(&browser).await.contains("Start camera"), "English start button after the switch");

    browser.delete().await.expect("closing Chromium failed");
}

/// Chromium flags for a headless, loopback-only run with fake media
/// devices, as in chromium_whip.rs, with an optional UI language.
/// Starts ChromeDriver and a Chromium session in a temp dir, with
/// `language` as Chromium's UI language. The temp dir and driver must
/// outlive the session.
async fn start_browser(language: Option<&str>) -> (tempfile::TempDir, ChromeDriver, Session) {
    let temp = tempfile::tempdir().expect("creating a temp dir failed");
    let driver = ChromeDriver::start(&temp.path().join("chromedriver.log"))
        .await
        .unwrap_or_else(|error| panic!("starting ChromeDriver failed: {error}"));
    let browser = driver
        .new_session(&chromium_args(&temp.path().join("profile"), language), SCRIPT_TIMEOUT)
        .await
        .unwrap_or_else(|error| panic!("starting Chromium failed: {error}\n{}", driver.log_tail(40)));
    (temp, driver, browser)
}

fn chromium_args(profile: &Path, language: Option<&str>) -> Vec<String> {
    let mut args = chromium::args::headless_args(profile);
    args.push("--hide-scrollbars".to_owned());
    if let Some(language) = language {
        args.push(format!("--lang={language}"));
        // Headless Chromium takes `navigator.language` from this one.
        args.push(format!("--accept-lang={language}"));
    }
    args
}

/// Returns `target/test-artifacts/pages/`, created if missing.
fn artifacts_dir() -> PathBuf {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("CARGO_TARGET_TMPDIR has a parent")
        .to_owned();
    let dir = target.join("test-artifacts").join("pages");
    std::fs::create_dir_all(&dir).unwrap_or_else(|error| panic!("creating {} failed: {error}", dir.display()));
    dir
}

/// Resizes the current window so that its viewport is `width` x `height`
/// CSS pixels: headless Chromium counts a window frame in the window size.
async fn set_viewport(browser: &Session, (width, height): (u32, u32)) {
    browser.set_window_size(width, height).await.expect("resizing the window failed");
    let inner = browser
        .execute("return [window.innerWidth, window.innerHeight];", &[])
        .await
        .expect("reading the viewport size failed");
    let inner_width = inner[0].as_u64().expect("innerWidth is a number") as u32;
    let inner_height = inner[1].as_u64().expect("innerHeight is a number") as u32;
    if (inner_width, inner_height) != (width, height) {
        let frame_width = width.saturating_sub(inner_width);
        let frame_height = height.saturating_sub(inner_height);
        browser
            .set_window_size(width + frame_width, height + frame_height)
            .await
            .expect("resizing the window failed");
    }
}

async fn switch(browser: &Session, window: &str) {
    browser
        .switch_to_window(window)
        .await
        .unwrap_or_else(|error| panic!("switching to window {window} failed: {error}"));
}

async fn stats(browser: &Session, server: &TestServer) -> JoinStats {
    let value = browser
        .call("vprJoinStats", &[])
        .await
        .unwrap_or_else(|error| panic!("{error}\n{}", server.log_tail(30)));
    serde_json::from_value(value.clone()).unwrap_or_else(|error| panic!("decoding vprJoinStats failed: {error}: {value}"))
}

async fn page_text(browser: &Session) -> String {
    let value = browser
        .execute("return document.body.innerText;", &[])
        .await
        .expect("reading the page text failed");
    value.as_str().unwrap_or_default().to_owned()
}

async fn text_of(browser: &Session, selector: &str) -> String {
    let value = browser
        .execute("return document.querySelector(arguments[0]).textContent;", &[json!(selector)])
        .await
        .unwrap_or_else(|error| panic!("reading the text of {selector} failed: {error}"));
    value.as_str().unwrap_or_default().to_owned()
}

/// Opens (or reloads) the resident's join link and accepts the consent
/// screen with its start button.
async fn start_resident_call(browser: &Session, join_url: &str) {
    browser.navigate(join_url).await.expect("loading the resident's join link failed");
    wait_visible(browser, "#start").await;
    browser.click("#start").await.expect("clicking the start button failed");
}

/// Waits until the element matching `selector` exists and is not hidden.
async fn wait_visible(browser: &Session, selector: &str) {
    let script = "const e = document.querySelector(arguments[0]); return !!e && !e.closest('[hidden]');";
    wait_until(browser, script, selector, &format!("{selector} to be visible")).await;
}

/// Waits until the video matching `selector` has a decoded frame to show.
async fn wait_video_playing(browser: &Session, selector: &str) {
    let script = "const v = document.querySelector(arguments[0]); return !!v && v.videoWidth > 0 && v.readyState >= 2;";
    wait_until(browser, script, selector, &format!("{selector} to play")).await;
}

async fn wait_until(browser: &Session, script: &str, selector: &str, what: &str) {
    let deadline = Instant::now() + VIEW_TIMEOUT;
    loop {
        let done = browser
            .execute(script, &[json!(selector)])
            .await
            .unwrap_or_else(|error| panic!("checking for {what} failed: {error}"));
        if done == Value::Bool(true) {
            return;
        }
        let text = page_text(browser).await;
        assert!(Instant::now() < deadline, "timed out after {VIEW_TIMEOUT:?} waiting for {what}; page text:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn element_rect(browser: &Session, selector: &str) -> ElementRect {
    let script = "const r = document.querySelector(arguments[0]).getBoundingClientRect();
                  return { x: r.x, y: r.y, width: r.width, height: r.height, innerWidth: window.innerWidth };";
    let value = browser
        .execute(script, &[json!(selector)])
        .await
        .unwrap_or_else(|error| panic!("reading the position of {selector} failed: {error}"));
    serde_json::from_value(value.clone()).unwrap_or_else(|error| panic!("decoding the rect of {selector} failed: {error}: {value}"))
}

/// Returns the width and height of a PNG image.
fn png_size(png_bytes: &[u8]) -> (u32, u32) {
    let reader = png::Decoder::new(std::io::Cursor::new(png_bytes))
        .read_info()
        .expect("the screenshot is not a PNG");
    let info = reader.info();
    (info.width, info.height)
}

/// Counts the distinct RGB colours of a PNG screenshot inside `rect`, which
/// is in CSS pixels of a viewport `rect.inner_width` wide.
fn distinct_colours(png_bytes: &[u8], rect: &ElementRect) -> usize {
    let decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
    let mut reader = decoder.read_info().expect("the screenshot is not a PNG");
    let mut pixels = vec![0; reader.output_buffer_size()];
    let frame = reader.next_frame(&mut pixels).expect("decoding the screenshot failed");
    assert_eq!(frame.bit_depth, png::BitDepth::Eight, "screenshot bit depth");
    let channels = frame.color_type.samples();
    assert!(channels >= 3, "screenshot colour type {:?}", frame.color_type);

    let scale = f64::from(frame.width) / rect.inner_width;
    let clamp = |value: f64, max: u32| (value * scale).round().clamp(0.0, f64::from(max)) as usize;
    let (left, right) = (clamp(rect.x, frame.width), clamp(rect.x + rect.width, frame.width));
    let (top, bottom) = (clamp(rect.y, frame.height), clamp(rect.y + rect.height, frame.height));

    let mut colours = HashSet::new();
    for y in top..bottom {
        let row = &pixels[y * frame.line_size..(y + 1) * frame.line_size];
        for x in left..right {
            let pixel = &row[x * channels..x * channels + 3];
            colours.insert([pixel[0], pixel[1], pixel[2]]);
        }
    }
    colours.len()
}
