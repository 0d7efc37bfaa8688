//! Sampler of a run: every 50 ms it feeds each subscriber's frame counter to
//! its freeze detector and notes the source's frame count at a
//! subscriber's first frame; every second it adds a point to the timeline
//! (clients connected, frames received, harness and server CPU) and
//! updates the progress bar.

use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use tokio::sync::watch;

use super::join::Registry;
use super::process::ProcessRef;
use super::report::TimelinePoint;

/// Interval between frame-counter samples; the resolution of freeze gaps.
pub const SAMPLE_INTERVAL: Duration = Duration::from_millis(50);

/// Samples per timeline point.
const SAMPLES_PER_POINT: u32 = 20;

/// What the sampler watches.
pub struct Sampler {
    /// Clients of the run.
    pub registry: Arc<Registry>,
    /// Start of the run.
    pub started: Instant,
    /// Server process, if its id was given.
    pub server: Option<ProcessRef>,
    /// Progress bar to update once a second; its position is in seconds.
    pub progress: ProgressBar,
    /// Subscribers the scenario asks for, for the progress message.
    pub subscribers_requested: u64,
}

/// CPU seconds of a process at one moment, to turn into a percentage.
struct CpuMark {
    process: ProcessRef,
    cpu_s: f64,
}

impl CpuMark {
    fn new(process: ProcessRef) -> Self {
        Self {
            process,
            cpu_s: process.cpu_seconds().unwrap_or(0.0),
        }
    }

    /// Returns the CPU used since the last call as percent of one core over
    /// `elapsed`; `None` once the process cannot be read.
    fn percent_since(&mut self, elapsed: Duration) -> Option<f64> {
        let now = self.process.cpu_seconds().ok()?;
        let used = now - self.cpu_s;
        self.cpu_s = now;
        Some(100.0 * used / elapsed.as_secs_f64().max(1e-3))
    }
}

impl Sampler {
    /// Samples until `stop` turns true and returns the timeline.
    pub async fn run(self, mut stop: watch::Receiver<bool>) -> Vec<TimelinePoint> {
        let mut timeline = Vec::new();
        let mut interval = tokio::time::interval(SAMPLE_INTERVAL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut harness = CpuMark::new(ProcessRef::SelfProcess);
        let mut server = self.server.map(CpuMark::new);
        let mut samples = 0u32;
        let mut last_point_at = Instant::now();
        let mut last_frames = 0u64;

        loop {
            tokio::select! {
                _ = interval.tick() => {}
                _ = stop.changed() => break,
            }
            let (frames, subscribers_connected) = self.observe_subscribers();
            samples += 1;
            if samples < SAMPLES_PER_POINT {
                continue;
            }
            samples = 0;

            let now = Instant::now();
            let elapsed = now - last_point_at;
            last_point_at = now;
            let point = TimelinePoint {
                t_s: (now - self.started).as_secs_f64(),
                publishers_connected: self.registry.publishers().len() as u64,
                subscribers_connected,
                // A subscriber that joined since the last point adds the few
                // frames it got before its first sample to this second.
                video_frames_per_s: frames.saturating_sub(last_frames) as f64 / elapsed.as_secs_f64(),
                harness_cpu_percent: harness.percent_since(elapsed).unwrap_or(0.0),
                server_cpu_percent: server.as_mut().and_then(|mark| mark.percent_since(elapsed)),
            };
            last_frames = frames;
            self.show(&point);
            timeline.push(point);
        }
        timeline
    }

    /// Feeds every subscriber's frame count to its freeze detector and sets
    /// the expected-frames baseline of subscribers with a first frame;
    /// returns the frames received over all subscribers and how many are
    /// connected.
    fn observe_subscribers(&self) -> (u64, u64) {
        let now = Instant::now();
        let source_frames = self.registry.source_frames_by_room();
        let mut subscribers = self.registry.subscribers();
        let mut frames = 0;
        for entry in subscribers.iter_mut() {
            let received = entry.subscriber.stats().video.frames;
            entry.freeze.observe(now, received);
            if received > 0 && entry.first_frame_baseline_frames.is_none() {
                if let Some(sent) = source_frames.get(&entry.room) {
                    entry.first_frame_baseline_frames = Some(sent.saturating_sub(received));
                }
            }
            frames += received;
        }
        (frames, subscribers.len() as u64)
    }

    fn show(&self, point: &TimelinePoint) {
        self.progress.set_position(point.t_s as u64);
        let server = match point.server_cpu_percent {
            Some(percent) => format!(", server CPU {percent:.0}%"),
            None => String::new(),
        };
        self.progress.set_message(format!(
            "subscribers {}/{}, publishers {}, {:.0} frames/s, harness CPU {:.0}%{server}",
            point.subscribers_connected,
            self.subscribers_requested,
            point.publishers_connected,
            point.video_frames_per_s,
            point.harness_cpu_percent,
        ));
    }
}
