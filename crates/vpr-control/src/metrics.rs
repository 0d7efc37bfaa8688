//! Counters of the control plane, rendered in the Prometheus text format.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// WatchEvents counters shared between the streams and the metrics endpoint.
#[derive(Debug, Default)]
pub struct ControlMetrics {
    /// Open WatchEvents streams.
    pub event_streams: AtomicU64,
    /// Events sent on WatchEvents streams.
    pub events_streamed: AtomicU64,
    /// Time from an event's record time to its sending on a stream, for the
    /// last event sent, in milliseconds.
    pub event_stream_lag_ms: AtomicI64,
}

impl ControlMetrics {
    /// Renders the counters in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let rows: [(&str, &str, &str, i64); 3] = [
            ("vpr_event_streams", "gauge", "Open WatchEvents streams.", self.event_streams.load(Ordering::Relaxed) as i64),
            ("vpr_events_streamed_total", "counter", "Events sent on WatchEvents streams.", self.events_streamed.load(Ordering::Relaxed) as i64),
            ("vpr_event_stream_lag_ms", "gauge", "Milliseconds from recording the last streamed event to sending it.", self.event_stream_lag_ms.load(Ordering::Relaxed)),
        ];
        for (name, kind, help, value) in rows {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name} {value}");
        }
        out
    }
}
