//! Joins of one participant during a run. Against VPR: admission over gRPC,
//! then a WHIP publisher (the clip or the synthetic stream) for a resident
//! or a WHEP subscriber for an officer or observer. Against Janus: a
//! VideoRoom publisher with the synthetic stream, and subscribers to its
//! feed. Connected clients go into the shared [`Registry`]; failures are
//! counted there with their first messages.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use vpr_control::pb::Role;

use super::control::ControlClient;
use super::freeze::FreezeDetector;
use super::report::MAX_ERRORS;
use crate::client::simulcast::{LayerSpec, SimulcastOptions, SimulcastPublisher};
use crate::client::synthetic::{SyntheticConfig, SyntheticPublisher};
use crate::client::{PublisherMedia, SubscriberStats, WhepSubscriber, WhipPublisher};
use crate::janus::{JanusRoom, VideoRoomPublisher, VideoRoomSubscriber};

/// Time a client may take from its offer until ICE and DTLS are done.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A room created for the run.
#[derive(Debug)]
pub struct RoomInfo {
    /// Position of the room in the scenario, from 0.
    pub index: u32,
    /// Server-assigned room id.
    pub room_id: String,
    /// When the harness sent CreateRoom.
    pub created_at: Instant,
    /// The Janus room and its control session (Janus target only); taken
    /// at the end to destroy the room.
    pub janus: Mutex<Option<JanusRoom>>,
    /// Feed id of the room's first resident once it publishes (Janus
    /// target only); subscribers wait for it.
    pub feed: watch::Sender<Option<u64>>,
}

impl RoomInfo {
    /// Creates a room record with no Janus state.
    pub fn new(index: u32, room_id: String, created_at: Instant) -> Self {
        Self {
            index,
            room_id,
            created_at,
            janus: Mutex::new(None),
            feed: watch::Sender::new(None),
        }
    }
}

/// The client of a connected resident.
pub enum PublisherClient {
    /// The looping clip over WHIP.
    Clip(WhipPublisher),
    /// The synthetic stream over WHIP.
    Synthetic(SyntheticPublisher),
    /// Three synthetic simulcast layers over WHIP.
    Simulcast(SimulcastPublisher),
    /// The synthetic stream in a Janus VideoRoom.
    Janus(VideoRoomPublisher),
}

impl PublisherClient {
    /// Video frames sent so far.
    pub fn video_frames_sent(&self) -> u64 {
        match self {
            Self::Clip(publisher) => publisher.stats().video_frames_sent,
            Self::Synthetic(publisher) => publisher.stats().frames_sent,
            Self::Simulcast(publisher) => simulcast_frames(&publisher.stats()),
            Self::Janus(publisher) => publisher.publisher.stats().frames_sent,
        }
    }

    /// Stops the media and ends the session; returns the frames sent.
    pub async fn stop(self) -> Result<u64, String> {
        match self {
            Self::Clip(publisher) => publisher
                .stop()
                .await
                .map(|stats| stats.video_frames_sent)
                .map_err(|error| error.to_string()),
            Self::Synthetic(publisher) => publisher
                .stop()
                .await
                .map(|stats| stats.frames_sent)
                .map_err(|error| error.to_string()),
            Self::Simulcast(publisher) => publisher
                .stop()
                .await
                .map(|stats| simulcast_frames(&stats))
                .map_err(|error| error.to_string()),
            Self::Janus(publisher) => publisher.stop().await.map_err(|error| error.to_string()),
        }
    }

    async fn abandon(self) {
        match self {
            Self::Clip(publisher) => drop(publisher.abandon().await),
            Self::Synthetic(publisher) => drop(publisher.abandon().await),
            Self::Simulcast(publisher) => drop(publisher.stop().await),
            Self::Janus(publisher) => drop(publisher.stop().await),
        }
    }
}

/// Video frames of a simulcast publisher: every layer sends the same frames,
/// so a subscriber expects those of the layer that sent the most.
fn simulcast_frames(stats: &crate::client::simulcast::SimulcastStats) -> u64 {
    stats.layers.iter().map(|layer| layer.frames_sent).max().unwrap_or(0)
}

/// The client of a connected officer or observer.
pub enum SubscriberClient {
    /// A WHEP subscriber (VPR).
    Whep(WhepSubscriber),
    /// A VideoRoom subscriber (Janus).
    Janus(VideoRoomSubscriber),
}

impl SubscriberClient {
    /// Returns what has arrived so far.
    pub fn stats(&self) -> SubscriberStats {
        match self {
            Self::Whep(subscriber) => subscriber.stats(),
            Self::Janus(subscriber) => subscriber.subscriber.stats(),
        }
    }

    /// Counters of the relay on the subscriber's impaired link, if any.
    pub fn link_stats(&self) -> Option<crate::relay::RelayStats> {
        match self {
            Self::Whep(subscriber) => subscriber.link_stats(),
            Self::Janus(_) => None,
        }
    }

    /// Ends the session and closes the peer connection.
    pub async fn stop(self) -> Result<(), String> {
        match self {
            Self::Whep(subscriber) => subscriber.stop().await.map(drop).map_err(|error| error.to_string()),
            Self::Janus(subscriber) => subscriber.stop().await.map_err(|error| error.to_string()),
        }
    }
}

/// A connected publisher: a resident, or an officer that also publishes.
pub struct PublisherEntry {
    /// Index of the room.
    pub room: u32,
    /// Position of the resident in its room, from 0; `None` for an officer.
    pub resident: Option<u32>,
    /// The publishing client.
    pub publisher: PublisherClient,
}

/// A connected officer or observer.
pub struct SubscriberEntry {
    /// Index of the room.
    pub room: u32,
    /// The receiving client.
    pub subscriber: SubscriberClient,
    /// When the harness sent CreateRoom for the room.
    pub room_created_at: Instant,
    /// When the harness sent AdmitParticipant for this subscriber.
    pub join_started_at: Instant,
    /// When ICE and DTLS finished.
    pub connected_at: Instant,
    /// Video frames the room's first resident had sent when this subscriber
    /// connected; used for the expected frames of a subscriber that never
    /// received a frame.
    pub connect_baseline_frames: u64,
    /// Video frames the room's first resident had sent, less the frames
    /// this subscriber had received, when the sampler first saw a complete
    /// frame here. Frames sent afterwards are expected; the wait for the
    /// first keyframe counts as first-frame time, not as loss.
    pub first_frame_baseline_frames: Option<u64>,
    /// Freezes seen by the sampler.
    pub freeze: FreezeDetector,
}

/// Join failures and their first messages.
#[derive(Debug, Default)]
pub struct Failures {
    /// Residents that did not connect.
    pub publishers: u64,
    /// Officers and observers that did not connect.
    pub subscribers: u64,
    /// Rooms that could not be created.
    pub rooms: u64,
    /// First error messages, at most [`MAX_ERRORS`].
    pub errors: Vec<String>,
}

impl Failures {
    /// Keeps `message` if fewer than [`MAX_ERRORS`] are kept.
    pub fn note(&mut self, message: String) {
        if self.errors.len() < MAX_ERRORS {
            self.errors.push(message);
        }
    }
}

/// Clients and failures of a run, shared by join tasks and the sampler.
#[derive(Default)]
pub struct Registry {
    /// Connected residents.
    pub publishers: Mutex<Vec<PublisherEntry>>,
    /// Connected officers and observers.
    pub subscribers: Mutex<Vec<SubscriberEntry>>,
    /// What failed.
    pub failures: Mutex<Failures>,
}

impl Registry {
    /// Locks the publishers.
    pub fn publishers(&self) -> MutexGuard<'_, Vec<PublisherEntry>> {
        self.publishers.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    /// Locks the subscribers.
    pub fn subscribers(&self) -> MutexGuard<'_, Vec<SubscriberEntry>> {
        self.subscribers.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    /// Locks the failures.
    pub fn failures(&self) -> MutexGuard<'_, Failures> {
        self.failures.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    /// Returns the video frames the first resident of `room` has sent so far;
    /// 0 before that resident connected.
    ///
    /// NOTE: the server binds a subscriber's video to the room's earliest
    /// resident publication. That is resident 0 only if it connects first,
    /// so with several residents per room the expected count can be off.
    pub fn source_frames_sent(&self, room: u32) -> u64 {
        self.publishers()
            .iter()
            .find(|entry| entry.room == room && entry.resident == Some(0))
            .map_or(0, |entry| entry.publisher.video_frames_sent())
    }

    /// Returns the video frames sent so far by the first resident of every
    /// room that has one, by room index.
    pub fn source_frames_by_room(&self) -> HashMap<u32, u64> {
        self.publishers()
            .iter()
            .filter(|entry| entry.resident == Some(0))
            .map(|entry| (entry.room, entry.publisher.video_frames_sent()))
            .collect()
    }
}

/// The server the participants join.
#[derive(Clone)]
pub enum TargetClient {
    /// VPR, through its control-plane client (one shared connection).
    Vpr(ControlClient),
    /// Janus, at the base URL of its HTTP API.
    Janus(String),
}

/// Shared inputs of the join tasks.
#[derive(Clone)]
pub struct JoinContext {
    /// The server.
    pub target: TargetClient,
    /// Clip the residents publish when there is no synthetic stream.
    pub media: PublisherMedia,
    /// Synthetic stream the residents publish instead of the clip.
    pub synthetic: Option<SyntheticConfig>,
    /// Residents publish three synthetic simulcast layers instead.
    pub simulcast: bool,
    /// Officers also publish, the clip or the synthetic stream.
    pub officers_publish: bool,
    /// Impairment of each WHEP subscriber's link, through a relay of its own.
    pub link: Option<crate::relay::Impairment>,
    /// Registry that receives clients and failures.
    pub registry: Arc<Registry>,
}

/// Admits resident `resident` of `room` and publishes.
pub async fn join_publisher(context: JoinContext, room: Arc<RoomInfo>, resident: u32) {
    let identity = format!("resident-{}-{resident}", room.index);
    let connected = match &context.target {
        TargetClient::Vpr(control) => connect_publisher(&context, control, &room, &identity).await,
        TargetClient::Janus(base_url) => connect_janus_publisher(&context, base_url, &room, &identity).await,
    };
    match connected {
        Ok(publisher) => {
            tracing::debug!(room_id = %room.room_id, %identity, "publisher connected");
            context.registry.publishers().push(PublisherEntry {
                room: room.index,
                resident: Some(resident),
                publisher,
            });
        }
        Err(message) => {
            tracing::warn!(room_id = %room.room_id, %identity, %message, "publisher join failed");
            let mut failures = context.registry.failures();
            failures.publishers += 1;
            failures.note(format!("{identity} in {}: {message}", room.room_id));
        }
    }
}

async fn connect_publisher(
    context: &JoinContext,
    control: &ControlClient,
    room: &RoomInfo,
    identity: &str,
) -> Result<PublisherClient, String> {
    let admitted = control
        .clone()
        .admit(&room.room_id, identity, Role::Resident)
        .await
        .map_err(|error| error.to_string())?;
    start_publisher(context, &admitted.whip_url, &admitted.join_token, context.simulcast).await
}

/// Publishes over WHIP with an admitted participant's link and token: the
/// simulcast layers when `simulcast`, else the synthetic stream or the clip.
async fn start_publisher(
    context: &JoinContext,
    whip_url: &str,
    token: &str,
    simulcast: bool,
) -> Result<PublisherClient, String> {
    if simulcast {
        let publisher = SimulcastPublisher::start_with(whip_url, token, SimulcastOptions::new(LayerSpec::default_set()))
            .await
            .map_err(|error| format!("WHIP: {error}"))?;
        if let Err(error) = publisher.wait_connected(CONNECT_TIMEOUT).await {
            drop(publisher.stop().await);
            return Err(format!("WHIP connect: {error}"));
        }
        return Ok(PublisherClient::Simulcast(publisher));
    }
    let (publisher, connected) = match context.synthetic {
        Some(config) => {
            let publisher = SyntheticPublisher::start_whip(whip_url, token, config)
                .await
                .map_err(|error| format!("WHIP: {error}"))?;
            let connected = publisher.wait_connected(CONNECT_TIMEOUT).await;
            (PublisherClient::Synthetic(publisher), connected)
        }
        None => {
            let publisher = WhipPublisher::start(whip_url, token, context.media.clone())
                .await
                .map_err(|error| format!("WHIP: {error}"))?;
            let connected = publisher.wait_connected(CONNECT_TIMEOUT).await;
            (PublisherClient::Clip(publisher), connected)
        }
    };
    if let Err(error) = connected {
        publisher.abandon().await;
        return Err(format!("WHIP connect: {error}"));
    }
    Ok(publisher)
}

async fn connect_janus_publisher(
    context: &JoinContext,
    base_url: &str,
    room: &RoomInfo,
    identity: &str,
) -> Result<PublisherClient, String> {
    let config = context
        .synthetic
        .ok_or_else(|| "the Janus target needs the synthetic stream".to_owned())?;
    let janus_room = janus_room_number(room)?;
    let publisher = VideoRoomPublisher::join(base_url, janus_room, identity, config)
        .await
        .map_err(|error| format!("Janus publish: {error}"))?;
    if let Err(error) = publisher.publisher.wait_connected(CONNECT_TIMEOUT).await {
        drop(publisher.stop().await);
        return Err(format!("Janus publisher connect: {error}"));
    }
    room.feed.send_replace(Some(publisher.feed));
    Ok(PublisherClient::Janus(publisher))
}

fn janus_room_number(room: &RoomInfo) -> Result<u64, String> {
    room.room_id
        .parse()
        .map_err(|_| format!("{} is not a Janus room number", room.room_id))
}

/// Admits subscriber `index` of `role` into `room` and receives over WHEP.
pub async fn join_subscriber(context: JoinContext, room: Arc<RoomInfo>, role: Role, index: u32) {
    let identity = format!("{}-{}-{index}", role_name(role), room.index);
    let join_started_at = Instant::now();
    let connected = match &context.target {
        TargetClient::Vpr(control) => connect_subscriber(&context, control, &room, &identity, role).await,
        TargetClient::Janus(base_url) => connect_janus_subscriber(base_url, &room).await,
    };
    match connected {
        Ok((subscriber, connected_at, publisher)) => {
            if let Some(publisher) = publisher {
                context.registry.publishers().push(PublisherEntry { room: room.index, resident: None, publisher });
            }
            tracing::debug!(room_id = %room.room_id, %identity, "subscriber connected");
            let connect_baseline_frames = context.registry.source_frames_sent(room.index);
            context.registry.subscribers().push(SubscriberEntry {
                room: room.index,
                subscriber,
                room_created_at: room.created_at,
                join_started_at,
                connected_at,
                connect_baseline_frames,
                first_frame_baseline_frames: None,
                freeze: FreezeDetector::default(),
            });
        }
        Err(message) => {
            tracing::warn!(room_id = %room.room_id, %identity, %message, "subscriber join failed");
            let mut failures = context.registry.failures();
            failures.subscribers += 1;
            failures.note(format!("{identity} in {}: {message}", room.room_id));
        }
    }
}

/// A connected subscriber, when it connected, and the officer's own
/// publisher when officers publish.
type SubscriberJoin = (SubscriberClient, Instant, Option<PublisherClient>);

async fn connect_subscriber(
    context: &JoinContext,
    control: &ControlClient,
    room: &RoomInfo,
    identity: &str,
    role: Role,
) -> Result<SubscriberJoin, String> {
    let admitted = control
        .clone()
        .admit(&room.room_id, identity, role)
        .await
        .map_err(|error| error.to_string())?;
    let subscriber = WhepSubscriber::start_with_link(&admitted.whep_url, &admitted.join_token, context.link)
        .await
        .map_err(|error| format!("WHEP: {error}"))?;
    let connected_at = match subscriber.wait_connected(CONNECT_TIMEOUT).await {
        Ok(connected_at) => connected_at,
        Err(error) => {
            subscriber.abandon().await;
            return Err(format!("WHEP connect: {error}"));
        }
    };
    if !(context.officers_publish && role == Role::Officer) {
        return Ok((SubscriberClient::Whep(subscriber), connected_at, None));
    }
    match start_publisher(context, &admitted.whip_url, &admitted.join_token, false).await {
        Ok(publisher) => Ok((SubscriberClient::Whep(subscriber), connected_at, Some(publisher))),
        Err(error) => {
            subscriber.abandon().await;
            Err(format!("officer's {error}"))
        }
    }
}

/// Waits for the room's publisher feed, then subscribes to it.
async fn connect_janus_subscriber(base_url: &str, room: &RoomInfo) -> Result<SubscriberJoin, String> {
    let janus_room = janus_room_number(room)?;
    let mut feed = room.feed.subscribe();
    let feed = match tokio::time::timeout(CONNECT_TIMEOUT, feed.wait_for(Option::is_some)).await {
        Ok(Ok(feed)) => feed.expect("wait_for returned a feed"),
        _ => return Err(format!("no publisher in room {janus_room} after {CONNECT_TIMEOUT:?}")),
    };
    let subscriber = VideoRoomSubscriber::join(base_url, janus_room, feed)
        .await
        .map_err(|error| format!("Janus subscribe: {error}"))?;
    match subscriber.subscriber.wait_connected(CONNECT_TIMEOUT).await {
        Ok(connected_at) => Ok((SubscriberClient::Janus(subscriber), connected_at, None)),
        Err(error) => {
            subscriber.abandon().await;
            Err(format!("Janus subscriber connect: {error}"))
        }
    }
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Resident => "resident",
        Role::Officer => "officer",
        Role::Observer => "observer",
        _ => "participant",
    }
}
