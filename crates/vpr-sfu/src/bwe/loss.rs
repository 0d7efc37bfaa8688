//! Loss-based rate control, after libwebrtc's classic
//! `SendSideBandwidthEstimation`.
//!
//! Below 2 % loss the estimate may grow to 1.08 times the lowest estimate of
//! the last second plus 1 kbit/s. Above 10 % loss it is cut by a factor of
//! (1 - 0.5 · loss), at most once per 300 ms plus one RTT. In between it
//! holds.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Loss fraction below which the estimate may grow.
pub const LOW_LOSS: f64 = 0.02;
/// Loss fraction above which the estimate is cut.
pub const HIGH_LOSS: f64 = 0.10;

const INCREASE_FACTOR: f64 = 1.08;
const INCREASE_BPS: f64 = 1_000.0;
const HISTORY: Duration = Duration::from_secs(1);
const DECREASE_INTERVAL: Duration = Duration::from_millis(300);

/// Minimum number of packets a loss fraction from transport-wide feedback
/// is computed over, so one lost packet in a small batch does not read as
/// heavy loss.
const MIN_PACKETS_PER_SAMPLE: usize = 20;

/// The loss-based half of the estimate.
#[derive(Debug, Clone)]
pub(crate) struct LossRate {
    estimate_bps: f64,
    min_bps: f64,
    max_bps: f64,
    /// Estimates of the last second, increasing from front to back, so the
    /// front is the lowest.
    history: VecDeque<(Instant, f64)>,
    last_decrease: Option<Instant>,
    pending_lost: usize,
    pending_total: usize,
    last_loss: Option<f64>,
}

impl LossRate {
    pub(crate) fn new(initial_bps: f64, min_bps: f64, max_bps: f64) -> Self {
        LossRate {
            estimate_bps: initial_bps.clamp(min_bps, max_bps),
            min_bps,
            max_bps,
            history: VecDeque::new(),
            last_decrease: None,
            pending_lost: 0,
            pending_total: 0,
            last_loss: None,
        }
    }

    pub(crate) fn estimate_bps(&self) -> f64 {
        self.estimate_bps
    }

    /// Loss fraction of the last completed sample.
    pub(crate) fn last_loss(&self) -> Option<f64> {
        self.last_loss
    }

    /// Replaces the estimate and clears the history, for a probe result.
    pub(crate) fn set_estimate(&mut self, now: Instant, bps: f64) {
        self.estimate_bps = bps.clamp(self.min_bps, self.max_bps);
        self.history.clear();
        self.history.push_back((now, self.estimate_bps));
    }

    /// Counts packets from transport-wide feedback and updates the estimate
    /// once enough have been counted. Growth is capped at `ceiling_bps`,
    /// the delay-based estimate, as libwebrtc does.
    pub(crate) fn on_packets(&mut self, now: Instant, lost: usize, total: usize, rtt: Duration, ceiling_bps: f64) {
        self.pending_lost += lost;
        self.pending_total += total;
        if self.pending_total < MIN_PACKETS_PER_SAMPLE {
            return;
        }
        let loss = self.pending_lost as f64 / self.pending_total as f64;
        self.pending_lost = 0;
        self.pending_total = 0;
        self.on_loss_fraction(now, loss, rtt, ceiling_bps);
    }

    /// Updates the estimate from one loss fraction, such as the fraction
    /// lost of an RTCP receiver report.
    pub(crate) fn on_loss_fraction(&mut self, now: Instant, loss: f64, rtt: Duration, ceiling_bps: f64) {
        let loss = loss.clamp(0.0, 1.0);
        self.last_loss = Some(loss);
        self.record_history(now);

        if loss < LOW_LOSS {
            let lowest = self.history.front().map_or(self.estimate_bps, |entry| entry.1);
            let grown = lowest * INCREASE_FACTOR + INCREASE_BPS;
            // Growth never pushes past the delay-based estimate, but an
            // estimate already above it is not pulled down here.
            let next = grown.min(ceiling_bps.max(self.estimate_bps));
            self.estimate_bps = self.estimate_bps.max(next);
        } else if loss > HIGH_LOSS {
            let due = self
                .last_decrease
                .is_none_or(|last| now.saturating_duration_since(last) >= DECREASE_INTERVAL + rtt);
            if due {
                self.estimate_bps *= 1.0 - 0.5 * loss;
                self.last_decrease = Some(now);
            }
        }
        self.estimate_bps = self.estimate_bps.clamp(self.min_bps, self.max_bps);
    }

    fn record_history(&mut self, now: Instant) {
        while self
            .history
            .front()
            .is_some_and(|entry| now.saturating_duration_since(entry.0) > HISTORY)
        {
            self.history.pop_front();
        }
        while self.history.back().is_some_and(|entry| entry.1 >= self.estimate_bps) {
            self.history.pop_back();
        }
        self.history.push_back((now, self.estimate_bps));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RTT: Duration = Duration::from_millis(40);

    #[test]
    fn heavy_loss_cuts_by_half_the_fraction() {
        let now = Instant::now();
        let mut rate = LossRate::new(1_000_000.0, 100_000.0, 20_000_000.0);
        rate.on_loss_fraction(now, 0.2, RTT, 20_000_000.0);
        assert!((rate.estimate_bps() - 900_000.0).abs() < 1.0);
    }

    #[test]
    fn cuts_wait_for_interval() {
        let now = Instant::now();
        let mut rate = LossRate::new(1_000_000.0, 100_000.0, 20_000_000.0);
        rate.on_loss_fraction(now, 0.2, RTT, 20_000_000.0);
        rate.on_loss_fraction(now + Duration::from_millis(100), 0.2, RTT, 20_000_000.0);
        assert!((rate.estimate_bps() - 900_000.0).abs() < 1.0);
        rate.on_loss_fraction(now + Duration::from_millis(400), 0.2, RTT, 20_000_000.0);
        assert!((rate.estimate_bps() - 810_000.0).abs() < 1.0);
    }

    #[test]
    fn moderate_loss_holds() {
        let now = Instant::now();
        let mut rate = LossRate::new(1_000_000.0, 100_000.0, 20_000_000.0);
        rate.on_loss_fraction(now, 0.05, RTT, 20_000_000.0);
        assert_eq!(rate.estimate_bps(), 1_000_000.0);
    }

    #[test]
    fn low_loss_grows_up_to_ceiling() {
        let now = Instant::now();
        let mut rate = LossRate::new(1_000_000.0, 100_000.0, 20_000_000.0);
        rate.on_loss_fraction(now, 0.0, RTT, 1_050_000.0);
        assert_eq!(rate.estimate_bps(), 1_050_000.0);
    }
}
