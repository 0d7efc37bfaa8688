//! Publications and forwarding: packets from a publisher to every bound
//! down-track, keyframe requests, and binding subscriber slots.

use super::*;
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::sender_report::SenderReport;
use rtc::shared::marshal::MarshalSize;

impl Worker {
    /// Opens a publication on a publisher's first stream of a track, or a
    /// further simulcast layer of a publication already open.
    pub(super) fn open_publication(
        &mut self,
        key: PeerKey,
        library_track_id: String,
        receiver_id: rtc::rtp_transceiver::RTCRtpReceiverId,
        ssrc: u32,
        rid: Option<String>,
    ) {
        let rid = rid.unwrap_or_default();
        let interval = self.config.keyframe_request_interval;
        let Some(peer) = self.peers.get_mut(&key) else { return };
        let publishes = matches!(peer.direction, Direction::Publish | Direction::Participate);
        if !publishes {
            return;
        }
        if let Some(&publication_key) = peer.receivers.get(&library_track_id) {
            let room_key = peer.room;
            let Some(room) = self.rooms.get_mut(&room_key) else { return };
            if let Some(publication) = room.publications.get_mut(&publication_key) {
                let layer = publication.open_layer(&rid, ssrc);
                debug!(room_id = %room.room_id, track_id = %publication.track_id, rid = %rid, ssrc, layer,
                    "simulcast layer opened");
            }
            return;
        }
        let publication_key = self.allocate_key();
        let Some(peer) = self.peers.get_mut(&key) else { return };
        let Some(mut receiver) = peer.pc.rtp_receiver(receiver_id) else { return };
        let kind = match receiver.track().kind() {
            RtpCodecKind::Video => TrackKind::Video,
            _ => TrackKind::Audio,
        };
        let leg = leg_parameters(&receiver.get_parameters().rtp_parameters);
        let audio_level_id = leg.extensions.iter().find(|e| e.uri == AUDIO_LEVEL_URI).map(|e| e.id);
        let mid = peer.pc.rtp_transceiver(receiver_id.into()).and_then(|transceiver| transceiver.mid().clone());
        peer.receivers.insert(library_track_id, publication_key);

        let track_id = format!("tr_{:016x}", rand::random::<u64>());
        let mut publication = Publication {
            track_id,
            publisher: key,
            participant_id: peer.participant_id.clone(),
            is_resident: peer.is_resident,
            receiver_id,
            kind,
            layers: Layers::default(),
            keyframe_requests: KeyframeRequests::new(interval),
            jitter: Vec::new(),
            codec: None,
            video_codec: None,
            leg,
            bindings: Vec::new(),
            muted: false,
            audio_level_id,
            mid,
            pause: Default::default(),
        };
        publication.open_layer(&rid, ssrc);
        if let Some(room) = self.rooms.get_mut(&peer.room) {
            room.publications.insert(publication_key, publication);
        }
    }

    pub(super) fn close_publication(&mut self, key: PeerKey, library_track_id: &str) {
        let Some(peer) = self.peers.get_mut(&key) else { return };
        let Some(publication_key) = peer.receivers.remove(library_track_id) else { return };
        let room_key = peer.room;
        self.unpublish(room_key, publication_key);
        self.bind_free_slots(room_key, Instant::now());
        self.notify_room(room_key);
    }

    pub(super) fn unpublish(&mut self, room_key: RoomKey, publication_key: PublicationKey) {
        let Some(room) = self.rooms.get_mut(&room_key) else { return };
        let Some(publication) = room.publications.remove(&publication_key) else { return };
        for binding in &publication.bindings {
            let Some(peer) = self.peers.get_mut(&binding.peer) else { continue };
            let renegotiated = peer.direction == Direction::Participate;
            let Some(slot) = peer.slots.get_mut(binding.slot) else { continue };
            slot.bound = None;
            if renegotiated && !slot.removed {
                slot.removed = true;
                if let Err(err) = peer.pc.remove_track(slot.sender_id) {
                    debug!(session_id = %peer.session_id, error = %err, "removing a sender failed");
                }
                peer.needs_offer = true;
            }
        }
        if publication.codec.is_some() {
            let _ = self.events.send(MediaEvent::TrackUnpublished {
                room_id: room.room_id.clone(),
                participant_id: publication.participant_id.clone(),
                track_id: publication.track_id.clone(),
                at_ms: unix_ms_now(),
            });
            let tracks = self.metrics.tracks.load(std::sync::atomic::Ordering::Relaxed);
            Metrics::set(&self.metrics.tracks, tracks.saturating_sub(1));
        }
    }

    /// Forwards one packet from a publisher to every bound slot.
    pub(super) fn forward(&mut self, publisher: PeerKey, library_track_id: &str, packet: Packet, now: Instant) {
        Metrics::add(&self.metrics.rtp_received, 1);
        let Some(peer) = self.peers.get(&publisher) else { return };
        let Some(&publication_key) = peer.receivers.get(library_track_id) else { return };
        let room_key = peer.room;

        let newly_published = self.learn_codec(room_key, publication_key, packet.header.payload_type);
        if newly_published {
            self.bind_free_slots(room_key, now);
            self.notify_room(room_key);
        }
        self.forward_to_bindings(room_key, publication_key, packet, now);
    }

    /// Records the publication's codec from its first packet and reports
    /// the track as published; returns true when that happened now.
    pub(super) fn learn_codec(&mut self, room_key: RoomKey, publication_key: PublicationKey, payload_type: u8) -> bool {
        let Some(room) = self.rooms.get_mut(&room_key) else { return false };
        let Some(publication) = room.publications.get_mut(&publication_key) else { return false };
        if publication.codec.is_some() {
            return false;
        }
        let Some(codec) = publication.leg.codecs.iter().find(|c| c.payload_type == payload_type) else {
            return false;
        };
        publication.codec = Some(codec.mime_type.clone());
        publication.video_codec = VideoCodec::from_mime(&codec.mime_type);
        info!(room_id = %room.room_id, participant_id = %publication.participant_id,
            track_id = %publication.track_id, codec = %codec.mime_type, "track published");
        let _ = self.events.send(MediaEvent::TrackPublished {
            room_id: room.room_id.clone(),
            participant_id: publication.participant_id.clone(),
            track_id: publication.track_id.clone(),
            kind: publication.kind,
            codec: codec.mime_type.clone(),
            at_ms: unix_ms_now(),
        });
        Metrics::add(&self.metrics.tracks, 1);
        true
    }

    /// Rewrites one packet for every connected subscriber bound to the
    /// publication and writes it to their down-tracks.
    pub(super) fn forward_to_bindings(&mut self, room_key: RoomKey, publication_key: PublicationKey, packet: Packet, now: Instant) {
        let Some(room) = self.rooms.get_mut(&room_key) else { return };
        let Some(publication) = room.publications.get_mut(&publication_key) else { return };
        if publication.muted || publication.codec.is_none() {
            return;
        }
        if let Some(id) = publication.audio_level_id {
            let level = packet.header.extensions.iter().find(|e| e.id == id).and_then(|e| e.payload.first().copied());
            if let Some(byte) = level {
                room.speakers.observe(&publication.participant_id, byte & 0x7f, byte & 0x80 != 0, now);
            }
        }

        let Some(layer) = publication.layers.by_ssrc(packet.header.ssrc) else { return };
        let media_bytes = if packet.header.padding && packet.payload.is_empty() { 0 } else { packet.payload.len() };
        publication.layers.observe(layer, now, media_bytes);
        if media_bytes > 0 {
            let clock_rate = publication.kind.clock_rate();
            if let Some(jitter) = publication.jitter.get_mut(layer) {
                jitter.on_packet(now, packet.header.timestamp, clock_rate);
            }
        }
        // Audio can start on any packet; video only on a keyframe.
        let keyframe_start = match publication.video_codec {
            Some(codec) => media_bytes > 0 && starts_keyframe(codec, &packet.payload),
            None => publication.kind == TrackKind::Audio,
        };
        if keyframe_start && publication.video_codec.is_some() {
            publication.keyframe_requests.keyframe_arrived(layer);
        }

        let mut forwarded = 0u64;
        for binding in &publication.bindings {
            let Some(subscriber) = self.peers.get_mut(&binding.peer) else { continue };
            if !subscriber.connected {
                // Packets written before DTLS is up are lost, and the
                // down-track would start on a keyframe the subscriber
                // never sees. It starts at the keyframe requested on connect.
                continue;
            }
            let Some(slot) = subscriber.slots.get_mut(binding.slot) else { continue };
            match slot.selector.select(layer, keyframe_start) {
                Selection::Drop => continue,
                Selection::Switch { from } => {
                    slot.track.restart();
                    if from.is_some() {
                        if let Some(bandwidth) = subscriber.bandwidth.as_mut() {
                            bandwidth.on_layer_switch(now);
                        }
                        subscriber.layer_changes += 1;
                        Metrics::add(&self.metrics.layer_switches, 1);
                        debug!(session_id = %subscriber.session_id, track_id = %publication.track_id,
                            layer, rid = %publication.layers.get(layer).map(|l| l.rid.as_str()).unwrap_or(""),
                            "down-track switched layer");
                    }
                }
                Selection::Forward => {}
            }
            let mut copy = packet.clone();
            if slot.track.rewrite(&mut copy, now) != Rewrite::Forward {
                continue;
            }
            let ends_frame = copy.header.marker && publication.kind == TrackKind::Video;
            let sender_id = slot.sender_id;
            if let Some(bandwidth) = subscriber.bandwidth.as_mut() {
                bandwidth.on_media_sent(now, copy.marshal_size());
            }
            match write_to_sender(&mut subscriber.pc, sender_id, copy, now) {
                Ok(()) => forwarded += 1,
                Err(err) => debug!(session_id = %subscriber.session_id, error = %err, "write to down-track failed"),
            }
            if ends_frame {
                send_probe_padding(subscriber, binding.slot, now);
            }
            Self::touch(&mut self.touched, subscriber, binding.peer);
        }
        Metrics::add(&self.metrics.rtp_forwarded, forwarded);
    }

    /// Turns a subscriber's PLI or FIR into a throttled request upstream.
    pub(super) fn handle_feedback(
        &mut self,
        subscriber: PeerKey,
        local_track_id: &str,
        packets: &[Box<dyn rtc::rtcp::Packet>],
        now: Instant,
    ) {
        let nacks = packets
            .iter()
            .filter(|p| p.as_any().downcast_ref::<TransportLayerNack>().is_some())
            .count();
        Metrics::add(&self.metrics.nacks_received, nacks as u64);
        self.feed_receiver_feedback(subscriber, packets, now);
        let wants_keyframe = packets.iter().any(|p| {
            p.as_any().downcast_ref::<PictureLossIndication>().is_some()
                || p.as_any().downcast_ref::<FullIntraRequest>().is_some()
        });
        if !wants_keyframe {
            return;
        }
        Metrics::add(&self.metrics.keyframe_requests_received, 1);
        let Some(peer) = self.peers.get(&subscriber) else { return };
        let Some(slot) = peer.slots.iter().find(|slot| slot.local_track_id == local_track_id) else { return };
        let (Some(publication_key), Some(layer)) = (slot.bound, slot.selector.target()) else { return };
        let room_key = peer.room;
        let Self { rooms, peers, touched, metrics, .. } = self;
        let Some(publication) = rooms.get_mut(&room_key).and_then(|r| r.publications.get_mut(&publication_key)) else {
            return;
        };
        request_layer_keyframe(peers, touched, metrics, publication, layer, now);
    }

    /// Feeds REMB, report-block loss, jitter and the round-trip time from a
    /// subscriber's receiver or sender reports to its estimator and quality.
    fn feed_receiver_feedback(&mut self, subscriber: PeerKey, packets: &[Box<dyn rtc::rtcp::Packet>], now: Instant) {
        let Some(peer) = self.peers.get_mut(&subscriber) else { return };
        let arrival = rtt::compact_ntp(SystemTime::now());
        // The worst loss of any stream in the compound packet: a client may
        // report its audio and its video in separate blocks or packets, and
        // the video carries most of the rate.
        let mut worst_loss: Option<u8> = None;
        let mut last_round_trip = None;
        for packet in packets {
            let any = packet.as_any();
            if let Some(remb) = any.downcast_ref::<ReceiverEstimatedMaximumBitrate>() {
                if let Some(bandwidth) = peer.bandwidth.as_mut() {
                    bandwidth.on_remb(now, f64::from(remb.bitrate));
                }
                continue;
            }
            let blocks = if let Some(report) = any.downcast_ref::<ReceiverReport>() {
                &report.reports
            } else if let Some(report) = any.downcast_ref::<SenderReport>() {
                &report.reports
            } else {
                continue;
            };
            let Some(loss) = blocks.iter().map(|b| b.fraction_lost).max() else { continue };
            worst_loss = Some(worst_loss.map_or(loss, |worst| worst.max(loss)));
            let jitter = blocks
                .iter()
                .filter_map(|b| {
                    let slot = peer.slots.iter().find(|slot| slot.track.ssrc() == b.ssrc)?;
                    Some(Duration::from_secs_f64(f64::from(b.jitter) / f64::from(slot.kind.clock_rate())))
                })
                .max();
            if jitter.is_some() {
                peer.jitter = jitter;
            }
            let round_trip = blocks.iter().find_map(|b| rtt::round_trip(arrival, b.last_sender_report, b.delay));
            if let Some(rtt) = round_trip {
                peer.round_trip_time = Some(rtt);
                peer.nack_filter.set_round_trip(rtt);
                last_round_trip = Some(rtt);
            }
        }
        if let (Some(loss), Some(bandwidth)) = (worst_loss, peer.bandwidth.as_mut()) {
            bandwidth.on_receiver_report(now, f32::from(loss) / 256.0, last_round_trip);
        }
    }

    /// Asks for a keyframe of the target layer of every video down-track of
    /// a newly connected subscriber.
    pub(super) fn request_keyframes_for(&mut self, key: PeerKey, now: Instant) {
        let Some(peer) = self.peers.get(&key) else { return };
        let wanted: Vec<(PublicationKey, LayerIndex)> =
            peer.slots.iter().filter_map(|s| Some((s.bound?, s.selector.target()?))).collect();
        let room_key = peer.room;
        let Self { rooms, peers, touched, metrics, .. } = self;
        let Some(room) = rooms.get_mut(&room_key) else { return };
        for (publication_key, layer) in wanted {
            if let Some(publication) = room.publications.get_mut(&publication_key) {
                if publication.kind == TrackKind::Video {
                    request_layer_keyframe(peers, touched, metrics, publication, layer, now);
                }
            }
        }
    }

    /// Binds every free slot in the room to the best publication of its kind.
    pub(super) fn bind_free_slots(&mut self, room_key: RoomKey, now: Instant) {
        let Self { rooms, peers, touched, metrics, .. } = self;
        let Some(room) = rooms.get_mut(&room_key) else { return };
        let mut newly_bound = Vec::new();
        for &peer_key in &room.peers {
            let Some(peer) = peers.get_mut(&peer_key) else { continue };
            if peer.direction == Direction::Participate {
                continue;
            }
            for (index, slot) in peer.slots.iter_mut().enumerate() {
                if slot.bound.is_some() {
                    continue;
                }
                let Some(publication_key) = room.best_publication(slot.kind, &peer.participant_id) else {
                    continue;
                };
                let Some(publication) = room.publications.get_mut(&publication_key) else { continue };
                slot.track.bind(&publication.leg, &slot.leg);
                slot.selector.reset();
                let layer = publication.starting_layer(now);
                slot.selector.set_target(layer);
                slot.bound = Some(publication_key);
                publication.bindings.push(Binding { peer: peer_key, slot: index });
                debug!(room_id = %room.room_id, participant_id = %peer.participant_id,
                    track_id = %publication.track_id, "down-track bound");
                if let (TrackKind::Video, true, Some(layer)) = (publication.kind, peer.connected, layer) {
                    newly_bound.push((publication_key, layer));
                }
            }
        }
        // A connected subscriber's new binding needs a keyframe to start.
        for (publication_key, layer) in newly_bound {
            if let Some(publication) = room.publications.get_mut(&publication_key) {
                request_layer_keyframe(peers, touched, metrics, publication, layer, now);
            }
        }
        self.subscribe_participants(room_key);
    }

    pub(super) fn set_track_muted(&mut self, room_id: &str, track_id: &str, muted: bool) {
        let now = Instant::now();
        let Some(&room_key) = self.room_keys.get(room_id) else { return };
        let Self { rooms, peers, touched, metrics, .. } = self;
        let Some(room) = rooms.get_mut(&room_key) else { return };
        let Some(publication) = room.publications.values_mut().find(|p| p.track_id == track_id) else {
            debug!(room_id, track_id, "mute request for a track that is not published");
            return;
        };
        if publication.muted == muted {
            return;
        }
        publication.muted = muted;
        info!(room_id, track_id, muted, "track mute changed");
        if muted {
            return;
        }
        // Resume on a keyframe: rebinding makes each down-track wait for one
        // while its numbering continues.
        let mut wanted = Vec::new();
        for binding in &publication.bindings {
            if let Some(slot) = peers.get_mut(&binding.peer).and_then(|p| p.slots.get_mut(binding.slot)) {
                slot.track.bind(&publication.leg, &slot.leg);
                slot.selector.reset();
                if let Some(layer) = slot.selector.target() {
                    if !wanted.contains(&layer) {
                        wanted.push(layer);
                    }
                }
            }
        }
        if publication.kind == TrackKind::Video {
            for layer in wanted {
                request_layer_keyframe(peers, touched, metrics, publication, layer, now);
            }
        }
    }
}

/// Writes one rewritten packet to a subscriber's sender.
fn write_to_sender(pc: &mut RTCPeerConnection, sender_id: RTCRtpSenderId, packet: Packet, now: Instant) -> Result<(), String> {
    match pc.rtp_sender(sender_id) {
        Some(mut sender) => sender.write_rtp(now, packet).map_err(|err| err.to_string()),
        None => Err("sender not found".to_owned()),
    }
}

/// After a video frame's last packet, sends the padding an active probe
/// cluster is owed on that down-track, or starts a cluster when the
/// estimator requests one.
fn send_probe_padding(subscriber: &mut Peer, slot_index: usize, now: Instant) {
    let Some(bandwidth) = subscriber.bandwidth.as_mut() else { return };
    let Some((cluster_id, count)) = bandwidth.frame_ended(now) else { return };
    let Some(slot) = subscriber.slots.get_mut(slot_index) else { return };
    for _ in 0..count {
        let Some(packet) = slot.track.padding_packet() else { return };
        bandwidth.on_probe_packet_sent(cluster_id, &packet);
        if let Err(err) = write_to_sender(&mut subscriber.pc, slot.sender_id, packet, now) {
            debug!(session_id = %subscriber.session_id, error = %err, "probe padding write failed");
            return;
        }
    }
}

/// Requests a keyframe of one layer from the publisher, if the layer's
/// throttle allows one now; otherwise the throttle sends it later.
pub(super) fn request_layer_keyframe(
    peers: &mut HashMap<PeerKey, Peer>,
    touched: &mut Vec<PeerKey>,
    metrics: &Metrics,
    publication: &mut Publication,
    layer: LayerIndex,
    now: Instant,
) {
    if let Some(ssrc) = publication.keyframe_request(layer, now) {
        send_keyframe_request(peers, touched, metrics, publication, ssrc, now);
    }
}

pub(super) fn send_keyframe_request(
    peers: &mut HashMap<PeerKey, Peer>,
    touched: &mut Vec<PeerKey>,
    metrics: &Metrics,
    publication: &Publication,
    media_ssrc: u32,
    now: Instant,
) {
    let Some(publisher) = peers.get_mut(&publication.publisher) else { return };
    let Some(mut receiver) = publisher.pc.rtp_receiver(publication.receiver_id) else { return };
    let pli = PictureLossIndication { sender_ssrc: 0, media_ssrc };
    match receiver.write_rtcp(now, vec![Box::new(pli)]) {
        Ok(()) => {
            Metrics::add(&metrics.keyframe_requests_sent, 1);
            debug!(track_id = %publication.track_id, media_ssrc, "keyframe requested upstream");
        }
        Err(err) => debug!(track_id = %publication.track_id, error = %err, "keyframe request failed"),
    }
    Worker::touch(touched, publisher, publication.publisher);
}
