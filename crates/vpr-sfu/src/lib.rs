//! VPR media plane: a selective forwarding unit on webrtc-rs's sans-IO
//! `rtc` core, driven by one tokio task on one UDP port.
//!
//! The signalling layer calls [`MediaHandle`]; the worker owns the socket,
//! the peer connections and the rooms, and reports [`MediaEvent`]s for the
//! session record.

pub mod allocator;
pub mod bwe;
pub mod codecs;
pub mod config;
pub mod datagram;
pub mod downtrack;
pub mod error;
pub mod events;
pub mod keyframe;
pub mod layer_pause;
pub mod metrics;
pub mod nack_filter;
pub mod negotiate;
pub mod offer;
pub mod packet_hook;
pub mod quality;
pub mod repair;
pub mod rtcp_route;
pub mod rtt;
pub mod seq_window;
pub mod simulcast;
pub mod speaker;
pub mod throttle;
pub mod udp;
pub mod upgrade_hold;

mod room;
mod worker;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::collections::HashSet;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

pub use config::MediaConfig;
pub use error::MediaError;
pub use events::{MediaEvent, TrackKind};
pub use metrics::Metrics;
pub use negotiate::Direction;

use worker::{Command, SessionSetup, Worker};

/// Buffer size asked for on the media socket in each direction. The kernel
/// caps it at `net.core.rmem_max` and `net.core.wmem_max`.
const SOCKET_BUFFER_BYTES: usize = 4 << 20;

/// A request to start a WHIP or WHEP session.
#[derive(Debug, Clone)]
pub struct SessionRequest {
    /// Room to join.
    pub room_id: String,
    /// Participant the join token names.
    pub participant_id: String,
    /// Whether the participant is the resident; the resident's video is
    /// preferred when subscribers receive one video.
    pub is_resident: bool,
    /// Publish or subscribe.
    pub direction: Direction,
    /// The client's SDP offer.
    pub offer_sdp: String,
    /// Channel for the server's later offers; required for
    /// [`Direction::Participate`].
    pub signals: Option<mpsc::UnboundedSender<PeerSignal>>,
}

/// A participant in a [`PeerSignal::Room`] message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomParticipant {
    /// Participant id.
    pub participant_id: String,
    /// Whether the participant is the resident.
    pub is_resident: bool,
}

/// A published track in a [`PeerSignal::Room`] message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomTrack {
    /// Track id.
    pub track_id: String,
    /// Publishing participant.
    pub participant_id: String,
    /// Audio or video.
    pub kind: TrackKind,
}

/// A message from the media plane to a renegotiated session's signalling
/// channel.
#[derive(Debug, Clone, PartialEq)]
pub enum PeerSignal {
    /// A new SDP offer: the room's tracks changed.
    Offer(String),
    /// Connected participants and published tracks, sent after any change.
    Room {
        /// Participants with a live connection.
        participants: Vec<RoomParticipant>,
        /// Published tracks.
        tracks: Vec<RoomTrack>,
    },
    /// The loudest participant of the room changed.
    ActiveSpeaker {
        /// The new active speaker.
        participant_id: String,
    },
    /// The participant's own connection quality, every report interval.
    Quality {
        /// Media bitrate to and from the participant, in kbit/s.
        bitrate_kbps: f64,
        /// Loss fraction, 0 to 1.
        packet_loss: f64,
        /// Round-trip time in milliseconds; 0 when unknown.
        rtt_ms: f64,
    },
    /// The server lost the media path: the client restarts ICE with a new
    /// offer, keeping its participant.
    RestartIce,
    /// The simulcast encodings of one of the participant's tracks to keep
    /// sending; the others are paused because no subscriber receives them.
    Layers {
        /// The mid of the track's m-section.
        mid: String,
        /// RIDs of the encodings to send.
        active: Vec<String>,
    },
    /// The session ended on the server's side.
    Ended {
        /// Why, such as "removed by dispatcher" or "room_closed".
        reason: String,
    },
}

/// The media plane's reply to a client's offer on a renegotiated session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OfferReply {
    /// The SDP answer.
    Answer(String),
    /// A server offer is waiting for its answer, so the client's offer was
    /// not applied: the client rolls it back, answers, then offers again.
    Glare,
}

/// The answer to a session request.
#[derive(Debug, Clone)]
pub struct SessionAnswer {
    /// Id of the new session; the WHIP/WHEP resource URL names it.
    pub session_id: String,
    /// SDP answer.
    pub answer_sdp: String,
}

/// Runs the worker on its own thread with a single-threaded runtime, so
/// that no control-plane task (a store write, a gRPC call) ever queues
/// ahead of media on a shared runtime thread. The returned task ends when
/// the worker does.
fn spawn_worker(
    socket: std::net::UdpSocket,
    config: MediaConfig,
    metrics: Arc<Metrics>,
    events: mpsc::UnboundedSender<MediaEvent>,
    open_rooms: Arc<Mutex<HashSet<String>>>,
    commands: mpsc::UnboundedReceiver<Command>,
) -> std::io::Result<JoinHandle<()>> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (stopped, on_stop) = tokio::sync::oneshot::channel::<()>();
    std::thread::Builder::new().name("vpr-media".to_owned()).spawn(move || {
        runtime.block_on(async move {
            // Registered with this thread's runtime, which polls it.
            let socket = match UdpSocket::from_std(socket) {
                Ok(socket) => Arc::new(socket),
                Err(err) => return tracing::error!(error = %err, "registering the media socket failed"),
            };
            match Worker::new(socket, config, metrics, events, open_rooms) {
                Ok(worker) => worker.run(commands).await,
                Err(err) => tracing::error!(error = %err, "starting the media worker failed"),
            }
        });
        let _ = stopped.send(());
    })?;
    Ok(tokio::spawn(async move {
        let _ = on_stop.await;
    }))
}

/// Handle to the media worker. Cheap to clone.
#[derive(Clone)]
pub struct MediaHandle {
    commands: mpsc::UnboundedSender<Command>,
    config: Arc<MediaConfig>,
    local_addr: SocketAddr,
    open_rooms: Arc<Mutex<HashSet<String>>>,
    metrics: Arc<Metrics>,
}

impl MediaHandle {
    /// Binds the media port and starts the worker. Events for the session
    /// record go to `events`.
    pub async fn start(
        config: MediaConfig,
        events: mpsc::UnboundedSender<MediaEvent>,
    ) -> std::io::Result<(MediaHandle, JoinHandle<()>)> {
        let socket = std::net::UdpSocket::bind(config.udp_listen)?;
        socket.set_nonblocking(true)?;
        // One socket carries every participant's media: a burst from many
        // publishers overflows the kernel's default buffers.
        let socket_ref = socket2::SockRef::from(&socket);
        for (what, result) in [
            ("receive", socket_ref.set_recv_buffer_size(SOCKET_BUFFER_BYTES)),
            ("send", socket_ref.set_send_buffer_size(SOCKET_BUFFER_BYTES)),
        ] {
            if let Err(err) = result {
                tracing::warn!(error = %err, "setting the media socket's {what} buffer size failed");
            }
        }
        // Kernel receive timestamps measure the delay the server adds,
        // including the wait in the receive queue; media flows without them.
        if let Err(err) = udp::enable_receive_timestamps(std::os::fd::AsRawFd::as_raw_fd(&socket)) {
            tracing::warn!(error = %err, "turning on receive timestamps on the media socket failed");
        }
        let local_addr = socket.local_addr()?;
        let metrics = Arc::new(Metrics::default());
        let (commands, receiver) = mpsc::unbounded_channel();
        let open_rooms = Arc::new(Mutex::new(HashSet::new()));
        let task = spawn_worker(socket, config.clone(), metrics.clone(), events, open_rooms.clone(), receiver)?;
        let handle = MediaHandle {
            commands,
            config: Arc::new(config),
            local_addr,
            open_rooms,
            metrics,
        };
        Ok((handle, task))
    }

    /// Returns the address the media port is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Media-plane counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Opens a room so that sessions can join it. With `empty_timeout`, the
    /// worker closes the room once no participant has been connected for
    /// that long and reports [`MediaEvent::RoomEmptyTimeout`].
    pub fn open_room(&self, room_id: &str, empty_timeout: Option<std::time::Duration>) {
        self.open_rooms.lock().expect("room set lock").insert(room_id.to_owned());
        let _ = self.commands.send(Command::OpenRoom { room_id: room_id.to_owned(), empty_timeout });
    }

    /// Closes a room and ends every session in it with `reason`.
    pub fn close_room(&self, room_id: &str, reason: &str) {
        self.open_rooms.lock().expect("room set lock").remove(room_id);
        let _ = self.commands.send(Command::CloseRoom {
            room_id: room_id.to_owned(),
            reason: reason.to_owned(),
        });
    }

    /// Ends every session of one participant with `reason`.
    pub fn remove_participant(&self, room_id: &str, participant_id: &str, reason: &str) {
        let _ = self.commands.send(Command::RemoveParticipant {
            room_id: room_id.to_owned(),
            participant_id: participant_id.to_owned(),
            reason: reason.to_owned(),
        });
    }

    /// Stops or resumes forwarding one published track; video resumes on a
    /// keyframe.
    pub fn set_track_muted(&self, room_id: &str, track_id: &str, muted: bool) {
        let _ = self.commands.send(Command::SetTrackMuted {
            room_id: room_id.to_owned(),
            track_id: track_id.to_owned(),
            muted,
        });
    }

    /// Ends a participant's publishing sessions when `can_publish` is false
    /// and its receiving sessions when `can_subscribe` is false.
    pub fn set_permissions(&self, room_id: &str, participant_id: &str, can_publish: bool, can_subscribe: bool) {
        let _ = self.commands.send(Command::RevokeDirections {
            room_id: room_id.to_owned(),
            participant_id: participant_id.to_owned(),
            publish: !can_publish,
            subscribe: !can_subscribe,
        });
    }

    /// Returns true when the room is open on this server.
    pub fn is_room_open(&self, room_id: &str) -> bool {
        self.open_rooms.lock().expect("room set lock").contains(room_id)
    }

    /// Checks the offer, negotiates a peer connection and hands it to the
    /// worker. Returns the SDP answer.
    pub async fn start_session(&self, request: SessionRequest) -> Result<SessionAnswer, MediaError> {
        let summary = offer::check_offer(&request.offer_sdp)?;
        if !self.is_room_open(&request.room_id) {
            return Err(MediaError::RoomNotOpen(request.room_id));
        }

        let session_id = format!("ss_{:032x}", rand::random::<u128>());
        let config = self.config.clone();
        let local_addr = self.local_addr;
        let negotiated = {
            let session_id = session_id.clone();
            let offer_sdp = request.offer_sdp.clone();
            let direction = request.direction;
            tokio::task::spawn_blocking(move || {
                negotiate::negotiate(&config, local_addr, &session_id, direction, &offer_sdp, &summary)
            })
            .await
            .map_err(|_| MediaError::WorkerStopped)??
        };
        let answer_sdp = negotiated.answer_sdp.clone();

        let (reply, response) = oneshot::channel();
        let setup = SessionSetup {
            session_id: session_id.clone(),
            room_id: request.room_id,
            participant_id: request.participant_id,
            is_resident: request.is_resident,
            direction: request.direction,
            negotiated,
            signals: request.signals,
        };
        self.commands
            .send(Command::AddSession { setup: Box::new(setup), reply })
            .map_err(|_| MediaError::WorkerStopped)?;
        response.await.map_err(|_| MediaError::WorkerStopped)??;
        Ok(SessionAnswer { session_id, answer_sdp })
    }

    /// Applies the client's answer to the server's last offer.
    pub async fn apply_answer(&self, session_id: &str, answer_sdp: String) -> Result<(), MediaError> {
        let (reply, response) = oneshot::channel();
        self.commands
            .send(Command::ApplyAnswer { session_id: session_id.to_owned(), answer_sdp, reply })
            .map_err(|_| MediaError::WorkerStopped)?;
        response.await.map_err(|_| MediaError::WorkerStopped)?
    }

    /// Applies a client's later offer to a renegotiated session, such as an
    /// ICE restart; returns the SDP answer, or [`OfferReply::Glare`] while a
    /// server offer waits for its answer.
    pub async fn apply_offer(&self, session_id: &str, offer_sdp: String) -> Result<OfferReply, MediaError> {
        offer::check_offer(&offer_sdp)?;
        let (reply, response) = oneshot::channel();
        self.commands
            .send(Command::ApplyOffer { session_id: session_id.to_owned(), offer_sdp, reply })
            .map_err(|_| MediaError::WorkerStopped)?;
        response.await.map_err(|_| MediaError::WorkerStopped)?
    }

    /// Detaches a renegotiated session from its closed signalling channel.
    /// The session keeps its media and is ended after `grace` unless
    /// [`MediaHandle::resume_session`] attaches a new channel first.
    pub fn detach_session(&self, session_id: &str, grace: std::time::Duration) {
        let _ = self.commands.send(Command::DetachSession { session_id: session_id.to_owned(), grace });
    }

    /// Attaches a new signalling channel to the participant's detached
    /// renegotiated session; returns its session id, or `SessionNotFound`.
    pub async fn resume_session(
        &self,
        room_id: &str,
        participant_id: &str,
        signals: mpsc::UnboundedSender<PeerSignal>,
    ) -> Result<String, MediaError> {
        let (reply, response) = oneshot::channel();
        self.commands
            .send(Command::ResumeSession {
                room_id: room_id.to_owned(),
                participant_id: participant_id.to_owned(),
                signals,
                reply,
            })
            .map_err(|_| MediaError::WorkerStopped)?;
        response.await.map_err(|_| MediaError::WorkerStopped)?
    }

    /// Ends a session; `SessionNotFound` when it is not live.
    pub async fn end_session(&self, session_id: &str, reason: &str) -> Result<(), MediaError> {
        let (reply, response) = oneshot::channel();
        self.commands
            .send(Command::EndSession {
                session_id: session_id.to_owned(),
                reason: reason.to_owned(),
                reply,
            })
            .map_err(|_| MediaError::WorkerStopped)?;
        match response.await {
            Ok(true) => Ok(()),
            Ok(false) => Err(MediaError::SessionNotFound(session_id.to_owned())),
            Err(_) => Err(MediaError::WorkerStopped),
        }
    }

    /// Ends every session with `reason` and stops the worker.
    pub async fn shutdown(&self, reason: &str) {
        self.open_rooms.lock().expect("room set lock").clear();
        let (reply, response) = oneshot::channel();
        if self
            .commands
            .send(Command::Shutdown { reason: reason.to_owned(), reply })
            .is_ok()
        {
            let _ = response.await;
        }
    }
}
