//! Connection quality per participant: bitrate, packet loss and round-trip
//! time from each peer connection's statistics, and a quality alert with
//! hysteresis so that a link near the threshold does not flap.

use std::time::{Duration, Instant};

/// Loss fraction at or above which an alert is raised.
pub const ALERT_LOSS: f64 = 0.05;
/// Round-trip time at or above which an alert is raised.
pub const ALERT_RTT: Duration = Duration::from_millis(400);
/// Loss fraction below which a raised alert may clear.
pub const CLEAR_LOSS: f64 = 0.02;
/// Round-trip time below which a raised alert may clear.
pub const CLEAR_RTT: Duration = Duration::from_millis(300);

/// Cumulative counters read from one peer connection's statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TransportCounters {
    /// RTP bytes received from the client plus bytes sent to it.
    pub bytes: u64,
    /// RTP packets received from the client (publishing sessions).
    pub packets_received: u64,
    /// RTP packets lost on the way from the client (publishing sessions).
    pub packets_lost: i64,
    /// Loss fraction the client reports in its receiver reports (receiving
    /// sessions), 0 to 1.
    pub reported_fraction_lost: Option<f64>,
    /// Round-trip time from the client's receiver reports.
    pub round_trip_time: Option<Duration>,
    /// Interarrival jitter from the client's receiver reports.
    pub jitter: Option<Duration>,
}

/// Quality of one interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QualitySample {
    /// Media bitrate over the interval, in kbit/s.
    pub bitrate_kbps: f64,
    /// Loss fraction over the interval, 0 to 1.
    pub packet_loss: f64,
    /// Latest round-trip time, when known.
    pub round_trip_time: Option<Duration>,
    /// Latest interarrival jitter, when known.
    pub jitter: Option<Duration>,
}

impl QualitySample {
    /// Combines the samples of one participant's connections: bitrates add
    /// up, the worst loss and round-trip time count.
    pub fn combine(self, other: QualitySample) -> QualitySample {
        QualitySample {
            bitrate_kbps: self.bitrate_kbps + other.bitrate_kbps,
            packet_loss: self.packet_loss.max(other.packet_loss),
            round_trip_time: worst(self.round_trip_time, other.round_trip_time),
            jitter: worst(self.jitter, other.jitter),
        }
    }
}

/// Returns the larger of two optional durations.
fn worst(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// Interarrival jitter of one RTP stream as RFC 3550 section 6.4.1 defines
/// it: the smoothed variation of transit time, in the stream's clock.
#[derive(Debug, Clone, Default)]
pub struct InterarrivalJitter {
    /// Arrival of the first packet, the origin of arrival times.
    origin: Option<Instant>,
    /// Arrival in clock units and RTP timestamp of the previous packet.
    last: Option<(i64, u32)>,
    /// Jitter in clock units, times 16 as in the RFC's integer form.
    scaled: i64,
}

impl InterarrivalJitter {
    /// Folds in a packet that arrived at `now` with RTP `timestamp`, on a
    /// stream clocked at `clock_rate` Hz.
    pub fn on_packet(&mut self, now: Instant, timestamp: u32, clock_rate: u32) {
        let origin = *self.origin.get_or_insert(now);
        let arrival = (now.saturating_duration_since(origin).as_secs_f64() * f64::from(clock_rate)) as i64;
        if let Some((last_arrival, last_timestamp)) = self.last {
            // The timestamp difference wraps with the 32-bit timestamp.
            let sent = i64::from(timestamp.wrapping_sub(last_timestamp) as i32);
            let d = (arrival - last_arrival - sent).abs();
            self.scaled += d - ((self.scaled + 8) >> 4);
        }
        self.last = Some((arrival, timestamp));
    }

    /// Returns the jitter, given the stream's clock rate in Hz.
    pub fn jitter(&self, clock_rate: u32) -> Duration {
        Duration::from_secs_f64((self.scaled >> 4) as f64 / f64::from(clock_rate.max(1)))
    }
}

/// Turns successive counters of one connection into interval samples.
#[derive(Debug, Default)]
pub struct RateTracker {
    last: Option<(Instant, TransportCounters)>,
}

impl RateTracker {
    /// Records `counters` read at `now`; returns the sample since the last
    /// call, or `None` on the first call.
    pub fn update(&mut self, now: Instant, counters: TransportCounters) -> Option<QualitySample> {
        let previous = self.last.replace((now, counters));
        let (then, before) = previous?;
        let seconds = now.saturating_duration_since(then).as_secs_f64();
        if seconds <= 0.0 {
            return None;
        }

        let bytes = counters.bytes.saturating_sub(before.bytes);
        let received = counters.packets_received.saturating_sub(before.packets_received);
        let lost = (counters.packets_lost - before.packets_lost).max(0) as u64;
        let ingress_loss = if received + lost > 0 { lost as f64 / (received + lost) as f64 } else { 0.0 };
        let packet_loss = ingress_loss.max(counters.reported_fraction_lost.unwrap_or(0.0));

        Some(QualitySample {
            bitrate_kbps: bytes as f64 * 8.0 / 1000.0 / seconds,
            packet_loss,
            round_trip_time: counters.round_trip_time,
            jitter: counters.jitter,
        })
    }
}

/// A change of a participant's alert state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AlertChange {
    /// Quality crossed an alert threshold.
    Raised,
    /// Quality is back under both clear thresholds.
    Cleared,
}

/// Alert state of one participant.
#[derive(Debug, Default)]
pub struct AlertState {
    raised: bool,
}

impl AlertState {
    /// Feeds one sample; returns the change it causes, if any.
    pub fn update(&mut self, sample: &QualitySample) -> Option<AlertChange> {
        let rtt = sample.round_trip_time.unwrap_or(Duration::ZERO);
        if !self.raised && (sample.packet_loss >= ALERT_LOSS || rtt >= ALERT_RTT) {
            self.raised = true;
            return Some(AlertChange::Raised);
        }
        if self.raised && sample.packet_loss < CLEAR_LOSS && rtt < CLEAR_RTT {
            self.raised = false;
            return Some(AlertChange::Cleared);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters(bytes: u64, received: u64, lost: i64) -> TransportCounters {
        TransportCounters { bytes, packets_received: received, packets_lost: lost, ..Default::default() }
    }

    #[test]
    fn rate_tracker_computes_bitrate_and_loss() {
        let start = Instant::now();
        let mut tracker = RateTracker::default();
        assert_eq!(tracker.update(start, counters(0, 0, 0)), None);
        let sample = tracker
            .update(start + Duration::from_secs(2), counters(250_000, 190, 10))
            .expect("second reading gives a sample");
        assert!((sample.bitrate_kbps - 1000.0).abs() < 1e-9, "{sample:?}");
        assert!((sample.packet_loss - 0.05).abs() < 1e-9, "{sample:?}");
    }

    #[test]
    fn reported_loss_counts_for_receivers() {
        let start = Instant::now();
        let mut tracker = RateTracker::default();
        tracker.update(start, TransportCounters::default());
        let reading = TransportCounters { reported_fraction_lost: Some(0.1), ..Default::default() };
        let sample = tracker.update(start + Duration::from_secs(1), reading).unwrap();
        assert!((sample.packet_loss - 0.1).abs() < 1e-9);
    }

    #[test]
    fn steady_stream_has_no_jitter() {
        let start = Instant::now();
        let mut jitter = InterarrivalJitter::default();
        for frame in 0..100u32 {
            let at = start + Duration::from_millis(u64::from(frame) * 20);
            // Starts near 2^31 and crosses it; the test below crosses 2^32.
            jitter.on_packet(at, frame.wrapping_mul(960).wrapping_add(0x7fff_ffff - 5_000), 48_000);
        }
        assert_eq!(jitter.jitter(48_000), Duration::ZERO);
    }

    #[test]
    fn alternating_delay_converges_to_its_size() {
        let start = Instant::now();
        let mut jitter = InterarrivalJitter::default();
        // Every other packet 10 ms late: each transit difference is 10 ms,
        // and the estimate approaches it.
        for frame in 0..400u64 {
            let late = if frame % 2 == 1 { 10 } else { 0 };
            let at = start + Duration::from_millis(frame * 33 + late);
            jitter.on_packet(at, ((frame * 2_970) as u32).wrapping_add(u32::MAX - 100_000), 90_000);
        }
        let ms = jitter.jitter(90_000).as_secs_f64() * 1000.0;
        assert!((9.0..=10.5).contains(&ms), "jitter {ms} ms");
    }

    #[test]
    fn alert_has_hysteresis() {
        let sample = |loss, rtt_ms| QualitySample {
            bitrate_kbps: 500.0,
            packet_loss: loss,
            round_trip_time: Some(Duration::from_millis(rtt_ms)),
            jitter: None,
        };
        let mut alert = AlertState::default();
        assert_eq!(alert.update(&sample(0.01, 50)), None);
        assert_eq!(alert.update(&sample(0.06, 50)), Some(AlertChange::Raised));
        assert_eq!(alert.update(&sample(0.03, 50)), None, "between thresholds stays raised");
        assert_eq!(alert.update(&sample(0.01, 350)), None, "RTT above clear threshold stays raised");
        assert_eq!(alert.update(&sample(0.01, 50)), Some(AlertChange::Cleared));
        assert_eq!(alert.update(&sample(0.0, 450)), Some(AlertChange::Raised));
    }

    #[test]
    fn combine_adds_bitrate_and_keeps_worst() {
        let a = QualitySample {
            bitrate_kbps: 300.0,
            packet_loss: 0.01,
            round_trip_time: None,
            jitter: Some(Duration::from_millis(9)),
        };
        let b = QualitySample {
            bitrate_kbps: 200.0,
            packet_loss: 0.04,
            round_trip_time: Some(Duration::from_millis(80)),
            jitter: Some(Duration::from_millis(3)),
        };
        let both = a.combine(b);
        assert_eq!(both.bitrate_kbps, 500.0);
        assert_eq!(both.packet_loss, 0.04);
        assert_eq!(both.round_trip_time, Some(Duration::from_millis(80)));
        assert_eq!(both.jitter, Some(Duration::from_millis(9)));
    }
}
