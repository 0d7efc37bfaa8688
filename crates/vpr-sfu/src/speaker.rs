//! Active-speaker detection from the RFC 6464 audio-level header extension.
//!
//! Each audio packet's level (0 to 127 in -dBov; 0 is loudest) feeds a
//! per-participant loudness average. The loudest participant above a floor
//! becomes the active speaker. Another takes over only when it is louder by
//! a margin, so two people talking at once do not make the choice flap.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Loudness (127 minus the level) below which a participant counts as silent.
pub const SPEECH_FLOOR: f64 = 60.0;
/// How much louder a participant must be to take over from the current one.
pub const SWITCH_MARGIN: f64 = 6.0;
/// Weight of a new packet in the moving average.
const SMOOTHING: f64 = 0.1;
/// A participant with no audio packet for this long counts as silent.
const STALE_AFTER: Duration = Duration::from_millis(1_000);

#[derive(Debug, Clone, Copy)]
struct Loudness {
    average: f64,
    updated: Instant,
}

/// Active-speaker state of one room.
#[derive(Debug, Default)]
pub struct SpeakerDetector {
    loudness: HashMap<String, Loudness>,
    active: Option<String>,
}

impl SpeakerDetector {
    /// Records one packet's audio level for `participant_id`. `voice` is the
    /// extension's voice-activity flag; packets without voice count as silence.
    pub fn observe(&mut self, participant_id: &str, level: u8, voice: bool, now: Instant) {
        let loudness = if voice { 127.0 - f64::from(level.min(127)) } else { 0.0 };
        let entry = self
            .loudness
            .entry(participant_id.to_owned())
            .or_insert(Loudness { average: loudness, updated: now });
        entry.average += SMOOTHING * (loudness - entry.average);
        entry.updated = now;
    }

    /// Forgets a participant that left.
    pub fn remove(&mut self, participant_id: &str) {
        self.loudness.remove(participant_id);
        if self.active.as_deref() == Some(participant_id) {
            self.active = None;
        }
    }

    /// Returns the new active speaker when it changed since the last call.
    pub fn poll(&mut self, now: Instant) -> Option<String> {
        let current = |id: &str, l: &Loudness| {
            let fresh = now.saturating_duration_since(l.updated) < STALE_AFTER;
            (fresh && l.average >= SPEECH_FLOOR).then(|| (id.to_owned(), l.average))
        };
        let loudest = self
            .loudness
            .iter()
            .filter_map(|(id, l)| current(id, l))
            .max_by(|a, b| a.1.total_cmp(&b.1))?;

        let active_loudness = self
            .active
            .as_deref()
            .and_then(|id| self.loudness.get(id).and_then(|l| current(id, l)))
            .map(|(_, loudness)| loudness);
        let takes_over = match active_loudness {
            None => true,
            Some(active) => loudest.0 != *self.active.as_ref().expect("active is set") && loudest.1 >= active + SWITCH_MARGIN,
        };
        if takes_over && self.active.as_deref() != Some(loudest.0.as_str()) {
            self.active = Some(loudest.0.clone());
            return Some(loudest.0);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(detector: &mut SpeakerDetector, id: &str, level: u8, start: Instant, packets: u32) -> Instant {
        let mut now = start;
        for _ in 0..packets {
            detector.observe(id, level, true, now);
            now += Duration::from_millis(20);
        }
        now
    }

    #[test]
    fn loudest_speaker_becomes_active() {
        let start = Instant::now();
        let mut detector = SpeakerDetector::default();
        let now = feed(&mut detector, "resident", 30, start, 50);
        feed(&mut detector, "officer", 100, start, 50);
        assert_eq!(detector.poll(now).as_deref(), Some("resident"));
        assert_eq!(detector.poll(now), None, "no change, no report");
    }

    #[test]
    fn silence_is_never_active() {
        let start = Instant::now();
        let mut detector = SpeakerDetector::default();
        let now = feed(&mut detector, "officer", 110, start, 50);
        assert_eq!(detector.poll(now), None);
    }

    #[test]
    fn takeover_needs_margin() {
        let start = Instant::now();
        let mut detector = SpeakerDetector::default();
        let now = feed(&mut detector, "resident", 40, start, 50);
        assert_eq!(detector.poll(now).as_deref(), Some("resident"));
        let both = |detector: &mut SpeakerDetector, officer_level: u8, mut t: Instant| {
            for _ in 0..50 {
                detector.observe("resident", 40, true, t);
                detector.observe("officer", officer_level, true, t);
                t += Duration::from_millis(20);
            }
            t
        };
        // Slightly louder while the resident keeps talking: not enough.
        let now = both(&mut detector, 37, now);
        assert_eq!(detector.poll(now), None);
        // Much louder: the officer takes over.
        let now = both(&mut detector, 20, now);
        assert_eq!(detector.poll(now).as_deref(), Some("officer"));
    }

    #[test]
    fn stale_speaker_is_replaced() {
        let start = Instant::now();
        let mut detector = SpeakerDetector::default();
        let now = feed(&mut detector, "resident", 30, start, 50);
        assert_eq!(detector.poll(now).as_deref(), Some("resident"));
        let later = now + Duration::from_secs(2);
        let later = feed(&mut detector, "officer", 50, later, 50);
        assert_eq!(detector.poll(later).as_deref(), Some("officer"));
    }
}
