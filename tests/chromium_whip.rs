//! Headless Chromium end to end: one Chromium window publishes its fake
//! camera and microphone over WHIP, a second window receives them over WHEP,
//! and `getStats()` in both pages shows frames encoded, frames decoded and
//! audio bytes received.
//!
//! Every packet stays on loopback: the test re-runs its own binary inside a
//! fresh network namespace with only `lo` up, and the server, the page server,
//! ChromeDriver and Chromium all run in there. Needs root (for `ip netns`)
//! and Debian's `chromium` and `chromium-driver` packages.

mod chromium;
mod common;

use std::io::{BufRead, BufReader, Read};

use std::process::{ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use chromium::netns::NetNamespace;
use chromium::test_page::open_test_page;
use chromium::webdriver::Session;
use common::{admit, create_room, TestServer};
use serde::Deserialize;
use serde_json::Value;
use vpr_control::pb::Role;

/// Name of the test, used to re-run exactly this test inside the namespace.
const TEST_NAME: &str = "chromium_publishes_and_receives";
/// Set to `1` in the re-run inside the namespace.
const IN_NETNS_VAR: &str = "VPR_IN_NETNS";
/// Maximum run time of the re-run inside the namespace, after which it is killed.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);
/// Maximum time from the WHIP answer until the publisher is connected.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Maximum time from the WHEP answer until media counters are above zero.
const MEDIA_TIMEOUT: Duration = Duration::from_secs(10);

#[test]
fn chromium_publishes_and_receives() {
    if std::env::var_os(IN_NETNS_VAR).is_some() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("building the tokio runtime failed");
        runtime.block_on(publish_and_receive());
    } else {
        rerun_in_namespace();
    }
}

/// Creates the namespace, runs this test again inside it, prints the re-run's
/// output and asserts that it passed. The namespace guard deletes the
/// namespace and kills whatever the re-run left, also when this panics.
fn rerun_in_namespace() {
    let name = format!("vpr-chrome-{}", std::process::id());
    let namespace = NetNamespace::create(&name)
        .unwrap_or_else(|error| panic!("creating network namespace {name} failed: {error}"));
    let exe = std::env::current_exe().expect("the test binary path is unknown");

    let started = Instant::now();
    let mut child = namespace
        .command(&exe)
        .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
        .env(IN_NETNS_VAR, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("running {} in {name} failed: {error}", exe.display()));
    let (done_sender, done) = mpsc::channel();
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    forward_lines(stdout, "", done_sender.clone());
    forward_lines(stderr, "[stderr] ", done_sender);

    let status = wait_or_kill(&mut child, RUN_TIMEOUT);
    namespace
        .kill_remaining()
        .unwrap_or_else(|error| panic!("killing processes left in {name} failed: {error}"));
    // Both pipes close once every process holding them is gone.
    for _ in 0..2 {
        let _ = done.recv_timeout(Duration::from_secs(5));
    }

    let status = status.unwrap_or_else(|| {
        panic!("the run inside {name} did not finish within {RUN_TIMEOUT:?} and was killed")
    });
    println!("run inside {name} took {:?}", started.elapsed());
    assert!(status.success(), "the run inside {name} failed: {status}");
}

/// Prints every line of `pipe` with `prefix` from a thread, so the test
/// harness captures it like the test's own output; signals `done` at EOF.
fn forward_lines(pipe: impl Read + Send + 'static, prefix: &'static str, done: mpsc::Sender<()>) {
    thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            match line {
                Ok(line) => println!("{prefix}{line}"),
                Err(_) => break,
            }
        }
        let _ = done.send(());
    });
}

/// Waits for `child` up to `timeout`; kills it and returns `None` after that.
fn wait_or_kill(child: &mut std::process::Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("waiting for the re-run failed") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Result of the page's `publish()` and `subscribe()`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Negotiation {
    status: u16,
    location: Option<String>,
    offer_sdp: String,
    answer_sdp: String,
}

/// Result of the page's `stats()`. Counters are summed over the streams of a kind.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PageStats {
    connection_state: String,
    outbound_video: OutboundVideo,
    outbound_audio: OutboundAudio,
    inbound_video: InboundVideo,
    inbound_audio: InboundAudio,
    log: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OutboundVideo {
    frames_encoded: u64,
    bytes_sent: u64,
    codec: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OutboundAudio {
    bytes_sent: u64,
    codec: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct InboundVideo {
    frames_decoded: u64,
    bytes_received: u64,
    codec: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct InboundAudio {
    bytes_received: u64,
    codec: Option<String>,
}

/// Runs the calls and assertions of the test, inside the namespace.
async fn publish_and_receive() {
    assert_only_loopback();
    let started = Instant::now();
    let step = |what: &str| println!("[{:>6.2?}] {what}", started.elapsed());

    let server = TestServer::start().await;
    let mut grpc = server.grpc_client().await;
    let room = create_room(&mut grpc, "INC-chromium").await;
    let resident = admit(
        &mut grpc,
        &room.room_id,
        "resident-chromium",
        Role::Resident,
    )
    .await;
    let officer = admit(&mut grpc, &room.room_id, "officer-chromium", Role::Officer).await;
    step("server started, room created, participants admitted");

    let (page, _temp, _driver, browser) = open_test_page().await;
    step("Chromium started");

    // Publisher window: fake camera and microphone over WHIP.
    let publisher_window = browser
        .window_handle()
        .await
        .expect("reading the window handle failed");
    let published: Negotiation = call_page(
        &browser,
        "publish",
        &[
            resident.whip_url.as_str().into(),
            resident.join_token.as_str().into(),
        ],
        &server,
    )
    .await;
    step("WHIP answer received");
    assert_eq!(
        published.status,
        201,
        "WHIP POST status; body: {}\n{}",
        published.answer_sdp,
        server.log_tail(40)
    );
    assert!(
        published
            .location
            .as_deref()
            .is_some_and(|location| !location.is_empty()),
        "WHIP answer has no Location header"
    );
    let offered_video = video_codecs(&published.offer_sdp);
    let answered_video = video_codecs(&published.answer_sdp);
    assert!(
        offered_video.iter().any(|codec| codec == "VP8"),
        "Chromium offered no VP8: {offered_video:?}"
    );
    assert!(
        answered_video.iter().any(|codec| codec == "VP8"),
        "the WHIP answer dropped VP8; offered {offered_video:?}, answered {answered_video:?}"
    );
    wait_connected(&browser, &server).await;
    step("publisher connected");

    // Subscriber window: the room over WHEP.
    let subscriber_window = browser
        .new_window()
        .await
        .expect("opening a second window failed");
    switch(&browser, &subscriber_window).await;
    browser
        .navigate(&page.url())
        .await
        .expect("loading the test page in the second window failed");
    let subscribed: Negotiation = call_page(
        &browser,
        "subscribe",
        &[
            officer.whep_url.as_str().into(),
            officer.join_token.as_str().into(),
        ],
        &server,
    )
    .await;
    step("WHEP answer received");
    assert_eq!(
        subscribed.status,
        201,
        "WHEP POST status; body: {}\n{}",
        subscribed.answer_sdp,
        server.log_tail(40)
    );
    assert!(
        subscribed
            .location
            .as_deref()
            .is_some_and(|location| !location.is_empty()),
        "WHEP answer has no Location header"
    );

    // Poll both pages until every counter is above zero or the time is up.
    let media_deadline = Instant::now() + MEDIA_TIMEOUT;
    let (publisher, subscriber) = loop {
        switch(&browser, &publisher_window).await;
        let publisher: PageStats = call_page(&browser, "stats", &[], &server).await;
        switch(&browser, &subscriber_window).await;
        let subscriber: PageStats = call_page(&browser, "stats", &[], &server).await;

        let flowing = publisher.outbound_video.frames_encoded > 0
            && subscriber.inbound_video.frames_decoded > 0
            && subscriber.inbound_audio.bytes_received > 0;
        if flowing || Instant::now() >= media_deadline {
            break (publisher, subscriber);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    step("stats read");
    println!("publisher: {:?}", without_log(&publisher));
    println!("subscriber: {:?}", without_log(&subscriber));
    let diagnostics = format!(
        "publisher page log:\n{}\nsubscriber page log:\n{}\n{}",
        publisher.log.join("\n"),
        subscriber.log.join("\n"),
        server.log_tail(40)
    );

    assert!(
        publisher.outbound_video.frames_encoded > 0,
        "the publisher encoded no video frame\n{diagnostics}"
    );
    assert!(
        publisher.outbound_video.bytes_sent > 0,
        "the publisher sent no video\n{diagnostics}"
    );
    assert!(
        publisher.outbound_audio.bytes_sent > 0,
        "the publisher sent no audio\n{diagnostics}"
    );
    assert_eq!(
        publisher.outbound_video.codec.as_deref(),
        Some("video/VP8"),
        "publisher video codec"
    );
    assert_eq!(
        publisher.outbound_audio.codec.as_deref(),
        Some("audio/opus"),
        "publisher audio codec"
    );
    assert!(
        subscriber.inbound_video.frames_decoded > 0,
        "the subscriber decoded no video frame within {MEDIA_TIMEOUT:?} \
         (video bytes received: {})\n{diagnostics}",
        subscriber.inbound_video.bytes_received
    );
    assert!(
        subscriber.inbound_audio.bytes_received > 0,
        "the subscriber received no audio within {MEDIA_TIMEOUT:?}\n{diagnostics}"
    );
    assert_eq!(
        subscriber.inbound_video.codec.as_deref(),
        Some("video/VP8"),
        "subscriber video codec"
    );
    assert_eq!(
        subscriber.inbound_audio.codec.as_deref(),
        Some("audio/opus"),
        "subscriber audio codec"
    );
    assert_eq!(subscriber.connection_state, "connected", "subscriber state");

    browser.delete().await.expect("closing Chromium failed");
    step("Chromium closed");
}

/// Fails unless `/sys/class/net` lists only `lo`, so the test never runs
/// Chromium on the machine's real network by mistake.
fn assert_only_loopback() {
    let interfaces: Vec<String> = std::fs::read_dir("/sys/class/net")
        .expect("listing /sys/class/net failed")
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        interfaces,
        ["lo"],
        "{IN_NETNS_VAR} is set but this is not a loopback-only network namespace"
    );
}

/// Calls a page function and decodes its result. Panics with the error and
/// the server log tail if the call fails.
async fn call_page<T: serde::de::DeserializeOwned>(
    browser: &Session,
    function: &str,
    args: &[Value],
    server: &TestServer,
) -> T {
    let value = browser
        .call(function, args)
        .await
        .unwrap_or_else(|error| panic!("{error}\n{}", server.log_tail(40)));
    serde_json::from_value(value.clone()).unwrap_or_else(|error| {
        panic!("decoding the result of {function} failed: {error}: {value}")
    })
}

async fn switch(browser: &Session, window: &str) {
    browser
        .switch_to_window(window)
        .await
        .unwrap_or_else(|error| panic!("switching to window {window} failed: {error}"));
}

/// Polls the current page until its peer connection is `connected`.
async fn wait_connected(browser: &Session, server: &TestServer) {
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    loop {
        let stats: PageStats = call_page(browser, "stats", &[], server).await;
        if stats.connection_state == "connected" {
            return;
        }
        assert!(
            stats.connection_state != "failed" && Instant::now() < deadline,
            "the publisher is {} after {CONNECT_TIMEOUT:?}\npage log:\n{}\n{}",
            stats.connection_state,
            stats.log.join("\n"),
            server.log_tail(40)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Returns the codec names of the first video section's `a=rtpmap` lines,
/// e.g. `["VP8", "rtx", "VP9"]`.
fn video_codecs(sdp: &str) -> Vec<String> {
    let mut in_video = false;
    let mut payload_types: Vec<&str> = Vec::new();
    let mut codecs = Vec::new();
    for line in sdp.lines() {
        if let Some(media) = line.strip_prefix("m=") {
            if in_video {
                break;
            }
            let words: Vec<&str> = media.split(' ').collect();
            in_video = words.first() == Some(&"video");
            // m=video <port> <proto> <payload types...>
            payload_types = words.iter().skip(3).copied().collect();
            continue;
        }
        if !in_video {
            continue;
        }
        let Some(rtpmap) = line.strip_prefix("a=rtpmap:") else {
            continue;
        };
        let Some((payload_type, encoding)) = rtpmap.split_once(' ') else {
            continue;
        };
        if payload_types.contains(&payload_type) {
            let name = encoding.split('/').next().unwrap_or_default();
            codecs.push(name.to_owned());
        }
    }
    codecs
}

/// Formats stats without the page log, which the failure messages print.
fn without_log(stats: &PageStats) -> String {
    format!(
        "state {}, outbound video {:?}, outbound audio {:?}, inbound video {:?}, inbound audio {:?}",
        stats.connection_state,
        stats.outbound_video,
        stats.outbound_audio,
        stats.inbound_video,
        stats.inbound_audio
    )
}
