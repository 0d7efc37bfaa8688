//! Snapshots: an officer saves a still frame of the resident's video to the
//! session record. The image is written under the snapshot directory and
//! recorded with its SHA-256, so the stored file can be checked later.
//!
//! `POST /snapshots` with `Authorization: Bearer <join token>` (officer or
//! dispatcher) and an `image/jpeg` or `image/png` body returns `201 Created`
//! with `{"snapshot_id", "sha256", "size_bytes"}`.

use std::path::PathBuf;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use tracing::{info, warn};
use vpr_control::Role;
use vpr_store::{NewEvent, SnapshotRow};

use crate::error::SignalError;
use crate::state::SignalState;

/// Storage location and size limit of snapshots.
#[derive(Debug, Clone)]
pub struct SnapshotConfig {
    /// Directory for the image files, one folder per room.
    pub dir: PathBuf,
    /// Largest accepted image, in bytes; larger gets 413.
    pub max_bytes: usize,
}

/// `POST /snapshots`: stores one still frame for the token's room.
pub async fn post_snapshot(State(state): State<SignalState>, headers: HeaderMap, body: Bytes) -> Result<Response, SignalError> {
    let claims = crate::auth::authorize_any_room(&state.signer, &headers)?;
    crate::whip::check_admitted(&state, &claims.room_id, &claims.participant_id).await?;
    if !matches!(claims.role, Role::Officer | Role::Dispatcher) {
        return Err(SignalError::RoleNotAllowed { role: claims.role.as_str(), action: "save snapshots" });
    }

    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let (content_type, extension, magic): (&str, &str, &[u8]) = match content_type.split(';').next().unwrap_or("").trim() {
        "image/jpeg" => ("image/jpeg", "jpg", &[0xff, 0xd8, 0xff]),
        "image/png" => ("image/png", "png", &[0x89, b'P', b'N', b'G']),
        other => {
            return Err(SignalError::UnsupportedMediaType { found: other.to_owned(), expected: "image/jpeg or image/png" })
        }
    };
    if !body.starts_with(magic) {
        return Err(SignalError::InvalidImage(content_type));
    }

    let snapshot_id = format!("sn_{:016x}", rand::random::<u64>());
    let sha256 = hex(&Sha256::digest(&body));
    let folder = state.snapshots.dir.join(&claims.room_id);
    let path = folder.join(format!("{snapshot_id}.{extension}"));
    let written = async {
        tokio::fs::create_dir_all(&folder).await?;
        tokio::fs::write(&path, &body).await
    }
    .await;
    if let Err(err) = written {
        warn!(room_id = %claims.room_id, participant_id = %claims.participant_id, error = %err,
            path = %path.display(), "writing snapshot failed");
        return Err(SignalError::StoreUnavailable);
    }

    let taken_at_ms = vpr_sfu::events::unix_ms_now();
    let row = SnapshotRow {
        snapshot_id: snapshot_id.clone(),
        room_id: claims.room_id.clone(),
        participant_id: claims.participant_id.clone(),
        sha256: sha256.clone(),
        content_type: content_type.to_owned(),
        size_bytes: body.len() as i64,
        path: path.display().to_string(),
        taken_at_ms,
    };
    let event = NewEvent {
        room_id: claims.room_id.clone(),
        kind: "snapshot_saved".to_owned(),
        participant_id: Some(claims.participant_id.clone()),
        track_id: None,
        detail: serde_json::json!({ "snapshot_id": snapshot_id, "sha256": sha256 }).to_string(),
        at_ms: taken_at_ms,
    };
    let recorded = match state.store.record_snapshot(row).await {
        Ok(()) => state.store.append_event(event).await.map(|_| ()),
        Err(err) => Err(err),
    };
    if let Err(err) = recorded {
        warn!(room_id = %claims.room_id, participant_id = %claims.participant_id, error = %err, "recording snapshot failed");
        return Err(SignalError::StoreUnavailable);
    }
    info!(room_id = %claims.room_id, participant_id = %claims.participant_id, snapshot_id = %snapshot_id,
        size_bytes = body.len(), "snapshot saved");

    let reply = serde_json::json!({ "snapshot_id": snapshot_id, "sha256": sha256, "size_bytes": body.len() });
    Ok((StatusCode::CREATED, [(header::CONTENT_TYPE, "application/json")], reply.to_string()).into_response())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
