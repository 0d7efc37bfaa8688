//! Renegotiated sessions (WebSocket join): senders added and removed as
//! publications come and go, server offers, and the client's answers.

use super::*;
use crate::OfferReply;

impl Worker {
    /// Gives every renegotiated session of the room a sender for each
    /// publication it lacks, and offers again where senders changed.
    pub(super) fn subscribe_participants(&mut self, room_key: RoomKey) {
        let Self { rooms, peers, .. } = self;
        let Some(room) = rooms.get_mut(&room_key) else { return };
        let mut changed = Vec::new();
        for &peer_key in &room.peers {
            let Some(peer) = peers.get_mut(&peer_key) else { continue };
            if peer.direction != Direction::Participate {
                continue;
            }
            for (publication_key, publication) in room.publications.iter_mut() {
                let Some(codec) = publication.codec.clone() else { continue };
                if publication.participant_id == peer.participant_id {
                    continue;
                }
                if peer.slots.iter().any(|slot| !slot.removed && slot.bound == Some(*publication_key)) {
                    continue;
                }
                let Some(clock_rate) = publication.leg.codecs.iter().find(|c| c.mime_type == codec).map(|c| c.clock_rate) else {
                    continue;
                };
                let sender = SenderSpec {
                    index: peer.slots.len(),
                    publisher_id: &publication.participant_id,
                    kind: publication.kind,
                    mime: &codec,
                    clock_rate,
                };
                match add_sender(&mut peer.pc, &peer.session_id, sender) {
                    Ok((sender_id, local_track_id, ssrc)) => {
                        let index = peer.slots.len();
                        peer.slots.push(Slot {
                            kind: publication.kind,
                            sender_id,
                            local_track_id,
                            leg: LegParameters::default(),
                            bound: Some(*publication_key),
                            track: DownTrack::new(ssrc, publication.kind == TrackKind::Video),
                            selector: LayerSelector::default(),
                            switch_requested_at: None,
                            upgrade_hold: Default::default(),
                            removed: false,
                        });
                        publication.bindings.push(Binding { peer: peer_key, slot: index });
                        peer.needs_offer = true;
                        changed.push(peer_key);
                    }
                    Err(err) => warn!(session_id = %peer.session_id, error = %err, "adding a sender failed"),
                }
            }
        }
        // Peers whose senders were added here or removed by an unpublish.
        let pending: Vec<PeerKey> = self
            .rooms
            .get(&room_key)
            .map(|room| room.peers.iter().copied().filter(|k| self.peers.get(k).is_some_and(|p| p.needs_offer)).collect())
            .unwrap_or_default();
        for peer_key in changed.into_iter().chain(pending) {
            self.renegotiate_if_needed(peer_key);
        }
    }

    /// Sends who is in the room and what they publish to every renegotiated
    /// session of the room.
    pub(super) fn notify_room(&self, room_key: RoomKey) {
        let Some(room) = self.rooms.get(&room_key) else { return };
        let mut participants: Vec<RoomParticipant> = Vec::new();
        for key in &room.peers {
            let Some(peer) = self.peers.get(key) else { continue };
            if peer.connected && !participants.iter().any(|p| p.participant_id == peer.participant_id) {
                participants.push(RoomParticipant { participant_id: peer.participant_id.clone(), is_resident: peer.is_resident });
            }
        }
        let tracks: Vec<RoomTrack> = room
            .publications
            .values()
            .filter(|p| p.codec.is_some())
            .map(|p| RoomTrack { track_id: p.track_id.clone(), participant_id: p.participant_id.clone(), kind: p.kind })
            .collect();
        for key in &room.peers {
            if let Some(signals) = self.peers.get(key).and_then(|p| p.signals.as_ref()) {
                let _ = signals.send(PeerSignal::Room { participants: participants.clone(), tracks: tracks.clone() });
            }
        }
    }

    /// Sends a new offer to a renegotiated session whose senders changed,
    /// unless one is already waiting for its answer.
    pub(super) fn renegotiate_if_needed(&mut self, key: PeerKey) {
        let Some(peer) = self.peers.get_mut(&key) else { return };
        if !peer.needs_offer || peer.offer_pending || !peer.connected {
            return;
        }
        let Some(signals) = peer.signals.clone() else { return };
        let now = Instant::now();
        let offer = peer.pc.create_offer(None).and_then(|offer| {
            peer.pc.set_local_description(now, offer)?;
            Ok(peer.pc.local_description().map(|d| d.sdp).unwrap_or_default())
        });
        match offer {
            Ok(sdp) => {
                peer.needs_offer = false;
                peer.offer_pending = true;
                debug!(session_id = %peer.session_id, "sending renegotiation offer");
                let _ = signals.send(PeerSignal::Offer(sdp));
            }
            Err(err) => warn!(session_id = %peer.session_id, error = %err, "creating a renegotiation offer failed"),
        }
        Self::touch(&mut self.touched, peer, key);
    }

    /// Applies a renegotiated session's answer: the new senders learn what
    /// the client negotiated and start on a keyframe.
    pub(super) fn apply_answer(&mut self, session_id: &str, answer_sdp: String) -> Result<(), MediaError> {
        let key = *self
            .by_session
            .get(session_id)
            .ok_or_else(|| MediaError::SessionNotFound(session_id.to_owned()))?;
        let now = Instant::now();
        let Self { rooms, peers, touched, metrics, .. } = self;
        let peer = peers.get_mut(&key).ok_or_else(|| MediaError::SessionNotFound(session_id.to_owned()))?;
        if !peer.offer_pending {
            return Err(MediaError::Negotiation("no offer is waiting for an answer".into()));
        }
        let answer = rtc::peer_connection::sdp::RTCSessionDescription::answer(answer_sdp)?;
        peer.pc.set_remote_description(now, answer)?;
        peer.offer_pending = false;

        let room_key = peer.room;
        let mut video = Vec::new();
        for slot in peer.slots.iter_mut().filter(|slot| !slot.removed) {
            if let Some(mut sender) = peer.pc.rtp_sender(slot.sender_id) {
                slot.leg = leg_parameters(&sender.get_parameters().rtp_parameters);
            }
            let Some(publication_key) = slot.bound else { continue };
            // A sender added while this answer's offer was pending is not
            // negotiated yet. Forwarding on its SSRC now would make a browser
            // route the unknown SSRC to another m-section by payload type,
            // and then reject the next offer that signals it (Chromium:
            // "Failed to apply demuxer criteria"). It starts after its answer.
            let negotiated = peer
                .pc
                .rtp_transceiver(slot.sender_id.into())
                .is_some_and(|transceiver| transceiver.current_direction().has_send());
            if !negotiated {
                continue;
            }
            let Some(publication) = rooms.get(&room_key).and_then(|r| r.publications.get(&publication_key)) else {
                continue;
            };
            slot.track.bind(&publication.leg, &slot.leg);
            slot.selector.reset();
            let layer = slot.selector.target().or_else(|| publication.starting_layer(now));
            slot.selector.set_target(layer);
            if let (TrackKind::Video, Some(layer)) = (publication.kind, layer) {
                video.push((publication_key, layer));
            }
        }
        Self::touch(touched, peer, key);
        if let Some(room) = rooms.get_mut(&room_key) {
            for (publication_key, layer) in video {
                if let Some(publication) = room.publications.get_mut(&publication_key) {
                    request_layer_keyframe(peers, touched, metrics, publication, layer, now);
                }
            }
        }
        self.renegotiate_if_needed(key);
        Ok(())
    }

    /// Answers an offer from a renegotiated session's client. An offer with
    /// new ICE credentials restarts ICE: the peer connection answers with
    /// its local credentials, and STUN naming either the new or the old
    /// local ufrag reaches this peer until it is connected again.
    ///
    /// The server wins glare: while its own offer waits for an answer, the
    /// client's offer is not applied and [`OfferReply::Glare`] is returned.
    pub(super) fn apply_client_offer(&mut self, session_id: &str, offer_sdp: String) -> Result<OfferReply, MediaError> {
        let key = *self
            .by_session
            .get(session_id)
            .ok_or_else(|| MediaError::SessionNotFound(session_id.to_owned()))?;
        let now = Instant::now();
        let peer = self.peers.get_mut(&key).ok_or_else(|| MediaError::SessionNotFound(session_id.to_owned()))?;
        if peer.direction != Direction::Participate {
            return Err(MediaError::Negotiation("only WebSocket sessions accept a later offer".into()));
        }
        if peer.offer_pending {
            debug!(session_id = %peer.session_id, "client offer during a pending server offer (glare); not applied");
            return Ok(OfferReply::Glare);
        }

        let previous_remote_ufrag = peer.pc.remote_description().and_then(|d| ice_ufrag(&d.sdp).map(str::to_owned));
        let ice_restart = previous_remote_ufrag.as_deref() != ice_ufrag(&offer_sdp);
        let offer = rtc::peer_connection::sdp::RTCSessionDescription::offer(offer_sdp)?;
        peer.pc.set_remote_description(now, offer)?;
        let answer = peer.pc.create_answer(None)?;
        peer.pc.set_local_description(now, answer)?;
        let answer_sdp = peer
            .pc
            .local_description()
            .map(|description| description.sdp)
            .ok_or_else(|| MediaError::Negotiation("no local description after answering".into()))?;

        // NOTE: rtc 0.21.1 restarts with the credentials of the setting
        // engine when it has them, so the local ufrag changes only for
        // peer connections built without fixed credentials.
        if let Some(ufrag) = ice_ufrag(&answer_sdp).filter(|ufrag| *ufrag != peer.local_ufrag) {
            let previous = std::mem::replace(&mut peer.local_ufrag, ufrag.to_owned());
            if let Some(older) = peer.previous_ufrag.replace(previous) {
                self.by_ufrag.remove(&older);
            }
            self.by_ufrag.insert(ufrag.to_owned(), key);
        }
        info!(session_id = %peer.session_id, participant_id = %peer.participant_id, ice_restart,
            "client offer answered");
        Self::touch(&mut self.touched, peer, key);
        self.renegotiate_if_needed(key);
        Ok(OfferReply::Answer(answer_sdp))
    }

    /// Detaches a renegotiated session whose signalling channel closed; it
    /// ends after `grace` unless resumed. A session that a newer channel has
    /// already resumed stays attached.
    pub(super) fn detach_session(&mut self, session_id: &str, grace: Duration) {
        let Some(peer) = self.by_session.get(session_id).and_then(|key| self.peers.get_mut(key)) else { return };
        if peer.signals.as_ref().is_some_and(|signals| !signals.is_closed()) {
            return;
        }
        info!(session_id = %peer.session_id, participant_id = %peer.participant_id,
            grace_s = grace.as_secs(), "signalling channel lost; session waits for a resume");
        peer.signals = None;
        peer.detached_until = Some(Instant::now() + grace);
    }

    /// Attaches `signals` to the participant's renegotiated session, whether
    /// or not its old channel has closed yet, and sends it the offer that may
    /// have been lost with the old channel.
    pub(super) fn resume_session(
        &mut self,
        room_id: &str,
        participant_id: &str,
        signals: mpsc::UnboundedSender<PeerSignal>,
    ) -> Result<String, MediaError> {
        let not_found = || MediaError::SessionNotFound(format!("{participant_id} in room {room_id}"));
        let room_key = *self.room_keys.get(room_id).ok_or_else(not_found)?;
        let room = self.rooms.get(&room_key).ok_or_else(not_found)?;
        let key = room
            .peers
            .iter()
            .copied()
            .find(|key| {
                self.peers
                    .get(key)
                    .is_some_and(|p| p.participant_id == participant_id && p.direction == Direction::Participate)
            })
            .ok_or_else(not_found)?;
        let peer = self.peers.get_mut(&key).ok_or_else(not_found)?;
        if peer.offer_pending {
            if let Some(offer) = peer.pc.pending_local_description() {
                let _ = signals.send(PeerSignal::Offer(offer.sdp));
            }
        }
        // Replacing the sender closes the old channel, whose socket task then stops.
        peer.signals = Some(signals);
        peer.detached_until = None;
        let session_id = peer.session_id.clone();
        info!(session_id = %session_id, participant_id, "session resumed on a new signalling channel");
        self.renegotiate_if_needed(key);
        self.notify_room(room_key);
        Ok(session_id)
    }

    /// Ends detached sessions whose grace period is over.
    pub(super) fn end_expired_detached(&mut self, now: Instant) {
        let expired: Vec<PeerKey> = self
            .peers
            .iter()
            .filter(|(_, peer)| peer.detached_until.is_some_and(|until| until <= now))
            .map(|(key, _)| *key)
            .collect();
        for key in expired {
            self.remove_peer(key, "signalling channel lost");
        }
        let failed: Vec<PeerKey> = self
            .peers
            .iter()
            .filter(|(_, peer)| peer.restart_deadline.is_some_and(|until| until <= now))
            .map(|(key, _)| *key)
            .collect();
        for key in failed {
            self.remove_peer(key, "connection failed");
        }
    }
}

/// Returns the first `a=ice-ufrag` value of an SDP description.
fn ice_ufrag(sdp: &str) -> Option<&str> {
    sdp.lines().find_map(|line| line.trim_end().strip_prefix("a=ice-ufrag:"))
}

/// Description of a renegotiated session's new sender.
pub(super) struct SenderSpec<'a> {
    /// Slot index in the session.
    pub index: usize,
    /// Participant id of the publisher, used as the sender's stream id (the
    /// first `a=msid` value). The client reads whose track it receives from
    /// it, and synchronises audio and video of one stream.
    pub publisher_id: &'a str,
    pub kind: TrackKind,
    pub mime: &'a str,
    pub clock_rate: u32,
}

/// Adds a sender for one publication to a renegotiated session; returns the
/// sender id, its local track id and SSRC.
pub(super) fn add_sender(
    pc: &mut RTCPeerConnection,
    session_id: &str,
    sender: SenderSpec<'_>,
) -> Result<(rtc::rtp_transceiver::RTCRtpSenderId, String, u32), rtc::shared::error::Error> {
    use rtc::media_stream::MediaStreamTrack;
    use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters};

    let SenderSpec { index, publisher_id, kind, mime, clock_rate } = sender;
    let ssrc: u32 = rand::random();
    let local_track_id = format!("{session_id}-{}-{index}", kind.as_str());
    let rtc_kind = match kind {
        TrackKind::Audio => RtpCodecKind::Audio,
        TrackKind::Video => RtpCodecKind::Video,
    };
    let channels = if kind == TrackKind::Audio { 2 } else { 0 };
    let track = MediaStreamTrack::new(
        publisher_id.to_owned(),
        local_track_id.clone(),
        format!("vpr {}", kind.as_str()),
        rtc_kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters { ssrc: Some(ssrc), ..Default::default() },
            codec: RTCRtpCodec {
                mime_type: mime.to_owned(),
                clock_rate,
                channels,
                sdp_fmtp_line: String::new(),
                rtcp_feedback: vec![],
            },
            ..Default::default()
        }],
    );
    let sender_id = pc.add_track(track)?;
    Ok((sender_id, local_track_id, ssrc))
}
