//! Control plane of VPR: the gRPC RoomService that the police CAD system
//! calls to create rooms, admit participants with join tokens and close rooms
//! with a disposition, behind API key authentication.
//!
//! ```no_run
//! # async fn run(service: vpr_control::RoomServiceImpl, keys: Vec<vpr_control::ApiKey>) {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:50051").await.unwrap();
//! vpr_control::serve(listener, service, &keys, std::future::pending()).await.unwrap();
//! # }
//! ```

pub mod auth;
pub mod convert;
pub mod error;
pub mod media;
pub mod service;
pub mod token;
pub mod validate;

/// Messages and service stubs generated from `proto/vpr/control/v1/control.proto`.
pub mod pb {
    tonic::include_proto!("vpr.control.v1");
}

use std::future::Future;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::service::interceptor::InterceptedService;

pub use auth::{mint_api_jwt, mint_api_jwt_at, ApiKey, ApiKeyAuth, AuthError, CallerKeyId};
pub use error::ControlError;
pub use media::MediaRooms;
pub use service::{RoomServiceConfig, RoomServiceImpl};
pub use token::{JoinClaims, JoinTokenSigner, Role, TokenError};

/// The RoomService wrapped in API key authentication, for adding to a tonic
/// server or router.
pub type AuthenticatedRoomService =
    InterceptedService<pb::room_service_server::RoomServiceServer<RoomServiceImpl>, ApiKeyAuth>;

/// Wraps `service` in authentication against `api_keys`.
pub fn authenticated_service(
    service: RoomServiceImpl,
    api_keys: &[ApiKey],
) -> AuthenticatedRoomService {
    if api_keys.is_empty() {
        tracing::warn!("no API keys configured, every control-plane call will be rejected");
    }
    pb::room_service_server::RoomServiceServer::with_interceptor(service, ApiKeyAuth::new(api_keys))
}

/// Serves the authenticated RoomService on `listener` until `shutdown`
/// completes, then finishes in-flight calls and returns.
pub async fn serve(
    listener: TcpListener,
    service: RoomServiceImpl,
    api_keys: &[ApiKey],
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let local_addr = listener.local_addr().ok();
    tracing::info!(?local_addr, "control plane gRPC server starting");

    let result = tonic::transport::Server::builder()
        .add_service(authenticated_service(service, api_keys))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await;

    tracing::info!(?local_addr, "control plane gRPC server stopped");
    result
}
