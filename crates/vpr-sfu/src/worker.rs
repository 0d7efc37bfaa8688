//! The media worker: one task that owns the shared UDP socket, every peer
//! connection and every room, and forwards packets between them.
//!
//! Demultiplexing follows the ICE username fragment for STUN and the remote
//! address afterwards. Forwarding inside a room is a function call on state
//! this task owns, with no channel hop and no lock per packet.
//!
//! NOTE: every room lives on this one worker. Sharding rooms over several
//! workers (one socket each, or SO_REUSEPORT) is not built yet.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::RTCPeerConnection;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::rtp::packet::Packet;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpParameters, RtpCodecKind};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use rtc::statistics::report::{RTCStatsReport, RTCStatsReportEntry};
use rtc::statistics::StatsSelector;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::config::MediaConfig;
use crate::datagram::{classify, DatagramKind};
use crate::downtrack::{DownTrack, LegParameters, NegotiatedCodec, NegotiatedExtension, Rewrite};
use crate::error::MediaError;
use crate::events::{unix_ms_now, MediaEvent, TrackKind};
use crate::metrics::Metrics;
use crate::negotiate::{Direction, Negotiated};
use crate::{PeerSignal, RoomParticipant, RoomTrack};
use crate::quality::{AlertChange, QualitySample, RateTracker, TransportCounters};
use crate::room::{Binding, PeerKey, Presence, Publication, PublicationKey, Room, RoomKey, Slot};
use crate::throttle::KeyframeThrottle;

/// Datagrams read per wake-up before the touched peers are drained.
const RECV_BATCH: usize = 64;
/// Interval of the sweep for connect timeouts and deferred keyframe requests.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_millis(100);
/// Interval of the quality reports per participant.
const QUALITY_INTERVAL: Duration = Duration::from_secs(2);
/// Interval at which the active speaker is re-evaluated.
const SPEAKER_INTERVAL: Duration = Duration::from_millis(300);
/// RFC 6464 client-to-mixer audio level.
const AUDIO_LEVEL_URI: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";

/// A session the signalling layer negotiated, handed to the worker.
pub(crate) struct SessionSetup {
    pub session_id: String,
    pub room_id: String,
    pub participant_id: String,
    pub is_resident: bool,
    pub direction: Direction,
    pub negotiated: Negotiated,
    pub signals: Option<mpsc::UnboundedSender<PeerSignal>>,
}

/// Requests to the worker.
pub(crate) enum Command {
    OpenRoom { room_id: String, empty_timeout: Option<Duration> },
    CloseRoom { room_id: String, reason: String },
    AddSession { setup: Box<SessionSetup>, reply: oneshot::Sender<Result<(), MediaError>> },
    EndSession { session_id: String, reason: String, reply: oneshot::Sender<bool> },
    ApplyAnswer { session_id: String, answer_sdp: String, reply: oneshot::Sender<Result<(), MediaError>> },
    RemoveParticipant { room_id: String, participant_id: String, reason: String },
    SetTrackMuted { room_id: String, track_id: String, muted: bool },
    /// Ends the participant's sessions of each direction it may no longer use.
    RevokeDirections { room_id: String, participant_id: String, publish: bool, subscribe: bool },
    Shutdown { reason: String, reply: oneshot::Sender<()> },
}

struct Peer {
    session_id: String,
    room: RoomKey,
    participant_id: String,
    is_resident: bool,
    direction: Direction,
    pc: RTCPeerConnection,
    local_ufrag: String,
    addrs: Vec<SocketAddr>,
    deadline: Option<Instant>,
    created: Instant,
    connected: bool,
    touched: bool,
    /// Publisher side: the library's track id to our publication.
    receivers: HashMap<String, PublicationKey>,
    /// Subscriber side: one slot per offered m-section.
    slots: Vec<Slot>,
    quality: RateTracker,
    /// Renegotiated sessions: where server offers go.
    signals: Option<mpsc::UnboundedSender<PeerSignal>>,
    /// Senders were added or removed since the last offer.
    needs_offer: bool,
    /// An offer was sent and its answer has not arrived.
    offer_pending: bool,
}

pub(crate) struct Worker {
    socket: Arc<UdpSocket>,
    local_addr: SocketAddr,
    config: MediaConfig,
    metrics: Arc<Metrics>,
    events: mpsc::UnboundedSender<MediaEvent>,
    peers: HashMap<PeerKey, Peer>,
    by_ufrag: HashMap<String, PeerKey>,
    by_addr: HashMap<SocketAddr, PeerKey>,
    by_session: HashMap<String, PeerKey>,
    rooms: HashMap<RoomKey, Room>,
    room_keys: HashMap<String, RoomKey>,
    next_key: u64,
    touched: Vec<PeerKey>,
    dropped_logged_at: Option<Instant>,
    next_quality_at: Instant,
    next_speaker_at: Instant,
    /// Rooms sessions may join; shared with the handle.
    open_rooms: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
}

impl Worker {
    pub fn new(
        socket: Arc<UdpSocket>,
        config: MediaConfig,
        metrics: Arc<Metrics>,
        events: mpsc::UnboundedSender<MediaEvent>,
        open_rooms: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    ) -> std::io::Result<Self> {
        let local_addr = socket.local_addr()?;
        Ok(Self {
            socket,
            local_addr,
            config,
            metrics,
            events,
            peers: HashMap::new(),
            by_ufrag: HashMap::new(),
            by_addr: HashMap::new(),
            by_session: HashMap::new(),
            rooms: HashMap::new(),
            room_keys: HashMap::new(),
            next_key: 1,
            touched: Vec::new(),
            dropped_logged_at: None,
            next_quality_at: Instant::now() + QUALITY_INTERVAL,
            next_speaker_at: Instant::now() + SPEAKER_INTERVAL,
            open_rooms,
        })
    }

    /// Runs until a shutdown command arrives or every handle is dropped.
    pub async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let socket = self.socket.clone();
        let mut buf = vec![0u8; 2048];
        let mut housekeeping = tokio::time::interval(HOUSEKEEPING_INTERVAL);
        info!(local_addr = %self.local_addr, "media worker started");

        loop {
            let deadline = self.next_deadline();
            let sleep = tokio::time::sleep_until(deadline.into());
            tokio::select! {
                biased;
                command = commands.recv() => {
                    let Some(command) = command else { break };
                    if let Command::Shutdown { reason, reply } = command {
                        self.close_all(&reason);
                        let _ = reply.send(());
                        break;
                    }
                    self.handle_command(command);
                }
                received = socket.recv_from(&mut buf) => {
                    match received {
                        Ok((len, from)) => {
                            let now = Instant::now();
                            self.handle_datagram(&buf[..len], from, now);
                            for _ in 1..RECV_BATCH {
                                match socket.try_recv_from(&mut buf) {
                                    Ok((len, from)) => self.handle_datagram(&buf[..len], from, now),
                                    Err(_) => break,
                                }
                            }
                        }
                        Err(err) => warn!(error = %err, "media socket receive failed"),
                    }
                }
                _ = sleep => self.handle_timeouts(Instant::now()),
                _ = housekeeping.tick() => self.housekeeping(Instant::now()),
            }
            self.drain_touched();
        }
        info!("media worker stopped");
    }

    fn next_deadline(&self) -> Instant {
        let far = Instant::now() + Duration::from_secs(3600);
        self.peers.values().filter_map(|p| p.deadline).min().unwrap_or(far)
    }

    fn touch(touched: &mut Vec<PeerKey>, peer: &mut Peer, key: PeerKey) {
        if !peer.touched {
            peer.touched = true;
            touched.push(key);
        }
    }

    fn handle_command(&mut self, command: Command) {
        match command {
            Command::OpenRoom { room_id, empty_timeout } => {
                if !self.room_keys.contains_key(&room_id) {
                    let key = self.allocate_key();
                    info!(room_id = %room_id, "room opened on media plane");
                    self.room_keys.insert(room_id.clone(), key);
                    self.rooms.insert(key, Room::new(room_id, empty_timeout));
                    Metrics::set(&self.metrics.rooms, self.rooms.len() as u64);
                }
            }
            Command::CloseRoom { room_id, reason } => self.close_room(&room_id, &reason),
            Command::AddSession { setup, reply } => {
                let result = self.add_session(*setup);
                let _ = reply.send(result);
            }
            Command::EndSession { session_id, reason, reply } => {
                let found = match self.by_session.get(&session_id).copied() {
                    Some(key) => {
                        self.remove_peer(key, &reason);
                        true
                    }
                    None => false,
                };
                let _ = reply.send(found);
            }
            Command::ApplyAnswer { session_id, answer_sdp, reply } => {
                let result = self.apply_answer(&session_id, answer_sdp);
                let _ = reply.send(result);
            }
            Command::RemoveParticipant { room_id, participant_id, reason } => {
                self.end_participant_sessions(&room_id, &participant_id, None, &reason);
            }
            Command::SetTrackMuted { room_id, track_id, muted } => self.set_track_muted(&room_id, &track_id, muted),
            Command::RevokeDirections { room_id, participant_id, publish, subscribe } => {
                if publish {
                    self.end_participant_sessions(&room_id, &participant_id, Some(Direction::Publish), "publish permission revoked");
                }
                if subscribe {
                    self.end_participant_sessions(&room_id, &participant_id, Some(Direction::Subscribe), "subscribe permission revoked");
                }
            }
            Command::Shutdown { .. } => {}
        }
    }

    /// Ends a participant's sessions, of one direction or all.
    fn end_participant_sessions(&mut self, room_id: &str, participant_id: &str, direction: Option<Direction>, reason: &str) {
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

    fn set_track_muted(&mut self, room_id: &str, track_id: &str, muted: bool) {
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
        for binding in &publication.bindings {
            if let Some(slot) = peers.get_mut(&binding.peer).and_then(|p| p.slots.get_mut(binding.slot)) {
                slot.track.bind(&publication.leg, &slot.leg);
            }
        }
        if publication.kind == TrackKind::Video && publication.throttle.request(now) {
            send_keyframe_request(peers, touched, metrics, publication, now);
        }
    }

    fn allocate_key(&mut self) -> u64 {
        let key = self.next_key;
        self.next_key += 1;
        key
    }

    fn add_session(&mut self, setup: SessionSetup) -> Result<(), MediaError> {
        let Some(&room_key) = self.room_keys.get(&setup.room_id) else {
            return Err(MediaError::RoomNotOpen(setup.room_id));
        };
        let key = self.allocate_key();
        let SessionSetup { session_id, room_id, participant_id, is_resident, direction, negotiated, signals } = setup;
        let Negotiated { mut pc, local_ufrag, slots, .. } = negotiated;

        let slots = slots
            .into_iter()
            .map(|slot| {
                let leg = pc
                    .rtp_sender(slot.sender_id)
                    .map(|mut sender| leg_parameters(&sender.get_parameters().rtp_parameters))
                    .unwrap_or_default();
                Slot {
                    kind: slot.kind,
                    sender_id: slot.sender_id,
                    local_track_id: slot.local_track_id,
                    leg,
                    bound: None,
                    track: DownTrack::new(slot.ssrc, slot.kind == TrackKind::Video),
                    removed: false,
                }
            })
            .collect();

        info!(room_id = %room_id, participant_id = %participant_id, session_id = %session_id,
            direction = ?direction, "session added");
        self.by_ufrag.insert(local_ufrag.clone(), key);
        self.by_session.insert(session_id.clone(), key);
        let mut peer = Peer {
            session_id,
            room: room_key,
            participant_id: participant_id.clone(),
            is_resident,
            direction,
            pc,
            local_ufrag,
            addrs: Vec::new(),
            deadline: None,
            created: Instant::now(),
            connected: false,
            touched: false,
            receivers: HashMap::new(),
            slots,
            quality: RateTracker::default(),
            signals,
            needs_offer: false,
            offer_pending: false,
        };
        Self::touch(&mut self.touched, &mut peer, key);
        self.peers.insert(key, peer);
        Metrics::set(&self.metrics.peer_connections, self.peers.len() as u64);

        let room = self.rooms.get_mut(&room_key).expect("room key maps to a room");
        // A participant that connects again in the same direction (a page
        // reload, a network change) replaces its old connection.
        let replaced: Vec<PeerKey> = room
            .peers
            .iter()
            .copied()
            .filter(|k| {
                self.peers
                    .get(k)
                    .is_some_and(|p| p.participant_id == participant_id && p.direction == direction)
            })
            .collect();
        room.peers.push(key);
        room.presence.entry(participant_id.clone()).or_insert_with(Presence::default).sessions += 1;
        let room_id = room.room_id.clone();
        self.update_participant_gauge();

        for old in replaced {
            self.remove_peer(old, "replaced by a new connection");
            let _ = self.events.send(MediaEvent::SessionReplaced {
                room_id: room_id.clone(),
                participant_id: participant_id.clone(),
                at_ms: unix_ms_now(),
            });
        }
        self.bind_free_slots(room_key, Instant::now());
        Ok(())
    }

    fn handle_datagram(&mut self, data: &[u8], from: SocketAddr, now: Instant) {
        Metrics::add(&self.metrics.datagrams_received, 1);
        Metrics::add(&self.metrics.bytes_received, data.len() as u64);

        let kind = match classify(data) {
            Ok(kind) => kind,
            Err(err) => {
                self.count_drop(from, &err.to_string(), now);
                return;
            }
        };

        let key = match (self.by_addr.get(&from).copied(), kind) {
            // A STUN request names its peer connection; trust that over the
            // address, which a new connection from the same port may reuse.
            (_, DatagramKind::Stun { local_ufrag: Some(ufrag) }) => match self.by_ufrag.get(ufrag) {
                Some(&key) => {
                    self.bind_address(key, from);
                    key
                }
                None => {
                    self.count_drop(from, "STUN username names no peer connection", now);
                    return;
                }
            },
            (Some(key), _) => key,
            (None, _) => {
                self.count_drop(from, "datagram from an address with no peer connection", now);
                return;
            }
        };

        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        let message = TaggedBytesMut {
            now,
            transport: TransportContext {
                local_addr: self.local_addr,
                peer_addr: from,
                ecn: None,
                transport_protocol: TransportProtocol::UDP,
            },
            message: BytesMut::from(data),
        };
        if let Err(err) = peer.pc.handle_read(message) {
            Metrics::add(&self.metrics.datagrams_dropped, 1);
            debug!(session_id = %peer.session_id, error = %err, "peer connection rejected a datagram");
        }
        Self::touch(&mut self.touched, peer, key);
    }

    fn bind_address(&mut self, key: PeerKey, addr: SocketAddr) {
        if let Some(previous) = self.by_addr.insert(addr, key) {
            if previous == key {
                return;
            }
            if let Some(old) = self.peers.get_mut(&previous) {
                old.addrs.retain(|a| *a != addr);
            }
        }
        if let Some(peer) = self.peers.get_mut(&key) {
            peer.addrs.push(addr);
        }
    }

    fn count_drop(&mut self, from: SocketAddr, reason: &str, now: Instant) {
        Metrics::add(&self.metrics.datagrams_dropped, 1);
        // One log line per second at most: a flood must not flood the log.
        let quiet = self.dropped_logged_at.is_some_and(|at| now.duration_since(at) < Duration::from_secs(1));
        if !quiet {
            self.dropped_logged_at = Some(now);
            debug!(%from, reason, "dropped datagram on media port");
        }
    }

    fn handle_timeouts(&mut self, now: Instant) {
        for (&key, peer) in self.peers.iter_mut() {
            if peer.deadline.is_some_and(|deadline| deadline <= now) {
                peer.deadline = None;
                if let Err(err) = peer.pc.handle_timeout(now) {
                    debug!(session_id = %peer.session_id, error = %err, "peer connection timeout handling failed");
                }
                Self::touch(&mut self.touched, peer, key);
            }
        }
    }

    fn housekeeping(&mut self, now: Instant) {
        self.close_empty_rooms(now);
        if now >= self.next_speaker_at {
            self.next_speaker_at = now + SPEAKER_INTERVAL;
            self.report_active_speakers(now);
        }
        if now >= self.next_quality_at {
            self.next_quality_at = now + QUALITY_INTERVAL;
            self.report_quality(now);
        }

        let expired: Vec<PeerKey> = self
            .peers
            .iter()
            .filter(|(_, p)| !p.connected && now.duration_since(p.created) > self.config.connect_timeout)
            .map(|(key, _)| *key)
            .collect();
        for key in expired {
            self.remove_peer(key, "connection timed out");
        }

        let Self { rooms, peers, touched, metrics, .. } = self;
        for room in rooms.values_mut() {
            for publication in room.publications.values_mut() {
                if publication.throttle.handle_timeout(now) {
                    send_keyframe_request(peers, touched, metrics, publication, now);
                }
            }
        }
    }

    /// Samples every connected peer's statistics and reports quality per
    /// participant, with alert changes.
    fn report_quality(&mut self, now: Instant) {
        let mut samples: HashMap<(RoomKey, String), QualitySample> = HashMap::new();
        for peer in self.peers.values_mut() {
            if !peer.connected {
                continue;
            }
            let report = peer.pc.get_stats(now, StatsSelector::None);
            let Some(sample) = peer.quality.update(now, transport_counters(&report)) else { continue };
            samples
                .entry((peer.room, peer.participant_id.clone()))
                .and_modify(|combined| *combined = combined.combine(sample))
                .or_insert(sample);
        }

        let at_ms = unix_ms_now();
        for ((room_key, participant_id), sample) in samples {
            let Some(room) = self.rooms.get_mut(&room_key) else { continue };
            let rtt_ms = sample.round_trip_time.map(|rtt| rtt.as_secs_f64() * 1000.0).unwrap_or(0.0);
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

    fn drain_touched(&mut self) {
        while let Some(key) = self.touched.pop() {
            self.drain_peer(key);
        }
    }

    /// Sends what the peer connection wrote, then handles its events and
    /// the media it decrypted.
    fn drain_peer(&mut self, key: PeerKey) {
        let now = Instant::now();
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        peer.touched = false;
        flush_writes(&self.socket, &self.metrics, &mut peer.pc);

        let mut events = Vec::new();
        while let Some(event) = peer.pc.poll_event() {
            events.push(event);
        }
        let mut rtp = Vec::new();
        let mut rtcp = Vec::new();
        while let Some(message) = peer.pc.poll_read() {
            match message.message {
                RTCMessage::RtpPacket(track_id, packet) => rtp.push((track_id, packet)),
                RTCMessage::RtcpPacket(track_id, packets) => rtcp.push((track_id, packets)),
                _ => {}
            }
        }

        for event in events {
            self.handle_peer_event(key, event, now);
        }
        for (track_id, packet) in rtp {
            self.forward(key, &track_id, packet, now);
        }
        for (track_id, packets) in rtcp {
            self.handle_feedback(key, &track_id, &packets, now);
        }

        if let Some(peer) = self.peers.get_mut(&key) {
            // Handling above may have queued more output on this connection.
            flush_writes(&self.socket, &self.metrics, &mut peer.pc);
            peer.deadline = peer.pc.poll_timeout();
        }
    }

    fn handle_peer_event(&mut self, key: PeerKey, event: RTCPeerConnectionEvent, now: Instant) {
        match event {
            RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => {
                let Some(peer) = self.peers.get_mut(&key) else { return };
                let room_id = self.rooms.get(&peer.room).map(|r| r.room_id.clone()).unwrap_or_default();
                info!(room_id = %room_id, participant_id = %peer.participant_id,
                    session_id = %peer.session_id, state = %state, "peer connection state changed");
                match state {
                    RTCPeerConnectionState::Connected => {
                        peer.connected = true;
                        let participant_id = peer.participant_id.clone();
                        let room_key = peer.room;
                        self.mark_joined(room_key, &participant_id);
                        self.request_keyframes_for(key, now);
                        self.renegotiate_if_needed(key);
                        self.notify_room(room_key);
                    }
                    RTCPeerConnectionState::Failed => self.remove_peer(key, "connection failed"),
                    RTCPeerConnectionState::Closed => self.remove_peer(key, "connection closed"),
                    _ => {}
                }
            }
            RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) => {
                self.open_publication(key, init.track_id, init.receiver_id, init.ssrc);
            }
            RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnClose(track_id)) => {
                self.close_publication(key, &track_id);
            }
            _ => {}
        }
    }

    fn mark_joined(&mut self, room_key: RoomKey, participant_id: &str) {
        let Some(room) = self.rooms.get_mut(&room_key) else { return };
        let Some(presence) = room.presence.get_mut(participant_id) else { return };
        if !presence.joined {
            presence.joined = true;
            let _ = self.events.send(MediaEvent::ParticipantJoined {
                room_id: room.room_id.clone(),
                participant_id: participant_id.to_owned(),
                at_ms: unix_ms_now(),
            });
        }
    }

    fn open_publication(
        &mut self,
        key: PeerKey,
        library_track_id: String,
        receiver_id: rtc::rtp_transceiver::RTCRtpReceiverId,
        ssrc: u32,
    ) {
        let publication_key = self.allocate_key();
        let Some(peer) = self.peers.get_mut(&key) else { return };
        let publishes = matches!(peer.direction, Direction::Publish | Direction::Participate);
        if !publishes || peer.receivers.contains_key(&library_track_id) {
            // NOTE: a simulcast publisher opens one receiver stream per
            // layer; only the first one is forwarded until layers exist.
            return;
        }
        let Some(mut receiver) = peer.pc.rtp_receiver(receiver_id) else { return };
        let kind = match receiver.track().kind() {
            RtpCodecKind::Video => TrackKind::Video,
            _ => TrackKind::Audio,
        };
        let leg = leg_parameters(&receiver.get_parameters().rtp_parameters);
        let audio_level_id = leg.extensions.iter().find(|e| e.uri == AUDIO_LEVEL_URI).map(|e| e.id);
        peer.receivers.insert(library_track_id, publication_key);

        let track_id = format!("tr_{:016x}", rand::random::<u64>());
        let publication = Publication {
            track_id,
            publisher: key,
            participant_id: peer.participant_id.clone(),
            is_resident: peer.is_resident,
            receiver_id,
            kind,
            media_ssrc: ssrc,
            codec: None,
            leg,
            throttle: KeyframeThrottle::new(self.config.keyframe_request_interval),
            bindings: Vec::new(),
            muted: false,
            audio_level_id,
        };
        if let Some(room) = self.rooms.get_mut(&peer.room) {
            room.publications.insert(publication_key, publication);
        }
    }

    fn close_publication(&mut self, key: PeerKey, library_track_id: &str) {
        let Some(peer) = self.peers.get_mut(&key) else { return };
        let Some(publication_key) = peer.receivers.remove(library_track_id) else { return };
        let room_key = peer.room;
        self.unpublish(room_key, publication_key);
        self.bind_free_slots(room_key, Instant::now());
        self.notify_room(room_key);
    }

    fn unpublish(&mut self, room_key: RoomKey, publication_key: PublicationKey) {
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
    fn forward(&mut self, publisher: PeerKey, library_track_id: &str, packet: Packet, now: Instant) {
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
    fn learn_codec(&mut self, room_key: RoomKey, publication_key: PublicationKey, payload_type: u8) -> bool {
        let Some(room) = self.rooms.get_mut(&room_key) else { return false };
        let Some(publication) = room.publications.get_mut(&publication_key) else { return false };
        if publication.codec.is_some() {
            return false;
        }
        let Some(codec) = publication.leg.codecs.iter().find(|c| c.payload_type == payload_type) else {
            return false;
        };
        publication.codec = Some(codec.mime_type.clone());
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
    fn forward_to_bindings(&mut self, room_key: RoomKey, publication_key: PublicationKey, packet: Packet, now: Instant) {
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
            let mut copy = packet.clone();
            if slot.track.rewrite(&mut copy, now) != Rewrite::Forward {
                continue;
            }
            let written = subscriber
                .pc
                .rtp_sender(slot.sender_id)
                .map(|mut sender| sender.write_rtp(now, copy));
            match written {
                Some(Ok(())) => forwarded += 1,
                Some(Err(err)) => debug!(session_id = %subscriber.session_id, error = %err, "write to down-track failed"),
                None => {}
            }
            Self::touch(&mut self.touched, subscriber, binding.peer);
        }
        Metrics::add(&self.metrics.rtp_forwarded, forwarded);
    }

    /// Turns a subscriber's PLI or FIR into a throttled request upstream.
    fn handle_feedback(
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
        let wants_keyframe = packets.iter().any(|p| {
            p.as_any().downcast_ref::<PictureLossIndication>().is_some()
                || p.as_any().downcast_ref::<FullIntraRequest>().is_some()
        });
        if !wants_keyframe {
            return;
        }
        Metrics::add(&self.metrics.keyframe_requests_received, 1);
        let Some(peer) = self.peers.get(&subscriber) else { return };
        let Some(publication_key) = peer
            .slots
            .iter()
            .find(|slot| slot.local_track_id == local_track_id)
            .and_then(|slot| slot.bound)
        else {
            return;
        };
        let room_key = peer.room;
        let Self { rooms, peers, touched, metrics, .. } = self;
        let Some(publication) = rooms.get_mut(&room_key).and_then(|r| r.publications.get_mut(&publication_key)) else {
            return;
        };
        if publication.throttle.request(now) {
            send_keyframe_request(peers, touched, metrics, publication, now);
        }
    }

    /// Asks for a keyframe on every video publication a newly connected
    /// subscriber receives.
    fn request_keyframes_for(&mut self, key: PeerKey, now: Instant) {
        let Some(peer) = self.peers.get(&key) else { return };
        let bound: Vec<PublicationKey> = peer.slots.iter().filter_map(|s| s.bound).collect();
        let room_key = peer.room;
        let Self { rooms, peers, touched, metrics, .. } = self;
        let Some(room) = rooms.get_mut(&room_key) else { return };
        for publication_key in bound {
            if let Some(publication) = room.publications.get_mut(&publication_key) {
                if publication.kind == TrackKind::Video && publication.throttle.request(now) {
                    send_keyframe_request(peers, touched, metrics, publication, now);
                }
            }
        }
    }

    /// Binds every free slot in the room to the best publication of its kind.
    fn bind_free_slots(&mut self, room_key: RoomKey, now: Instant) {
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
                slot.bound = Some(publication_key);
                publication.bindings.push(Binding { peer: peer_key, slot: index });
                debug!(room_id = %room.room_id, participant_id = %peer.participant_id,
                    track_id = %publication.track_id, "down-track bound");
                if publication.kind == TrackKind::Video && peer.connected {
                    newly_bound.push(publication_key);
                }
            }
        }
        // A connected subscriber's new binding needs a keyframe to start.
        for publication_key in newly_bound {
            if let Some(publication) = room.publications.get_mut(&publication_key) {
                if publication.throttle.request(now) {
                    send_keyframe_request(peers, touched, metrics, publication, now);
                }
            }
        }
        self.subscribe_participants(room_key);
    }

    /// Gives every renegotiated session of the room a sender for each
    /// publication it lacks, and offers again where senders changed.
    fn subscribe_participants(&mut self, room_key: RoomKey) {
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
                match add_sender(&mut peer.pc, &peer.session_id, peer.slots.len(), publication.kind, &codec, clock_rate) {
                    Ok((sender_id, local_track_id, ssrc)) => {
                        let index = peer.slots.len();
                        peer.slots.push(Slot {
                            kind: publication.kind,
                            sender_id,
                            local_track_id,
                            leg: LegParameters::default(),
                            bound: Some(*publication_key),
                            track: DownTrack::new(ssrc, publication.kind == TrackKind::Video),
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
    fn notify_room(&self, room_key: RoomKey) {
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
    fn renegotiate_if_needed(&mut self, key: PeerKey) {
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
    fn apply_answer(&mut self, session_id: &str, answer_sdp: String) -> Result<(), MediaError> {
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
            let Some(publication) = rooms.get(&room_key).and_then(|r| r.publications.get(&publication_key)) else {
                continue;
            };
            slot.track.bind(&publication.leg, &slot.leg);
            if publication.kind == TrackKind::Video {
                video.push(publication_key);
            }
        }
        Self::touch(touched, peer, key);
        if let Some(room) = rooms.get_mut(&room_key) {
            for publication_key in video {
                if let Some(publication) = room.publications.get_mut(&publication_key) {
                    if publication.throttle.request(now) {
                        send_keyframe_request(peers, touched, metrics, publication, now);
                    }
                }
            }
        }
        self.renegotiate_if_needed(key);
        Ok(())
    }

    fn remove_peer(&mut self, key: PeerKey, reason: &str) {
        let Some(mut peer) = self.peers.remove(&key) else { return };
        if let Some(signals) = &peer.signals {
            let _ = signals.send(PeerSignal::Ended { reason: reason.to_owned() });
        }
        if let Err(err) = peer.pc.close() {
            debug!(session_id = %peer.session_id, error = %err, "closing peer connection failed");
        }
        flush_writes(&self.socket, &self.metrics, &mut peer.pc);
        self.by_ufrag.remove(&peer.local_ufrag);
        self.by_session.remove(&peer.session_id);
        for addr in &peer.addrs {
            if self.by_addr.get(addr) == Some(&key) {
                self.by_addr.remove(addr);
            }
        }
        Metrics::set(&self.metrics.peer_connections, self.peers.len() as u64);

        let room_key = peer.room;
        for publication_key in peer.receivers.values() {
            self.unpublish(room_key, *publication_key);
        }
        let Some(room) = self.rooms.get_mut(&room_key) else { return };
        room.peers.retain(|k| *k != key);
        for slot in &peer.slots {
            if let Some(publication) = slot.bound.and_then(|p| room.publications.get_mut(&p)) {
                publication.bindings.retain(|b| b.peer != key);
            }
        }

        info!(room_id = %room.room_id, participant_id = %peer.participant_id,
            session_id = %peer.session_id, reason, "session ended");
        if let Some(presence) = room.presence.get_mut(&peer.participant_id) {
            presence.sessions = presence.sessions.saturating_sub(1);
            if presence.sessions == 0 {
                let joined = presence.joined;
                room.presence.remove(&peer.participant_id);
                room.speakers.remove(&peer.participant_id);
                if joined {
                    let _ = self.events.send(MediaEvent::ParticipantLeft {
                        room_id: room.room_id.clone(),
                        participant_id: peer.participant_id.clone(),
                        reason: reason.to_owned(),
                        at_ms: unix_ms_now(),
                    });
                }
            }
        }
        self.update_participant_gauge();
        self.bind_free_slots(room_key, Instant::now());
        self.notify_room(room_key);
    }

    fn update_participant_gauge(&self) {
        let participants: usize = self.rooms.values().map(|room| room.presence.len()).sum();
        Metrics::set(&self.metrics.participants, participants as u64);
    }

    /// Reports rooms whose loudest participant changed.
    fn report_active_speakers(&mut self, now: Instant) {
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
    fn close_empty_rooms(&mut self, now: Instant) {
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

    fn close_room(&mut self, room_id: &str, reason: &str) {
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

    fn close_all(&mut self, reason: &str) {
        let room_ids: Vec<String> = self.room_keys.keys().cloned().collect();
        for room_id in room_ids {
            self.close_room(&room_id, reason);
        }
    }
}

fn send_keyframe_request(
    peers: &mut HashMap<PeerKey, Peer>,
    touched: &mut Vec<PeerKey>,
    metrics: &Metrics,
    publication: &Publication,
    now: Instant,
) {
    let Some(publisher) = peers.get_mut(&publication.publisher) else { return };
    let Some(mut receiver) = publisher.pc.rtp_receiver(publication.receiver_id) else { return };
    let pli = PictureLossIndication { sender_ssrc: 0, media_ssrc: publication.media_ssrc };
    match receiver.write_rtcp(now, vec![Box::new(pli)]) {
        Ok(()) => Metrics::add(&metrics.keyframe_requests_sent, 1),
        Err(err) => debug!(track_id = %publication.track_id, error = %err, "keyframe request failed"),
    }
    Worker::touch(touched, publisher, publication.publisher);
}

fn flush_writes(socket: &UdpSocket, metrics: &Metrics, pc: &mut RTCPeerConnection) {
    while let Some(message) = pc.poll_write() {
        match socket.try_send_to(&message.message, message.transport.peer_addr) {
            Ok(sent) => {
                Metrics::add(&metrics.datagrams_sent, 1);
                Metrics::add(&metrics.bytes_sent, sent as u64);
            }
            Err(err) => debug!(to = %message.transport.peer_addr, error = %err, "media socket send failed"),
        }
    }
}

/// Adds a sender for one publication to a renegotiated session; returns the
/// sender id, its local track id and SSRC.
fn add_sender(
    pc: &mut RTCPeerConnection,
    session_id: &str,
    index: usize,
    kind: TrackKind,
    mime: &str,
    clock_rate: u32,
) -> Result<(rtc::rtp_transceiver::RTCRtpSenderId, String, u32), rtc::shared::error::Error> {
    use rtc::media_stream::MediaStreamTrack;
    use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters};

    let ssrc: u32 = rand::random();
    let local_track_id = format!("{session_id}-{}-{index}", kind.as_str());
    let rtc_kind = match kind {
        TrackKind::Audio => RtpCodecKind::Audio,
        TrackKind::Video => RtpCodecKind::Video,
    };
    let channels = if kind == TrackKind::Audio { 2 } else { 0 };
    let track = MediaStreamTrack::new(
        format!("vpr-{session_id}"),
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

/// Reads the counters quality is computed from out of a stats report.
fn transport_counters(report: &RTCStatsReport) -> TransportCounters {
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

fn leg_parameters(parameters: &RTCRtpParameters) -> LegParameters {
    LegParameters {
        codecs: parameters
            .codecs
            .iter()
            .map(|codec| NegotiatedCodec {
                payload_type: codec.payload_type,
                mime_type: codec.rtp_codec.mime_type.clone(),
                fmtp: codec.rtp_codec.sdp_fmtp_line.clone(),
                clock_rate: codec.rtp_codec.clock_rate,
            })
            .collect(),
        extensions: parameters
            .header_extensions
            .iter()
            .filter_map(|extension| {
                u8::try_from(extension.id)
                    .ok()
                    .map(|id| NegotiatedExtension { id, uri: extension.uri.clone() })
            })
            .collect(),
    }
}
