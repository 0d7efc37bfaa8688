//! `vpr-server`: the VPR media server. Runs the media plane on one UDP port,
//! WHIP/WHEP signalling over HTTP, and the gRPC control plane the police
//! dispatch system calls.

mod config;
mod recorder;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};
use vpr_control::{JoinTokenSigner, MediaRooms, RoomServiceConfig, RoomServiceImpl};
use vpr_sfu::MediaHandle;
use vpr_signal::{SignalConfig, SignalState};
use vpr_store::Store;

use crate::config::Config;

/// Command-line options.
#[derive(Parser, Debug)]
#[command(name = "vpr-server", version, about = "VPR media server for virtual police response calls")]
struct Cli {
    /// Path of the TOML configuration file.
    #[arg(long, default_value = "config/default.toml")]
    config: PathBuf,
}

/// The media plane as the control plane drives it.
struct MediaRoomsAdapter(MediaHandle);

impl MediaRooms for MediaRoomsAdapter {
    fn open_room(&self, room_id: &str, _max_participants: u32, empty_timeout: Option<Duration>) {
        self.0.open_room(room_id, empty_timeout);
    }

    fn close_room(&self, room_id: &str, reason: &str) {
        self.0.close_room(room_id, reason);
    }

    fn remove_participant(&self, room_id: &str, participant_id: &str, reason: &str) {
        self.0.remove_participant(room_id, participant_id, reason);
    }

    fn set_track_muted(&self, room_id: &str, track_id: &str, muted: bool) {
        self.0.set_track_muted(room_id, track_id, muted);
    }

    fn set_permissions(&self, room_id: &str, participant_id: &str, can_publish: bool, can_subscribe: bool) {
        self.0.set_permissions(room_id, participant_id, can_publish, can_subscribe);
    }
}

/// Log filter when RUST_LOG is unset. The DTLS library warns once per peer
/// connection that it has no server name, which says nothing to an operator.
const DEFAULT_LOG_FILTER: &str = "info,rtc_dtls::config=error";

fn now_ms() -> i64 {
    vpr_sfu::events::unix_ms_now()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Colour codes only on a terminal, so a log redirected to a file reads
    // as plain text.
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER)),
        )
        .init();

    let cli = Cli::parse();
    let config = Config::load(&cli.config)?;
    if config.uses_dev_secrets() {
        warn!("development secrets from the default config are in use; set VPR_JOIN_TOKEN_SECRET and VPR_API_KEYS before exposing this server");
    }

    let store = Store::open(&config.store.url)
        .await
        .with_context(|| "failed to open the session store (store.url)")?;
    let restarted = store.close_all_open("server restart", now_ms()).await?;
    if !restarted.is_empty() {
        warn!(rooms = restarted.len(), "closed sessions left open by a previous run");
    }
    record_room_closed(&store, &restarted, "server restart").await;

    let (event_sender, event_receiver) = mpsc::unbounded_channel();
    let (media, media_task) = MediaHandle::start(config.media.to_media_config(), event_sender)
        .await
        .with_context(|| format!("failed to bind media port {}", config.media.udp_listen))?;
    let recorder_task = tokio::spawn(recorder::run(store.clone(), event_receiver));

    let signer = JoinTokenSigner::new(config.auth.join_token_secret.as_bytes());
    let room_service = RoomServiceImpl::new(
        store.clone(),
        JoinTokenSigner::new(config.auth.join_token_secret.as_bytes()),
        Arc::new(MediaRoomsAdapter(media.clone())),
        RoomServiceConfig {
            public_base_url: config.http.public_url.trim_end_matches('/').to_owned(),
            default_token_ttl: Duration::from_secs(config.rooms.default_token_ttl_s),
            default_max_participants: config.rooms.default_max_participants,
            ..RoomServiceConfig::default()
        },
    );

    let control_draining = room_service.drain_flag();
    let mut signal_state = SignalState::new(media.clone(), signer, store.clone());
    signal_state.control_metrics = Some(room_service.metrics());
    signal_state.snapshots = vpr_signal::snapshot::SnapshotConfig {
        dir: config.snapshots.dir.clone(),
        max_bytes: config.snapshots.max_bytes,
    };
    let signal_config = SignalConfig {
        max_body_bytes: config.http.max_body_bytes,
        cors_allowed_origins: config.http.cors_allowed_origins.clone(),
    };
    let app = vpr_signal::router(signal_state.clone(), &signal_config);

    let (stop_sender, stop_receiver) = watch::channel(false);
    let wait_stop = |mut receiver: watch::Receiver<bool>| async move {
        let _ = receiver.wait_for(|stopped| *stopped).await;
    };

    let http_listener = TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("failed to bind HTTP listener {}", config.http.listen))?;
    let grpc_listener = TcpListener::bind(config.grpc.listen)
        .await
        .with_context(|| format!("failed to bind gRPC listener {}", config.grpc.listen))?;
    info!(http = %config.http.listen, grpc = %config.grpc.listen, media = %media.local_addr(),
        store = %config.store.url, "vpr-server listening");

    let http_task = tokio::spawn({
        let stop = wait_stop(stop_receiver.clone());
        async move { axum::serve(http_listener, app).with_graceful_shutdown(stop).await }
    });
    let grpc_task = tokio::spawn({
        let stop = wait_stop(stop_receiver.clone());
        let api_keys = config.auth.api_keys.clone();
        let options = vpr_control::ServeOptions { tls: config.grpc.tls_files() };
        async move { vpr_control::serve_with(grpc_listener, room_service, &api_keys, options, stop).await }
    });

    shutdown_signal().await;
    info!("shutdown requested; draining");
    signal_state.draining.store(true, Ordering::Relaxed);
    control_draining.store(true, Ordering::Relaxed);

    // Open calls get the drain time to end on their own.
    let drain_deadline = Instant::now() + Duration::from_secs(config.shutdown.drain_timeout_s);
    while Instant::now() < drain_deadline && media.metrics().peer_connections.load(Ordering::Relaxed) > 0 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    media.shutdown("server shutdown").await;
    let _ = media_task.await;
    // The worker dropped its event sender, so the recorder ends once every
    // event is written.
    let _ = recorder_task.await;
    let closed = store.close_all_open("server shutdown", now_ms()).await?;
    record_room_closed(&store, &closed, "server shutdown").await;
    info!(rooms = closed.len(), "open sessions recorded as ended");

    let _ = stop_sender.send(true);
    let _ = http_task.await;
    let _ = grpc_task.await;
    store.close().await;
    info!("vpr-server stopped");
    Ok(())
}

/// Appends a room_closed event for each room the server closed itself.
async fn record_room_closed(store: &Store, room_ids: &[String], reason: &str) {
    for room_id in room_ids {
        let event = vpr_store::NewEvent {
            room_id: room_id.clone(),
            kind: "room_closed".to_owned(),
            participant_id: None,
            track_id: None,
            detail: serde_json::json!({ "reason": reason }).to_string(),
            at_ms: now_ms(),
        };
        if let Err(err) = store.append_event(event).await {
            warn!(room_id = %room_id, error = %err, "failed to record room_closed event");
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                warn!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}
