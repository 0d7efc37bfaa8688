//! The WHIP/WHEP test page (`page.html`) in headless Chromium.

use std::time::Duration;

use super::args::headless_args;
use super::page_server::PageServer;
use super::webdriver::{ChromeDriver, Session};

/// The page's functions publish, subscribe and read `getStats()`.
pub const PAGE: &str = include_str!("page.html");
/// Maximum time of one asynchronous page script.
pub const SCRIPT_TIMEOUT: Duration = Duration::from_secs(15);

/// Serves the test page, starts ChromeDriver and Chromium in a temp dir and
/// opens the page. Everything returned must outlive the session.
pub async fn open_test_page() -> (PageServer, tempfile::TempDir, ChromeDriver, Session) {
    let page = PageServer::start(PAGE).await.expect("starting the page server failed");
    let temp = tempfile::tempdir().expect("creating a temp dir failed");
    let driver = ChromeDriver::start(&temp.path().join("chromedriver.log"))
        .await
        .unwrap_or_else(|error| panic!("starting ChromeDriver failed: {error}"));
    let browser = driver
        .new_session(&headless_args(&temp.path().join("profile")), SCRIPT_TIMEOUT)
        .await
        .unwrap_or_else(|error| panic!("starting Chromium failed: {error}\n{}", driver.log_tail(40)));
    browser.navigate(&page.url()).await.expect("loading the test page failed");
    (page, temp, driver, browser)
}

/// Waits until the page's simulcast publication is connected and each
/// encoding in `rids` has sent bytes. Returns the last `simulcastStats()`
/// value, or it as the error when `timeout` passes first.
// Not every test binary that includes this module publishes simulcast.
#[allow(dead_code)]
pub async fn wait_until_sending(browser: &Session, rids: &[&str], timeout: Duration) -> Result<serde_json::Value, serde_json::Value> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let stats = browser.call("simulcastStats", &[]).await.expect("simulcastStats failed");
        let sending = rids.iter().all(|rid| stats["encodings"][rid]["bytesSent"].as_u64().unwrap_or(0) > 0);
        if stats["connectionState"] == "connected" && sending {
            return Ok(stats);
        }
        if std::time::Instant::now() >= deadline {
            return Err(stats);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A room where headless Chromium publishes its camera as three simulcast
/// encodings over WHIP, with an officer admitted to receive it. The page
/// server, temp dir and driver must stay bound (not matched with `..`,
/// which drops them) while the browser is in use.
// Not every test binary that includes this module publishes simulcast.
#[allow(dead_code)]
pub struct ChromiumSimulcastRoom {
    pub server: crate::common::TestServer,
    pub room: vpr_control::pb::Room,
    pub officer: vpr_control::pb::AdmitParticipantResponse,
    pub page: PageServer,
    pub temp: tempfile::TempDir,
    pub driver: ChromeDriver,
    pub browser: Session,
}

/// Starts a server that logs its bandwidth estimates, opens a room for
/// `incident`, admits a resident and an officer, and has Chromium publish
/// the resident's camera as three encodings until each one sends.
#[allow(dead_code)]
pub async fn chromium_simulcast_room(incident: &str, connect_timeout: Duration) -> ChromiumSimulcastRoom {
    use crate::common::{admit, create_room, ServerOptions, TestServer};
    use vpr_control::pb::Role;

    let server = TestServer::start_with(ServerOptions::with_estimate_log()).await;
    let mut grpc = server.grpc_client().await;
    let room = create_room(&mut grpc, incident).await;
    let resident = admit(&mut grpc, &room.room_id, &format!("resident-{incident}"), Role::Resident).await;
    let officer = admit(&mut grpc, &room.room_id, &format!("officer-{incident}"), Role::Officer).await;
    let (page, temp, driver, browser) = open_test_page().await;
    let args = [resident.whip_url.as_str().into(), resident.join_token.as_str().into(), serde_json::Value::Null];
    let negotiation = browser
        .call("publishSimulcast", &args)
        .await
        .unwrap_or_else(|error| panic!("{error}\n{}", server.log_tail(40)));
    assert_eq!(negotiation["status"], 201, "WHIP status: {negotiation}");
    if let Err(stats) = wait_until_sending(&browser, &["q", "h", "f"], connect_timeout).await {
        panic!("Chromium did not publish three encodings: {stats}");
    }
    ChromiumSimulcastRoom { server, room, officer, page, temp, driver, browser }
}
