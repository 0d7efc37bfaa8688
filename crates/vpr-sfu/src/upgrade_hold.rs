//! Hold on upgrades after a falling estimate, for one down-track.
//!
//! On a link near a layer's rate, a probe can raise the estimate just enough
//! for that layer. The switch then overflows the link's queue and the
//! down-track moves back down. Each round trip costs two switches and two
//! keyframe requests, and a freeze whenever the lower layer's keyframe is
//! slow. So after a falling estimate moves a down-track off a layer, that
//! layer and the ones above it wait before they are tried again. The first
//! hold lasts 4 s. Each further failure within 10 s of the previous hold
//! doubles it, up to 16 s. An estimate of twice the held layer's bitrate
//! (the cap was lifted) ends the hold at once. Sans-IO: time is passed in.

use std::time::{Duration, Instant};

use crate::simulcast::LayerIndex;

const FIRST_HOLD: Duration = Duration::from_secs(4);
const LONGEST_HOLD: Duration = Duration::from_secs(16);
/// A failure this long after the previous hold ended starts over at the
/// first hold.
const FORGET_AFTER: Duration = Duration::from_secs(10);
/// An estimate this many times the held layer's bitrate ends the hold.
const CLEAR_FACTOR: f64 = 2.0;

#[derive(Debug, Clone, Copy)]
struct Hold {
    layer: LayerIndex,
    until: Instant,
    clear_above_bps: f64,
}

/// Upgrade hold state of one down-track.
#[derive(Debug, Clone, Default)]
pub struct UpgradeHold {
    hold: Option<Hold>,
    length: Option<Duration>,
    ended_at: Option<Instant>,
}

impl UpgradeHold {
    /// Records that a falling estimate moved the down-track down from
    /// `layer`, which carries `layer_bps`: `layer` and the layers above it
    /// are held.
    pub fn on_downgrade(&mut self, layer: LayerIndex, layer_bps: u64, now: Instant) {
        let recent = self.ended_at.is_some_and(|at| now.saturating_duration_since(at) < FORGET_AFTER)
            || self.hold.is_some();
        let length = match self.length {
            Some(previous) if recent => (previous * 2).min(LONGEST_HOLD),
            _ => FIRST_HOLD,
        };
        self.length = Some(length);
        self.hold = Some(Hold { layer, until: now + length, clear_above_bps: CLEAR_FACTOR * layer_bps as f64 });
    }

    /// Returns the lowest layer that may not be chosen now, if any. The hold
    /// ends when its time is up or when `estimate_bps` clears it.
    pub fn held_layer(&mut self, estimate_bps: f64, now: Instant) -> Option<LayerIndex> {
        let hold = self.hold?;
        if now >= hold.until || estimate_bps >= hold.clear_above_bps {
            self.hold = None;
            self.ended_at = Some(now);
            return None;
        }
        Some(hold.layer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(start: Instant, ms: u64) -> Instant {
        start + Duration::from_millis(ms)
    }

    #[test]
    fn hold_lasts_four_seconds() {
        let start = Instant::now();
        let mut hold = UpgradeHold::default();
        hold.on_downgrade(2, 390_000, start);
        assert_eq!(hold.held_layer(520_000.0, at(start, 3_999)), Some(2));
        assert_eq!(hold.held_layer(520_000.0, at(start, 4_000)), None);
    }

    #[test]
    fn repeated_failures_double_the_hold() {
        let start = Instant::now();
        let mut hold = UpgradeHold::default();
        hold.on_downgrade(2, 390_000, start);
        assert_eq!(hold.held_layer(400_000.0, at(start, 4_000)), None);
        hold.on_downgrade(2, 390_000, at(start, 6_000));
        assert_eq!(hold.held_layer(400_000.0, at(start, 13_999)), Some(2));
        assert_eq!(hold.held_layer(400_000.0, at(start, 14_000)), None);
    }

    #[test]
    fn failure_after_a_quiet_spell_starts_over() {
        let start = Instant::now();
        let mut hold = UpgradeHold::default();
        hold.on_downgrade(2, 390_000, start);
        assert_eq!(hold.held_layer(400_000.0, at(start, 4_000)), None);
        hold.on_downgrade(2, 390_000, at(start, 14_000));
        assert_eq!(hold.held_layer(400_000.0, at(start, 18_000)), None);
    }

    #[test]
    fn hold_never_exceeds_sixteen_seconds() {
        let start = Instant::now();
        let mut hold = UpgradeHold::default();
        for _ in 0..6 {
            hold.on_downgrade(1, 390_000, start);
        }
        assert_eq!(hold.held_layer(400_000.0, at(start, 15_999)), Some(1));
        assert_eq!(hold.held_layer(400_000.0, at(start, 16_000)), None);
    }

    #[test]
    fn higher_estimate_ends_the_hold() {
        let start = Instant::now();
        let mut hold = UpgradeHold::default();
        hold.on_downgrade(2, 390_000, start);
        assert_eq!(hold.held_layer(779_000.0, at(start, 100)), Some(2));
        assert_eq!(hold.held_layer(780_000.0, at(start, 200)), None, "twice the layer's 390 kbit/s");
    }
}
