//! RoomService: creates rooms, admits participants with join tokens, closes
//! rooms and returns session records. The store is the source of truth, and
//! the service opens and closes media plane rooms after the store has changed.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;
use tonic::{Request, Response, Status};
use vpr_store::{NewEvent, NewParticipant, NewSession, SessionRow, Store, StoreError};

use crate::auth::CallerKeyId;
use crate::convert;
use crate::error::ControlError;
use crate::media::MediaRooms;
use crate::pb;
use crate::pb::room_service_server::RoomService;
use crate::token::{JoinClaims, JoinTokenSigner};
use crate::validate;

/// End reason of a room closed by CloseRoom, also stored as the leave reason
/// of participants still in it.
pub const CLOSED_BY_API_REASON: &str = "room_closed";

/// Settings of the RoomService.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomServiceConfig {
    /// Base URL of the media plane's HTTP endpoints, without a trailing slash;
    /// WHIP and WHEP URLs are `{base}/whip/{room_id}` and `{base}/whep/{room_id}`.
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

/// The RoomService implementation.
pub struct RoomServiceImpl {
    store: Store,
    signer: JoinTokenSigner,
    media: Arc<dyn MediaRooms>,
    config: RoomServiceConfig,
    /// Serializes the count-then-insert of admissions so that two concurrent
    /// AdmitParticipant calls cannot both take the last place in a room.
    // NOTE: this works within one server process only. Several control-plane
    // nodes on one database would need the count inside the store's insert.
    admissions: tokio::sync::Mutex<()>,
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
        Self {
            store,
            signer,
            media,
            config,
            admissions: tokio::sync::Mutex::new(()),
        }
    }

    async fn create_room(
        &self,
        request: pb::CreateRoomRequest,
    ) -> Result<pb::CreateRoomResponse, ControlError> {
        validate::create_room(&request, self.config.max_participants_limit)?;

        let max_participants = match request.max_participants {
            0 => self.config.default_max_participants,
            requested => requested,
        };
        let now_ms = unix_now_ms();
        let (row, created) = self
            .store
            .create_session(NewSession {
                room_id: new_id("rm_"),
                incident_id: request.incident_id,
                request_id: request.request_id,
                call_type: request.call_type,
                max_participants: i64::from(max_participants),
                metadata: request.metadata,
                created_at_ms: now_ms,
            })
            .await?;

        if created {
            self.media.open_room(&row.room_id, max_participants);
            let detail = json!({
                "incident_id": row.incident_id,
                "call_type": row.call_type,
                "max_participants": max_participants,
            });
            self.record_event(&row.room_id, "room_created", None, detail, now_ms)
                .await;
            tracing::info!(room_id = %row.room_id, incident_id = %row.incident_id, max_participants, "room created");
        }

        Ok(pb::CreateRoomResponse {
            room: Some(convert::room(&row)),
            created,
        })
    }

    async fn admit_participant(
        &self,
        request: pb::AdmitParticipantRequest,
    ) -> Result<pb::AdmitParticipantResponse, ControlError> {
        let max_token_ttl_s =
            u32::try_from(self.config.max_token_ttl.as_secs()).unwrap_or(u32::MAX);
        let role = validate::admit_participant(&request, max_token_ttl_s)?;

        let participant_id = new_id("pt_");
        let now_ms = unix_now_ms();
        {
            let _admission = self.admissions.lock().await;
            let room = self.open_room_row(&request.room_id).await?;
            self.check_room_has_place(&room).await?;

            self.store
                .admit_participant(NewParticipant {
                    participant_id: participant_id.clone(),
                    room_id: room.room_id.clone(),
                    identity: request.identity.clone(),
                    display_name: request.display_name.clone(),
                    role: role.as_str().to_owned(),
                    admitted_at_ms: now_ms,
                })
                .await
                .map_err(|error| room_error(error, &request.room_id))?;
        }

        let detail = json!({ "identity": request.identity, "role": role.as_str() });
        self.record_event(
            &request.room_id,
            "participant_admitted",
            Some(&participant_id),
            detail,
            now_ms,
        )
        .await;

        let ttl_s = match request.token_ttl_seconds {
            0 => self.config.default_token_ttl.as_secs(),
            requested => u64::from(requested),
        };
        let issued_at_s = u64::try_from(now_ms / 1000).unwrap_or(0);
        let claims = JoinClaims {
            room_id: request.room_id.clone(),
            participant_id: participant_id.clone(),
            identity: request.identity,
            role,
            iat: issued_at_s,
            exp: issued_at_s + ttl_s,
        };
        let expires_at_unix_ms = i64::try_from(claims.exp.saturating_mul(1000)).unwrap_or(i64::MAX);
        let join_token = self.signer.mint(claims)?;

        let base = &self.config.public_base_url;
        let whip_url = if role.can_publish() {
            format!("{base}/whip/{}", request.room_id)
        } else {
            String::new()
        };
        tracing::info!(room_id = %request.room_id, %participant_id, role = role.as_str(), "participant admitted");

        Ok(pb::AdmitParticipantResponse {
            participant_id,
            join_token,
            whip_url,
            whep_url: format!("{base}/whep/{}", request.room_id),
            expires_at_unix_ms,
        })
    }

    async fn close_room(&self, request: pb::CloseRoomRequest) -> Result<pb::Room, ControlError> {
        let disposition = validate::close_room(&request)?;

        let now_ms = unix_now_ms();
        let notes = Some(request.notes.as_str()).filter(|notes| !notes.is_empty());
        let row = self
            .store
            .close_session(
                &request.room_id,
                CLOSED_BY_API_REASON,
                Some(disposition),
                notes,
                now_ms,
            )
            .await
            .map_err(|error| room_error(error, &request.room_id))?;

        self.media.close_room(&row.room_id, CLOSED_BY_API_REASON);
        let detail = json!({ "disposition": disposition, "reason": CLOSED_BY_API_REASON });
        self.record_event(&row.room_id, "room_closed", None, detail, now_ms)
            .await;
        tracing::info!(room_id = %row.room_id, disposition, "room closed");

        Ok(convert::room(&row))
    }

    async fn get_room(&self, request: pb::GetRoomRequest) -> Result<pb::Room, ControlError> {
        validate::room_id(&request.room_id)?;
        let row = self.room_row(&request.room_id).await?;
        Ok(convert::room(&row))
    }

    async fn get_session(
        &self,
        request: pb::GetSessionRequest,
    ) -> Result<pb::Session, ControlError> {
        validate::room_id(&request.room_id)?;
        let record = self
            .store
            .session(&request.room_id)
            .await?
            .ok_or_else(|| ControlError::RoomNotFound(request.room_id.clone()))?;
        Ok(convert::session(&record))
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

    /// Fails with [`ControlError::RoomFull`] when the participants admitted to
    /// `room` and not yet left reach its maximum. A participant who left frees
    /// the place.
    async fn check_room_has_place(&self, room: &SessionRow) -> Result<(), ControlError> {
        let record = self
            .store
            .session(&room.room_id)
            .await?
            .ok_or_else(|| ControlError::RoomNotFound(room.room_id.clone()))?;
        let present = record
            .participants
            .iter()
            .filter(|participant| participant.left_at_ms.is_none())
            .count();

        let max_participants = u32::try_from(room.max_participants).unwrap_or(0);
        if present >= max_participants as usize {
            return Err(ControlError::RoomFull {
                room_id: room.room_id.clone(),
                max_participants,
            });
        }
        Ok(())
    }

    /// Appends an event to the room's log. A failure is logged and not
    /// returned, because the change it describes is already stored.
    async fn record_event(
        &self,
        room_id: &str,
        kind: &str,
        participant_id: Option<&str>,
        detail: serde_json::Value,
        at_ms: i64,
    ) {
        let event = NewEvent {
            room_id: room_id.to_owned(),
            kind: kind.to_owned(),
            participant_id: participant_id.map(str::to_owned),
            track_id: None,
            detail: detail.to_string(),
            at_ms,
        };
        if let Err(error) = self.store.append_event(event).await {
            tracing::error!(room_id, kind, %error, "event could not be appended to the session log");
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

fn caller(request: &Request<impl Sized>) -> String {
    request
        .extensions()
        .get::<CallerKeyId>()
        .map(|CallerKeyId(key_id)| key_id.clone())
        .unwrap_or_default()
}

#[tonic::async_trait]
impl RoomService for RoomServiceImpl {
    async fn create_room(
        &self,
        request: Request<pb::CreateRoomRequest>,
    ) -> Result<Response<pb::CreateRoomResponse>, Status> {
        tracing::debug!(caller = %caller(&request), "CreateRoom");
        Ok(Response::new(
            RoomServiceImpl::create_room(self, request.into_inner()).await?,
        ))
    }

    async fn get_room(
        &self,
        request: Request<pb::GetRoomRequest>,
    ) -> Result<Response<pb::Room>, Status> {
        tracing::debug!(caller = %caller(&request), "GetRoom");
        Ok(Response::new(
            RoomServiceImpl::get_room(self, request.into_inner()).await?,
        ))
    }

    async fn admit_participant(
        &self,
        request: Request<pb::AdmitParticipantRequest>,
    ) -> Result<Response<pb::AdmitParticipantResponse>, Status> {
        tracing::debug!(caller = %caller(&request), "AdmitParticipant");
        Ok(Response::new(
            RoomServiceImpl::admit_participant(self, request.into_inner()).await?,
        ))
    }

    async fn close_room(
        &self,
        request: Request<pb::CloseRoomRequest>,
    ) -> Result<Response<pb::Room>, Status> {
        tracing::debug!(caller = %caller(&request), "CloseRoom");
        Ok(Response::new(
            RoomServiceImpl::close_room(self, request.into_inner()).await?,
        ))
    }

    async fn get_session(
        &self,
        request: Request<pb::GetSessionRequest>,
    ) -> Result<Response<pb::Session>, Status> {
        tracing::debug!(caller = %caller(&request), "GetSession");
        Ok(Response::new(
            RoomServiceImpl::get_session(self, request.into_inner()).await?,
        ))
    }
}
