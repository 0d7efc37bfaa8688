//! Crash safety: a child process appends events and prints each seq after its
//! commit, the test kills it with SIGKILL mid-write, reopens the store and
//! checks that every printed seq was kept. Runs on both backends.
//!
//! The child is this test binary, started with the ignored test
//! `crash_writer_child` and the database URL in `VPR_STORE_CRASH_URL`.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{new_event, new_session, TestDb};
use vpr_store::{NewEvent, Store};

on_both_backends!(killed_writer_keeps_committed_events);

/// Environment variable with the store URL of the child writer.
const CRASH_URL_VAR: &str = "VPR_STORE_CRASH_URL";

/// Prefix of the child's line for each committed event.
const COMMITTED: &str = "committed seq ";

/// Committed events the parent waits for before it kills the child.
const KILL_AFTER_LINES: usize = 200;

/// Concurrent writer tasks in the child, so that the kill lands while
/// several transactions are open.
const CHILD_WRITERS: i64 = 4;

/// Child mode: appends events from several tasks until killed, printing each
/// seq after its commit. Stops by itself after 60 s in case the parent is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "child process of killed_writer_keeps_committed_events"]
async fn crash_writer_child() {
    let url = std::env::var(CRASH_URL_VAR).unwrap_or_else(|_| {
        panic!("{CRASH_URL_VAR} is not set: this test is started by the crash tests")
    });
    let store = Store::open(&url).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);

    let mut writers = Vec::new();
    for writer in 0..CHILD_WRITERS {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            let mut i = 0_i64;
            while Instant::now() < deadline {
                let seq = store
                    .append_event(NewEvent {
                        detail: format!(r#"{{"writer":{writer},"i":{i}}}"#),
                        ..new_event("room-crash", "crash_test", 2_000 + i)
                    })
                    .await
                    .unwrap();
                // println! locks stdout per call, and stdout flushes on newline.
                println!("{COMMITTED}{seq}");
                i += 1;
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
}

async fn killed_writer_keeps_committed_events(db: &TestDb) {
    let store = Store::open(&db.url()).await.unwrap();
    store
        .create_session(new_session("room-crash", "inc-1", "req-1", 1_000))
        .await
        .unwrap();
    store.close().await;

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "crash_writer_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_URL_VAR, db.url())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();

    // Read on a blocking thread: kill after KILL_AFTER_LINES commits, then
    // keep reading what the child printed before it died, up to EOF.
    let child_pid = child.id();
    let reader = tokio::task::spawn_blocking(move || {
        let mut printed = Vec::new();
        let mut killed = false;
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            if let Some(seq) = line.strip_prefix(COMMITTED) {
                printed.push(seq.parse::<i64>().unwrap());
            }
            if !killed && printed.len() >= KILL_AFTER_LINES {
                // Child::kill sends SIGKILL on Unix.
                child.kill().unwrap();
                killed = true;
            }
        }
        let status = child.wait().unwrap();
        (printed, killed, status)
    });
    let (printed, killed, status) = tokio::time::timeout(Duration::from_secs(120), reader)
        .await
        .unwrap_or_else(|_| panic!("crash writer child {child_pid} did not finish"))
        .unwrap();

    assert!(
        killed,
        "child exited before {KILL_AFTER_LINES} commits: {status:?}"
    );
    assert!(!status.success(), "child was not killed: {status:?}");
    assert!(printed.len() >= KILL_AFTER_LINES);

    let reopened = Store::open(&db.url()).await.unwrap();
    let stored: BTreeSet<i64> = reopened
        .events_after(Some("room-crash"), 0, 1_000_000)
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    let missing: Vec<&i64> = printed.iter().filter(|seq| !stored.contains(seq)).collect();
    assert!(
        missing.is_empty(),
        "committed seqs lost after SIGKILL: {missing:?}"
    );
    assert!(stored.len() >= printed.len());

    // The store still takes writes after the crash, and later seqs are higher.
    let max_printed = *printed.iter().max().unwrap();
    let next = reopened
        .append_event(new_event("room-crash", "after_crash", 9_000))
        .await
        .unwrap();
    assert!(next > max_printed);
    reopened.close().await;
}
