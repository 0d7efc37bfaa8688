//! Control plane of VPR: the gRPC RoomService that the police CAD system and
//! operators call to create rooms, admit and manage participants with join
//! tokens, close rooms with a disposition, read session records, follow the
//! event log and read the audit trail, behind API key authentication with
//! scopes. The same listener serves gRPC health and reflection.
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
pub mod metrics;
pub mod paging;
pub mod room_settings;
pub mod scope;
pub mod server;
pub mod service;
pub mod token;
pub mod validate;

/// Messages and service stubs generated from `proto/vpr/control/v1/control.proto`.
pub mod pb {
    tonic::include_proto!("vpr.control.v1");

    /// Encoded `FileDescriptorSet` of `vpr.control.v1`, served by reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/vpr_control_v1_descriptor.bin"));
}

pub use auth::{
    default_scopes, mint_api_jwt, mint_api_jwt_at, ApiKey, ApiKeyAuth, AuthError, CallerKeyId,
};
pub use error::ControlError;
pub use media::MediaRooms;
pub use metrics::ControlMetrics;
pub use scope::{Scope, ScopeSet};
pub use server::{
    authenticated_service, serve, serve_with, AuthenticatedRoomService, ServeError, ServeOptions,
    TlsFiles,
};
pub use service::{RoomServiceConfig, RoomServiceImpl, StreamStopper};
pub use token::{JoinClaims, JoinTokenSigner, Role, TokenError};
