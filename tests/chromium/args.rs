//! Command-line flags for headless Chromium in the tests.

use std::path::Path;

/// Chromium flags for a headless, loopback-only run with fake media devices
/// and a fresh profile in `profile`.
pub fn headless_args(profile: &Path) -> Vec<String> {
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
        // Without it Chromium gathers no candidate when only `lo` exists.
        "--allow-loopback-in-peer-connection",
        // Without it host candidates are `*.local` mDNS names.
        "--disable-features=WebRtcHideLocalIpsWithMdns",
        // Pages that share one browser keep sending and decoding at full
        // rate when they are not in front.
        "--disable-background-timer-throttling",
        "--disable-renderer-backgrounding",
        "--disable-backgrounding-occluded-windows",
    ]
    .map(str::to_owned)
    .into();
    args.push(format!("--user-data-dir={}", profile.display()));
    args
}
