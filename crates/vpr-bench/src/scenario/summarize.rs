//! Turns the final state of every subscriber into the report's receive
//! figures: tracks, frames expected and received, loss, first-frame times
//! and freezes. Pure computation, so that it is tested without a server.

use std::time::{Duration, Instant};

use super::freeze::FreezeDetector;
use super::percentile::Percentiles;
use super::report::{AudioSummary, FreezeSummary, TrackCounts, VideoSummary};
use crate::client::SubscriberStats;

/// Tracks a subscriber should receive from a room with a resident: one
/// audio and one video.
pub const TRACKS_PER_SUBSCRIBER: u64 = 2;

/// Final state of one subscriber.
#[derive(Debug, Clone)]
pub struct SubscriberOutcome {
    /// Last stats snapshot, taken after the publishers stopped and in-flight
    /// packets arrived.
    pub stats: SubscriberStats,
    /// When the harness sent CreateRoom for the subscriber's room.
    pub room_created_at: Instant,
    /// When the harness sent AdmitParticipant for the subscriber.
    pub join_started_at: Instant,
    /// When ICE and DTLS finished.
    pub connected_at: Instant,
    /// When the publishers were stopped.
    pub media_stopped_at: Instant,
    /// Video frames the room's first resident sent from the subscriber's
    /// first complete frame on (from its connection if it received none).
    pub expected_frames: u64,
    /// Whether the room had a connected resident.
    pub room_has_publisher: bool,
    /// Freezes seen during the run.
    pub freeze: FreezeDetector,
    /// Counters of the relay on the subscriber's impaired link, if any.
    pub link: Option<crate::relay::RelayStats>,
}

/// Receive figures over all subscribers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReceiveSummary {
    /// Tracks expected and announced.
    pub tracks: TrackCounts,
    /// Video figures.
    pub video: VideoSummary,
    /// Audio figures.
    pub audio: AudioSummary,
    /// CreateRoom to first complete frame, ms.
    pub first_frame_ms: Option<Percentiles>,
    /// AdmitParticipant to first complete frame, ms.
    pub join_to_first_frame_ms: Option<Percentiles>,
    /// Capture to arrival of each stamped frame (synthetic publishers), ms.
    pub capture_delay_ms: Option<Percentiles>,
    /// Each subscriber's interarrival jitter of video at the end, ms.
    pub jitter_ms: Option<Percentiles>,
    /// AdmitParticipant to connected, ms.
    pub connect_ms: Option<Percentiles>,
    /// Subscribers that received no complete frame.
    pub without_frames: u64,
    /// Freezes.
    pub freezes: FreezeSummary,
}

/// Summarizes `outcomes`; `frames_sent` is the total the publishers sent.
pub fn summarize(outcomes: &[SubscriberOutcome], frames_sent: u64) -> ReceiveSummary {
    let mut summary = ReceiveSummary::default();
    summary.video.frames_sent = frames_sent;
    let mut first_frame = Vec::new();
    let mut join_to_first_frame = Vec::new();
    let mut connect = Vec::new();
    let mut subscriber_ratios = Vec::new();
    let mut packet_rates = Vec::new();
    let mut bitrates_kbps = Vec::new();
    let mut jitter_ms = Vec::new();
    let mut capture_delay = crate::client::capture_time::DelayHistogram::default();

    for outcome in outcomes {
        let stats = &outcome.stats;
        capture_delay.merge(&stats.video.capture_delay);
        add_counters(&mut summary, outcome);
        connect.push(millis(outcome.connected_at - outcome.join_started_at));
        match stats.video.first_frame_at {
            Some(at) => {
                first_frame.push(millis(at.saturating_duration_since(outcome.room_created_at)));
                join_to_first_frame.push(millis(at.saturating_duration_since(outcome.join_started_at)));
            }
            None => summary.without_frames += 1,
        }
        if outcome.expected_frames > 0 {
            subscriber_ratios.push(stats.video.frames as f64 / outcome.expected_frames as f64);
        }
        let connected_for = outcome.media_stopped_at.saturating_duration_since(outcome.connected_at);
        if connected_for >= Duration::from_secs(1) {
            packet_rates.push(stats.video.packets as f64 / connected_for.as_secs_f64());
            bitrates_kbps.push(stats.video.payload_bytes as f64 * 8.0 / 1000.0 / connected_for.as_secs_f64());
        }
        if stats.video.packets > 0 {
            jitter_ms.push(stats.video.jitter.as_secs_f64() * 1000.0);
        }
    }

    let video = &mut summary.video;
    video.receive_ratio = ratio(video.frames_received, video.frames_expected);
    video.min_subscriber_receive_ratio = subscriber_ratios.into_iter().reduce(f64::min);
    video.loss_ratio = ratio(video.packets_missing, video.packets_received + video.packets_missing);
    video.packets_per_s_per_subscriber = mean(&packet_rates);
    video.kbps_per_subscriber = mean(&bitrates_kbps);
    let audio = &mut summary.audio;
    audio.loss_ratio = ratio(audio.packets_missing, audio.packets_received + audio.packets_missing);
    summary.first_frame_ms = Percentiles::of(&first_frame);
    summary.join_to_first_frame_ms = Percentiles::of(&join_to_first_frame);
    summary.capture_delay_ms = Percentiles::of_histogram(&capture_delay);
    summary.jitter_ms = Percentiles::of(&jitter_ms);
    summary.connect_ms = Percentiles::of(&connect);
    summary
}

fn add_counters(summary: &mut ReceiveSummary, outcome: &SubscriberOutcome) {
    let stats = &outcome.stats;
    if outcome.room_has_publisher {
        summary.tracks.expected += TRACKS_PER_SUBSCRIBER;
    }
    summary.tracks.received += u64::from(stats.tracks);

    let video = &mut summary.video;
    video.frames_expected += outcome.expected_frames;
    video.frames_received += stats.video.frames;
    video.keyframes_received += stats.video.keyframes;
    video.packets_received += stats.video.packets;
    video.packets_missing += stats.video.missing_packets;
    video.packets_late += stats.video.late_packets;
    video.frames_incomplete += stats.video.incomplete_frames;

    let audio = &mut summary.audio;
    audio.packets_received += stats.audio.packets;
    audio.packets_missing += stats.audio.missing_packets;

    let freezes = &mut summary.freezes;
    freezes.count += outcome.freeze.freezes();
    if outcome.freeze.freezes() > 0 {
        freezes.subscribers_affected += 1;
    }
    freezes.frozen_s += outcome.freeze.frozen_total().as_secs_f64();
    freezes.longest_gap_ms = freezes.longest_gap_ms.max(millis(outcome.freeze.longest_gap()));
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn ratio(numerator: u64, denominator: u64) -> Option<f64> {
    (denominator > 0).then(|| numerator as f64 / denominator as f64)
}

fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(start: Instant, first_frame_ms: Option<u64>, frames: u64, expected: u64) -> SubscriberOutcome {
        let mut stats = SubscriberStats {
            tracks: 2,
            ..SubscriberStats::default()
        };
        stats.video.frames = frames;
        stats.video.packets = frames * 2;
        stats.video.payload_bytes = frames * 1000;
        stats.video.jitter = Duration::from_micros(frames * 10);
        stats.video.missing_packets = 1;
        stats.audio.packets = 100;
        stats.video.first_frame_at = first_frame_ms.map(|ms| start + Duration::from_millis(ms));
        SubscriberOutcome {
            stats,
            room_created_at: start,
            join_started_at: start + Duration::from_millis(100),
            connected_at: start + Duration::from_millis(300),
            media_stopped_at: start + Duration::from_millis(10_300),
            expected_frames: expected,
            room_has_publisher: true,
            freeze: FreezeDetector::default(),
            link: None,
        }
    }

    #[test]
    fn sums_and_ratios_over_subscribers() {
        let start = Instant::now();
        let outcomes = [
            outcome(start, Some(400), 290, 300),
            outcome(start, Some(600), 150, 300),
        ];
        let summary = summarize(&outcomes, 310);

        assert_eq!(summary.tracks, TrackCounts { expected: 4, received: 4 });
        assert_eq!(summary.video.frames_sent, 310);
        assert_eq!(summary.video.frames_expected, 600);
        assert_eq!(summary.video.frames_received, 440);
        assert_eq!(summary.video.receive_ratio, Some(440.0 / 600.0));
        assert_eq!(summary.video.min_subscriber_receive_ratio, Some(0.5));
        assert_eq!(summary.video.packets_missing, 2);
        assert_eq!(summary.video.loss_ratio, Some(2.0 / 882.0));
        // 580 and 300 packets over 10 s connected.
        assert_eq!(summary.video.packets_per_s_per_subscriber, Some(44.0));
        // 290 000 and 150 000 bytes over 10 s: 232 and 120 kbit/s.
        assert_eq!(summary.video.kbps_per_subscriber, Some(176.0));
        let jitter = summary.jitter_ms.unwrap();
        assert!((jitter.p50 - 1.5).abs() < 1e-9, "{jitter:?}");
        assert!((jitter.max - 2.9).abs() < 1e-9, "{jitter:?}");
        assert_eq!(summary.audio.packets_received, 200);
        assert_eq!(summary.audio.loss_ratio, Some(0.0));
        assert_eq!(summary.without_frames, 0);

        let first_frame = summary.first_frame_ms.unwrap();
        assert!((first_frame.p50 - 400.0).abs() < 1e-6, "{first_frame:?}");
        assert!((first_frame.p95 - 600.0).abs() < 1e-6, "{first_frame:?}");
        let join_to_first_frame = summary.join_to_first_frame_ms.unwrap();
        assert!((join_to_first_frame.p50 - 300.0).abs() < 1e-6);
        let connect = summary.connect_ms.unwrap();
        assert!((connect.max - 200.0).abs() < 1e-6);
    }

    #[test]
    fn subscriber_without_frames_is_counted_not_timed() {
        let start = Instant::now();
        let outcomes = [outcome(start, Some(400), 290, 300), outcome(start, None, 0, 300)];
        let summary = summarize(&outcomes, 300);
        assert_eq!(summary.without_frames, 1);
        assert_eq!(summary.first_frame_ms.unwrap().max, 400.0);
        assert_eq!(summary.video.min_subscriber_receive_ratio, Some(0.0));
    }

    #[test]
    fn no_expected_frames_gives_no_ratio() {
        let start = Instant::now();
        let mut lone = outcome(start, None, 0, 0);
        lone.room_has_publisher = false;
        lone.stats.tracks = 0;
        let summary = summarize(&[lone], 0);
        assert_eq!(summary.video.receive_ratio, None);
        assert_eq!(summary.tracks, TrackCounts { expected: 0, received: 0 });
        assert_eq!(summary.first_frame_ms, None);
    }
}
