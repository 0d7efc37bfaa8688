//! Layer allocation for one subscriber: which simulcast layer each of its
//! down-tracks forwards so that the total fits the bandwidth estimate.
//!
//! Audio always goes. The resident's video comes first, then the other
//! participants' video. Every video first gets its lowest layer, and the
//! resident's gets it even when the estimate is below it, so the scene
//! never freezes. A track without simulcast is always forwarded; other
//! participants' simulcast video pauses when its lowest layer does not fit.
//! What remains upgrades the resident's video as far as it fits, then the
//! others'. An upgrade needs 10 % headroom. A down-track keeps its current
//! layer while the total fits. Once the layer is steady on a link without
//! loss, it keeps it while the total is within 80 % of the estimate, because
//! a single cut of the estimate falls below any layer being sent. A layer held after congestion is not
//! chosen. Pure function, no I/O.

use crate::simulcast::LayerIndex;

/// An upgrade needs the new total to fit under the estimate divided by
/// this factor.
const UPGRADE_HEADROOM: f64 = 1.1;
/// On a link without loss, a steady current layer is kept while the total
/// is within this factor of the estimate. One overuse sets the delay-based
/// estimate to 85 % of the rate the link delivered, which is below any layer
/// being sent. A layer the link cannot carry brings loss or further cuts.
const KEEP_TOLERANCE: f64 = 0.8;
/// Loss fraction from which the link counts as lossy, and the current layer
/// is kept only while the total fits the estimate.
const LOSSY_FRACTION: f64 = 0.02;

/// The capacity of one subscriber's link.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    /// The bandwidth estimate, in bit/s.
    pub estimate_bps: f64,
    /// Fraction of packets the link lost recently.
    pub loss: f64,
}

impl From<f64> for Budget {
    /// Builds a budget of `estimate_bps` on a link without loss.
    fn from(estimate_bps: f64) -> Self {
        Budget { estimate_bps, loss: 0.0 }
    }
}

/// A down-track's rank in the order of allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Priority {
    /// Audio: always forwarded.
    Audio,
    /// The resident's video.
    ResidentVideo,
    /// Any other participant's video.
    OtherVideo,
}

/// One down-track the allocator decides about.
#[derive(Debug, Clone, PartialEq)]
pub struct Demand {
    /// Its priority.
    pub priority: Priority,
    /// Active layers from lowest to highest with their bitrates in bit/s.
    /// One entry for a track without simulcast.
    pub layers: Vec<(LayerIndex, u64)>,
    /// The layer forwarded now, if any.
    pub current: Option<LayerIndex>,
    /// A layer held after congestion: neither it nor any layer above it is
    /// chosen unless it is the current one.
    pub held: Option<LayerIndex>,
    /// The current layer has been forwarded long enough to show that the
    /// link carries it.
    pub steady: bool,
}

/// Chooses a layer per demand, in the same order; `None` pauses a video
/// down-track that does not fit.
pub fn allocate(budget: impl Into<Budget>, demands: &[Demand]) -> Vec<Option<LayerIndex>> {
    let budget = budget.into();
    let estimate_bps = budget.estimate_bps;
    let lossless = budget.loss < LOSSY_FRACTION;
    let mut chosen: Vec<Option<usize>> = vec![None; demands.len()];
    let mut order: Vec<usize> = (0..demands.len()).collect();
    order.sort_by_key(|&i| demands[i].priority);

    let rate = |i: usize, pos: Option<usize>| pos.map_or(0, |p| demands[i].layers[p].1);
    let mut used: u64 = 0;

    // Audio and every video's lowest layer, in priority order.
    for &i in &order {
        if demands[i].layers.is_empty() {
            continue;
        }
        let lowest = demands[i].layers[0].1;
        // A track without simulcast has no cheaper layer to fall back to,
        // and pausing it would stop that participant's video outright.
        let single = demands[i].layers.len() == 1;
        let must = single || matches!(demands[i].priority, Priority::Audio | Priority::ResidentVideo);
        if must || (used + lowest) as f64 <= estimate_bps {
            chosen[i] = Some(0);
            used += lowest;
        }
    }

    // Upgrades, in priority order, one track at a time as far as it fits.
    for &i in &order {
        let Some(mut pos) = chosen[i] else { continue };
        let position = |layer: Option<LayerIndex>| layer.and_then(|l| demands[i].layers.iter().position(|&(index, _)| index == l));
        let current_pos = position(demands[i].current);
        let held_pos = position(demands[i].held);
        let keep_tolerance = if lossless && demands[i].steady { KEEP_TOLERANCE } else { 1.0 };
        while pos + 1 < demands[i].layers.len() {
            let next = pos + 1;
            let held = held_pos.is_some_and(|h| next >= h) && current_pos.is_none_or(|c| next > c);
            if held {
                break;
            }
            let total = used - rate(i, Some(pos)) + rate(i, Some(next));
            // Keeping or returning to the current layer needs no headroom
            // and tolerates a single cut of the estimate.
            let needed = if current_pos.is_some_and(|c| next <= c) { keep_tolerance } else { UPGRADE_HEADROOM };
            if total as f64 * needed > estimate_bps {
                break;
            }
            used = total;
            pos = next;
        }
        chosen[i] = Some(pos);
    }

    chosen.iter().enumerate().map(|(i, pos)| pos.map(|p| demands[i].layers[p].0)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn video(priority: Priority, current: Option<LayerIndex>) -> Demand {
        // Layer indices deliberately differ from their rank.
        Demand { priority, layers: vec![(2, 150_000), (0, 500_000), (1, 1_500_000)], current, held: None, steady: true }
    }

    fn audio() -> Demand {
        Demand { priority: Priority::Audio, layers: vec![(0, 40_000)], current: Some(0), held: None, steady: true }
    }

    #[test]
    fn ample_estimate_gives_every_top_layer() {
        let demands = [audio(), video(Priority::OtherVideo, None), video(Priority::ResidentVideo, None)];
        assert_eq!(allocate(10_000_000.0, &demands), vec![Some(0), Some(1), Some(1)]);
    }

    #[test]
    fn resident_video_is_upgraded_before_officers() {
        let demands = [audio(), video(Priority::OtherVideo, None), video(Priority::ResidentVideo, None)];
        // 40k audio + 150k officer low + 1.5M resident high = 1.69M, with headroom 1.86M.
        assert_eq!(allocate(1_900_000.0, &demands), vec![Some(0), Some(2), Some(1)]);
    }

    #[test]
    fn low_estimate_pauses_officer_video() {
        let demands = [audio(), video(Priority::OtherVideo, None), video(Priority::ResidentVideo, None)];
        assert_eq!(allocate(100_000.0, &demands), vec![Some(0), None, Some(2)]);
    }

    #[test]
    fn upgrade_needs_headroom() {
        let demand = [video(Priority::ResidentVideo, Some(0))];
        // 500k fits exactly: kept.
        assert_eq!(allocate(500_000.0, &demand), vec![Some(0)]);
        // From the lowest layer the same estimate is not enough to move up.
        let from_low = [video(Priority::ResidentVideo, Some(2))];
        assert_eq!(allocate(500_000.0, &from_low), vec![Some(2)]);
        assert_eq!(allocate(560_000.0, &from_low), vec![Some(0)]);
    }

    #[test]
    fn current_layer_survives_one_estimate_cut() {
        let demand = [video(Priority::ResidentVideo, Some(0))];
        // 85 % of the 500k layer's rate: kept.
        assert_eq!(allocate(425_000.0, &demand), vec![Some(0)]);
        // Below 80 %: the lowest layer.
        assert_eq!(allocate(395_000.0, &demand), vec![Some(2)]);
    }

    #[test]
    fn new_layer_keeps_only_what_fits() {
        let demand = [Demand { steady: false, ..video(Priority::ResidentVideo, Some(0)) }];
        assert_eq!(allocate(425_000.0, &demand), vec![Some(2)]);
    }

    #[test]
    fn lossy_link_keeps_only_what_fits() {
        let demand = [video(Priority::ResidentVideo, Some(0))];
        let lossy = Budget { estimate_bps: 425_000.0, loss: 0.05 };
        assert_eq!(allocate(lossy, &demand), vec![Some(2)]);
        let fits = Budget { estimate_bps: 500_000.0, loss: 0.05 };
        assert_eq!(allocate(fits, &demand), vec![Some(0)]);
    }

    #[test]
    fn held_layer_is_not_chosen() {
        // Layer 0 (500k) is held: the estimate fits it, but the lowest stays.
        let held = Demand { held: Some(0), ..video(Priority::ResidentVideo, Some(2)) };
        assert_eq!(allocate(10_000_000.0, &[held]), vec![Some(2)]);
        // Holding the top layer leaves the middle one free.
        let top_held = Demand { held: Some(1), ..video(Priority::ResidentVideo, Some(2)) };
        assert_eq!(allocate(10_000_000.0, &[top_held]), vec![Some(0)]);
    }

    #[test]
    fn held_current_layer_is_kept() {
        let demand = Demand { held: Some(0), ..video(Priority::ResidentVideo, Some(0)) };
        assert_eq!(allocate(600_000.0, &[demand]), vec![Some(0)]);
    }

    #[test]
    fn single_layer_video_is_never_paused() {
        let single = Demand { priority: Priority::OtherVideo, layers: vec![(0, 800_000)], current: None, held: None, steady: true };
        assert_eq!(allocate(1_000_000.0, std::slice::from_ref(&single)), vec![Some(0)]);
        assert_eq!(allocate(500_000.0, &[single]), vec![Some(0)]);
    }
}
