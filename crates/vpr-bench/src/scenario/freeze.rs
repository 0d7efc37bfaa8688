//! Freeze detection from sampled frame counters: a freeze is a gap of more
//! than [`FREEZE_GAP`] between two samples in which the count of complete
//! frames rose. The subscriber stats hold no per-frame arrival times, so
//! gaps are measured at the sampling interval's resolution.

use std::time::{Duration, Instant};

/// Gap between complete frames above which the picture counts as frozen.
pub const FREEZE_GAP: Duration = Duration::from_millis(500);

/// Follows one subscriber's frame counter and counts freezes.
#[derive(Debug, Clone, Default)]
pub struct FreezeDetector {
    last_frames: u64,
    last_frame_seen_at: Option<Instant>,
    freezes: u64,
    frozen_total: Duration,
    longest: Duration,
}

impl FreezeDetector {
    /// Records the frame count sampled at `now`. Gaps before the first frame
    /// do not count: that time is measured as time to first frame.
    pub fn observe(&mut self, now: Instant, frames: u64) {
        if frames <= self.last_frames {
            return;
        }
        if let Some(previous) = self.last_frame_seen_at {
            self.record_gap(now.saturating_duration_since(previous));
        }
        self.last_frames = frames;
        self.last_frame_seen_at = Some(now);
    }

    /// Closes the measurement at `now`: a stall that is still running counts
    /// as a freeze when it is already longer than [`FREEZE_GAP`].
    pub fn finish(&mut self, now: Instant) {
        if let Some(previous) = self.last_frame_seen_at.take() {
            self.record_gap(now.saturating_duration_since(previous));
        }
    }

    /// Freezes seen so far.
    pub fn freezes(&self) -> u64 {
        self.freezes
    }

    /// Time spent frozen, summed over the freezes.
    pub fn frozen_total(&self) -> Duration {
        self.frozen_total
    }

    /// Maximum gap between complete frames seen so far.
    pub fn longest_gap(&self) -> Duration {
        self.longest
    }

    fn record_gap(&mut self, gap: Duration) {
        self.longest = self.longest.max(gap);
        if gap > FREEZE_GAP {
            self.freezes += 1;
            self.frozen_total += gap;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(value: u64) -> Duration {
        Duration::from_millis(value)
    }

    #[test]
    fn steady_frames_have_no_freeze() {
        let start = Instant::now();
        let mut detector = FreezeDetector::default();
        for step in 0..100u64 {
            detector.observe(start + ms(step * 50), step + 1);
        }
        detector.finish(start + ms(99 * 50 + 40));
        assert_eq!(detector.freezes(), 0);
        assert_eq!(detector.longest_gap(), ms(50));
    }

    #[test]
    fn gap_over_half_second_counts_once() {
        let start = Instant::now();
        let mut detector = FreezeDetector::default();
        detector.observe(start, 1);
        detector.observe(start + ms(100), 2);
        // No new frame for 700 ms, sampled several times.
        detector.observe(start + ms(300), 2);
        detector.observe(start + ms(600), 2);
        detector.observe(start + ms(800), 3);
        detector.observe(start + ms(850), 4);
        detector.finish(start + ms(900));
        assert_eq!(detector.freezes(), 1);
        assert_eq!(detector.frozen_total(), ms(700));
        assert_eq!(detector.longest_gap(), ms(700));
    }

    #[test]
    fn wait_for_first_frame_is_no_freeze() {
        let start = Instant::now();
        let mut detector = FreezeDetector::default();
        detector.observe(start, 0);
        detector.observe(start + ms(2000), 1);
        detector.finish(start + ms(2050));
        assert_eq!(detector.freezes(), 0);
    }

    #[test]
    fn stall_until_end_counts() {
        let start = Instant::now();
        let mut detector = FreezeDetector::default();
        detector.observe(start, 5);
        detector.finish(start + ms(1500));
        assert_eq!(detector.freezes(), 1);
        assert_eq!(detector.frozen_total(), ms(1500));
    }
}
