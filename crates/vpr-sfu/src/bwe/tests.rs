//! Estimator tests on the simulated link, with explicit time.

use std::time::{Duration, Instant};

use super::sim::{Link, Simulation};
use super::{EstimatorConfig, ProbeOutcome, SendSideEstimator};

const ONE_WAY_DELAY: Duration = Duration::from_millis(20);

fn secs(seconds: f64) -> Duration {
    Duration::from_secs_f64(seconds)
}

fn simulation(config: EstimatorConfig, capacity_bps: f64) -> Simulation {
    let epoch = Instant::now();
    Simulation::new(epoch, Link::new(capacity_bps, ONE_WAY_DELAY), SendSideEstimator::new(config, epoch))
}

#[test]
fn clean_link_ramps_up_within_three_seconds() {
    let mut sim = simulation(EstimatorConfig::default(), 5_000_000.0);
    sim.run_until(secs(10.0));
    eprintln!("clean 5 Mbit/s: {}", sim.summary());
    eprintln!("clusters: {:?}", sim.clusters);

    assert_eq!(sim.clusters[0].1.target_bps, 600_000.0);
    assert_eq!(sim.clusters[1].1.target_bps, 1_200_000.0);
    let saturated = sim.estimator.snapshot(sim.now).last_probe.map(|probe| probe.outcome);
    assert!(matches!(saturated, Some(ProbeOutcome::Saturated { .. })), "last probe {saturated:?}");

    let crossed = sim.first_above(2_500_000.0, Duration::ZERO).expect("estimate never passed 2.5 Mbit/s");
    eprintln!("passed 2.5 Mbit/s at {crossed:?}");
    assert!(crossed <= secs(3.0), "passed 2.5 Mbit/s only at {crossed:?}");

    let (low, high) = sim.range(secs(5.0), secs(10.0));
    assert!(high <= 6_000_000.0, "estimate reached {high} on a 5 Mbit/s link");
    assert!(low >= 3_000_000.0, "estimate fell to {low} on a clean 5 Mbit/s link");
}

#[test]
fn capped_link_drops_then_recovers() {
    let mut sim = simulation(EstimatorConfig::default(), 5_000_000.0);
    sim.run_until(secs(5.0));
    let before_cap = sim.estimator.estimate_bps();

    sim.link.capacity_bps = 500_000.0;
    sim.run_until(secs(15.0));
    sim.link.capacity_bps = 5_000_000.0;
    sim.run_until(secs(25.0));
    eprintln!("5 Mbit/s, 500 kbit/s from 5 s, 5 Mbit/s from 15 s: {}", sim.summary());
    let starts: Vec<String> = sim.clusters.iter().map(|(at, cluster)| format!("{at:?}@{:.0}k", cluster.target_bps / 1_000.0)).collect();
    eprintln!("clusters: {}", starts.join(" "));

    assert!(before_cap > 2_500_000.0, "estimate before the cap was {before_cap}");

    let fell = sim.first_below(600_000.0, secs(5.0)).expect("estimate never fell below 600 kbit/s");
    eprintln!("fell below 600 kbit/s at {fell:?}");
    assert!(fell <= secs(7.0), "fell below 600 kbit/s only at {fell:?}");

    let (low, high) = sim.range(secs(7.0), secs(15.0));
    eprintln!("range under the cap from 7 s: {low:.0} to {high:.0}");
    assert!(high < 600_000.0, "estimate rose to {high} under a 500 kbit/s cap");
    assert!(low > 250_000.0, "estimate fell to {low} under a 500 kbit/s cap");

    let recovered = sim.first_above(2_000_000.0, secs(15.0)).expect("estimate never recovered above 2 Mbit/s");
    eprintln!("recovered above 2 Mbit/s at {recovered:?}");
    assert!(recovered <= secs(21.0), "recovered above 2 Mbit/s only at {recovered:?}");
}

#[test]
fn remb_caps_estimate() {
    let mut sim = simulation(EstimatorConfig::default(), 5_000_000.0);
    sim.run_until(secs(4.0));
    assert!(sim.estimator.estimate_bps() > 1_000_000.0);

    for second in 4..10 {
        let now = sim.epoch + secs(second as f64);
        sim.run_until(secs(second as f64));
        sim.estimator.on_remb(now, 800_000.0);
        assert!(sim.estimator.estimate_bps() <= 800_000.0, "estimate {} above REMB", sim.estimator.estimate_bps());
    }
    sim.run_until(secs(10.0));
    let (_, high) = sim.range(secs(4.0) + Duration::from_millis(1), secs(10.0));
    assert!(high <= 800_000.0, "estimate rose to {high} under an 800 kbit/s REMB");
}

#[test]
fn remb_sets_estimate_without_twcc() {
    let start = Instant::now();
    let mut estimator = SendSideEstimator::new(EstimatorConfig::default(), start);
    estimator.on_remb(start + secs(1.0), 1_500_000.0);
    assert_eq!(estimator.estimate_bps(), 1_500_000.0);

    estimator.on_receiver_report(start + secs(2.0), 0.0, Some(Duration::from_millis(40)));
    estimator.on_remb(start + secs(2.0), 700_000.0);
    assert_eq!(estimator.estimate_bps(), 700_000.0);
}

#[test]
fn receiver_report_loss_lowers_estimate() {
    let start = Instant::now();
    let mut estimator = SendSideEstimator::new(EstimatorConfig::default(), start);
    estimator.on_remb(start, 1_000_000.0);
    let before = estimator.estimate_bps();
    for step in 1..=10 {
        estimator.on_receiver_report(start + secs(step as f64 * 0.5), 0.2, Some(Duration::from_millis(40)));
    }
    let after = estimator.estimate_bps();
    // Ten cuts of 10 % each.
    let expected = 1_000_000.0 * 0.9_f64.powi(10);
    assert_eq!(before, 1_000_000.0);
    assert!((after - expected).abs() < 1.0, "estimate went from {before} to {after}");

    // A new REMB value does not undo the cuts while loss persists.
    estimator.on_remb(start + secs(5.5), 1_000_000.0);
    assert!((estimator.estimate_bps() - expected).abs() < 1.0);
}

#[test]
fn twenty_percent_loss_lowers_estimate() {
    let config = EstimatorConfig { initial_bps: 1_000_000.0, ..EstimatorConfig::default() };
    let mut sim = simulation(config, 5_000_000.0);
    sim.link.loss_every = Some(5);
    sim.run_until(secs(5.0));
    eprintln!("20 % loss: {}", sim.summary());

    let (_, high) = sim.range(Duration::ZERO, secs(5.0));
    let last = sim.estimator.estimate_bps();
    assert!(high <= 1_000_000.0, "estimate rose to {high} under 20 % loss");
    assert!(last < 500_000.0, "estimate still {last} after 5 s of 20 % loss");
    let probe = sim.estimator.snapshot(sim.now).last_probe.expect("a probe ran");
    assert_eq!(probe.outcome, ProbeOutcome::Failed);
}

#[test]
fn estimate_stays_within_limits() {
    let config = EstimatorConfig { initial_bps: 300_000.0, min_bps: 150_000.0, max_bps: 2_000_000.0 };

    let mut fast = simulation(config, 50_000_000.0);
    fast.run_until(secs(8.0));
    let (low, high) = fast.range(Duration::ZERO, secs(8.0));
    assert!(high <= 2_000_000.0, "estimate rose to {high} above the maximum");
    assert!(high >= 1_900_000.0, "estimate reached only {high} on a 50 Mbit/s link");
    assert!(low >= 150_000.0, "estimate fell to {low}");

    let mut slow = simulation(config, 60_000.0);
    slow.run_until(secs(8.0));
    let (low, high) = slow.range(Duration::ZERO, secs(8.0));
    assert!(low >= 150_000.0, "estimate fell to {low} below the minimum");
    assert!(high <= 2_000_000.0, "estimate rose to {high}");
    assert_eq!(slow.estimator.estimate_bps(), 150_000.0);
}

#[test]
fn report_only_starts_at_delivered_rate() {
    let start = Instant::now();
    let rtt = Some(Duration::from_millis(40));
    let mut estimator = SendSideEstimator::new(EstimatorConfig::default(), start);
    estimator.start_report_only(start + secs(1.0), 250_000.0);
    assert_eq!(estimator.estimate_bps(), 250_000.0);

    // Without delay-based input to cap it, loss-free reports grow it past
    // the 300 kbit/s the delay-based half started at.
    for step in 2..=21 {
        estimator.on_receiver_report(start + secs(f64::from(step)), 0.0, rtt);
    }
    let grown = estimator.estimate_bps();
    assert!(grown > 500_000.0, "after 20 loss-free reports: {grown}");

    estimator.on_receiver_report(start + secs(22.0), 0.5, rtt);
    assert!((estimator.estimate_bps() - grown * 0.75).abs() < 1.0, "half the packets lost");
}
