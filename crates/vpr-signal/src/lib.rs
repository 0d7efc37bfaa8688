//! VPR client signalling: WHIP and WHEP endpoints, health checks and
//! metrics, served over HTTP with axum.

pub mod auth;
pub mod error;
pub mod health;
pub mod pages;
pub mod state;
pub mod snapshot;
pub mod whip;
pub mod ws;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderValue, Method};
use axum::routing::{get, post};
use axum::Router;
use tower_http::cors::{AllowOrigin, CorsLayer};

pub use error::SignalError;
pub use state::SignalState;

/// HTTP settings of the signalling endpoints.
#[derive(Debug, Clone)]
pub struct SignalConfig {
    /// Largest request body accepted, in bytes; larger gets 413.
    pub max_body_bytes: usize,
    /// Origins allowed by CORS; `*` allows any.
    pub cors_allowed_origins: Vec<String>,
}

/// Builds the router for every signalling endpoint.
pub fn router(state: SignalState, config: &SignalConfig) -> Router {
    let snapshot_limit = state.snapshots.max_bytes;
    let whip_routes = Router::new()
        .route("/{room_id}", post(whip::post_whip).options(whip::options))
        .route("/{room_id}/{session_id}", session_resource());
    let whep_routes = Router::new()
        .route("/{room_id}", post(whip::post_whep).options(whip::options))
        .route("/{room_id}/{session_id}", session_resource());

    Router::new()
        .nest("/whip", whip_routes)
        .nest("/whep", whep_routes)
        .route("/ws", get(ws::upgrade))
        .route(
            "/snapshots",
            post(snapshot::post_snapshot)
                .options(whip::options)
                .layer(DefaultBodyLimit::max(snapshot_limit)),
        )
        .route("/join", get(pages::join))
        .route("/assets/{file}", get(pages::asset))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .layer(cors_layer(&config.cors_allowed_origins))
        .with_state(state)
}

/// DELETE, PATCH and OPTIONS on a WHIP or WHEP session URL.
fn session_resource() -> axum::routing::MethodRouter<SignalState> {
    axum::routing::delete(whip::delete_session)
        .patch(whip::patch_session)
        .options(whip::options)
}

fn cors_layer(origins: &[String]) -> CorsLayer {
    let allow_origin = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([Method::POST, Method::DELETE, Method::PATCH, Method::OPTIONS])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, header::IF_MATCH])
        .expose_headers([header::LOCATION, header::ETAG, header::LINK, header::HeaderName::from_static("accept-post")])
}
