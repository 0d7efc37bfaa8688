//! The per-subscriber send-side estimator: delay-based and loss-based
//! control on transport-wide feedback, probe results, and REMB with receiver
//! reports for clients without transport-cc.

use std::time::{Duration, Instant};

use rtc::interceptor::{PacketReport, Usage};

use super::acked::AckedRate;
use super::delay::{AimdRate, RateControlState};
use super::loss::{LossRate, LOW_LOSS};
use super::probe::{ProbeCluster, ProbeResult, Prober};
use super::trendline::DelayDetector;

/// Periodic probes wait this long after the last overuse.
const OVERUSE_QUIET_TIME: Duration = Duration::from_secs(1);
/// Transport-wide feedback counts as flowing for this long after the last
/// batch. While it flows, REMB only caps the estimate and the loss fraction
/// of receiver reports is ignored.
const TWCC_TIMEOUT: Duration = Duration::from_secs(2);
/// A REMB value stops capping the estimate when no new one arrives for this
/// long.
const REMB_TIMEOUT: Duration = Duration::from_secs(5);
/// Round-trip time assumed before the first measurement.
const DEFAULT_RTT: Duration = Duration::from_millis(100);
/// Weight of a new round-trip sample in the smoothed value.
const RTT_SMOOTHING: f64 = 0.125;
/// Length of the burst that starts a layer switch: its keyframe and the
/// frames right behind it.
const SWITCH_BURST: Duration = Duration::from_millis(100);

/// Limits and starting point of an estimate, in bit/s.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EstimatorConfig {
    /// Estimate before any feedback.
    pub initial_bps: f64,
    /// The estimate never goes below this.
    pub min_bps: f64,
    /// The estimate never goes above this, and probes never target more.
    pub max_bps: f64,
}

impl Default for EstimatorConfig {
    fn default() -> Self {
        EstimatorConfig { initial_bps: 300_000.0, min_bps: 100_000.0, max_bps: 20_000_000.0 }
    }
}

/// Internal state of a [`SendSideEstimator`], for a debug log line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EstimatorSnapshot {
    /// The combined estimate, in bit/s.
    pub estimate_bps: f64,
    /// Delay-based half, in bit/s.
    pub delay_based_bps: f64,
    /// Loss-based half, in bit/s.
    pub loss_based_bps: f64,
    /// Current REMB cap, in bit/s.
    pub remb_bps: Option<f64>,
    /// Rate the receiver acknowledged over the last 500 ms, in bit/s.
    pub acked_bps: Option<f64>,
    /// Smoothed round-trip time.
    pub rtt: Option<Duration>,
    /// Loss fraction of the last loss sample.
    pub loss: Option<f64>,
    /// Verdict of the delay detector.
    pub usage: Usage,
    /// Scaled delay trend of the delay detector, in ms.
    pub trend_ms: f64,
    /// Adaptive threshold of the delay detector, in ms.
    pub threshold_ms: f64,
    /// State of the delay-based rate control.
    pub rate_state: RateControlState,
    /// Rate at which the path last overused, in bit/s.
    pub link_capacity_bps: Option<f64>,
    /// Whether transport-wide feedback arrived recently.
    pub twcc_active: bool,
    /// Whether a probe cluster is being sent or measured.
    pub probe_active: bool,
    /// The last finished probe cluster.
    pub last_probe: Option<ProbeResult>,
}

/// Send-side bandwidth estimate for one subscriber connection. All time is
/// passed in.
#[derive(Debug, Clone)]
pub struct SendSideEstimator {
    config: EstimatorConfig,
    detector: DelayDetector,
    delay_based: AimdRate,
    loss_based: LossRate,
    acked: AckedRate,
    prober: Prober,
    rtt: Option<Duration>,
    last_overuse: Option<Instant>,
    last_twcc: Option<Instant>,
    remb: Option<(Instant, f64)>,
    estimate_bps: f64,
}

impl SendSideEstimator {
    /// Creates an estimator at `config.initial_bps`, with the initial probe
    /// clusters queued.
    pub fn new(config: EstimatorConfig, now: Instant) -> Self {
        let min_bps = config.min_bps.max(1.0);
        let max_bps = config.max_bps.max(min_bps);
        let config = EstimatorConfig { initial_bps: config.initial_bps.clamp(min_bps, max_bps), min_bps, max_bps };
        SendSideEstimator {
            config,
            detector: DelayDetector::new(),
            delay_based: AimdRate::new(config.initial_bps, min_bps, max_bps),
            loss_based: LossRate::new(config.initial_bps, min_bps, max_bps),
            acked: AckedRate::default(),
            prober: Prober::new(now, config.initial_bps),
            rtt: None,
            last_overuse: None,
            last_twcc: None,
            remb: None,
            estimate_bps: config.initial_bps,
        }
    }

    /// Returns the current estimate, in bit/s.
    pub fn estimate_bps(&self) -> f64 {
        self.estimate_bps
    }

    /// Returns the loss fraction of the latest feedback, 0 before any.
    pub fn recent_loss(&self) -> f64 {
        self.loss_based.last_loss().unwrap_or(0.0)
    }

    /// Returns whether padding for a probe cluster should be sent at `now`.
    pub fn is_probing(&self, now: Instant) -> bool {
        self.prober.is_sending(now)
    }

    /// Folds in packets that transport-wide feedback resolved, in send
    /// order. `now` is the instant the feedback arrived.
    pub fn on_packet_reports(&mut self, now: Instant, reports: &[PacketReport]) {
        if reports.is_empty() {
            return;
        }
        self.last_twcc = Some(now);

        if let Some(newest) = reports.iter().rev().find(|report| report.arrived) {
            self.update_rtt(now.saturating_duration_since(newest.departure));
        }

        let mut overused = false;
        let mut lost = 0;
        for report in reports {
            if !report.arrived {
                lost += 1;
            }
            self.acked.on_report(report);
            // The queue a probe builds is its own, not congestion.
            let verdict = self.detector.on_report(report);
            if verdict == Some(Usage::Over) && !self.prober.in_probe_window(report.departure) {
                overused = true;
            }
        }

        let usage = match self.detector.usage() {
            _ if overused => Usage::Over,
            // Overuse inside a probe window: hold, which the controller
            // does on `Under`, until the probe's queue has drained.
            Usage::Over => Usage::Under,
            usage => usage,
        };
        if overused {
            self.last_overuse = Some(now);
            self.prober.on_overuse();
        }

        let rtt = self.rtt_or_default();
        let acked = self.acked.rate_bps();
        let delay_based = self.delay_based.update(now, usage, acked, rtt);
        self.loss_based.on_packets(now, lost, reports.len(), rtt, delay_based);

        let max_bps = self.config.max_bps;
        if let Some(result) = self.prober.on_reports(now, reports, self.estimate_bps, max_bps) {
            self.apply_probe_result(now, result);
        }
        self.update_estimate(now);
    }

    /// Returns a probe cluster to send now, if one is due. Call it often
    /// (every few milliseconds while sending) and only while a higher
    /// estimate would change the allocation, because a cluster adds padding
    /// above the estimate for 150 ms. `media_rate_bps` is what the
    /// connection sends without padding.
    pub fn poll_probe(&mut self, now: Instant, media_rate_bps: f64) -> Option<ProbeCluster> {
        let quiet = self
            .last_overuse
            .is_none_or(|last| now.saturating_duration_since(last) >= OVERUSE_QUIET_TIME);
        let periodic_allowed = quiet && self.twcc_active(now);
        let (cluster, timed_out) =
            self.prober
                .poll(now, self.estimate_bps, media_rate_bps, self.config.max_bps, periodic_allowed);
        if let Some(result) = timed_out {
            self.apply_probe_result(now, result);
            self.update_estimate(now);
        }
        cluster
    }

    /// Records that a layer switch starts at `now` with the new layer's
    /// keyframe, a burst that the link's queue absorbs. As for a probe
    /// cluster, overuse from packets sent during the burst or while its
    /// queue drains is not congestion. A layer the link cannot carry still
    /// shows overuse once the queue has drained.
    pub fn on_layer_switch(&mut self, now: Instant) {
        self.prober.add_window(now, now + SWITCH_BURST);
    }

    /// Records one padding packet of cluster `cluster_id`. The RTP header's
    /// `ssrc` and `sequence_number` identify the packet in transport-wide
    /// feedback.
    pub fn on_probe_packet_sent(&mut self, cluster_id: u32, ssrc: u32, sequence_number: u16) {
        self.prober.on_probe_packet_sent(cluster_id, ssrc, sequence_number);
    }

    /// Applies a REMB value. With transport-wide feedback it caps the
    /// estimate for 5 s. Without it, it becomes the estimate unless receiver
    /// reports showed 2 % loss or more.
    pub fn on_remb(&mut self, now: Instant, bitrate_bps: f64) {
        if !bitrate_bps.is_finite() || bitrate_bps < 0.0 {
            return;
        }
        self.remb = Some((now, bitrate_bps));
        if !self.twcc_active(now) {
            self.delay_based.set_estimate(now, bitrate_bps);
            // Without loss the REMB value is the only evidence, so the
            // loss-based half follows it instead of growing 8 % per second.
            let lossless = self.loss_based.last_loss().is_none_or(|loss| loss < LOW_LOSS);
            if lossless && bitrate_bps > self.loss_based.estimate_bps() {
                self.loss_based.set_estimate(now, bitrate_bps);
            }
        }
        self.update_estimate(now);
    }

    /// Applies an RTCP receiver report. Its loss fraction drives the
    /// loss-based estimate only while no transport-wide feedback arrives,
    /// because that feedback already counts every lost packet.
    pub fn on_receiver_report(&mut self, now: Instant, fraction_lost: f32, rtt: Option<Duration>) {
        if let Some(rtt) = rtt {
            self.update_rtt(rtt);
        }
        if self.twcc_active(now) {
            return;
        }
        let rtt = self.rtt_or_default();
        let ceiling = self.delay_based.estimate_bps();
        self.loss_based.on_loss_fraction(now, f64::from(fraction_lost), rtt, ceiling);
        self.update_estimate(now);
    }

    /// Returns true while transport-wide feedback arrives.
    pub fn has_transport_feedback(&self, now: Instant) -> bool {
        self.twcc_active(now)
    }

    /// Starts estimating for a receiver that sends neither transport-wide
    /// feedback nor REMB, at the first receiver report with heavy loss:
    /// the estimate becomes `delivered_bps`, what the link carried, and
    /// later receiver reports alone move it. The delay-based half, which
    /// has no input from such a receiver, no longer caps it.
    pub fn start_report_only(&mut self, now: Instant, delivered_bps: f64) {
        self.delay_based.set_estimate(now, self.config.max_bps);
        self.loss_based.set_estimate(now, delivered_bps);
        self.update_estimate(now);
    }

    /// Internal state for a debug log line.
    pub fn snapshot(&self, now: Instant) -> EstimatorSnapshot {
        EstimatorSnapshot {
            estimate_bps: self.estimate_bps,
            delay_based_bps: self.delay_based.estimate_bps(),
            loss_based_bps: self.loss_based.estimate_bps(),
            remb_bps: self.remb_cap(now),
            acked_bps: self.acked.rate_bps(),
            rtt: self.rtt,
            loss: self.loss_based.last_loss(),
            usage: self.detector.usage(),
            trend_ms: self.detector.modified_trend(),
            threshold_ms: self.detector.threshold_ms(),
            rate_state: self.delay_based.state(),
            link_capacity_bps: self.delay_based.link_capacity_bps(),
            twcc_active: self.twcc_active(now),
            probe_active: self.prober.is_active(),
            last_probe: self.prober.last_result(),
        }
    }

    fn apply_probe_result(&mut self, now: Instant, result: ProbeResult) {
        if let Some(bps) = result.outcome.bps().filter(|&bps| bps > self.estimate_bps) {
            self.delay_based.set_estimate(now, bps);
            self.loss_based.set_estimate(now, bps);
        }
    }

    fn update_estimate(&mut self, now: Instant) {
        let mut estimate = self.delay_based.estimate_bps().min(self.loss_based.estimate_bps());
        if let Some(remb) = self.remb_cap(now) {
            estimate = estimate.min(remb);
        }
        self.estimate_bps = estimate.clamp(self.config.min_bps, self.config.max_bps);
    }

    fn remb_cap(&self, now: Instant) -> Option<f64> {
        self.remb
            .filter(|(at, _)| now.saturating_duration_since(*at) < REMB_TIMEOUT)
            .map(|(_, bps)| bps)
    }

    fn twcc_active(&self, now: Instant) -> bool {
        self.last_twcc.is_some_and(|last| now.saturating_duration_since(last) < TWCC_TIMEOUT)
    }

    fn update_rtt(&mut self, sample: Duration) {
        self.rtt = Some(match self.rtt {
            None => sample,
            Some(rtt) => rtt.mul_f64(1.0 - RTT_SMOOTHING) + sample.mul_f64(RTT_SMOOTHING),
        });
    }

    fn rtt_or_default(&self) -> Duration {
        self.rtt.unwrap_or(DEFAULT_RTT)
    }
}
