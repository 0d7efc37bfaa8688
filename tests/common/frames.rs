//! Frame-log measures shared by the simulcast tests: when a subscriber
//! settled on a layer, the longest gap between complete frames and the
//! received bitrate.

use std::time::{Duration, Instant};

use vpr_bench::relay::FrameRecord;

/// Consecutive frames of one layer that count as having switched to it.
pub const SETTLED_FRAMES: usize = 10;

/// Returns when the last `SETTLED_FRAMES` frames completed after `since`
/// are all of `layer`: the completion time of the first of them.
pub fn settled_on(frames: &[(Instant, FrameRecord)], layer: u8, since: Instant) -> Option<Instant> {
    let recent: Vec<&(Instant, FrameRecord)> = frames.iter().filter(|(at, _)| *at >= since).collect();
    if recent.len() < SETTLED_FRAMES {
        return None;
    }
    let tail = &recent[recent.len() - SETTLED_FRAMES..];
    if !tail.iter().all(|(_, frame)| frame.layer == Some(layer)) {
        return None;
    }
    // The first frame of the run of `layer` that the tail belongs to.
    let run_start = recent.iter().rposition(|(_, frame)| frame.layer != Some(layer)).map_or(0, |i| i + 1);
    Some(recent[run_start].0)
}

/// Returns when the last `SETTLED_FRAMES` frames completed after `since`
/// are all of layers below `layer`: the completion time of the first frame
/// of that run.
pub fn settled_below(frames: &[(Instant, FrameRecord)], layer: u8, since: Instant) -> Option<Instant> {
    let below = |frame: &FrameRecord| frame.layer.is_some_and(|l| l < layer);
    let recent: Vec<&(Instant, FrameRecord)> = frames.iter().filter(|(at, _)| *at >= since).collect();
    if recent.len() < SETTLED_FRAMES || !recent[recent.len() - SETTLED_FRAMES..].iter().all(|(_, frame)| below(frame)) {
        return None;
    }
    let run_start = recent.iter().rposition(|(_, frame)| !below(frame)).map_or(0, |i| i + 1);
    Some(recent[run_start].0)
}

/// Returns the maximum gap between complete frames within `[from, to]`.
pub fn longest_gap(frames: &[(Instant, FrameRecord)], from: Instant, to: Instant) -> Duration {
    let mut previous = from;
    let mut longest = Duration::ZERO;
    for (at, _) in frames.iter().filter(|(at, _)| *at >= from && *at <= to) {
        longest = longest.max(at.duration_since(previous));
        previous = *at;
    }
    longest.max(to.saturating_duration_since(previous))
}

/// Received video bitrate over the `window` before `at`, in kbit/s.
pub fn received_kbps(frames: &[(Instant, FrameRecord)], at: Instant, window: Duration) -> f64 {
    let from = at - window;
    let bytes: usize = frames.iter().filter(|(t, _)| *t > from && *t <= at).map(|(_, f)| f.bytes).sum();
    bytes as f64 * 8.0 / window.as_secs_f64() / 1000.0
}

/// Sets each frame's layer from the width of the newest keyframe, for
/// publishers whose layers differ only in resolution. `widths` lists the
/// layers' widths from the lowest layer up.
pub fn layers_from_widths(frames: &mut [(Instant, FrameRecord)], widths: &[u16]) {
    let mut layer = None;
    for (_, frame) in frames.iter_mut() {
        if let Some(width) = frame.width {
            layer = widths.iter().position(|w| *w == width).map(|index| index as u8);
        }
        frame.layer = layer;
    }
}
