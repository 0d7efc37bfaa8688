//! Joins of one participant during a run: admission over gRPC, then a WHIP
//! publisher for a resident or a WHEP subscriber for an officer or
//! observer. Connected clients go into the shared [`Registry`]; failures
//! are counted there with their first messages.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use vpr_control::pb::Role;

use super::control::ControlClient;
use super::freeze::FreezeDetector;
use super::report::MAX_ERRORS;
use crate::client::{PublisherMedia, WhepSubscriber, WhipPublisher};

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
}

/// A connected resident.
pub struct PublisherEntry {
    /// Index of the room.
    pub room: u32,
    /// Position of the resident in its room, from 0.
    pub resident: u32,
    /// The WHIP client.
    pub publisher: WhipPublisher,
}

/// A connected officer or observer.
pub struct SubscriberEntry {
    /// Index of the room.
    pub room: u32,
    /// The WHEP client.
    pub subscriber: WhepSubscriber,
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
            .find(|entry| entry.room == room && entry.resident == 0)
            .map_or(0, |entry| entry.publisher.stats().video_frames_sent)
    }

    /// Returns the video frames sent so far by the first resident of every
    /// room that has one, by room index.
    pub fn source_frames_by_room(&self) -> HashMap<u32, u64> {
        self.publishers()
            .iter()
            .filter(|entry| entry.resident == 0)
            .map(|entry| (entry.room, entry.publisher.stats().video_frames_sent))
            .collect()
    }
}

/// Shared inputs of the join tasks.
#[derive(Clone)]
pub struct JoinContext {
    /// Control-plane client (shares one connection).
    pub control: ControlClient,
    /// Clip the residents publish.
    pub media: PublisherMedia,
    /// Registry that receives clients and failures.
    pub registry: Arc<Registry>,
}

/// Admits resident `resident` of `room` and publishes the clip over WHIP.
pub async fn join_publisher(context: JoinContext, room: Arc<RoomInfo>, resident: u32) {
    let identity = format!("resident-{}-{resident}", room.index);
    match connect_publisher(&context, &room, &identity).await {
        Ok(publisher) => {
            tracing::debug!(room_id = %room.room_id, %identity, "publisher connected");
            context.registry.publishers().push(PublisherEntry {
                room: room.index,
                resident,
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
    room: &RoomInfo,
    identity: &str,
) -> Result<WhipPublisher, String> {
    let admitted = context
        .control
        .clone()
        .admit(&room.room_id, identity, Role::Resident)
        .await
        .map_err(|error| error.to_string())?;
    let publisher = WhipPublisher::start(&admitted.whip_url, &admitted.join_token, context.media.clone())
        .await
        .map_err(|error| format!("WHIP: {error}"))?;
    if let Err(error) = publisher.wait_connected(CONNECT_TIMEOUT).await {
        publisher.abandon().await;
        return Err(format!("WHIP connect: {error}"));
    }
    Ok(publisher)
}

/// Admits subscriber `index` of `role` into `room` and receives over WHEP.
pub async fn join_subscriber(context: JoinContext, room: Arc<RoomInfo>, role: Role, index: u32) {
    let identity = format!("{}-{}-{index}", role_name(role), room.index);
    let join_started_at = Instant::now();
    match connect_subscriber(&context, &room, &identity, role).await {
        Ok((subscriber, connected_at)) => {
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

async fn connect_subscriber(
    context: &JoinContext,
    room: &RoomInfo,
    identity: &str,
    role: Role,
) -> Result<(WhepSubscriber, Instant), String> {
    let admitted = context
        .control
        .clone()
        .admit(&room.room_id, identity, role)
        .await
        .map_err(|error| error.to_string())?;
    let subscriber = WhepSubscriber::start(&admitted.whep_url, &admitted.join_token)
        .await
        .map_err(|error| format!("WHEP: {error}"))?;
    match subscriber.wait_connected(CONNECT_TIMEOUT).await {
        Ok(connected_at) => Ok((subscriber, connected_at)),
        Err(error) => {
            subscriber.abandon().await;
            Err(format!("WHEP connect: {error}"))
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
