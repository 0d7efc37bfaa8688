//! Delay-based rate control: additive-increase, multiplicative-decrease
//! driven by the overuse detector, after libwebrtc's `AimdRateControl`.
//!
//! On overuse the estimate drops to 0.85 of the acknowledged rate. While the
//! path reads normal the estimate grows 8 % per second, or by about one
//! packet per response time (RTT + 100 ms) once a link capacity is known
//! from earlier overuse. It never grows past 1.5 times the acknowledged rate
//! plus 10 kbit/s, so a sender that is not using its estimate does not
//! inflate it.

use std::time::{Duration, Instant};

use rtc::interceptor::Usage;

const DECREASE_FACTOR: f64 = 0.85;
const MULTIPLICATIVE_INCREASE_PER_SECOND: f64 = 1.08;
const ACKED_HEADROOM_FACTOR: f64 = 1.5;
const ACKED_HEADROOM_BPS: f64 = 10_000.0;
const MIN_ADDITIVE_INCREASE_BPS_PER_SECOND: f64 = 4_000.0;
const PACKET_SIZE_BITS: f64 = 1_200.0 * 8.0;
const FRAMES_PER_SECOND: f64 = 30.0;

/// Action of the rate controller on its next update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateControlState {
    /// Keep the estimate.
    Hold,
    /// Grow the estimate.
    Increase,
    /// Cut the estimate to a fraction of the acknowledged rate.
    Decrease,
}

/// Running estimate of the rate at which the path overuses, in kbit/s, with
/// a normalised variance, after libwebrtc's `LinkCapacityEstimator`.
#[derive(Debug, Clone, Copy, Default)]
struct LinkCapacity {
    estimate_kbps: Option<f64>,
    deviation: f64,
}

impl LinkCapacity {
    fn update(&mut self, sample_bps: f64) {
        let sample = sample_bps / 1_000.0;
        let alpha = 0.05;
        let estimate = match self.estimate_kbps {
            None => sample,
            Some(estimate) => (1.0 - alpha) * estimate + alpha * sample,
        };
        let error = estimate - sample;
        let deviation = (1.0 - alpha) * self.deviation + alpha * error * error / estimate.max(1.0);
        self.deviation = deviation.clamp(0.4, 2.5);
        self.estimate_kbps = Some(estimate);
    }

    fn spread_kbps(&self, estimate: f64) -> f64 {
        3.0 * (self.deviation * estimate).sqrt()
    }

    fn upper_bound_bps(&self) -> Option<f64> {
        self.estimate_kbps.map(|estimate| (estimate + self.spread_kbps(estimate)) * 1_000.0)
    }

    fn lower_bound_bps(&self) -> Option<f64> {
        self.estimate_kbps.map(|estimate| (estimate - self.spread_kbps(estimate)).max(0.0) * 1_000.0)
    }

    fn reset(&mut self) {
        self.estimate_kbps = None;
    }
}

/// The delay-based half of the estimate.
#[derive(Debug, Clone)]
pub(crate) struct AimdRate {
    estimate_bps: f64,
    min_bps: f64,
    max_bps: f64,
    state: RateControlState,
    last_update: Option<Instant>,
    last_decrease: Option<Instant>,
    link_capacity: LinkCapacity,
}

impl AimdRate {
    pub(crate) fn new(initial_bps: f64, min_bps: f64, max_bps: f64) -> Self {
        AimdRate {
            estimate_bps: initial_bps.clamp(min_bps, max_bps),
            min_bps,
            max_bps,
            state: RateControlState::Hold,
            last_update: None,
            last_decrease: None,
            link_capacity: LinkCapacity::default(),
        }
    }

    pub(crate) fn estimate_bps(&self) -> f64 {
        self.estimate_bps
    }

    pub(crate) fn state(&self) -> RateControlState {
        self.state
    }

    /// Rate at which the path last overused, if known.
    pub(crate) fn link_capacity_bps(&self) -> Option<f64> {
        self.link_capacity.estimate_kbps.map(|estimate| estimate * 1_000.0)
    }

    /// Replaces the estimate, for a probe result or a REMB value.
    pub(crate) fn set_estimate(&mut self, now: Instant, bps: f64) {
        self.estimate_bps = bps.clamp(self.min_bps, self.max_bps);
        self.last_update = Some(now);
    }

    /// Applies one detector verdict, given the acknowledged rate `acked_bps`.
    pub(crate) fn update(&mut self, now: Instant, usage: Usage, acked_bps: Option<f64>, rtt: Duration) -> f64 {
        self.state = match (usage, self.state) {
            (Usage::Over, _) => RateControlState::Decrease,
            (Usage::Normal, RateControlState::Hold) => RateControlState::Increase,
            (Usage::Normal, state) => state,
            (Usage::Under, _) => RateControlState::Hold,
        };
        let elapsed = self
            .last_update
            .map_or(Duration::ZERO, |last| now.saturating_duration_since(last))
            .min(Duration::from_secs(1));

        match self.state {
            RateControlState::Increase => self.increase(elapsed, acked_bps, rtt),
            RateControlState::Decrease => self.decrease(now, acked_bps, rtt),
            RateControlState::Hold => {}
        }
        self.last_update = Some(now);
        self.estimate_bps
    }

    fn increase(&mut self, elapsed: Duration, acked_bps: Option<f64>, rtt: Duration) {
        if let (Some(acked), Some(upper)) = (acked_bps, self.link_capacity.upper_bound_bps()) {
            if acked > upper {
                self.link_capacity.reset();
            }
        }
        let limit = acked_bps.map(|acked| ACKED_HEADROOM_FACTOR * acked + ACKED_HEADROOM_BPS);
        if limit.is_some_and(|limit| self.estimate_bps >= limit) {
            return;
        }

        let seconds = elapsed.as_secs_f64();
        let increase = if self.link_capacity.estimate_kbps.is_some() {
            self.near_capacity_increase_per_second(rtt) * seconds
        } else {
            let factor = MULTIPLICATIVE_INCREASE_PER_SECOND.powf(seconds);
            (self.estimate_bps * (factor - 1.0)).max(1_000.0 * seconds.min(1.0))
        };
        let mut next = self.estimate_bps + increase;
        if let Some(limit) = limit {
            next = next.min(limit);
        }
        self.estimate_bps = next.clamp(self.min_bps, self.max_bps);
    }

    /// About one packet per response time, at the packet size a video
    /// stream at the current estimate would use.
    fn near_capacity_increase_per_second(&self, rtt: Duration) -> f64 {
        let frame_bits = self.estimate_bps / FRAMES_PER_SECOND;
        let packets_per_frame = (frame_bits / PACKET_SIZE_BITS).ceil().max(1.0);
        let packet_bits = frame_bits / packets_per_frame;
        let response_time = rtt.as_secs_f64() + 0.1;
        (packet_bits / response_time).max(MIN_ADDITIVE_INCREASE_BPS_PER_SECOND)
    }

    fn decrease(&mut self, now: Instant, acked_bps: Option<f64>, rtt: Duration) {
        let since_decrease = self.last_decrease.map(|last| now.saturating_duration_since(last));
        let interval = rtt.clamp(Duration::from_millis(10), Duration::from_millis(200));
        let far_above_acked = acked_bps.is_some_and(|acked| self.estimate_bps > 2.0 * acked);
        if since_decrease.is_some_and(|since| since < interval) && !far_above_acked {
            return;
        }

        let measured = acked_bps.unwrap_or(self.estimate_bps);
        if self.link_capacity.lower_bound_bps().is_some_and(|lower| measured < lower) {
            self.link_capacity.reset();
        }
        self.link_capacity.update(measured);

        let next = (DECREASE_FACTOR * measured).min(self.estimate_bps);
        self.estimate_bps = next.clamp(self.min_bps, self.max_bps);
        self.last_decrease = Some(now);
        self.state = RateControlState::Hold;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overuse_cuts_to_acked_fraction() {
        let now = Instant::now();
        let mut rate = AimdRate::new(2_000_000.0, 100_000.0, 20_000_000.0);
        let next = rate.update(now, Usage::Over, Some(1_000_000.0), Duration::from_millis(40));
        assert!((next - 850_000.0).abs() < 1.0, "estimate {next}");
        assert_eq!(rate.state(), RateControlState::Hold);
    }

    #[test]
    fn normal_grows_eight_percent_per_second() {
        let start = Instant::now();
        let mut rate = AimdRate::new(1_000_000.0, 100_000.0, 20_000_000.0);
        rate.update(start, Usage::Normal, Some(1_000_000.0), Duration::from_millis(40));
        let next = rate.update(start + Duration::from_secs(1), Usage::Normal, Some(1_000_000.0), Duration::from_millis(40));
        assert!((next - 1_080_000.0).abs() < 1.0, "estimate {next}");
    }

    #[test]
    fn increase_stops_above_acked_headroom() {
        let start = Instant::now();
        let mut rate = AimdRate::new(1_000_000.0, 100_000.0, 20_000_000.0);
        for step in 0..20 {
            rate.update(start + Duration::from_secs(step), Usage::Normal, Some(200_000.0), Duration::from_millis(40));
        }
        assert_eq!(rate.estimate_bps(), 1_000_000.0);
    }
}
