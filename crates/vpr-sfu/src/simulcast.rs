//! Simulcast layers of one published video track, and the choice of layer
//! each subscriber's down-track forwards.
//!
//! A publisher sends up to three encodings of one camera, each on its own
//! SSRC and named by a RID (RFC 8851). Packets map to layers by SSRC, and
//! SSRCs to layers by the RID the library reported when the stream opened,
//! never by the order of lines in the SDP. Layers are ranked by the bitrate
//! they carry; padding does not count, so a layer that carries only padding
//! is inactive.
//!
//! [`LayerSelector`] switches a down-track between layers only at a
//! keyframe of the target layer, so the subscriber's decoder never receives a
//! delta frame whose reference it lacks. Everything here is sans-IO.

use std::time::{Duration, Instant};

/// Window over which a layer's bitrate is measured.
const RATE_WINDOW: Duration = Duration::from_millis(1000);
/// A layer that sent no media for this long is inactive.
const INACTIVE_AFTER: Duration = Duration::from_millis(1500);
/// How long a resumed layer stays available without media, while the
/// publisher's encoder starts it again.
const RESUME_GRACE: Duration = Duration::from_millis(3000);

/// Index of a layer in [`Layers`], stable for the life of the publication.
pub type LayerIndex = usize;

/// One encoding of a simulcast track.
#[derive(Debug, Clone)]
pub struct Layer {
    /// The RID from `a=rid`, empty for a track without simulcast.
    pub rid: String,
    /// SSRC the layer arrives on.
    pub ssrc: u32,
    window_start: Option<Instant>,
    window_bytes: u64,
    bitrate_bps: u64,
    last_media: Option<Instant>,
    /// The publisher was asked to stop sending the layer.
    paused: bool,
    resumed_at: Option<Instant>,
}

impl Layer {
    fn new(rid: String, ssrc: u32) -> Self {
        Self {
            rid,
            ssrc,
            window_start: None,
            window_bytes: 0,
            bitrate_bps: 0,
            last_media: None,
            paused: false,
            resumed_at: None,
        }
    }

    /// Returns true when the publisher was asked to stop sending the layer.
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Bitrate of media (not padding) over the last full window.
    pub fn bitrate_bps(&self) -> u64 {
        self.bitrate_bps
    }

    /// Returns true when the layer sent media recently.
    pub fn is_active(&self, now: Instant) -> bool {
        self.last_media.is_some_and(|at| now.saturating_duration_since(at) < INACTIVE_AFTER)
    }

    /// Returns true when a down-track may choose the layer: it sends media,
    /// or it is paused and would send again on request, or it was resumed
    /// moments ago.
    pub fn is_available(&self, now: Instant) -> bool {
        self.is_active(now)
            || self.paused
            || self.resumed_at.is_some_and(|at| now.saturating_duration_since(at) < RESUME_GRACE)
    }

    fn observe(&mut self, now: Instant, media_bytes: usize) {
        if media_bytes == 0 {
            return;
        }
        self.last_media = Some(now);
        let start = *self.window_start.get_or_insert(now);
        let elapsed = now.saturating_duration_since(start);
        if elapsed >= RATE_WINDOW {
            self.bitrate_bps = (self.window_bytes * 8 * 1000) / elapsed.as_millis().max(1) as u64;
            self.window_start = Some(now);
            self.window_bytes = 0;
        }
        self.window_bytes += media_bytes as u64;
    }
}

/// Quality hint from a RID's conventional name, used until bitrates are
/// measured: `q`/`l`/`0` low, `h`/`m`/`1` middle, `f`/`2` high.
fn rid_hint(rid: &str) -> u8 {
    match rid.to_ascii_lowercase().as_str() {
        "q" | "l" | "low" | "0" => 0,
        "h" | "m" | "mid" | "1" => 1,
        "f" | "high" | "hi" | "2" => 2,
        _ => 1,
    }
}

/// Bitrate assumed for a simulcast layer, by its RID's quality hint, until
/// its own is measured: an estimate of what a browser sends at 180p, 360p
/// and 720p.
/// Without it, unmeasured layers would cost nothing, and a subscriber that
/// connects in the first second would get the top layer whatever its
/// estimate, and no probe, because nothing would seem to be held back.
const NOMINAL_BPS: [u64; 3] = [150_000, 500_000, 2_500_000];

/// The layers of one publication.
#[derive(Debug, Clone, Default)]
pub struct Layers {
    layers: Vec<Layer>,
}

impl Layers {
    /// Adds the layer the library opened for `rid` on `ssrc`, or updates
    /// its SSRC when the RID is already known. Returns its index.
    pub fn open(&mut self, rid: &str, ssrc: u32) -> LayerIndex {
        if let Some(index) = self.layers.iter().position(|l| l.rid == rid) {
            self.layers[index].ssrc = ssrc;
            return index;
        }
        self.layers.push(Layer::new(rid.to_owned(), ssrc));
        self.layers.len() - 1
    }

    /// Returns the number of layers opened so far.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// Returns true when no layer is open.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// Returns true when the track has more than one layer.
    pub fn is_simulcast(&self) -> bool {
        self.layers.len() > 1
    }

    /// Returns the layer at `index`.
    pub fn get(&self, index: LayerIndex) -> Option<&Layer> {
        self.layers.get(index)
    }

    /// Finds the layer a packet belongs to by its SSRC.
    pub fn by_ssrc(&self, ssrc: u32) -> Option<LayerIndex> {
        self.layers.iter().position(|l| l.ssrc == ssrc)
    }

    /// Marks a layer paused or resumed at the publisher. A paused layer keeps
    /// its last measured bitrate, and measuring starts afresh on resume.
    pub fn set_paused(&mut self, index: LayerIndex, paused: bool, now: Instant) {
        let Some(layer) = self.layers.get_mut(index) else { return };
        if layer.paused == paused {
            return;
        }
        layer.paused = paused;
        layer.resumed_at = (!paused).then_some(now);
        layer.window_start = None;
        layer.window_bytes = 0;
    }

    /// Iterates over the layers in the order they opened.
    pub fn iter(&self) -> impl Iterator<Item = &Layer> {
        self.layers.iter()
    }

    /// Counts a packet's media bytes (zero for padding-only packets).
    pub fn observe(&mut self, index: LayerIndex, now: Instant, media_bytes: usize) {
        if let Some(layer) = self.layers.get_mut(index) {
            layer.observe(now, media_bytes);
        }
    }

    /// Returns the available layers (see [`Layer::is_available`]) from
    /// lowest to highest quality with their bitrates. Measured bitrate ranks
    /// layers; the RID's name breaks ties and ranks layers whose bitrate is
    /// not measured yet. An unmeasured simulcast layer carries the nominal
    /// bitrate of its RID's quality, and a paused one its last measured
    /// bitrate.
    pub fn ranked(&self, now: Instant) -> Vec<(LayerIndex, u64)> {
        let simulcast = self.is_simulcast();
        let mut active: Vec<(LayerIndex, u64)> = self
            .layers
            .iter()
            .enumerate()
            .filter(|(_, l)| l.is_available(now))
            .map(|(i, l)| (i, l.bitrate_bps))
            .collect();
        let all_measured = active.iter().all(|&(_, rate)| rate > 0);
        active.sort_by_key(|&(i, rate)| {
            let hint = rid_hint(&self.layers[i].rid);
            if all_measured { (rate, hint) } else { (u64::from(hint), 0) }
        });
        if simulcast {
            for (index, rate) in active.iter_mut().filter(|(_, rate)| *rate == 0) {
                *rate = NOMINAL_BPS[usize::from(rid_hint(&self.layers[*index].rid))];
            }
        }
        active
    }
}

/// A down-track's decision about one packet of a layered publication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    /// Forward the packet on the current layer's numbering.
    Forward,
    /// Forward the packet and restart numbering: it is the keyframe that
    /// completes a switch to the target layer from `from` (`None` when the
    /// down-track starts).
    Switch {
        /// The layer forwarded before.
        from: Option<LayerIndex>,
    },
    /// Drop the packet: another layer is forwarded, or the target layer's
    /// keyframe has not arrived.
    Drop,
}

/// The layer one down-track forwards and the one it is moving to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LayerSelector {
    current: Option<LayerIndex>,
    target: Option<LayerIndex>,
    /// The layer forwarded before a reset, reported as the origin of the
    /// switch that ends the wait.
    before_reset: Option<LayerIndex>,
}

impl LayerSelector {
    /// Returns the layer whose packets are forwarded now.
    pub fn current(&self) -> Option<LayerIndex> {
        self.current
    }

    /// Returns the layer the allocator chose; `None` pauses the down-track.
    pub fn target(&self) -> Option<LayerIndex> {
        self.target
    }

    /// Returns true when a switch waits for a keyframe of the target layer.
    pub fn is_switching(&self) -> bool {
        self.target.is_some() && self.target != self.current
    }

    /// Sets the target layer. Returns true when the down-track now waits
    /// for a keyframe of a layer it does not forward.
    pub fn set_target(&mut self, target: Option<LayerIndex>) -> bool {
        self.target = target;
        if target.is_none() {
            self.current = None;
        }
        self.is_switching()
    }

    /// Forgets the layer forwarded so far; the next keyframe of the target
    /// layer starts forwarding again (a rebind or an unmute).
    pub fn reset(&mut self) {
        if let Some(current) = self.current.take() {
            self.before_reset = Some(current);
        }
    }

    /// Decides about one packet of `layer`. `keyframe_start` is true when
    /// the packet is the first one of a keyframe.
    pub fn select(&mut self, layer: LayerIndex, keyframe_start: bool) -> Selection {
        let Some(target) = self.target else { return Selection::Drop };
        if layer == target && self.current != Some(target) {
            if keyframe_start {
                let from = self.current.replace(target).or(self.before_reset.take());
                self.before_reset = None;
                return Selection::Switch { from };
            }
            return Selection::Drop;
        }
        if Some(layer) == self.current {
            return Selection::Forward;
        }
        Selection::Drop
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(base: Instant, ms: u64) -> Instant {
        base + Duration::from_millis(ms)
    }

    #[test]
    fn layers_map_by_rid_not_by_order() {
        let mut layers = Layers::default();
        let f = layers.open("f", 300);
        let q = layers.open("q", 100);
        let h = layers.open("h", 200);
        assert_eq!(layers.by_ssrc(100), Some(q));
        assert_eq!(layers.by_ssrc(300), Some(f));
        let base = Instant::now();
        for index in [f, q, h] {
            layers.observe(index, base, 100);
        }
        // Not measured yet: the RID names rank the layers and give their
        // nominal bitrates.
        assert_eq!(layers.ranked(base), vec![(q, 150_000), (h, 500_000), (f, 2_500_000)]);
    }

    #[test]
    fn single_layer_has_no_nominal_bitrate() {
        let mut layers = Layers::default();
        let only = layers.open("", 7);
        let base = Instant::now();
        layers.observe(only, base, 100);
        assert_eq!(layers.ranked(base), vec![(only, 0)]);
    }

    #[test]
    fn measured_bitrate_ranks_layers_and_padding_is_inactive() {
        let mut layers = Layers::default();
        // Names that hint the opposite of the real rates.
        let a = layers.open("f", 1);
        let b = layers.open("q", 2);
        let padding_only = layers.open("h", 3);
        let base = Instant::now();
        for ms in (0..=1100).step_by(100) {
            layers.observe(a, at(base, ms), 200);
            layers.observe(b, at(base, ms), 2000);
            layers.observe(padding_only, at(base, ms), 0);
        }
        let ranked = layers.ranked(at(base, 1100));
        assert_eq!(ranked.len(), 2, "a padding-only layer is inactive: {ranked:?}");
        assert_eq!(ranked[0].0, a);
        assert_eq!(ranked[1].0, b);
        assert_eq!(ranked[1].1, 160_000, "ten packets of 2000 bytes in the first second");
        assert!(layers.ranked(at(base, 1100 + 1600)).is_empty(), "silent layers become inactive");
    }

    #[test]
    fn paused_layer_stays_ranked() {
        let mut layers = Layers::default();
        let low = layers.open("q", 1);
        let high = layers.open("f", 2);
        let base = Instant::now();
        for ms in (0..=1100).step_by(100) {
            layers.observe(low, at(base, ms), 200);
            layers.observe(high, at(base, ms), 2000);
        }
        layers.set_paused(high, true, at(base, 1100));
        for ms in (1200..=5000).step_by(100) {
            layers.observe(low, at(base, ms), 200);
        }
        let ranked = layers.ranked(at(base, 5000));
        assert_eq!(ranked, vec![(low, 16_000), (high, 160_000)], "paused at its last rate");

        layers.set_paused(high, false, at(base, 5000));
        for ms in (5100..=8100).step_by(100) {
            layers.observe(low, at(base, ms), 200);
        }
        assert_eq!(layers.ranked(at(base, 7900)).len(), 2, "resumed moments ago");
        assert_eq!(layers.ranked(at(base, 8100)).len(), 1, "resumed but silent");
    }

    #[test]
    fn upward_and_downward_switches_wait_for_a_keyframe() {
        let mut selector = LayerSelector::default();
        selector.set_target(Some(0));
        assert_eq!(selector.select(0, false), Selection::Drop, "starts on a keyframe");
        assert_eq!(selector.select(0, true), Selection::Switch { from: None });
        assert_eq!(selector.select(0, false), Selection::Forward);

        // Up: layer 0 keeps flowing until layer 2's keyframe arrives.
        assert!(selector.set_target(Some(2)));
        assert_eq!(selector.select(2, false), Selection::Drop);
        assert_eq!(selector.select(0, false), Selection::Forward);
        assert_eq!(selector.select(2, true), Selection::Switch { from: Some(0) });
        assert_eq!(selector.select(0, false), Selection::Drop, "the old layer stops at the switch");
        assert_eq!(selector.select(2, false), Selection::Forward);

        // Down: the same rule.
        assert!(selector.set_target(Some(1)));
        assert_eq!(selector.select(1, false), Selection::Drop);
        assert_eq!(selector.select(2, false), Selection::Forward);
        assert_eq!(selector.select(1, true), Selection::Switch { from: Some(2) });
        assert_eq!(selector.current(), Some(1));
        assert!(!selector.is_switching());
    }

    #[test]
    fn switch_after_reset_reports_previous_layer() {
        let mut selector = LayerSelector::default();
        selector.set_target(Some(2));
        assert_eq!(selector.select(2, true), Selection::Switch { from: None });
        selector.set_target(Some(0));
        selector.reset();
        assert_eq!(selector.select(2, false), Selection::Drop, "the old layer stops at once");
        assert_eq!(selector.select(0, true), Selection::Switch { from: Some(2) });
    }

    #[test]
    fn paused_down_track_drops_everything() {
        let mut selector = LayerSelector::default();
        selector.set_target(Some(0));
        selector.select(0, true);
        assert!(!selector.set_target(None));
        assert_eq!(selector.select(0, true), Selection::Drop);
        assert_eq!(selector.current(), None);
    }
}
