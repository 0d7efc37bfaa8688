//! The media worker: one task, alone on its own thread, that owns the
//! shared UDP socket, every peer connection and every room, and forwards
//! packets between them.
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
use std::time::{Duration, Instant, SystemTime};

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
use crate::rtt;
use crate::quality::{AlertChange, QualitySample, RateTracker, TransportCounters};
use crate::room::{Binding, PeerKey, Publication, PublicationKey, Room, RoomKey, Slot};
use crate::keyframe::{starts_keyframe, VideoCodec};
use crate::simulcast::{LayerIndex, LayerSelector, Layers, Selection};
use crate::throttle::KeyframeRequests;
use crate::udp::{RecvBatch, SendQueue};

mod allocation;
mod bandwidth;
mod media;
mod renegotiation;
mod rooms;

use media::request_layer_keyframe;

/// Interval of the sweep for connect timeouts and deferred keyframe requests.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_millis(100);
/// Interval of the quality reports per participant.
const QUALITY_INTERVAL: Duration = Duration::from_secs(2);
/// Interval at which the active speaker is re-evaluated.
const SPEAKER_INTERVAL: Duration = Duration::from_millis(300);
/// An estimate that falls below this fraction of its previous value is
/// acted on at once.
const ESTIMATE_DROP_REALLOCATE: f64 = 0.8;
/// How long a renegotiated session whose connection failed waits for the
/// client's ICE restart.
const ICE_RESTART_GRACE: Duration = Duration::from_secs(15);
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
    ApplyOffer { session_id: String, offer_sdp: String, reply: oneshot::Sender<Result<crate::OfferReply, MediaError>> },
    DetachSession { session_id: String, grace: Duration },
    ResumeSession {
        room_id: String,
        participant_id: String,
        signals: mpsc::UnboundedSender<PeerSignal>,
        reply: oneshot::Sender<Result<String, MediaError>>,
    },
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
    /// Down-track switches between simulcast layers.
    layer_changes: u64,
    /// Latest round-trip time from the client's report blocks.
    round_trip_time: Option<Duration>,
    /// Worst interarrival jitter in the subscriber's latest report.
    jitter: Option<Duration>,
    /// Round-trip input of the connection's NACK filter.
    nack_filter: crate::nack_filter::NackFilterHandle,
    /// Retransmissions restored onto the simulcast layer their RID names.
    restored: crate::repair::RestoredCount,
    /// Send-side bandwidth estimation; `None` for publish-only sessions.
    bandwidth: Option<bandwidth::Bandwidth>,
    /// The local ufrag before an ICE restart, kept in `by_ufrag` until the
    /// connection is up again.
    previous_ufrag: Option<String>,
    /// Renegotiated sessions whose signalling channel closed: when they end
    /// unless a new channel resumes them.
    detached_until: Option<Instant>,
    /// Renegotiated sessions whose connection failed: when they end unless
    /// an ICE restart brings the connection back.
    restart_deadline: Option<Instant>,
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
    /// Datagrams the peer connections wrote during this pass of the loop,
    /// sent in one system call at its end.
    outbox: SendQueue,
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
            outbox: SendQueue::default(),
            dropped_logged_at: None,
            next_quality_at: Instant::now() + QUALITY_INTERVAL,
            next_speaker_at: Instant::now() + SPEAKER_INTERVAL,
            open_rooms,
        })
    }

    /// Runs until a shutdown command arrives or every handle is dropped.
    pub async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let socket = self.socket.clone();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&*socket);
        let mut inbox = RecvBatch::default();
        // Kernel arrival times of the RTP datagrams read in this pass.
        let mut rtp_arrivals: Vec<SystemTime> = Vec::with_capacity(crate::udp::RECV_BATCH);
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
                        self.send_outbox();
                        let _ = reply.send(());
                        break;
                    }
                    self.handle_command(command);
                }
                ready = socket.readable() => {
                    if let Err(err) = ready {
                        warn!(error = %err, "media socket receive failed");
                    } else {
                        match socket.try_io(tokio::io::Interest::READABLE, || inbox.recv(fd)) {
                            Ok(_) => {
                                let now = Instant::now();
                                for datagram in inbox.iter() {
                                    if datagram.truncated {
                                        self.count_drop(datagram.from, "datagram longer than the media port accepts", now);
                                        continue;
                                    }
                                    if let (true, Some(arrived)) = (is_rtp(datagram.data), datagram.arrived) {
                                        rtp_arrivals.push(arrived);
                                    }
                                    self.handle_datagram(datagram.data, datagram.from, now);
                                }
                            }
                            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
                            Err(err) => warn!(error = %err, "media socket receive failed"),
                        }
                    }
                }
                _ = sleep => self.handle_timeouts(Instant::now()),
                _ = housekeeping.tick() => self.housekeeping(Instant::now()),
            }
            self.drain_touched();
            self.send_outbox();
            if !rtp_arrivals.is_empty() {
                let sent = SystemTime::now();
                for arrived in rtp_arrivals.drain(..) {
                    self.metrics.rtp_residence.record(sent.duration_since(arrived).unwrap_or_default());
                }
            }
        }
        info!("media worker stopped");
    }

    /// Sends what the peer connections wrote during this pass.
    fn send_outbox(&mut self) {
        if self.outbox.is_empty() {
            return;
        }
        let flushed = self.outbox.flush(std::os::fd::AsRawFd::as_raw_fd(&*self.socket));
        Metrics::add(&self.metrics.datagrams_sent, flushed.datagrams);
        Metrics::add(&self.metrics.bytes_sent, flushed.bytes);
        if let Some(err) = flushed.error {
            debug!(failed = flushed.failed, error = %err, "media socket send failed");
        }
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
            Command::ApplyOffer { session_id, offer_sdp, reply } => {
                let result = self.apply_client_offer(&session_id, offer_sdp);
                let _ = reply.send(result);
            }
            Command::DetachSession { session_id, grace } => self.detach_session(&session_id, grace),
            Command::ResumeSession { room_id, participant_id, signals, reply } => {
                let _ = reply.send(self.resume_session(&room_id, &participant_id, signals));
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
        let Negotiated { mut pc, local_ufrag, slots, reports, nack_filter, restored, .. } = negotiated;
        let bandwidth = (direction != Direction::Publish).then(|| bandwidth::Bandwidth::new(reports, Instant::now()));

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
                    selector: LayerSelector::default(),
                    switch_requested_at: None,
                    upgrade_hold: Default::default(),
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
            layer_changes: 0,
            round_trip_time: None,
            jitter: None,
            nack_filter,
            restored,
            bandwidth,
            previous_ufrag: None,
            detached_until: None,
            restart_deadline: None,
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
        room.presence.entry(participant_id.clone()).or_default().sessions += 1;
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
        self.end_expired_detached(now);
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

        self.allocate_all(now);
        self.control_layers(now);
        for peer in self.peers.values() {
            Metrics::add(&self.metrics.rtx_restored, peer.restored.take());
        }
        let Self { rooms, peers, touched, metrics, .. } = self;
        for room in rooms.values_mut() {
            for publication in room.publications.values_mut() {
                for layer in publication.keyframe_requests.due(now) {
                    let Some(ssrc) = publication.layers.get(layer).map(|l| l.ssrc) else { continue };
                    media::send_keyframe_request(peers, touched, metrics, publication, ssrc, now);
                }
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
        queue_writes(&mut self.outbox, &mut peer.pc);

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

        let mut estimate_fell = false;
        if let Some(peer) = self.peers.get_mut(&key) {
            if let Some(bandwidth) = peer.bandwidth.as_mut() {
                let before = bandwidth.estimate_bps();
                let log_due = bandwidth.drain_feedback(now);
                // A falling estimate means congestion now: re-allocating at
                // once instead of at the next housekeeping pass saves a
                // congested link up to 100 ms of queue.
                estimate_fell = bandwidth.estimate_bps() < before * ESTIMATE_DROP_REALLOCATE;
                if log_due && peer.connected {
                    let snapshot = bandwidth.snapshot(now);
                    debug!(session_id = %peer.session_id, participant_id = %peer.participant_id,
                        estimate_bps = snapshot.estimate_bps as u64,
                        acked_bps = snapshot.acked_bps.unwrap_or(0.0) as u64,
                        delay_based_bps = snapshot.delay_based_bps as u64,
                        loss_based_bps = snapshot.loss_based_bps as u64,
                        remb_bps = snapshot.remb_bps.unwrap_or(0.0) as u64,
                        loss = snapshot.loss.unwrap_or(0.0), usage = ?snapshot.usage,
                        last_probe = ?snapshot.last_probe,
                        twcc_active = snapshot.twcc_active, probing = snapshot.probe_active,
                        layer_changes = peer.layer_changes, "bandwidth estimate");
                }
            }
            // Handling above may have queued more output on this connection.
            queue_writes(&mut self.outbox, &mut peer.pc);
            peer.deadline = peer.pc.poll_timeout();
        }
        if estimate_fell {
            self.allocate_peer(key, now, allocation::Reallocation::Congestion);
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
                        peer.restart_deadline = None;
                        let participant_id = peer.participant_id.clone();
                        let room_key = peer.room;
                        // The new ICE path is up, so the ufrag from before a restart can go.
                        if let Some(ufrag) = peer.previous_ufrag.take() {
                            self.by_ufrag.remove(&ufrag);
                        }
                        self.mark_joined(room_key, &participant_id);
                        // One keyframe request per target layer, after the
                        // allocator picked the targets.
                        self.allocate_peer(key, now, allocation::Reallocation::Connected);
                        self.request_keyframes_for(key, now);
                        self.renegotiate_if_needed(key);
                        self.notify_room(room_key);
                    }
                    RTCPeerConnectionState::Disconnected | RTCPeerConnectionState::Failed
                        if peer.signals.is_some() =>
                    {
                        // A renegotiated session can recover on the same
                        // connection: ask the client for an ICE restart, and
                        // end the session only if it stays down.
                        if let Some(signals) = &peer.signals {
                            let _ = signals.send(PeerSignal::RestartIce);
                        }
                        if state == RTCPeerConnectionState::Failed && peer.restart_deadline.is_none() {
                            peer.restart_deadline = Some(now + ICE_RESTART_GRACE);
                        }
                    }
                    RTCPeerConnectionState::Failed => self.remove_peer(key, "connection failed"),
                    RTCPeerConnectionState::Closed => self.remove_peer(key, "connection closed"),
                    _ => {}
                }
            }
            RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) => {
                self.open_publication(key, init.track_id, init.receiver_id, init.ssrc, init.rid);
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

    fn remove_peer(&mut self, key: PeerKey, reason: &str) {
        let Some(mut peer) = self.peers.remove(&key) else { return };
        if let Some(signals) = &peer.signals {
            let _ = signals.send(PeerSignal::Ended { reason: reason.to_owned() });
        }
        if let Err(err) = peer.pc.close() {
            debug!(session_id = %peer.session_id, error = %err, "closing peer connection failed");
        }
        queue_writes(&mut self.outbox, &mut peer.pc);
        self.by_ufrag.remove(&peer.local_ufrag);
        if let Some(ufrag) = &peer.previous_ufrag {
            self.by_ufrag.remove(ufrag);
        }
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

}

impl Peer {
    /// Returns the bandwidth toward this peer that its down-tracks may use:
    /// the send-side estimate when the peer negotiated transport-wide
    /// feedback or sends REMB, unlimited otherwise.
    fn estimate_bps(&self, _now: Instant) -> f64 {
        match &self.bandwidth {
            Some(bandwidth) if self.negotiated_transport_cc() || bandwidth.remb_seen() || bandwidth.report_only() => {
                bandwidth.estimate_bps()
            }
            _ => f64::INFINITY,
        }
    }

    /// Returns true when some down-track negotiated the transport-wide
    /// sequence number, so the peer can report on every packet, probes
    /// included.
    fn negotiated_transport_cc(&self) -> bool {
        self.slots
            .iter()
            .any(|slot| slot.leg.extensions.iter().any(|e| e.uri == crate::downtrack::TRANSPORT_CC_URI))
    }
}

fn queue_writes(outbox: &mut SendQueue, pc: &mut RTCPeerConnection) {
    while let Some(message) = pc.poll_write() {
        outbox.push(message.message, message.transport.peer_addr);
    }
}

/// Tells an RTP packet from RTCP on the media port: RTCP packet types 192
/// to 223 fall on RTP payload types 64 to 95 (RFC 5761, section 4).
fn is_rtp(datagram: &[u8]) -> bool {
    matches!(datagram, [first, second, ..] if (128..192).contains(first) && !(64..96).contains(&(second & 0x7f)))
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
