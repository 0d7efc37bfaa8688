//! Join pages in headless Chromium: a resident (phone-sized window) and an
//! officer (desktop window) open their join links, join the same room over
//! the WebSocket join and each decodes the other's video and receives the
//! other's audio. Screenshots of both pages at phone and desktop size go to
//! `target/test-artifacts/pages/`. A second test checks that the resident
//! page is in French when Chromium runs with `--lang=fr-CA`.
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
use vpr_control::pb::Role;

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
        rerun_in_namespace("resident_and_officer_call", RUN_TIMEOUT);
    }
}

#[test]
fn resident_page_in_french() {
    if in_namespace() {
        runtime().block_on(resident_page_in_french_inside());
    } else {
        rerun_in_namespace("resident_page_in_french", RUN_TIMEOUT);
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
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct InboundVideo {
    frames_decoded: u64,
    bytes_received: u64,
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

    let temp = tempfile::tempdir().expect("creating a temp dir failed");
    let driver = ChromeDriver::start(&temp.path().join("chromedriver.log"))
        .await
        .unwrap_or_else(|error| panic!("starting ChromeDriver failed: {error}"));
    let browser = driver
        .new_session(&chromium_args(&temp.path().join("profile"), None), SCRIPT_TIMEOUT)
        .await
        .unwrap_or_else(|error| panic!("starting Chromium failed: {error}\n{}", driver.log_tail(40)));
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

async fn resident_page_in_french_inside() {
    assert_only_loopback();
    let server = TestServer::start().await;
    let mut grpc = server.grpc_client().await;
    let room = create_room(&mut grpc, "INC-pages-fr").await;
    let resident = admit(&mut grpc, &room.room_id, "resident-fr", Role::Resident).await;

    let temp = tempfile::tempdir().expect("creating a temp dir failed");
    let driver = ChromeDriver::start(&temp.path().join("chromedriver.log"))
        .await
        .unwrap_or_else(|error| panic!("starting ChromeDriver failed: {error}"));
    let browser = driver
        .new_session(&chromium_args(&temp.path().join("profile"), Some("fr-CA")), SCRIPT_TIMEOUT)
        .await
        .unwrap_or_else(|error| panic!("starting Chromium failed: {error}\n{}", driver.log_tail(40)));
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
fn chromium_args(profile: &Path, language: Option<&str>) -> Vec<String> {
    let mut args: Vec<String> = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",
        "--allow-loopback-in-peer-connection",
        "--disable-features=WebRtcHideLocalIpsWithMdns",
        "--disable-background-timer-throttling",
        "--disable-renderer-backgrounding",
        "--disable-backgrounding-occluded-windows",
        "--hide-scrollbars",
    ]
    .map(str::to_owned)
    .into();
    if let Some(language) = language {
        args.push(format!("--lang={language}"));
        // Headless Chromium takes `navigator.language` from this one.
        args.push(format!("--accept-lang={language}"));
    }
    args.push(format!("--user-data-dir={}", profile.display()));
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
