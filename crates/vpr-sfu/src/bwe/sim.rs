//! Test helper: a simulated bottleneck link and a sender that behaves like
//! the worker, driving a [`SendSideEstimator`] in 1 ms steps of explicit
//! time.
//!
//! The link is a FIFO queue drained at `capacity_bps` with a fixed one-way
//! delay. A packet that would wait longer than `max_queue` is dropped, and
//! `loss_every` drops every n-th packet on top. Media goes out as 30 frames
//! per second, each a burst of packets of at most 1200 bytes, at
//! min(estimate, `media_limit_bps`). Probe padding goes out in 300-byte
//! packets, because RTP padding is at most 255 bytes. Feedback covers every
//! packet whose fate the receiver knew one-way delay ago, every 50 ms, in
//! send order, as the send history reports them.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rtc::interceptor::PacketReport;
use rtc::rtcp::transport_feedbacks::cc_feedback_report::Ecn;

use super::{ProbeCluster, SendSideEstimator};

const STEP: Duration = Duration::from_millis(1);
const FRAME_INTERVAL: Duration = Duration::from_micros(33_333);
const FEEDBACK_INTERVAL: Duration = Duration::from_millis(50);
const MEDIA_PACKET_BYTES: usize = 1_200;
const PADDING_PACKET_BYTES: usize = 300;
const SSRC: u32 = 0x5eed;
/// The receiver's clock starts at an unrelated value.
const REMOTE_CLOCK_OFFSET: Duration = Duration::from_secs(1_000);

/// A bottleneck with a drop-tail queue measured in time.
#[derive(Debug, Clone)]
pub(crate) struct Link {
    pub(crate) capacity_bps: f64,
    pub(crate) delay: Duration,
    pub(crate) max_queue: Duration,
    pub(crate) loss_every: Option<u64>,
    free_at: Option<Instant>,
    sent: u64,
}

/// Fate of one packet, on the sender's clock.
#[derive(Debug, Clone, Copy)]
struct Fate {
    arrival: Option<Instant>,
    /// When the receiver could tell: arrival, or when a later packet
    /// arrived for a dropped one.
    known_at: Instant,
}

impl Link {
    pub(crate) fn new(capacity_bps: f64, delay: Duration) -> Self {
        Link { capacity_bps, delay, max_queue: Duration::from_millis(200), loss_every: None, free_at: None, sent: 0 }
    }

    fn send(&mut self, departure: Instant, size: usize) -> Fate {
        self.sent += 1;
        let start = self.free_at.map_or(departure, |free| free.max(departure));
        let waiting = start.saturating_duration_since(departure);
        let random_loss = self.loss_every.is_some_and(|every| self.sent.is_multiple_of(every));
        if waiting > self.max_queue || random_loss {
            return Fate { arrival: None, known_at: start + self.delay };
        }
        let serialization = Duration::from_secs_f64(size as f64 * 8.0 / self.capacity_bps);
        let done = start + serialization;
        self.free_at = Some(done);
        let arrival = done + self.delay;
        Fate { arrival: Some(arrival), known_at: arrival }
    }
}

struct InFlight {
    report: PacketReport,
    known_at: Instant,
}

struct RunningCluster {
    cluster: ProbeCluster,
    until: Instant,
    next_packet_at: Instant,
}

/// Sender, link and feedback loop around one estimator.
pub(crate) struct Simulation {
    pub(crate) epoch: Instant,
    pub(crate) now: Instant,
    pub(crate) link: Link,
    pub(crate) estimator: SendSideEstimator,
    pub(crate) media_limit_bps: f64,
    /// Estimate after every step, against time since the epoch.
    pub(crate) trace: Vec<(Duration, f64)>,
    /// Clusters started, with their start time.
    pub(crate) clusters: Vec<(Duration, ProbeCluster)>,
    in_flight: VecDeque<InFlight>,
    next_id: u64,
    sequence_number: u16,
    next_frame_at: Instant,
    next_feedback_at: Instant,
    cluster: Option<RunningCluster>,
}

impl Simulation {
    pub(crate) fn new(epoch: Instant, link: Link, estimator: SendSideEstimator) -> Self {
        Simulation {
            epoch,
            now: epoch,
            link,
            estimator,
            media_limit_bps: f64::INFINITY,
            trace: Vec::new(),
            clusters: Vec::new(),
            in_flight: VecDeque::new(),
            next_id: 0,
            sequence_number: 0,
            next_frame_at: epoch,
            next_feedback_at: epoch + FEEDBACK_INTERVAL,
            cluster: None,
        }
    }

    pub(crate) fn elapsed(&self) -> Duration {
        self.now.saturating_duration_since(self.epoch)
    }

    fn media_rate_bps(&self) -> f64 {
        self.estimator.estimate_bps().min(self.media_limit_bps)
    }

    /// Runs until `until` after the epoch.
    pub(crate) fn run_until(&mut self, until: Duration) {
        while self.elapsed() < until {
            self.step();
        }
    }

    fn step(&mut self) {
        self.now += STEP;
        let now = self.now;

        if self.cluster.is_none() {
            if let Some(cluster) = self.estimator.poll_probe(now, self.media_rate_bps()) {
                self.clusters.push((self.elapsed(), cluster));
                self.cluster = Some(RunningCluster { cluster, until: now + cluster.duration, next_packet_at: now });
            }
        }

        if now >= self.next_frame_at {
            self.next_frame_at += FRAME_INTERVAL;
            let mut frame_bytes = (self.media_rate_bps() / 30.0 / 8.0) as usize;
            while frame_bytes > 0 {
                let size = frame_bytes.min(MEDIA_PACKET_BYTES);
                frame_bytes -= size;
                self.send(size.max(100));
            }
        }

        self.send_padding();

        if now >= self.next_feedback_at {
            self.next_feedback_at += FEEDBACK_INTERVAL;
            self.deliver_feedback();
        }
        self.trace.push((self.elapsed(), self.estimator.estimate_bps()));
    }

    fn send_padding(&mut self) {
        let Some(running) = self.cluster.as_mut() else {
            return;
        };
        if self.now >= running.until {
            self.cluster = None;
            return;
        }
        let interval = Duration::from_secs_f64(PADDING_PACKET_BYTES as f64 * 8.0 / running.cluster.padding_bps);
        let mut due = Vec::new();
        while running.next_packet_at <= self.now {
            due.push(running.cluster.id);
            running.next_packet_at += interval;
        }
        for cluster_id in due {
            let sequence_number = self.send(PADDING_PACKET_BYTES);
            self.estimator.on_probe_packet_sent(cluster_id, SSRC, sequence_number);
        }
    }

    fn send(&mut self, size: usize) -> u16 {
        let sequence_number = self.sequence_number;
        self.sequence_number = self.sequence_number.wrapping_add(1);
        let fate = self.link.send(self.now, size);
        let report = PacketReport {
            ssrc: SSRC,
            id: self.next_id,
            rtp_sequence_number: sequence_number,
            is_twcc: true,
            twcc_sequence_number: self.next_id as u16,
            size,
            arrived: fate.arrival.is_some(),
            departure: self.now,
            arrival: fate
                .arrival
                .map(|arrival| arrival.saturating_duration_since(self.epoch) + REMOTE_CLOCK_OFFSET),
            ecn: Ecn::default(),
        };
        self.next_id += 1;
        self.in_flight.push_back(InFlight { report, known_at: fate.known_at });
        sequence_number
    }

    fn deliver_feedback(&mut self) {
        // The feedback packet itself takes one-way delay to come back.
        let horizon = self.now.checked_sub(self.link.delay).unwrap_or(self.epoch);
        let mut reports = Vec::new();
        while self.in_flight.front().is_some_and(|packet| packet.known_at <= horizon) {
            if let Some(packet) = self.in_flight.pop_front() {
                reports.push(packet.report);
            }
        }
        self.estimator.on_packet_reports(self.now, &reports);
    }

    /// First time the estimate was above `bps`, at or after `from`.
    pub(crate) fn first_above(&self, bps: f64, from: Duration) -> Option<Duration> {
        self.trace.iter().find(|(at, estimate)| *at >= from && *estimate > bps).map(|entry| entry.0)
    }

    /// First time the estimate was below `bps`, at or after `from`.
    pub(crate) fn first_below(&self, bps: f64, from: Duration) -> Option<Duration> {
        self.trace.iter().find(|(at, estimate)| *at >= from && *estimate < bps).map(|entry| entry.0)
    }

    /// Lowest and highest estimate in `[from, to)`.
    pub(crate) fn range(&self, from: Duration, to: Duration) -> (f64, f64) {
        self.trace
            .iter()
            .filter(|(at, _)| *at >= from && *at < to)
            .fold((f64::INFINITY, 0.0_f64), |(low, high), (_, estimate)| (low.min(*estimate), high.max(*estimate)))
    }

    /// Formats the estimate every 250 ms, for a test's output.
    pub(crate) fn summary(&self) -> String {
        self.trace
            .iter()
            .filter(|(at, _)| at.as_millis() % 250 == 0)
            .map(|(at, estimate)| format!("{:.2}s={:.0}k", at.as_secs_f64(), estimate / 1_000.0))
            .collect::<Vec<_>>()
            .join(" ")
    }
}
