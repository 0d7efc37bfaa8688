//! Re-runs one test of the current test binary inside a fresh network
//! namespace with only `lo` up, so Chromium and the server never touch the
//! machine's real network. The outer run creates the namespace, forwards
//! the inner run's output and asserts that it passed.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use super::netns::NetNamespace;

/// Set to `1` in the re-run inside the namespace.
pub const IN_NETNS_VAR: &str = "VPR_IN_NETNS";

/// Numbers the namespaces of one process, so tests running in parallel get
/// distinct names.
static NAMESPACE_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Returns whether this process is the re-run inside a namespace.
pub fn in_namespace() -> bool {
    std::env::var_os(IN_NETNS_VAR).is_some()
}

/// Creates a namespace, runs test `test_name` of this binary inside it,
/// prints the inner run's output and asserts that it passed within
/// `timeout`. The namespace guard deletes the namespace and kills whatever
/// the inner run left, also when this panics.
pub fn rerun_in_namespace(test_name: &str, timeout: Duration) {
    let index = NAMESPACE_COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = format!("vpr-chrome-{}-{index}", std::process::id());
    let namespace = NetNamespace::create(&name)
        .unwrap_or_else(|error| panic!("creating network namespace {name} failed: {error}"));
    let exe = std::env::current_exe().expect("the test binary path is unknown");

    let started = Instant::now();
    let mut child = namespace
        .command(&exe)
        .args(["--exact", test_name, "--nocapture", "--test-threads=1"])
        .env(IN_NETNS_VAR, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("running {} in {name} failed: {error}", exe.display()));
    let (done_sender, done) = mpsc::channel();
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    forward_lines(stdout, format!("[{test_name}] "), done_sender.clone());
    forward_lines(stderr, format!("[{test_name} stderr] "), done_sender);

    let status = wait_or_kill(&mut child, timeout);
    namespace
        .kill_remaining()
        .unwrap_or_else(|error| panic!("killing processes left in {name} failed: {error}"));
    // Both pipes close once every process holding them is gone.
    for _ in 0..2 {
        let _ = done.recv_timeout(Duration::from_secs(5));
    }

    let status = status.unwrap_or_else(|| {
        panic!("the run of {test_name} inside {name} did not finish within {timeout:?} and was killed")
    });
    println!("run of {test_name} inside {name} took {:?}", started.elapsed());
    assert!(status.success(), "the run of {test_name} inside {name} failed: {status}");
}

/// Runs test `test_name`: outside a namespace it re-runs itself inside a
/// new one, and inside it runs `body` on a two-thread tokio runtime.
pub fn run_in_namespace<F: std::future::Future<Output = ()>>(test_name: &str, timeout: Duration, body: impl FnOnce() -> F) {
    if !in_namespace() {
        rerun_in_namespace(test_name, timeout);
        return;
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("building the tokio runtime failed")
        .block_on(body());
}

/// Fails unless `/sys/class/net` lists only `lo`, so a test never runs
/// Chromium on the machine's real network by mistake.
pub fn assert_only_loopback() {
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

/// Prints every line of `pipe` with `prefix` from a thread, so the test
/// harness captures it like the test's own output. Signals `done` at EOF.
fn forward_lines(pipe: impl Read + Send + 'static, prefix: String, done: mpsc::Sender<()>) {
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

/// Waits for `child` up to `timeout`, then kills it and returns `None`.
fn wait_or_kill(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
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
