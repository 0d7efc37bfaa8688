//! Report of a load run: what was requested, what connected, what arrived,
//! how the harness and server processes fared, one point per second over
//! time, and the threshold outcomes. Serialized as the JSON report and
//! printed as a summary table.

use std::fmt::Write as _;

use serde::Serialize;

use super::config::Scenario;
use super::percentile::Percentiles;
use super::thresholds::ThresholdResult;

/// Everything a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The scenario that ran, without the API key secret.
    pub scenario: Scenario,
    /// When the run started, unix ms.
    pub started_at_unix_ms: u64,
    /// Wall-clock length of the run, from the first CreateRoom until the
    /// last client stopped, in seconds.
    pub wall_s: f64,
    /// Rooms created.
    pub rooms: Counts,
    /// Residents publishing over WHIP.
    pub publishers: Counts,
    /// Officers and observers receiving over WHEP.
    pub subscribers: Counts,
    /// The first errors of failed joins and control calls, at most
    /// [`MAX_ERRORS`].
    pub errors: Vec<String>,
    /// Remote tracks the subscribers announced, against the tracks a room
    /// with a resident offers (one audio, one video per subscriber).
    pub tracks: TrackCounts,
    /// Video as the subscribers received it.
    pub video: VideoSummary,
    /// Audio as the subscribers received it.
    pub audio: AudioSummary,
    /// Time from CreateRoom to each subscriber's first complete video frame, ms.
    pub first_frame_ms: Option<Percentiles>,
    /// Time from CreateRoom to each subscriber's first complete keyframe,
    /// ms: the first frame a decoder could show. A server that forwards
    /// from any frame has a shorter first-frame time than this.
    pub first_keyframe_ms: Option<Percentiles>,
    /// Time from the start of each subscriber's join (AdmitParticipant) to
    /// its first complete video frame, ms.
    pub join_to_first_frame_ms: Option<Percentiles>,
    /// End-to-end delay from capture to arrival of each frame a synthetic
    /// publisher stamped (abs-capture-time), ms; 0.1 ms resolution.
    pub capture_delay_ms: Option<Percentiles>,
    /// Each subscriber's video frame jitter at the end of the run (the
    /// RFC 3550 estimate over the first packet of each frame), ms.
    pub jitter_ms: Option<Percentiles>,
    /// Time from the start of each subscriber's join until ICE and DTLS
    /// finished, ms.
    pub subscriber_connect_ms: Option<Percentiles>,
    /// Connected subscribers that received no complete video frame.
    pub subscribers_without_frames: u64,
    /// Gaps between complete frames longer than 500 ms.
    pub freezes: FreezeSummary,
    /// Bytes the server sent over UDP during the run (all rooms, media and
    /// RTCP), from `/metrics`; `None` when `/metrics` could not be read.
    pub server_egress: Option<Egress>,
    /// CPU and memory of the harness.
    pub harness: ProcessFigures,
    /// CPU and memory of the server, when its process id was given.
    pub server: Option<ProcessFigures>,
    /// Server CPU per forwarded packet over the steady window, when the
    /// server's process id was given and the window had packets.
    pub steady: Option<SteadyWindow>,
    /// Datagrams through the relays of impaired subscriber links, summed
    /// over subscribers; `None` without an impaired link.
    pub link: Option<LinkFigures>,
    /// Time VPR held each RTP packet over the steady window, from its
    /// arrival in the server's receive queue until the server had sent all
    /// it caused (`vpr_rtp_residence_seconds`): the delay the server adds.
    pub server_residence: Option<super::metrics::HistogramWindow>,
    /// One point per second of the run.
    pub timeline: Vec<TimelinePoint>,
    /// Outcome of each threshold that was set.
    pub thresholds: Vec<ThresholdResult>,
    /// Whether every threshold was met.
    pub passed: bool,
}

/// Server CPU over the steady window, from the end of the join ramp (plus
/// a margin) to the end of the run, against the RTP packets the subscribers
/// received in it. On loopback these are the server's outbound RTP packets
/// less the few lost in socket buffers. They include retransmissions and
/// padding the server sends, which a server's own forwarded counter may
/// leave out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct SteadyWindow {
    /// Start of the window, seconds from the start of the run.
    pub start_s: f64,
    /// Length of the window in seconds.
    pub seconds: f64,
    /// RTP packets (audio and video) received by all subscribers,
    /// retransmissions and padding included.
    pub packets_received: u64,
    /// The same per second.
    pub packets_per_s: f64,
    /// The server's own count of forwarded media packets, when it publishes
    /// one (VPR's `vpr_rtp_forwarded_total`, without padding probes).
    pub server_forwarded_packets: Option<f64>,
    /// Server user CPU time in the window, seconds.
    pub server_user_s: f64,
    /// Server system CPU time in the window, seconds.
    pub server_system_s: f64,
    /// User plus system CPU per received packet, microseconds.
    pub cpu_us_per_packet: f64,
    /// User plus system CPU per packet of the server's forwarded count,
    /// microseconds; `None` without that count.
    pub cpu_us_per_forwarded_packet: Option<f64>,
    /// User CPU per received packet, microseconds.
    pub user_us_per_packet: f64,
}

/// Datagrams the relays of impaired links forwarded and dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LinkFigures {
    /// Server to subscribers: forwarded.
    pub downstream_forwarded: u64,
    /// Server to subscribers: dropped by loss, rate cap or outage.
    pub downstream_dropped: u64,
    /// Subscribers to server: forwarded.
    pub upstream_forwarded: u64,
    /// Subscribers to server: dropped.
    pub upstream_dropped: u64,
}

impl LinkFigures {
    /// Sums the counters of every relay; `None` when there are none.
    pub fn sum<'a>(relays: impl IntoIterator<Item = &'a crate::relay::RelayStats>) -> Option<Self> {
        relays.into_iter().fold(None, |sum: Option<Self>, relay| {
            let mut sum = sum.unwrap_or_default();
            sum.downstream_forwarded += relay.downstream.forwarded_packets;
            sum.downstream_dropped += relay.downstream.dropped();
            sum.upstream_forwarded += relay.upstream.forwarded_packets;
            sum.upstream_dropped += relay.upstream.dropped();
            Some(sum)
        })
    }
}

/// Maximum number of error messages kept in the report.
pub const MAX_ERRORS: usize = 20;

/// Requested, connected and failed counts of one kind of thing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// How many the scenario asked for.
    pub requested: u64,
    /// How many were created or connected.
    pub connected: u64,
    /// How many failed, including joins still unfinished at the end.
    pub failed: u64,
}

/// Remote tracks expected and announced over all subscribers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TrackCounts {
    /// Tracks the connected subscribers should have received.
    pub expected: u64,
    /// Tracks they announced (`on_track`).
    pub received: u64,
}

/// Video received over all subscribers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct VideoSummary {
    /// Frames the publishers sent over the run.
    pub frames_sent: u64,
    /// Frames each subscriber should have received, summed: the frames the
    /// room's first resident sent from the subscriber's first complete frame
    /// on (from its connection for a subscriber that received none).
    pub frames_expected: u64,
    /// Complete frames received.
    pub frames_received: u64,
    /// `frames_received / frames_expected`; `None` when nothing was expected.
    pub receive_ratio: Option<f64>,
    /// Lowest receive ratio of a single subscriber.
    pub min_subscriber_receive_ratio: Option<f64>,
    /// Keyframes received.
    pub keyframes_received: u64,
    /// RTP packets received.
    pub packets_received: u64,
    /// Packets missing from the sequence numbers.
    pub packets_missing: u64,
    /// `packets_missing / (packets_received + packets_missing)`.
    pub loss_ratio: Option<f64>,
    /// Packets at or below the highest sequence number seen.
    pub packets_late: u64,
    /// Frames started but not completed.
    pub frames_incomplete: u64,
    /// RTP packets received per second per subscriber, averaged over the
    /// time each was connected.
    pub packets_per_s_per_subscriber: Option<f64>,
    /// Video RTP payload received per subscriber (first arrivals, without
    /// padding), kbit/s, averaged over the time each was connected.
    pub kbps_per_subscriber: Option<f64>,
}

/// Audio received over all subscribers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct AudioSummary {
    /// RTP packets received.
    pub packets_received: u64,
    /// Packets missing from the sequence numbers.
    pub packets_missing: u64,
    /// `packets_missing / (packets_received + packets_missing)`.
    pub loss_ratio: Option<f64>,
}

/// Freezes over all subscribers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct FreezeSummary {
    /// Freezes counted.
    pub count: u64,
    /// Subscribers with at least one freeze.
    pub subscribers_affected: u64,
    /// Time frozen, summed over all subscribers, in seconds.
    pub frozen_s: f64,
    /// Longest gap between complete frames of any subscriber, in ms.
    pub longest_gap_ms: f64,
}

/// Server UDP egress over the run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Egress {
    /// Bytes sent.
    pub bytes: f64,
    /// Average bitrate in kbit/s.
    pub kbps: f64,
    /// `kbps` divided by the connected subscribers.
    pub kbps_per_subscriber: Option<f64>,
}

/// CPU and memory figures of one process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ProcessFigures {
    /// CPU time (user plus system) used during the run, in seconds.
    pub cpu_s: f64,
    /// `cpu_s` as a percentage of one core over the run's wall time.
    pub cpu_percent_of_one_core: f64,
    /// Peak resident set size (VmHWM) at the end, in KiB.
    pub peak_rss_kib: Option<u64>,
}

/// Measurements of one second of the run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct TimelinePoint {
    /// Seconds since the start, at the end of this second.
    pub t_s: f64,
    /// Publishers connected at that moment.
    pub publishers_connected: u64,
    /// Subscribers connected at that moment.
    pub subscribers_connected: u64,
    /// Complete video frames received in this second, over all subscribers.
    pub video_frames_per_s: f64,
    /// Harness CPU in this second, percent of one core.
    pub harness_cpu_percent: f64,
    /// Server CPU in this second, percent of one core.
    pub server_cpu_percent: Option<f64>,
}

impl Report {
    /// Renders the summary table printed at the end of a run.
    pub fn summary_table(&self) -> String {
        let mut rows: Vec<(String, String)> = Vec::new();
        let mut row = |name: &str, value: String| rows.push((name.to_owned(), value));

        row("wall time", format!("{:.1} s", self.wall_s));
        row("rooms", counts(&self.rooms));
        row("publishers", counts(&self.publishers));
        row("subscribers", counts(&self.subscribers));
        row(
            "tracks received / expected",
            format!("{} / {}", self.tracks.received, self.tracks.expected),
        );
        row(
            "video frames received / expected",
            format!(
                "{} / {} (ratio {}, worst subscriber {})",
                self.video.frames_received,
                self.video.frames_expected,
                optional(self.video.receive_ratio, 3),
                optional(self.video.min_subscriber_receive_ratio, 3)
            ),
        );
        row("first frame after CreateRoom", percentiles_ms(&self.first_frame_ms));
        row("first keyframe after CreateRoom", percentiles_ms(&self.first_keyframe_ms));
        row("first frame after join", percentiles_ms(&self.join_to_first_frame_ms));
        row("end-to-end delay (capture to arrival)", percentiles_ms(&self.capture_delay_ms));
        row("video jitter at the subscribers", percentiles_ms(&self.jitter_ms));
        row("subscriber connect", percentiles_ms(&self.subscriber_connect_ms));
        row("subscribers without frames", self.subscribers_without_frames.to_string());
        row(
            "video packets lost",
            format!(
                "{} of {} missing on arrival (ratio {}), late {} (retransmitted or reordered), incomplete frames {}",
                self.video.packets_missing,
                self.video.packets_received + self.video.packets_missing,
                optional(self.video.loss_ratio, 4),
                self.video.packets_late,
                self.video.frames_incomplete
            ),
        );
        row(
            "audio packets lost",
            format!(
                "{} of {} (ratio {})",
                self.audio.packets_missing,
                self.audio.packets_received + self.audio.packets_missing,
                optional(self.audio.loss_ratio, 4)
            ),
        );
        row(
            "freezes (> 500 ms)",
            format!(
                "{} on {} subscribers, {:.1} s frozen, longest gap {:.0} ms",
                self.freezes.count,
                self.freezes.subscribers_affected,
                self.freezes.frozen_s,
                self.freezes.longest_gap_ms
            ),
        );
        row(
            "video packets/s per subscriber",
            optional(self.video.packets_per_s_per_subscriber, 1),
        );
        row("video kbit/s per subscriber", optional(self.video.kbps_per_subscriber, 1));
        row(
            "server UDP egress",
            match &self.server_egress {
                Some(egress) => format!(
                    "{:.0} kbit/s ({} kbit/s per subscriber)",
                    egress.kbps,
                    optional(egress.kbps_per_subscriber, 0)
                ),
                None => "not measured".to_owned(),
            },
        );
        row("harness", process(&Some(self.harness)));
        row("server", process(&self.server));
        row(
            "steady window",
            match &self.steady {
                Some(steady) => {
                    // /proc counts CPU time in clock ticks (10 ms at 100 Hz),
                    // so a short or quiet window holds few of them.
                    let ticks = ((steady.server_user_s + steady.server_system_s)
                        * super::process::clock_ticks_per_second())
                    .round();
                    format!(
                        "{:.1} s from {:.1} s: {:.0} packets/s received by subscribers; server CPU {:.1} µs \
                         per received packet (user {:.1}, system {:.1}; {ticks:.0} clock ticks, each {:.0} %), \
                         {} µs per packet the server forwarded",
                        steady.seconds,
                        steady.start_s,
                        steady.packets_per_s,
                        steady.cpu_us_per_packet,
                        steady.user_us_per_packet,
                        1e6 * steady.server_system_s / steady.packets_received as f64,
                        100.0 / ticks.max(1.0),
                        optional(steady.cpu_us_per_forwarded_packet, 1)
                    )
                }
                None => "not measured".to_owned(),
            },
        );
        if let Some(link) = &self.link {
            let dropped = |dropped: u64, forwarded: u64| {
                format!("{dropped} of {} dropped", dropped + forwarded)
            };
            row(
                "impaired links",
                format!(
                    "to subscribers {}, from subscribers {}",
                    dropped(link.downstream_dropped, link.downstream_forwarded),
                    dropped(link.upstream_dropped, link.upstream_forwarded)
                ),
            );
        }
        row(
            "server delay",
            match &self.server_residence {
                Some(window) => format!(
                    "{} RTP packets in the steady window: p50 ≤ {} ms, p99 ≤ {} ms",
                    window.count,
                    optional(window.p50_at_most_ms, 2),
                    window.p99_at_most_ms.map_or_else(|| "more than 100".to_owned(), |ms| format!("{ms:.2}")),
                ),
                None => "not measured".to_owned(),
            },
        );
        for threshold in &self.thresholds {
            row("threshold", threshold.describe());
        }

        let width = rows.iter().map(|(name, _)| name.len()).max().unwrap_or(0);
        let mut table = String::new();
        for (name, value) in rows {
            let _ = writeln!(table, "{name:<width$}  {value}");
        }
        table
    }
}

fn counts(counts: &Counts) -> String {
    format!(
        "{} connected of {} requested, {} failed",
        counts.connected, counts.requested, counts.failed
    )
}

fn optional(value: Option<f64>, decimals: usize) -> String {
    match value {
        Some(value) => format!("{value:.decimals$}"),
        None => "-".to_owned(),
    }
}

fn percentiles_ms(percentiles: &Option<Percentiles>) -> String {
    match percentiles {
        Some(p) => format!(
            "p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            p.p50, p.p95, p.p99, p.max
        ),
        None => "-".to_owned(),
    }
}

fn process(figures: &Option<ProcessFigures>) -> String {
    match figures {
        Some(figures) => format!(
            "CPU {:.2} s ({:.1}% of one core), peak RSS {}",
            figures.cpu_s,
            figures.cpu_percent_of_one_core,
            match figures.peak_rss_kib {
                Some(kib) => format!("{:.1} MiB", kib as f64 / 1024.0),
                None => "-".to_owned(),
            }
        ),
        None => "not measured (no --server-pid)".to_owned(),
    }
}
