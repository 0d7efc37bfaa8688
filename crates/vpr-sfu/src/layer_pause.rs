//! Pause decisions for the simulcast layers a publisher sends.
//!
//! A layer that no down-track forwards or waits for is paused once it has
//! been unused for [`PAUSE_AFTER`], so a resident's phone does not spend
//! uplink and battery on video no subscriber receives. The lowest available
//! layer is never paused: a subscriber that joins gets it at once. A paused layer
//! resumes as soon as a down-track chooses it. Everything here is sans-IO.

use std::time::{Duration, Instant};

use crate::simulcast::{LayerIndex, Layers};

/// How long a layer goes unused before it is paused. Longer than the
/// allocator's first upgrade hold (4 s), so a subscriber held below a layer
/// after one congestion does not pause and resume it in turn.
pub const PAUSE_AFTER: Duration = Duration::from_secs(10);

/// Pause decisions for the layers of one publication.
#[derive(Debug, Default)]
pub struct LayerPause {
    /// Per layer index: since when no down-track used it.
    unused_since: Vec<Option<Instant>>,
}

/// A layer to pause or resume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PauseChange {
    /// The layer.
    pub layer: LayerIndex,
    /// True to pause, false to resume.
    pub paused: bool,
}

impl LayerPause {
    /// Decides which layers change state; `used[i]` is true when some
    /// down-track forwards layer `i` or waits for it. The caller applies
    /// the changes to `layers`.
    pub fn decide(&mut self, now: Instant, layers: &Layers, used: &[bool]) -> Vec<PauseChange> {
        if !layers.is_simulcast() {
            return Vec::new();
        }
        self.unused_since.resize(layers.len(), None);
        let lowest = layers.ranked(now).first().map(|&(index, _)| index);
        let mut changes = Vec::new();
        for (index, layer) in layers.iter().enumerate() {
            let needed = used.get(index).copied().unwrap_or(false) || Some(index) == lowest;
            if needed {
                self.unused_since[index] = None;
                if layer.is_paused() {
                    changes.push(PauseChange { layer: index, paused: false });
                }
                continue;
            }
            let since = *self.unused_since[index].get_or_insert(now);
            if !layer.is_paused() && now.saturating_duration_since(since) >= PAUSE_AFTER {
                changes.push(PauseChange { layer: index, paused: true });
            }
        }
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATES: [(&str, u32, usize); 3] = [("q", 1, 200), ("h", 2, 800), ("f", 3, 3000)];

    /// Feeds every layer that is not paused with media up to `until`.
    fn feed(layers: &mut Layers, base: Instant, from_ms: u64, until: Instant) {
        let mut ms = from_ms;
        while base + Duration::from_millis(ms) <= until {
            for (index, &(_, _, bytes)) in RATES.iter().enumerate() {
                if !layers.get(index).is_some_and(|layer| layer.is_paused()) {
                    layers.observe(index, base + Duration::from_millis(ms), bytes);
                }
            }
            ms += 100;
        }
    }

    fn three_layers(base: Instant) -> Layers {
        let mut layers = Layers::default();
        for &(rid, ssrc, _) in &RATES {
            layers.open(rid, ssrc);
        }
        feed(&mut layers, base, 0, base + Duration::from_millis(1100));
        layers
    }

    fn apply(layers: &mut Layers, changes: &[PauseChange], now: Instant) {
        for change in changes {
            layers.set_paused(change.layer, change.paused, now);
        }
    }

    #[test]
    fn unused_layers_pause_after_delay() {
        let base = Instant::now();
        let mut layers = three_layers(base);
        let mut pause = LayerPause::default();
        let start = base + Duration::from_millis(1100);
        let used = [false, true, false];

        assert!(pause.decide(start, &layers, &used).is_empty());
        let before = start + PAUSE_AFTER - Duration::from_millis(100);
        feed(&mut layers, base, 1200, before);
        assert!(pause.decide(before, &layers, &used).is_empty());
        let due = start + PAUSE_AFTER;
        feed(&mut layers, base, 1200 + PAUSE_AFTER.as_millis() as u64 - 100, due);
        let changes = pause.decide(due, &layers, &used);
        assert_eq!(changes, vec![PauseChange { layer: 2, paused: true }], "the lowest layer stays");
        apply(&mut layers, &changes, due);
        assert!(pause.decide(due, &layers, &used).is_empty(), "paused once");
    }

    #[test]
    fn chosen_paused_layer_resumes_at_once() {
        let base = Instant::now();
        let mut layers = three_layers(base);
        let mut pause = LayerPause::default();
        let start = base + Duration::from_millis(1100);
        pause.decide(start, &layers, &[false, false, false]);
        let due = start + PAUSE_AFTER;
        feed(&mut layers, base, 1200, due);
        let changes = pause.decide(due, &layers, &[false, false, false]);
        assert_eq!(changes.len(), 2, "{changes:?}");
        apply(&mut layers, &changes, due);

        let changes = pause.decide(due, &layers, &[false, false, true]);
        assert_eq!(changes, vec![PauseChange { layer: 2, paused: false }]);
    }

    #[test]
    fn use_restarts_the_delay() {
        let base = Instant::now();
        let mut layers = three_layers(base);
        let mut pause = LayerPause::default();
        let start = base + Duration::from_millis(1100);
        pause.decide(start, &layers, &[true, true, false]);
        pause.decide(start + PAUSE_AFTER / 2, &layers, &[true, true, true]);
        let due = start + PAUSE_AFTER;
        feed(&mut layers, base, 1200, due);
        let changes = pause.decide(due, &layers, &[true, true, false]);
        assert!(changes.is_empty(), "{changes:?}");
    }

    #[test]
    fn single_layer_never_pauses() {
        let base = Instant::now();
        let mut layers = Layers::default();
        layers.open("", 1);
        let mut pause = LayerPause::default();
        assert!(pause.decide(base, &layers, &[false]).is_empty());
        assert!(pause.decide(base + PAUSE_AFTER * 2, &layers, &[false]).is_empty());
    }
}
