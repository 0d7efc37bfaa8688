//! Layer allocation per subscriber: the allocator's choice applied to the
//! down-tracks, with a keyframe request for each layer a down-track moves to.

use super::*;
use crate::allocator::{allocate, Budget, Demand, Priority};

/// How long a layer switch waits for the target's keyframe before the
/// keyframe is requested again, in case the request or the keyframe was
/// lost. The repeat goes out once the layer's 500 ms throttle allows it.
const SWITCH_RETRY: Duration = Duration::from_millis(500);

/// How long a down-track forwards one layer before the link counts as
/// carrying it.
const STEADY_AFTER: Duration = Duration::from_secs(5);

/// The cause of choosing a subscriber's layers again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reallocation {
    /// The periodic pass: keyframes are requested for every new target.
    Periodic,
    /// The subscriber just connected and requests its keyframes itself.
    Connected,
    /// The estimate fell: a down-track moving to a lower layer stops
    /// forwarding the higher one at once, so the congested link drains
    /// before the lower layer's keyframe arrives.
    Congestion,
}

impl Worker {
    /// Re-chooses the layers of every connected subscriber.
    pub(super) fn allocate_all(&mut self, now: Instant) {
        let keys: Vec<PeerKey> = self
            .peers
            .iter()
            .filter(|(_, p)| p.connected && p.slots.iter().any(|s| s.bound.is_some()))
            .map(|(key, _)| *key)
            .collect();
        for key in keys {
            self.allocate_peer(key, now, Reallocation::Periodic);
        }
    }

    /// Chooses the layer of each of one subscriber's down-tracks so that
    /// their total fits the subscriber's bandwidth estimate, and requests a
    /// keyframe of each layer a down-track moves to unless the subscriber
    /// just connected.
    pub(super) fn allocate_peer(&mut self, key: PeerKey, now: Instant, reason: Reallocation) {
        let Self { rooms, peers, touched, metrics, .. } = self;
        let Some(peer) = peers.get_mut(&key) else { return };
        let Some(room) = rooms.get_mut(&peer.room) else { return };
        let estimate = peer.estimate_bps(now);

        let mut demands = Vec::new();
        let mut targets = Vec::new();
        for (index, slot) in peer.slots.iter_mut().enumerate() {
            let Some(publication_key) = slot.bound.filter(|_| !slot.removed) else { continue };
            let Some(publication) = room.publications.get(&publication_key) else { continue };
            if publication.muted {
                continue;
            }
            let layers = publication.layers.ranked(now);
            if layers.is_empty() {
                continue;
            }
            let priority = match (publication.kind, publication.is_resident) {
                (TrackKind::Audio, _) => Priority::Audio,
                (TrackKind::Video, true) => Priority::ResidentVideo,
                (TrackKind::Video, false) => Priority::OtherVideo,
            };
            let held = slot.upgrade_hold.held_layer(estimate, now);
            let current = slot.selector.current();
            let steady = current == slot.selector.target()
                && slot.switch_requested_at.is_none_or(|at| now.saturating_duration_since(at) >= STEADY_AFTER);
            demands.push(Demand { priority, layers, current, held, steady });
            targets.push((index, publication_key));
        }
        if demands.is_empty() {
            return;
        }

        let loss = peer.bandwidth.as_ref().map_or(0.0, |bandwidth| bandwidth.recent_loss());
        let chosen = allocate(Budget { estimate_bps: estimate, loss }, &demands);
        let constrained = demands
            .iter()
            .zip(&chosen)
            .any(|(demand, layer)| *layer != demand.layers.last().map(|&(index, _)| index));
        // Only transport-wide feedback measures a probe. Toward a peer
        // without it (REMB or receiver reports), probe padding would only
        // load the link.
        let measurable = peer.negotiated_transport_cc();
        if let Some(bandwidth) = peer.bandwidth.as_mut() {
            bandwidth.set_constrained(constrained && measurable);
        }
        let mut requests = Vec::new();
        for (((index, publication_key), layer), demand) in targets.into_iter().zip(chosen).zip(&demands) {
            let slot = &mut peer.slots[index];
            if slot.selector.target() == layer {
                // A publisher may ignore a request, or the request may be
                // lost: ask again while the switch waits for its keyframe.
                let waiting = layer.is_some() && slot.selector.current() != layer;
                let overdue = slot
                    .switch_requested_at
                    .is_some_and(|at| now.saturating_duration_since(at) >= SWITCH_RETRY);
                if let (true, true, Some(layer)) = (waiting, overdue, layer) {
                    debug!(room_id = %room.room_id, session_id = %peer.session_id, local_track_id = %slot.local_track_id,
                        layer, "keyframe for a layer switch requested again");
                    slot.switch_requested_at = Some(now);
                    requests.push((publication_key, layer));
                }
                continue;
            }
            debug!(room_id = %room.room_id, session_id = %peer.session_id, local_track_id = %slot.local_track_id,
                from = ?slot.selector.target(), to = ?layer, estimate_bps = estimate, "down-track layer target changed");
            let rank = |layer: Option<LayerIndex>| layer.and_then(|l| demand.layers.iter().position(|&(i, _)| i == l));
            let current = slot.selector.current();
            let downward = rank(layer) < rank(current);
            let switching = slot.selector.set_target(layer);
            slot.switch_requested_at = Some(now);
            if let (true, Some(from)) = (downward, current) {
                let from_bps = demand.layers.iter().find(|&&(index, _)| index == from).map_or(0, |&(_, bps)| bps);
                slot.upgrade_hold.on_downgrade(from, from_bps, now);
            }
            if reason == Reallocation::Congestion && downward {
                slot.selector.reset();
            }
            if switching && reason != Reallocation::Connected {
                if let Some(layer) = layer {
                    requests.push((publication_key, layer));
                }
            }
        }
        for (publication_key, layer) in requests {
            if let Some(publication) = room.publications.get_mut(&publication_key) {
                if publication.kind == TrackKind::Video {
                    request_layer_keyframe(peers, touched, metrics, publication, layer, now);
                }
            }
        }
    }

    /// Pauses the simulcast layers no down-track uses and resumes those a
    /// down-track chose, for publishers on a renegotiated session, which
    /// have a signalling channel to receive the change. WHIP publishers
    /// have none and always send every layer.
    pub(super) fn control_layers(&mut self, now: Instant) {
        let Self { rooms, peers, metrics, .. } = self;
        for room in rooms.values_mut() {
            for publication in room.publications.values_mut() {
                if !publication.layers.is_simulcast() {
                    continue;
                }
                let Some(mid) = publication.mid.clone() else { continue };
                let Some(signals) = peers.get(&publication.publisher).and_then(|peer| peer.signals.clone()) else {
                    continue;
                };
                let mut used = vec![false; publication.layers.len()];
                for binding in &publication.bindings {
                    let Some(slot) = peers.get(&binding.peer).and_then(|peer| peer.slots.get(binding.slot)) else {
                        continue;
                    };
                    for layer in [slot.selector.current(), slot.selector.target()].into_iter().flatten() {
                        if let Some(used) = used.get_mut(layer) {
                            *used = true;
                        }
                    }
                }
                let changes = publication.pause.decide(now, &publication.layers, &used);
                if changes.is_empty() {
                    continue;
                }
                for change in &changes {
                    publication.layers.set_paused(change.layer, change.paused, now);
                    if change.paused {
                        Metrics::add(&metrics.layer_pauses, 1);
                    }
                }
                let active: Vec<String> =
                    publication.layers.iter().filter(|layer| !layer.is_paused()).map(|layer| layer.rid.clone()).collect();
                let paused: Vec<&str> =
                    publication.layers.iter().filter(|layer| layer.is_paused()).map(|layer| layer.rid.as_str()).collect();
                info!(room_id = %room.room_id, participant_id = %publication.participant_id, track_id = %publication.track_id,
                    ?active, ?paused, "simulcast layers changed at the publisher");
                let _ = signals.send(PeerSignal::Layers { mid, active });
            }
        }
    }
}
