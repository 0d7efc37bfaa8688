//! RoomService: the gRPC control plane over the session store and the media
//! plane. The store is the source of truth: each call changes the store
//! first, then drives the media plane, then logs an event and appends an
//! audit entry.
//!
//! The calls are grouped by concern: [`rooms`], [`participants`],
//! [`sessions`] (records and the audit trail) and [`watch`] (the event
//! stream).

mod participants;
mod rooms;
mod sessions;
mod watch;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tonic::{Request, Response, Status};
use vpr_store::{NewAuditEntry, NewEvent, SessionRow, Store, StoreError};

use crate::error::ControlError;
use crate::media::MediaRooms;
use crate::pb;
use crate::pb::room_service_server::RoomService;
use crate::scope::{self, Scope};
use crate::token::JoinTokenSigner;

/// End reason of a room closed by CloseRoom, also stored as the leave reason
/// of participants still in it.
pub const CLOSED_BY_API_REASON: &str = "room_closed";

/// Settings of the RoomService.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomServiceConfig {
    /// Base URL of the media plane's HTTP endpoints, without a trailing slash;
    /// WHIP and WHEP URLs are `{base}/whip/{room_id}` and `{base}/whep/{room_id}`,
    /// and the join link is `{base}/join?token=<join token>`.
    pub public_base_url: String,
    /// Join token lifetime when the request gives 0.
    pub default_token_ttl: Duration,
    /// Maximum join token lifetime a request may set.
    pub max_token_ttl: Duration,
    /// Room size when CreateRoom gives 0.
    pub default_max_participants: u32,
    /// Maximum room size a CreateRoom request may set.
    pub max_participants_limit: u32,
}

impl Default for RoomServiceConfig {
    // NOTE: these defaults are starting points, not measured limits of the SFU.
    fn default() -> Self {
        Self {
            public_base_url: "http://127.0.0.1:8080".to_owned(),
            default_token_ttl: Duration::from_secs(10 * 60),
            max_token_ttl: Duration::from_secs(24 * 3600),
            default_max_participants: 8,
            max_participants_limit: 50,
        }
    }
}

/// Ends every WatchEvents stream of one [`RoomServiceImpl`]; taken with
/// [`RoomServiceImpl::stream_stopper`] before the service is moved into a
/// server, so that a graceful shutdown does not wait on open streams.
#[derive(Debug, Clone)]
pub struct StreamStopper(Arc<tokio::sync::watch::Sender<bool>>);

impl StreamStopper {
    /// Ends every open WatchEvents stream and makes new ones end at once.
    pub fn stop(&self) {
        self.0.send_replace(true);
    }
}

/// The RoomService implementation.
pub struct RoomServiceImpl {
    store: Store,
    signer: JoinTokenSigner,
    media: Arc<dyn MediaRooms>,
    config: RoomServiceConfig,
    /// Serializes the look-up-then-insert of admissions so that two
    /// concurrent AdmitParticipant calls can neither both take the last place
    /// in a room nor admit one identity twice.
    // NOTE: this works within one server process only. Several control-plane
    // nodes on one database would need these checks inside the store.
    admissions: tokio::sync::Mutex<()>,
    /// Set to true to end the WatchEvents streams.
    streams_stopped: Arc<tokio::sync::watch::Sender<bool>>,
    /// Set on shutdown: CreateRoom and AdmitParticipant return UNAVAILABLE.
    draining: Arc<std::sync::atomic::AtomicBool>,
    metrics: Arc<crate::ControlMetrics>,
}

impl RoomServiceImpl {
    /// Creates the service over `store`, minting join tokens with `signer`
    /// and driving `media`.
    pub fn new(
        store: Store,
        signer: JoinTokenSigner,
        media: Arc<dyn MediaRooms>,
        mut config: RoomServiceConfig,
    ) -> Self {
        config.public_base_url = config.public_base_url.trim_end_matches('/').to_owned();
        let (streams_stopped, _) = tokio::sync::watch::channel(false);
        Self {
            store,
            signer,
            media,
            config,
            admissions: tokio::sync::Mutex::new(()),
            streams_stopped: Arc::new(streams_stopped),
            draining: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            metrics: Arc::new(crate::ControlMetrics::default()),
        }
    }

    /// Returns the WatchEvents counters for the metrics endpoint.
    pub fn metrics(&self) -> Arc<crate::ControlMetrics> {
        self.metrics.clone()
    }

    /// Returns the flag that, once set, makes CreateRoom and
    /// AdmitParticipant return UNAVAILABLE while open calls drain.
    pub fn drain_flag(&self) -> Arc<std::sync::atomic::AtomicBool> {
        self.draining.clone()
    }

    fn reject_if_draining(&self) -> Result<(), ControlError> {
        if self.draining.load(std::sync::atomic::Ordering::Relaxed) {
            Err(ControlError::Draining)
        } else {
            Ok(())
        }
    }

    /// Returns a handle that ends this service's WatchEvents streams.
    pub fn stream_stopper(&self) -> StreamStopper {
        StreamStopper(self.streams_stopped.clone())
    }

    async fn room_row(&self, room_id: &str) -> Result<SessionRow, ControlError> {
        self.store
            .session_row(room_id)
            .await?
            .ok_or_else(|| ControlError::RoomNotFound(room_id.to_owned()))
    }

    async fn open_room_row(&self, room_id: &str) -> Result<SessionRow, ControlError> {
        let row = self.room_row(room_id).await?;
        if !row.is_open() {
            return Err(ControlError::RoomClosed(row.room_id));
        }
        Ok(row)
    }

    /// Appends an event to the room's log. A failure is logged and not
    /// returned, because the change it describes is already stored.
    async fn record_event(&self, event: EventRecord<'_>, detail: serde_json::Value, at_ms: i64) {
        let new_event = NewEvent {
            room_id: event.room_id.to_owned(),
            kind: event.kind.to_owned(),
            participant_id: event.participant_id.map(str::to_owned),
            track_id: event.track_id.map(str::to_owned),
            detail: detail.to_string(),
            at_ms,
        };
        if let Err(error) = self.store.append_event(new_event).await {
            tracing::error!(room_id = event.room_id, kind = event.kind, %error,
                "event could not be appended to the session log");
        }
    }

    /// Appends a control action to the audit trail. `arguments` must hold no
    /// token or secret. A failure is logged and not returned, because the
    /// action is already stored and carried out.
    // NOTE: an action whose audit append failed is missing from the trail;
    // the error log line is then its only record.
    async fn audit(&self, key_id: &str, action: &str, arguments: serde_json::Value, at_ms: i64) {
        let entry = NewAuditEntry {
            at_ms,
            key_id: key_id.to_owned(),
            action: action.to_owned(),
            arguments: arguments.to_string(),
        };
        if let Err(error) = self.store.append_audit(entry).await {
            tracing::error!(key_id, action, %error, "audit entry could not be appended");
        }
    }
}

/// Room, kind, participant and track of an event to append.
struct EventRecord<'a> {
    room_id: &'a str,
    kind: &'a str,
    participant_id: Option<&'a str>,
    track_id: Option<&'a str>,
}

impl<'a> EventRecord<'a> {
    fn room(room_id: &'a str, kind: &'a str) -> Self {
        Self {
            room_id,
            kind,
            participant_id: None,
            track_id: None,
        }
    }
}

/// Maps store errors about the room named in the request to the room's own
/// errors, so that messages use the API's term "room".
fn room_error(error: StoreError, room_id: &str) -> ControlError {
    match error {
        StoreError::NotFound {
            what: "session", ..
        } => ControlError::RoomNotFound(room_id.to_owned()),
        StoreError::AlreadyClosed { .. } => ControlError::RoomClosed(room_id.to_owned()),
        other => ControlError::Store(other),
    }
}

/// Returns `prefix` followed by 16 random hex digits.
fn new_id(prefix: &str) -> String {
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}{}", &random[..16])
}

fn unix_now_ms() -> i64 {
    let elapsed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
}

/// Runs one call: checks that the caller has `$scope`, then runs
/// `$self.$method(message, caller_key_id)`.
macro_rules! call {
    ($self:ident, $request:ident, $scope:expr, $rpc:literal, $method:ident) => {{
        let key_id = scope::require(&$request, $scope, $rpc)?;
        tracing::debug!(key_id = %key_id, rpc = $rpc, "control-plane call");
        let response = $self.$method($request.into_inner(), &key_id).await?;
        Ok(Response::new(response))
    }};
}

#[tonic::async_trait]
impl RoomService for RoomServiceImpl {
    async fn create_room(
        &self,
        request: Request<pb::CreateRoomRequest>,
    ) -> Result<Response<pb::CreateRoomResponse>, Status> {
        call!(self, request, Scope::RoomsWrite, "CreateRoom", create_room_call)
    }

    async fn get_room(
        &self,
        request: Request<pb::GetRoomRequest>,
    ) -> Result<Response<pb::Room>, Status> {
        call!(self, request, Scope::RoomsRead, "GetRoom", get_room_call)
    }

    async fn list_rooms(
        &self,
        request: Request<pb::ListRoomsRequest>,
    ) -> Result<Response<pb::ListRoomsResponse>, Status> {
        call!(self, request, Scope::RoomsRead, "ListRooms", list_rooms_call)
    }

    async fn close_room(
        &self,
        request: Request<pb::CloseRoomRequest>,
    ) -> Result<Response<pb::Room>, Status> {
        call!(self, request, Scope::RoomsWrite, "CloseRoom", close_room_call)
    }

    async fn admit_participant(
        &self,
        request: Request<pb::AdmitParticipantRequest>,
    ) -> Result<Response<pb::AdmitParticipantResponse>, Status> {
        call!(self, request, Scope::RoomsWrite, "AdmitParticipant", admit_participant_call)
    }

    async fn remove_participant(
        &self,
        request: Request<pb::RemoveParticipantRequest>,
    ) -> Result<Response<pb::Participant>, Status> {
        call!(self, request, Scope::RoomsWrite, "RemoveParticipant", remove_participant_call)
    }

    async fn mute_track(
        &self,
        request: Request<pb::MuteTrackRequest>,
    ) -> Result<Response<pb::Track>, Status> {
        call!(self, request, Scope::RoomsWrite, "MuteTrack", mute_track_call)
    }

    async fn update_participant_permissions(
        &self,
        request: Request<pb::UpdateParticipantPermissionsRequest>,
    ) -> Result<Response<pb::Participant>, Status> {
        call!(self, request, Scope::RoomsWrite, "UpdateParticipantPermissions", update_permissions_call)
    }

    async fn list_participants(
        &self,
        request: Request<pb::ListParticipantsRequest>,
    ) -> Result<Response<pb::ListParticipantsResponse>, Status> {
        call!(self, request, Scope::RoomsRead, "ListParticipants", list_participants_call)
    }

    async fn get_session(
        &self,
        request: Request<pb::GetSessionRequest>,
    ) -> Result<Response<pb::Session>, Status> {
        call!(self, request, Scope::RoomsRead, "GetSession", get_session_call)
    }

    async fn list_sessions(
        &self,
        request: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        call!(self, request, Scope::RoomsRead, "ListSessions", list_sessions_call)
    }

    type WatchEventsStream = watch::EventStream;

    async fn watch_events(
        &self,
        request: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        call!(self, request, Scope::RoomsRead, "WatchEvents", watch_events_call)
    }

    async fn list_audit_entries(
        &self,
        request: Request<pb::ListAuditEntriesRequest>,
    ) -> Result<Response<pb::ListAuditEntriesResponse>, Status> {
        call!(self, request, Scope::RoomsRead, "ListAuditEntries", list_audit_entries_call)
    }
}
