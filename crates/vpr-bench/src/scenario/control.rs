//! Control-plane client of the harness: creates rooms, admits participants
//! and closes rooms over gRPC, as the CAD system does, with a fresh API JWT
//! on every call.

use std::time::Duration;

use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Request, Status};
use vpr_control::pb::room_service_client::RoomServiceClient;
use vpr_control::pb::{
    AdmitParticipantRequest, AdmitParticipantResponse, CloseRoomRequest, Consent,
    CreateRoomRequest, Disposition, Role, Room,
};

/// Lifetime of each API JWT; one is minted per call.
const API_JWT_TTL: Duration = Duration::from_secs(300);

/// Time allowed to open the gRPC connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Failure of a control-plane call.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The gRPC endpoint URL is not valid.
    #[error("invalid gRPC endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// Parser message.
        reason: String,
    },

    /// The gRPC connection could not be opened.
    #[error("connecting to gRPC at {endpoint} failed: {source}")]
    Connect {
        /// The endpoint.
        endpoint: String,
        /// Transport error.
        source: tonic::transport::Error,
    },

    /// The server returned an error status.
    #[error("{call} failed: {status}")]
    Call {
        /// RPC name, e.g. "CreateRoom".
        call: &'static str,
        /// Status returned by the server.
        status: Box<Status>,
    },

    /// CreateRoom returned no room.
    #[error("CreateRoom returned no room")]
    NoRoom,
}

/// Interceptor adding `authorization: Bearer <API JWT>` to every call.
#[derive(Clone)]
pub struct ApiKeyAuth {
    key_id: String,
    secret: String,
}

impl tonic::service::Interceptor for ApiKeyAuth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let jwt = vpr_control::mint_api_jwt(&self.key_id, &self.secret, API_JWT_TTL);
        let value = MetadataValue::try_from(format!("Bearer {jwt}"))
            .map_err(|error| Status::internal(format!("invalid authorization value: {error}")))?;
        request.metadata_mut().insert("authorization", value);
        Ok(request)
    }
}

/// RoomService client authenticated with one API key. Cloning shares the
/// connection.
#[derive(Clone)]
pub struct ControlClient {
    inner: RoomServiceClient<InterceptedService<Channel, ApiKeyAuth>>,
}

impl ControlClient {
    /// Connects to the gRPC endpoint, e.g. `http://127.0.0.1:50051`.
    pub async fn connect(endpoint: &str, key_id: &str, secret: &str) -> Result<Self, ControlError> {
        let channel = Channel::from_shared(endpoint.to_owned())
            .map_err(|error| ControlError::InvalidEndpoint {
                endpoint: endpoint.to_owned(),
                reason: error.to_string(),
            })?
            .connect_timeout(CONNECT_TIMEOUT)
            .connect()
            .await
            .map_err(|source| ControlError::Connect {
                endpoint: endpoint.to_owned(),
                source,
            })?;
        let auth = ApiKeyAuth {
            key_id: key_id.to_owned(),
            secret: secret.to_owned(),
        };
        Ok(Self {
            inner: RoomServiceClient::with_interceptor(channel, auth),
        })
    }

    /// Creates a room for `incident_id` with room for `max_participants`.
    pub async fn create_room(
        &mut self,
        incident_id: &str,
        max_participants: u32,
    ) -> Result<Room, ControlError> {
        let request = CreateRoomRequest {
            incident_id: incident_id.to_owned(),
            request_id: format!("{incident_id}-create"),
            call_type: "vpr-bench load test".to_owned(),
            max_participants,
            ..Default::default()
        };
        let response = self
            .inner
            .create_room(request)
            .await
            .map_err(|status| call_error("CreateRoom", status))?
            .into_inner();
        response.room.ok_or(ControlError::NoRoom)
    }

    /// Admits `identity` into `room_id` with `role`: a resident with consent
    /// to live video and audio, an officer with a badge id derived from the
    /// identity, an observer as is.
    pub async fn admit(
        &mut self,
        room_id: &str,
        identity: &str,
        role: Role,
    ) -> Result<AdmitParticipantResponse, ControlError> {
        let request = AdmitParticipantRequest {
            room_id: room_id.to_owned(),
            identity: identity.to_owned(),
            display_name: identity.to_owned(),
            role: role as i32,
            badge_id: if role == Role::Officer {
                format!("B-{identity}")
            } else {
                String::new()
            },
            consent: (role == Role::Resident).then(|| Consent {
                live_video: true,
                audio: true,
                recording: false,
                channel: "vpr-bench".to_owned(),
                consented_at_unix_ms: 0,
            }),
            ..Default::default()
        };
        let response = self
            .inner
            .admit_participant(request)
            .await
            .map_err(|status| call_error("AdmitParticipant", status))?;
        Ok(response.into_inner())
    }

    /// Closes `room_id`, which disconnects every participant.
    pub async fn close_room(&mut self, room_id: &str) -> Result<(), ControlError> {
        let request = CloseRoomRequest {
            room_id: room_id.to_owned(),
            disposition: Disposition::ResolvedVirtually as i32,
            notes: "closed by vpr-bench at the end of a load run".to_owned(),
        };
        self.inner
            .close_room(request)
            .await
            .map_err(|status| call_error("CloseRoom", status))?;
        Ok(())
    }
}

fn call_error(call: &'static str, status: Status) -> ControlError {
    ControlError::Call {
        call,
        status: Box::new(status),
    }
}
