//! Acknowledged bitrate: what the receiver actually got, measured on its own
//! clock over a sliding window.

use std::collections::VecDeque;
use std::time::Duration;

use rtc::interceptor::PacketReport;

/// Window the rate is averaged over. Shorter reacts faster to a new
/// bottleneck but reads the burstiness of video frames as rate changes.
const WINDOW: Duration = Duration::from_millis(500);

/// Shortest span a rate is computed over, so that the first few packets do
/// not read as an enormous rate.
const MIN_SPAN: Duration = Duration::from_millis(100);

/// Sliding-window receive rate over the remote arrival clock.
#[derive(Debug, Clone, Default)]
pub(crate) struct AckedRate {
    samples: VecDeque<(Duration, usize)>,
    bytes: usize,
    first_arrival: Option<Duration>,
    latest_arrival: Duration,
}

impl AckedRate {
    /// Adds one arrived packet. Reports without an arrival time are ignored.
    pub(crate) fn on_report(&mut self, report: &PacketReport) {
        let Some(arrival) = report.arrival.filter(|_| report.arrived) else {
            return;
        };
        self.first_arrival.get_or_insert(arrival);
        self.samples.push_back((arrival, report.size));
        self.bytes += report.size;

        self.latest_arrival = self.latest_arrival.max(arrival);
        let latest = self.latest_arrival;
        while let Some(&(oldest, size)) = self.samples.front() {
            if latest.saturating_sub(oldest) <= WINDOW {
                break;
            }
            self.samples.pop_front();
            self.bytes -= size;
        }
    }

    /// Receive rate in bit/s, or `None` before [`MIN_SPAN`] of arrivals.
    pub(crate) fn rate_bps(&self) -> Option<f64> {
        let first = self.first_arrival?;
        self.samples.back()?;
        let span = self.latest_arrival.saturating_sub(first).min(WINDOW);
        if span < MIN_SPAN {
            return None;
        }
        Some(self.bytes as f64 * 8.0 / span.as_secs_f64())
    }
}
