//! Delay signal: a trendline filter over inter-group delay variation, and an
//! overuse detector with an adaptive threshold.
//!
//! This follows libwebrtc's `TrendlineEstimator` and `OveruseDetector`
//! (window of 20 groups, smoothing 0.9, gain 4, threshold gains 0.0087 up
//! and 0.039 down, 10 ms over the threshold before overuse is declared).
//! Grouping packets into bursts uses the `rtc` crate's
//! `ArrivalGroupAccumulator` (5 ms departure bursts).

use std::collections::VecDeque;
use std::time::Instant;

use rtc::interceptor::{ArrivalGroupAccumulator, PacketReport, Usage};

const WINDOW_SIZE: usize = 20;
const SMOOTHING: f64 = 0.9;
const THRESHOLD_GAIN: f64 = 4.0;
const MAX_DELTAS_WEIGHT: f64 = 60.0;
const INITIAL_THRESHOLD_MS: f64 = 12.5;
const THRESHOLD_UP_GAIN: f64 = 0.0087;
const THRESHOLD_DOWN_GAIN: f64 = 0.039;
const OVERUSE_TIME_MS: f64 = 10.0;

/// Trendline filter and overuse detector for one connection.
#[derive(Debug, Clone)]
pub(crate) struct DelayDetector {
    groups: ArrivalGroupAccumulator,
    first_group_at: Option<Instant>,
    deltas: u32,
    accumulated_ms: f64,
    smoothed_ms: f64,
    window: VecDeque<(f64, f64)>,
    trend: f64,
    previous_trend: f64,
    modified_trend: f64,
    threshold_ms: f64,
    threshold_updated_at: Option<Instant>,
    overuse_since: Option<Instant>,
    overuse_count: u32,
    usage: Usage,
}

impl DelayDetector {
    pub(crate) fn new() -> Self {
        DelayDetector {
            groups: ArrivalGroupAccumulator::default(),
            first_group_at: None,
            deltas: 0,
            accumulated_ms: 0.0,
            smoothed_ms: 0.0,
            window: VecDeque::with_capacity(WINDOW_SIZE),
            trend: 0.0,
            previous_trend: 0.0,
            modified_trend: 0.0,
            threshold_ms: INITIAL_THRESHOLD_MS,
            threshold_updated_at: None,
            overuse_since: None,
            overuse_count: 0,
            usage: Usage::Normal,
        }
    }

    /// Current verdict.
    pub(crate) fn usage(&self) -> Usage {
        self.usage
    }

    /// Trend scaled the way it is compared with the threshold, in ms.
    pub(crate) fn modified_trend(&self) -> f64 {
        self.modified_trend
    }

    /// Current adaptive threshold, in ms.
    pub(crate) fn threshold_ms(&self) -> f64 {
        self.threshold_ms
    }

    /// Folds one report in and returns the verdict when a burst closed.
    pub(crate) fn on_report(&mut self, report: &PacketReport) -> Option<Usage> {
        let delay = self.groups.accumulate(report)?;
        let first = *self.first_group_at.get_or_insert(delay.at);
        let x_ms = delay.at.saturating_duration_since(first).as_secs_f64() * 1_000.0;

        self.deltas = self.deltas.saturating_add(1);
        self.accumulated_ms += delay.delta_ms;
        self.smoothed_ms = SMOOTHING * self.smoothed_ms + (1.0 - SMOOTHING) * self.accumulated_ms;
        self.window.push_back((x_ms, self.smoothed_ms));
        if self.window.len() > WINDOW_SIZE {
            self.window.pop_front();
        }
        if self.window.len() == WINDOW_SIZE {
            if let Some(slope) = linear_fit_slope(&self.window) {
                self.trend = slope;
            }
        }

        self.detect(delay.at);
        Some(self.usage)
    }

    fn detect(&mut self, now: Instant) {
        if self.deltas < 2 {
            self.usage = Usage::Normal;
            return;
        }
        self.modified_trend = f64::from(self.deltas).min(MAX_DELTAS_WEIGHT) * self.trend * THRESHOLD_GAIN;

        if self.modified_trend > self.threshold_ms {
            let since = *self.overuse_since.get_or_insert(now);
            self.overuse_count += 1;
            let over_ms = now.saturating_duration_since(since).as_secs_f64() * 1_000.0;
            if over_ms >= OVERUSE_TIME_MS && self.overuse_count > 1 && self.trend >= self.previous_trend {
                self.overuse_since = None;
                self.overuse_count = 0;
                self.usage = Usage::Over;
            }
        } else if self.modified_trend < -self.threshold_ms {
            self.overuse_since = None;
            self.overuse_count = 0;
            self.usage = Usage::Under;
        } else {
            self.overuse_since = None;
            self.overuse_count = 0;
            self.usage = Usage::Normal;
        }
        self.previous_trend = self.trend;

        self.update_threshold(now);
    }

    fn update_threshold(&mut self, now: Instant) {
        let Some(last) = self.threshold_updated_at.replace(now) else {
            return;
        };
        let magnitude = self.modified_trend.abs();
        // A spike far outside the threshold is no evidence of where the
        // threshold belongs, and following it would hide the congestion after it.
        if magnitude > self.threshold_ms + 15.0 {
            return;
        }
        let gain = if magnitude < self.threshold_ms { THRESHOLD_DOWN_GAIN } else { THRESHOLD_UP_GAIN };
        let elapsed_ms = (now.saturating_duration_since(last).as_secs_f64() * 1_000.0).min(100.0);
        self.threshold_ms = (self.threshold_ms + gain * (magnitude - self.threshold_ms) * elapsed_ms).clamp(6.0, 600.0);
    }
}

/// Least-squares slope of `y` over `x`, or `None` when all `x` are equal.
fn linear_fit_slope(points: &VecDeque<(f64, f64)>) -> Option<f64> {
    let count = points.len() as f64;
    let mean_x = points.iter().map(|point| point.0).sum::<f64>() / count;
    let mean_y = points.iter().map(|point| point.1).sum::<f64>() / count;
    let mut numerator = 0.0;
    let mut denominator = 0.0;
    for &(x, y) in points {
        numerator += (x - mean_x) * (y - mean_y);
        denominator += (x - mean_x) * (x - mean_x);
    }
    (denominator > 0.0).then(|| numerator / denominator)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::rtcp::transport_feedbacks::cc_feedback_report::Ecn;
    use std::time::Duration;

    fn report(epoch: Instant, departure_ms: u64, arrival_ms: u64) -> PacketReport {
        PacketReport {
            ssrc: 1,
            id: departure_ms,
            rtp_sequence_number: departure_ms as u16,
            is_twcc: true,
            twcc_sequence_number: departure_ms as u16,
            size: 1_200,
            arrived: true,
            departure: epoch + Duration::from_millis(departure_ms),
            arrival: Some(Duration::from_millis(arrival_ms)),
            ecn: Ecn::default(),
        }
    }

    #[test]
    fn constant_delay_reads_normal() {
        let epoch = Instant::now();
        let mut detector = DelayDetector::new();
        for step in 0..200 {
            detector.on_report(&report(epoch, step * 10, step * 10 + 20));
        }
        assert_eq!(detector.usage(), Usage::Normal);
    }

    #[test]
    fn growing_delay_reads_over() {
        let epoch = Instant::now();
        let mut detector = DelayDetector::new();
        // Each packet waits 2 ms longer than the one before: a filling queue.
        for step in 0..100 {
            detector.on_report(&report(epoch, step * 10, step * 12 + 20));
        }
        assert_eq!(detector.usage(), Usage::Over);
        assert!(detector.modified_trend() > detector.threshold_ms());
    }

    #[test]
    fn draining_queue_reads_under() {
        let epoch = Instant::now();
        let mut detector = DelayDetector::new();
        for step in 0..100 {
            detector.on_report(&report(epoch, step * 10, 1_000 + step * 8));
        }
        assert_eq!(detector.usage(), Usage::Under);
    }
}
