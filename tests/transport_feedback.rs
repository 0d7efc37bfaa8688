//! The transport-wide congestion control feedback the server sends a
//! publisher names every packet that carried a transport-wide sequence
//! number, whether or not the packet belongs to a bound stream. A browser
//! probes with padding on SSRC 0 or on SSRCs no SDP line declares. If the
//! feedback left those out, its estimator would read the probes as lost, so
//! it would never start its higher simulcast layers.

mod common;

use std::time::{Duration, Instant};

use common::{admit, create_room, publish_simulcast, TestServer};
use vpr_bench::client::simulcast::SimulcastOptions;
use vpr_bench::client::unbound_probe::{ProbeCounts, ProbeReport};
use vpr_control::pb::Role;

/// Probes of each kind to send before reading the tally.
const PROBES: u64 = 150;
/// Maximum wait for the probes and their feedback.
const PROBE_DEADLINE: Duration = Duration::from_secs(15);

/// Probes of one kind named by some feedback packet, received or lost.
fn reported(counts: &ProbeCounts) -> u64 {
    counts.reported_received + counts.reported_lost
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feedback_counts_probes_on_unbound_ssrcs() {
    let server = TestServer::start().await;
    let mut grpc = server.grpc_client().await;
    let room = create_room(&mut grpc, "INC-unbound-probes").await;
    let resident = admit(&mut grpc, &room.room_id, "resident-probes", Role::Resident).await;

    let options = SimulcastOptions { unbound_probes: true, ..SimulcastOptions::default() };
    let publisher = publish_simulcast(&server, &resident, options).await;

    let probes = || publisher.stats().probes.expect("the publisher keeps no probe tally");
    let enough = |report: &ProbeReport| {
        [report.ssrc_zero, report.undeclared]
            .iter()
            .all(|counts| counts.sent >= PROBES && reported(counts) * 10 >= counts.sent * 9)
    };
    let started = Instant::now();
    while !enough(&probes()) && started.elapsed() < PROBE_DEADLINE {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let report = probes();
    println!("transport-wide feedback after {:?}: {report:?}", started.elapsed());
    let stats = publisher.stop().await.expect("WHIP DELETE failed");
    assert_eq!(stats.media_error, None);

    // Media first: a publisher whose media the feedback did not name would
    // make the probe checks meaningless.
    assert!(
        report.media.reported_received * 10 >= report.media.sent * 9,
        "feedback named too few media packets as received: {:?}",
        report.media
    );
    for (name, counts) in [("SSRC 0", report.ssrc_zero), ("the undeclared SSRC", report.undeclared)] {
        assert!(counts.sent >= PROBES, "only {} probes sent on {name}", counts.sent);
        assert!(
            reported(&counts) * 10 >= counts.sent * 9,
            "feedback named only {} of {} probes on {name}",
            reported(&counts),
            counts.sent
        );
        // Loopback loses nothing: every named probe arrived.
        assert_eq!(
            counts.reported_lost, 0,
            "feedback reported probes on {name} as lost: {counts:?}"
        );
    }
}
