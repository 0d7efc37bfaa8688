//! Layer allocation for one subscriber: which simulcast layer each of its
//! down-tracks forwards so that the total fits the bandwidth estimate.
//!
//! Audio always goes. The resident's video comes first, then the other
//! participants' video. Every video first gets its lowest layer, and the
//! resident's gets it even when the estimate is below it, so the scene
//! never freezes. A track without simulcast is always forwarded; other
//! participants' simulcast video pauses when its lowest layer does not fit. What remains upgrades the resident's video as far as it
//! fits, then the others'. A down-track keeps its current layer while the total
//! fits; an upgrade needs some headroom, so the choice does not flap on a
//! noisy estimate. Pure function, no I/O.

use crate::simulcast::LayerIndex;

/// An upgrade needs the new total to fit under the estimate divided by
/// this factor.
const UPGRADE_HEADROOM: f64 = 1.1;

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
}

/// Chooses a layer per demand, in the same order; `None` pauses a video
/// down-track that does not fit.
pub fn allocate(estimate_bps: f64, demands: &[Demand]) -> Vec<Option<LayerIndex>> {
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
        let current_pos = demands[i].current.and_then(|c| demands[i].layers.iter().position(|&(l, _)| l == c));
        while pos + 1 < demands[i].layers.len() {
            let next = pos + 1;
            let total = used - rate(i, Some(pos)) + rate(i, Some(next));
            // Keeping or returning to the current layer needs no headroom.
            let needed = if current_pos.is_some_and(|c| next <= c) { 1.0 } else { UPGRADE_HEADROOM };
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
        Demand { priority, layers: vec![(2, 150_000), (0, 500_000), (1, 1_500_000)], current }
    }

    fn audio() -> Demand {
        Demand { priority: Priority::Audio, layers: vec![(0, 40_000)], current: Some(0) }
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
    fn single_layer_video_is_never_paused() {
        let single = Demand { priority: Priority::OtherVideo, layers: vec![(0, 800_000)], current: None };
        assert_eq!(allocate(1_000_000.0, std::slice::from_ref(&single)), vec![Some(0)]);
        assert_eq!(allocate(500_000.0, &[single]), vec![Some(0)]);
    }
}
