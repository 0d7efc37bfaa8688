//! The gRPC listener of the control plane: the authenticated RoomService,
//! grpc.health.v1 and server reflection on one listener, optionally over TLS.

use std::future::Future;
use std::path::{Path, PathBuf};

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Identity, Server, ServerTlsConfig};

use crate::auth::{ApiKey, ApiKeyAuth};
use crate::pb;
use crate::pb::room_service_server::RoomServiceServer;
use crate::service::RoomServiceImpl;

/// The RoomService wrapped in API key authentication, for adding to a tonic
/// server or router.
pub type AuthenticatedRoomService =
    tonic::service::interceptor::InterceptedService<RoomServiceServer<RoomServiceImpl>, ApiKeyAuth>;

/// PEM files of the server's TLS certificate chain and private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain, leaf first, in PEM.
    pub cert_path: PathBuf,
    /// Private key of the leaf certificate, in PEM (PKCS#8, PKCS#1 or SEC1).
    pub key_path: PathBuf,
}

/// Options of [`serve_with`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServeOptions {
    /// Serve over TLS with these files; plaintext HTTP/2 when `None`.
    pub tls: Option<TlsFiles>,
}

/// Reasons the control plane server fails.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A TLS file could not be read.
    #[error("reading TLS file {path} failed: {source}")]
    ReadTlsFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TLS files do not form a usable certificate and key.
    #[error("TLS certificate or key rejected: {0}")]
    Tls(tonic::transport::Error),
    /// The reflection service could not load the file descriptor set.
    #[error("server reflection could not be built: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The server failed while serving.
    #[error(transparent)]
    Transport(tonic::transport::Error),
}

/// Wraps `service` in authentication against `api_keys`.
pub fn authenticated_service(
    service: RoomServiceImpl,
    api_keys: &[ApiKey],
) -> AuthenticatedRoomService {
    if api_keys.is_empty() {
        tracing::warn!("no API keys configured, every control-plane call will be rejected");
    }
    RoomServiceServer::with_interceptor(service, ApiKeyAuth::new(api_keys))
}

/// Serves the authenticated RoomService, health and reflection on `listener`
/// in plaintext until `shutdown` completes, then ends the WatchEvents
/// streams, finishes in-flight calls and returns.
pub async fn serve(
    listener: TcpListener,
    service: RoomServiceImpl,
    api_keys: &[ApiKey],
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    serve_with(listener, service, api_keys, ServeOptions::default(), shutdown).await
}

/// Serves as [`serve`] does, with `options` (TLS).
pub async fn serve_with(
    listener: TcpListener,
    service: RoomServiceImpl,
    api_keys: &[ApiKey],
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let local_addr = listener.local_addr().ok();
    let tls = options.tls.is_some();

    let mut builder = Server::builder();
    if let Some(files) = &options.tls {
        let identity = Identity::from_pem(read(&files.cert_path)?, read(&files.key_path)?);
        builder = builder
            .tls_config(ServerTlsConfig::new().identity(identity))
            .map_err(ServeError::Tls)?;
    }

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<RoomServiceServer<RoomServiceImpl>>()
        .await;
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1()?;
    // Older clients (grpcurl before 1.9, for example) ask v1alpha only.
    let reflection_v1alpha = reflection().build_v1alpha()?;

    let streams = service.stream_stopper();
    let shutdown = async move {
        shutdown.await;
        streams.stop();
    };

    tracing::info!(?local_addr, tls, "control plane gRPC server starting");
    let result = builder
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(authenticated_service(service, api_keys))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await
        .map_err(ServeError::Transport);
    tracing::info!(?local_addr, "control plane gRPC server stopped");
    result
}

fn read(path: &Path) -> Result<Vec<u8>, ServeError> {
    std::fs::read(path).map_err(|source| ServeError::ReadTlsFile {
        path: path.to_owned(),
        source,
    })
}
