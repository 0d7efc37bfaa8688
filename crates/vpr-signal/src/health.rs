//! Liveness, readiness and Prometheus metrics.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;

use crate::state::SignalState;

/// `GET /healthz`: the process is up.
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// `GET /readyz`: 200 while the server takes new sessions, 503 while draining.
pub async fn readyz(State(state): State<SignalState>) -> (StatusCode, &'static str) {
    if state.draining.load(Ordering::Relaxed) {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    } else {
        (StatusCode::OK, "ready\n")
    }
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(state): State<SignalState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        {
            let mut text = state.media.metrics().render();
            if let Some(control) = &state.control_metrics {
                text.push_str(&control.render());
            }
            text
        },
    )
}
