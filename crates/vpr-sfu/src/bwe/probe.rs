//! Probing: short clusters of padding above the estimate, measured through
//! transport-wide feedback, so the estimate reaches the path capacity in a
//! few round trips instead of growing 8 % per second.
//!
//! Scheduling follows libwebrtc's `ProbeController` in outline. At start two
//! clusters run back to back at 2x and 4x the initial estimate. While a
//! cluster is carried at 70 % or more of its target, the next one runs at
//! twice the measured rate. After a cluster that fails or saturates the
//! path, a periodic cluster at 1.5x the estimate runs after a backoff that
//! doubles from 1 s up to 3 s.
//!
//! The measurement follows libwebrtc's `ProbeBitrateEstimator`. Every packet
//! that departed between the cluster's first and last padding packet counts,
//! media included. When the path received less than 90 % of the send rate,
//! it was saturated, and 95 % of the receive rate is its capacity.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use rtc::interceptor::PacketReport;

const INITIAL_FACTORS: [f64; 2] = [2.0, 4.0];
const FOLLOW_UP_FACTOR: f64 = 2.0;
// NOTE: on a path already used at capacity, a periodic cluster every 3 s
// adds about 60 ms of queueing in the simulation. The worker should not poll
// for probes while a higher estimate would not change the allocation.
const PERIODIC_FACTOR: f64 = 1.5;
/// A cluster carried at this fraction of its target or more is followed by
/// a larger one.
const CONTINUE_FRACTION: f64 = 0.7;
const CLUSTER_DURATION: Duration = Duration::from_millis(150);
/// How long after its last padding packet a cluster's feedback may take.
const RESULT_TIMEOUT: Duration = Duration::from_secs(1);
const BACKOFF_BASE: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(3);
const MIN_PACKETS: usize = 5;
const MAX_LOSS: f64 = 0.1;
const UNSATURATED_RATIO: f64 = 0.9;
const SATURATED_UTILIZATION: f64 = 0.95;
/// Padding is at least this fraction of the target, so a cluster always has
/// padding packets to identify it even when media alone reaches the target.
pub const MIN_PADDING_FRACTION: f64 = 0.2;
/// Delay growth from a probe's own queue is not congestion, so overuse from
/// packets sent up to this long after a cluster is ignored too.
const SETTLE_TIME: Duration = Duration::from_millis(200);
const REMEMBERED_WINDOWS: usize = 4;

/// A request to send padding so the path's capacity can be measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProbeCluster {
    /// Identifier to pass to `on_probe_packet_sent`.
    pub id: u32,
    /// Total rate the path should carry during the cluster, media included,
    /// in bit/s.
    pub target_bps: f64,
    /// Padding rate to add to the media, in bit/s.
    pub padding_bps: f64,
    /// How long to send padding.
    pub duration: Duration,
    /// Minimum number of padding packets that must arrive for a measurement.
    pub min_packets: usize,
}

/// Verdict of a finished cluster.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ProbeOutcome {
    /// The path carried the cluster: its capacity is at least `bps`.
    Delivered {
        /// Measured rate, the lower of send and receive rate, in bit/s.
        bps: f64,
    },
    /// The path carried less than was sent, and `bps` is its capacity.
    Saturated {
        /// 95 % of the receive rate, in bit/s.
        bps: f64,
    },
    /// Too few packets were reported, too many were lost, or feedback did
    /// not arrive in time.
    Failed,
}

impl ProbeOutcome {
    /// Measured capacity, unless the cluster failed.
    pub fn bps(&self) -> Option<f64> {
        match *self {
            ProbeOutcome::Delivered { bps } | ProbeOutcome::Saturated { bps } => Some(bps),
            ProbeOutcome::Failed => None,
        }
    }
}

/// One finished cluster.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProbeResult {
    /// The cluster's identifier.
    pub cluster_id: u32,
    /// The cluster's target, in bit/s.
    pub target_bps: f64,
    /// Measured send rate, in bit/s.
    pub send_bps: Option<f64>,
    /// Measured receive rate, in bit/s.
    pub receive_bps: Option<f64>,
    /// Fraction of the cluster's packets reported lost.
    pub loss: f64,
    /// The verdict.
    pub outcome: ProbeOutcome,
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    departure: Instant,
    arrival: Option<Duration>,
    size: usize,
    is_padding: bool,
}

#[derive(Debug, Clone)]
struct ActiveCluster {
    cluster: ProbeCluster,
    started: Instant,
    sending_until: Instant,
    padding_packets: HashSet<(u32, u16)>,
    reported: usize,
    samples: Vec<Sample>,
}

/// Probe scheduling and measurement for one connection.
#[derive(Debug, Clone)]
pub(crate) struct Prober {
    next_id: u32,
    queued: VecDeque<f64>,
    active: Option<ActiveCluster>,
    next_periodic_at: Instant,
    backoff: Duration,
    windows: VecDeque<(Instant, Instant)>,
    last_result: Option<ProbeResult>,
}

impl Prober {
    pub(crate) fn new(now: Instant, initial_bps: f64) -> Self {
        Prober {
            next_id: 1,
            queued: INITIAL_FACTORS.iter().map(|factor| factor * initial_bps).collect(),
            active: None,
            next_periodic_at: now + BACKOFF_BASE,
            backoff: BACKOFF_BASE,
            windows: VecDeque::new(),
            last_result: None,
        }
    }

    pub(crate) fn last_result(&self) -> Option<ProbeResult> {
        self.last_result
    }

    /// Returns whether a cluster is being sent or its feedback is awaited.
    pub(crate) fn is_active(&self) -> bool {
        self.active.is_some()
    }

    /// Returns whether padding should be sent at `now`.
    pub(crate) fn is_sending(&self, now: Instant) -> bool {
        self.active.as_ref().is_some_and(|active| now < active.sending_until)
    }

    /// Returns whether a packet sent at `departure` left during a cluster
    /// or while its queue settled.
    pub(crate) fn in_probe_window(&self, departure: Instant) -> bool {
        let active = self.active.as_ref().map(|active| (active.started, active.sending_until));
        active
            .into_iter()
            .chain(self.windows.iter().copied())
            .any(|(start, end)| departure >= start && departure <= end + SETTLE_TIME)
    }

    /// Drops the clusters queued to follow a successful one: the path is
    /// congested now, so their targets, set from an earlier measurement,
    /// would only overflow its queue.
    pub(crate) fn on_overuse(&mut self) {
        self.queued.clear();
    }

    /// Treats packets sent between `start` and `end`, and while their queue
    /// settles, like a cluster's.
    pub(crate) fn add_window(&mut self, start: Instant, end: Instant) {
        self.windows.push_back((start, end));
        if self.windows.len() > REMEMBERED_WINDOWS {
            self.windows.pop_front();
        }
    }

    /// Starts the next cluster when one is due. `periodic_allowed` is false
    /// while the path was overused recently.
    pub(crate) fn poll(
        &mut self,
        now: Instant,
        estimate_bps: f64,
        media_rate_bps: f64,
        max_bps: f64,
        periodic_allowed: bool,
    ) -> (Option<ProbeCluster>, Option<ProbeResult>) {
        if let Some(active) = &self.active {
            if now < active.sending_until + RESULT_TIMEOUT {
                return (None, None);
            }
        }
        let timed_out = self.active.is_some().then(|| self.finish(now, estimate_bps, max_bps));

        let target = if let Some(target) = self.queued.pop_front() {
            target
        } else if periodic_allowed && now >= self.next_periodic_at {
            PERIODIC_FACTOR * estimate_bps
        } else {
            return (None, timed_out);
        };
        let target = target.min(max_bps);
        if target <= estimate_bps * 1.1 {
            self.queued.clear();
            self.next_periodic_at = now + self.backoff;
            return (None, timed_out);
        }

        let cluster = ProbeCluster {
            id: self.next_id,
            target_bps: target,
            padding_bps: (target - media_rate_bps).max(MIN_PADDING_FRACTION * target),
            duration: CLUSTER_DURATION,
            min_packets: MIN_PACKETS,
        };
        self.next_id = self.next_id.wrapping_add(1);
        self.active = Some(ActiveCluster {
            cluster,
            started: now,
            sending_until: now + CLUSTER_DURATION,
            padding_packets: HashSet::new(),
            reported: 0,
            samples: Vec::new(),
        });
        (Some(cluster), timed_out)
    }

    /// Records one padding packet of the running cluster.
    pub(crate) fn on_probe_packet_sent(&mut self, cluster_id: u32, ssrc: u32, sequence_number: u16) {
        if let Some(active) = self.active.as_mut().filter(|active| active.cluster.id == cluster_id) {
            active.padding_packets.insert((ssrc, sequence_number));
        }
    }

    /// Collects reports for the running cluster and returns its result once
    /// every padding packet has been reported.
    pub(crate) fn on_reports(
        &mut self,
        now: Instant,
        reports: &[PacketReport],
        estimate_bps: f64,
        max_bps: f64,
    ) -> Option<ProbeResult> {
        let active = self.active.as_mut()?;
        for report in reports.iter().filter(|report| report.departure >= active.started) {
            let is_padding = active.padding_packets.contains(&(report.ssrc, report.rtp_sequence_number));
            if is_padding {
                active.reported += 1;
            }
            active.samples.push(Sample {
                departure: report.departure,
                arrival: report.arrival.filter(|_| report.arrived),
                size: report.size,
                is_padding,
            });
        }
        let complete = now >= active.sending_until
            && !active.padding_packets.is_empty()
            && active.reported >= active.padding_packets.len();
        complete.then(|| self.finish(now, estimate_bps, max_bps))
    }

    fn finish(&mut self, now: Instant, estimate_bps: f64, max_bps: f64) -> ProbeResult {
        let active = self.active.take().expect("finish needs a running cluster");
        self.add_window(active.started, active.sending_until);

        let result = measure(&active);
        // A saturated cluster found the capacity, so probing again soon
        // would only repeat the queue it built.
        let raised = matches!(result.outcome, ProbeOutcome::Delivered { bps } if bps > 1.1 * estimate_bps);
        let carried = result
            .outcome
            .bps()
            .is_some_and(|bps| bps >= CONTINUE_FRACTION * active.cluster.target_bps);
        let continue_up = matches!(result.outcome, ProbeOutcome::Delivered { .. })
            && carried
            && active.cluster.target_bps < max_bps;

        if continue_up {
            let measured = result.outcome.bps().unwrap_or(estimate_bps);
            if self.queued.is_empty() {
                self.queued.push_back(FOLLOW_UP_FACTOR * measured);
            }
            self.backoff = BACKOFF_BASE;
        } else {
            self.queued.clear();
            self.backoff = if raised { BACKOFF_BASE } else { (self.backoff * 2).min(BACKOFF_MAX) };
        }
        self.next_periodic_at = now + self.backoff;
        self.last_result = Some(result);
        result
    }
}

/// Measures send and receive rate over the packets that departed between
/// the cluster's first and last padding packet.
fn measure(active: &ActiveCluster) -> ProbeResult {
    let failed = |send_bps, receive_bps, loss| ProbeResult {
        cluster_id: active.cluster.id,
        target_bps: active.cluster.target_bps,
        send_bps,
        receive_bps,
        loss,
        outcome: ProbeOutcome::Failed,
    };

    let padding = active.samples.iter().filter(|sample| sample.is_padding);
    let (Some(first), Some(last)) = (
        padding.clone().map(|sample| sample.departure).min(),
        padding.map(|sample| sample.departure).max(),
    ) else {
        return failed(None, None, 1.0);
    };
    let window: Vec<&Sample> = active
        .samples
        .iter()
        .filter(|sample| sample.departure >= first && sample.departure <= last)
        .collect();
    let arrived: Vec<&Sample> = window.iter().copied().filter(|sample| sample.arrival.is_some()).collect();
    let loss = 1.0 - arrived.len() as f64 / window.len().max(1) as f64;
    let padding_arrived = arrived.iter().filter(|sample| sample.is_padding).count();

    let send_bps = rate_bps(&window, |sample| Some(sample.departure.saturating_duration_since(first)));
    let receive_bps = rate_bps(&arrived, |sample| sample.arrival);
    let (Some(send), Some(receive)) = (send_bps, receive_bps) else {
        return failed(send_bps, receive_bps, loss);
    };
    if padding_arrived < MIN_PACKETS || loss > MAX_LOSS {
        return failed(send_bps, receive_bps, loss);
    }

    let outcome = if receive < UNSATURATED_RATIO * send {
        ProbeOutcome::Saturated { bps: SATURATED_UTILIZATION * receive }
    } else {
        ProbeOutcome::Delivered { bps: send.min(receive) }
    };
    ProbeResult {
        cluster_id: active.cluster.id,
        target_bps: active.cluster.target_bps,
        send_bps,
        receive_bps,
        loss,
        outcome,
    }
}

/// Bytes over the span of `time`, leaving out the packet that closes the
/// span, because its bytes were carried after the span ended.
fn rate_bps(samples: &[&Sample], time: impl Fn(&Sample) -> Option<Duration>) -> Option<f64> {
    let mut timed: Vec<(Duration, usize)> = samples
        .iter()
        .filter_map(|sample| time(sample).map(|at| (at, sample.size)))
        .collect();
    timed.sort_by_key(|entry| entry.0);
    let (first, last) = (timed.first()?, timed.last()?);
    let span = last.0.saturating_sub(first.0);
    if span < Duration::from_millis(5) {
        return None;
    }
    let bytes: usize = timed.iter().map(|entry| entry.1).sum::<usize>() - last.1;
    Some(bytes as f64 * 8.0 / span.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overuse_drops_queued_clusters() {
        let start = Instant::now();
        let mut prober = Prober::new(start, 300_000.0);
        prober.on_overuse();
        let (cluster, _) = prober.poll(start, 300_000.0, 0.0, 10_000_000.0, false);
        assert_eq!(cluster, None);
    }

    #[test]
    fn initial_clusters_start_without_feedback() {
        let start = Instant::now();
        let mut prober = Prober::new(start, 300_000.0);
        let (cluster, _) = prober.poll(start, 300_000.0, 0.0, 10_000_000.0, false);
        assert_eq!(cluster.map(|c| c.target_bps), Some(600_000.0));
    }
}
