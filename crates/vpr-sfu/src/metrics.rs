//! Counters of the media plane, rendered in the Prometheus text format.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Media-plane counters and gauges, shared between the worker and the
/// metrics endpoint.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Datagrams received on the media port.
    pub datagrams_received: AtomicU64,
    /// Datagrams dropped before reaching a peer connection: malformed,
    /// truncated, or from an unknown address.
    pub datagrams_dropped: AtomicU64,
    /// Bytes received on the media port.
    pub bytes_received: AtomicU64,
    /// Datagrams sent from the media port.
    pub datagrams_sent: AtomicU64,
    /// Bytes sent from the media port.
    pub bytes_sent: AtomicU64,
    /// RTP packets received from publishers.
    pub rtp_received: AtomicU64,
    /// NACK packets received from subscribers.
    pub nacks_received: AtomicU64,
    /// Participants with at least one live session.
    pub participants: AtomicU64,
    /// RTP packets forwarded to down-tracks.
    pub rtp_forwarded: AtomicU64,
    /// Keyframe requests (PLI/FIR) received from subscribers.
    pub keyframe_requests_received: AtomicU64,
    /// Keyframe requests sent upstream to publishers.
    pub keyframe_requests_sent: AtomicU64,
    /// Open rooms.
    pub rooms: AtomicU64,
    /// Live peer connections.
    pub peer_connections: AtomicU64,
    /// Published tracks.
    pub tracks: AtomicU64,
    /// Down-track switches from one simulcast layer to another.
    pub layer_switches: AtomicU64,
    /// RTX retransmissions restored onto the simulcast layer their
    /// `repaired-rtp-stream-id` names.
    pub rtx_restored: AtomicU64,
    /// Simulcast layers paused at their publisher because no subscriber
    /// received them.
    pub layer_pauses: AtomicU64,
    /// Time from an RTP datagram's arrival in the media socket's receive
    /// queue (the kernel's timestamp) until the worker had sent everything
    /// that datagram caused: the delay the server adds to media.
    pub rtp_residence: DelayHistogram,
}

impl Metrics {
    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Sets a gauge.
    pub fn set(gauge: &AtomicU64, value: u64) {
        gauge.store(value, Ordering::Relaxed);
    }

    /// Renders every metric in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let rows: [(&str, &str, &str, &AtomicU64); 17] = [
            ("vpr_rtp_received_total", "counter", "RTP packets received from publishers.", &self.rtp_received),
            ("vpr_nacks_received_total", "counter", "NACK packets received from subscribers.", &self.nacks_received),
            ("vpr_participants", "gauge", "Participants with at least one live session.", &self.participants),
            ("vpr_udp_datagrams_received_total", "counter", "Datagrams received on the media port.", &self.datagrams_received),
            ("vpr_udp_datagrams_dropped_total", "counter", "Datagrams dropped as malformed, truncated or from an unknown address.", &self.datagrams_dropped),
            ("vpr_udp_bytes_received_total", "counter", "Bytes received on the media port.", &self.bytes_received),
            ("vpr_udp_datagrams_sent_total", "counter", "Datagrams sent from the media port.", &self.datagrams_sent),
            ("vpr_udp_bytes_sent_total", "counter", "Bytes sent from the media port.", &self.bytes_sent),
            ("vpr_rtp_forwarded_total", "counter", "RTP packets forwarded to down-tracks.", &self.rtp_forwarded),
            ("vpr_keyframe_requests_received_total", "counter", "PLI and FIR received from subscribers.", &self.keyframe_requests_received),
            ("vpr_keyframe_requests_sent_total", "counter", "Keyframe requests sent to publishers.", &self.keyframe_requests_sent),
            ("vpr_rooms", "gauge", "Open rooms.", &self.rooms),
            ("vpr_peer_connections", "gauge", "Live peer connections.", &self.peer_connections),
            ("vpr_tracks", "gauge", "Published tracks.", &self.tracks),
            ("vpr_layer_switches_total", "counter", "Down-track switches between simulcast layers.", &self.layer_switches),
            ("vpr_rtx_restored_total", "counter", "RTX retransmissions restored onto the simulcast layer their repaired-rtp-stream-id names.", &self.rtx_restored),
            ("vpr_layer_pauses_total", "counter", "Simulcast layers paused at their publisher because no subscriber received them.", &self.layer_pauses),
        ];
        let mut out = String::new();
        for (name, kind, help, value) in rows {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name} {}", value.load(Ordering::Relaxed));
        }
        self.rtp_residence.render(
            &mut out,
            "vpr_rtp_residence_seconds",
            "Time from an RTP datagram's arrival in the media socket's receive queue until the server had sent everything it caused.",
        );
        out
    }
}

/// Upper bounds of the [`DelayHistogram`] buckets, in microseconds; a last
/// bucket counts everything longer.
pub const DELAY_BUCKETS_US: [u64; 15] = [50, 100, 250, 500, 750, 1000, 1500, 2000, 3000, 4000, 5000, 7500, 10_000, 25_000, 100_000];

/// A Prometheus histogram of delays with fixed buckets, updated without
/// locks.
#[derive(Debug, Default)]
pub struct DelayHistogram {
    buckets: [AtomicU64; DELAY_BUCKETS_US.len() + 1],
    sum_us: AtomicU64,
}

impl DelayHistogram {
    /// Counts one delay.
    pub fn record(&self, delay: Duration) {
        let micros = delay.as_micros().min(u64::MAX as u128) as u64;
        let bucket = DELAY_BUCKETS_US.partition_point(|&bound| bound < micros);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(micros, Ordering::Relaxed);
    }

    /// Delays counted so far.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|bucket| bucket.load(Ordering::Relaxed)).sum()
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut cumulative = 0;
        for (index, bucket) in self.buckets.iter().enumerate() {
            cumulative += bucket.load(Ordering::Relaxed);
            match DELAY_BUCKETS_US.get(index) {
                Some(bound) => {
                    let _ = writeln!(out, "{name}_bucket{{le=\"{}\"}} {cumulative}", *bound as f64 / 1e6);
                }
                None => {
                    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
                }
            }
        }
        let _ = writeln!(out, "{name}_sum {}", self.sum_us.load(Ordering::Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {cumulative}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_renders_cumulative_buckets_in_seconds() {
        let histogram = DelayHistogram::default();
        for micros in [40, 50, 51, 1_800, 250_000] {
            histogram.record(Duration::from_micros(micros));
        }
        assert_eq!(histogram.count(), 5);
        let mut out = String::new();
        histogram.render(&mut out, "d", "help");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[2], "d_bucket{le=\"0.00005\"} 2");
        assert_eq!(lines[3], "d_bucket{le=\"0.0001\"} 3");
        assert_eq!(lines[9], "d_bucket{le=\"0.002\"} 4");
        assert_eq!(lines[17], "d_bucket{le=\"+Inf\"} 5");
        assert_eq!(lines[18], "d_sum 0.251941");
        assert_eq!(lines[19], "d_count 5");
    }
}
