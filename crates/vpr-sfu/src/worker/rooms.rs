//! Room-wide duties: quality reports and alerts, the active speaker, empty
//! timeouts, and closing rooms or a participant's sessions.

use super::*;

impl Worker {
    /// Ends a participant's sessions, of one direction or all.
    pub(super) fn end_participant_sessions(&mut self, room_id: &str, participant_id: &str, direction: Option<Direction>, reason: &str) {
        let Some(room) = self.room_keys.get(room_id).and_then(|key| self.rooms.get(key)) else { return };
        let keys: Vec<PeerKey> = room
            .peers
            .iter()
            .copied()
            .filter(|key| {
                self.peers.get(key).is_some_and(|peer| {
                    peer.participant_id == participant_id
                        && direction.is_none_or(|d| d == peer.direction || peer.direction == Direction::Participate)
                })
            })
            .collect();
        for key in keys {
            self.remove_peer(key, reason);
        }
    }

    /// Samples every connected peer's statistics and reports quality per
    /// participant, with alert changes.
    pub(super) fn report_quality(&mut self, now: Instant) {
        let mut samples: HashMap<(RoomKey, String), QualitySample> = HashMap::new();
        let mut layer_changes: HashMap<(RoomKey, String), u64> = HashMap::new();
        let mut video_layers: HashMap<(RoomKey, String), String> = HashMap::new();
        for (&key, peer) in self.peers.iter_mut() {
            if !peer.connected {
                continue;
            }
            let report = peer.pc.get_stats(now, StatsSelector::None);
            let mut counters = transport_counters(&report);
            counters.round_trip_time = peer.round_trip_time.or(counters.round_trip_time);
            // A subscriber reports the jitter of what it receives; for a
            // publisher the server measures what arrives.
            let published = self.rooms.get(&peer.room).and_then(|room| {
                room.publications
                    .values()
                    .filter(|publication| publication.publisher == key)
                    .filter_map(|publication| publication.worst_jitter())
                    .max()
            });
            counters.jitter = peer.jitter.max(published);
            let Some(sample) = peer.quality.update(now, counters) else { continue };
            *layer_changes.entry((peer.room, peer.participant_id.clone())).or_insert(0) += peer.layer_changes;
            if let Some(rid) = self.rooms.get(&peer.room).and_then(|room| watched_layer(room, peer)) {
                video_layers.insert((peer.room, peer.participant_id.clone()), rid);
            }
            samples
                .entry((peer.room, peer.participant_id.clone()))
                .and_modify(|combined| *combined = combined.combine(sample))
                .or_insert(sample);
        }

        let at_ms = unix_ms_now();
        for ((room_key, participant_id), sample) in samples {
            let Some(room) = self.rooms.get_mut(&room_key) else { continue };
            let rtt_ms = sample.round_trip_time.map(|rtt| rtt.as_secs_f64() * 1000.0).unwrap_or(0.0);
            let jitter_ms = sample.jitter.map(|jitter| jitter.as_secs_f64() * 1000.0).unwrap_or(0.0);
            for key in &room.peers {
                let Some(peer) = self.peers.get(key) else { continue };
                if peer.participant_id != participant_id {
                    continue;
                }
                if let Some(signals) = &peer.signals {
                    let _ = signals.send(PeerSignal::Quality {
                        bitrate_kbps: sample.bitrate_kbps,
                        packet_loss: sample.packet_loss,
                        rtt_ms,
                    });
                }
            }
            let _ = self.events.send(MediaEvent::QualityReport {
                room_id: room.room_id.clone(),
                participant_id: participant_id.clone(),
                bitrate_kbps: sample.bitrate_kbps,
                packet_loss: sample.packet_loss,
                rtt_ms,
                jitter_ms,
                video_layer: video_layers.remove(&(room_key, participant_id.clone())).unwrap_or_default(),
                layer_changes: layer_changes.get(&(room_key, participant_id.clone())).copied().unwrap_or(0),
                at_ms,
            });
            let change = room.alerts.entry(participant_id.clone()).or_default().update(&sample);
            if let Some(change) = change {
                let raised = change == AlertChange::Raised;
                warn!(room_id = %room.room_id, participant_id = %participant_id, raised,
                    packet_loss = sample.packet_loss, rtt_ms, "quality alert changed");
                let _ = self.events.send(MediaEvent::QualityAlert {
                    room_id: room.room_id.clone(),
                    participant_id,
                    raised,
                    packet_loss: sample.packet_loss,
                    rtt_ms,
                    at_ms,
                });
            }
        }
    }

    /// Reports rooms whose loudest participant changed.
    pub(super) fn report_active_speakers(&mut self, now: Instant) {
        for room in self.rooms.values_mut() {
            let Some(participant_id) = room.speakers.poll(now) else { continue };
            debug!(room_id = %room.room_id, participant_id = %participant_id, "active speaker changed");
            for key in &room.peers {
                if let Some(signals) = self.peers.get(key).and_then(|p| p.signals.as_ref()) {
                    let _ = signals.send(PeerSignal::ActiveSpeaker { participant_id: participant_id.clone() });
                }
            }
            let _ = self.events.send(MediaEvent::ActiveSpeaker {
                room_id: room.room_id.clone(),
                participant_id,
                at_ms: unix_ms_now(),
            });
        }
    }

    /// Tracks when each room became empty and closes rooms empty for longer
    /// than their timeout.
    pub(super) fn close_empty_rooms(&mut self, now: Instant) {
        let mut expired = Vec::new();
        for room in self.rooms.values_mut() {
            let connected = room.peers.iter().any(|key| self.peers.get(key).is_some_and(|p| p.connected));
            if connected {
                room.empty_since = None;
                continue;
            }
            let since = *room.empty_since.get_or_insert(now);
            if room.empty_timeout.is_some_and(|timeout| now.duration_since(since) >= timeout) {
                expired.push(room.room_id.clone());
            }
        }
        for room_id in expired {
            info!(room_id = %room_id, "closing room after its empty timeout");
            self.close_room(&room_id, "empty timeout");
            let _ = self.events.send(MediaEvent::RoomEmptyTimeout { room_id, at_ms: unix_ms_now() });
        }
    }

    pub(super) fn close_room(&mut self, room_id: &str, reason: &str) {
        self.open_rooms.lock().expect("room set lock").remove(room_id);
        let Some(room_key) = self.room_keys.remove(room_id) else { return };
        let peers: Vec<PeerKey> = self.rooms.get(&room_key).map(|r| r.peers.clone()).unwrap_or_default();
        for key in peers {
            self.remove_peer(key, reason);
        }
        self.rooms.remove(&room_key);
        Metrics::set(&self.metrics.rooms, self.rooms.len() as u64);
        info!(room_id, reason, "room closed on media plane");
    }

    pub(super) fn close_all(&mut self, reason: &str) {
        let room_ids: Vec<String> = self.room_keys.keys().cloned().collect();
        for room_id in room_ids {
            self.close_room(&room_id, reason);
        }
    }
}

/// Reads the counters quality is computed from out of a stats report.
/// RID of the layer `peer` receives of the first simulcast video it is
/// bound to, the resident's before anyone else's.
fn watched_layer(room: &Room, peer: &Peer) -> Option<String> {
    let mut watched: Vec<(bool, String)> = peer
        .slots
        .iter()
        .filter(|slot| slot.kind == TrackKind::Video && !slot.removed)
        .filter_map(|slot| {
            let publication = room.publications.get(&slot.bound?)?;
            let layer = publication.layers.get(slot.selector.current()?)?;
            publication.layers.is_simulcast().then(|| (!publication.is_resident, layer.rid.clone()))
        })
        .collect();
    watched.sort();
    watched.into_iter().next().map(|(_, rid)| rid)
}

pub(super) fn transport_counters(report: &RTCStatsReport) -> TransportCounters {
    let mut counters = TransportCounters::default();
    for entry in report.iter() {
        match entry {
            RTCStatsReportEntry::InboundRtp(inbound) => {
                counters.bytes += inbound.bytes_received;
                counters.packets_received += inbound.received_rtp_stream_stats.packets_received;
                counters.packets_lost += inbound.received_rtp_stream_stats.packets_lost;
            }
            RTCStatsReportEntry::OutboundRtp(outbound) => {
                counters.bytes += outbound.sent_rtp_stream_stats.bytes_sent;
            }
            RTCStatsReportEntry::RemoteInboundRtp(remote) => {
                let lost = counters.reported_fraction_lost.unwrap_or(0.0).max(remote.fraction_lost);
                counters.reported_fraction_lost = Some(lost);
                if remote.round_trip_time_measurements > 0 {
                    let rtt = Duration::from_secs_f64(remote.round_trip_time.max(0.0));
                    counters.round_trip_time = Some(counters.round_trip_time.map_or(rtt, |known| known.max(rtt)));
                }
            }
            _ => {}
        }
    }
    counters
}
