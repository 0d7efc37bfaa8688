//! WHIP (RFC 9725) and WHEP endpoints.
//!
//! `POST /whip/{room_id}` publishes and `POST /whep/{room_id}` receives the
//! room's media. Both take a bearer join token and an SDP offer and return
//! `201 Created` with the SDP answer and the session URL in `Location`.
//! `DELETE` on that URL ends the session; `PATCH` with a trickle-ICE
//! fragment is accepted. The server runs ICE-lite with its one host
//! candidate in the answer, so trickled client candidates need no action:
//! the server learns the client's address from its connectivity checks.

use std::sync::atomic::Ordering;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tracing::{info, warn};
use vpr_control::Role;
use vpr_sfu::{Direction, MediaError, SessionRequest};

use crate::auth::authorize;
use crate::error::SignalError;
use crate::state::{SessionOwner, SignalState};

const SDP_MEDIA_TYPE: &str = "application/sdp";
const TRICKLE_MEDIA_TYPE: &str = "application/trickle-ice-sdpfrag";

/// `POST /whip/{room_id}`: publish into the room.
pub async fn post_whip(
    State(state): State<SignalState>,
    Path(room_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, SignalError> {
    post_session(state, Direction::Publish, room_id, headers, body).await
}

/// `POST /whep/{room_id}`: receive the room's media.
pub async fn post_whep(
    State(state): State<SignalState>,
    Path(room_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, SignalError> {
    post_session(state, Direction::Subscribe, room_id, headers, body).await
}

async fn post_session(
    state: SignalState,
    direction: Direction,
    room_id: String,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, SignalError> {
    let claims = authorize(&state.signer, &headers, &room_id)?;
    check_admitted(&state, &room_id, &claims.participant_id).await?;
    if direction == Direction::Publish && !claims.can_publish() {
        return Err(SignalError::RoleNotAllowed { role: claims.role.as_str(), action: "publish" });
    }
    if direction == Direction::Subscribe && !claims.can_subscribe() {
        return Err(SignalError::RoleNotAllowed { role: claims.role.as_str(), action: "subscribe" });
    }
    require_content_type(&headers, SDP_MEDIA_TYPE)?;
    if state.draining.load(Ordering::Relaxed) {
        return Err(SignalError::Draining);
    }
    let offer_sdp = String::from_utf8(body.to_vec()).map_err(|_| {
        MediaError::Offer(vpr_sfu::offer::OfferError::Malformed("body is not UTF-8 text".into()))
    })?;

    let request = SessionRequest {
        room_id: room_id.clone(),
        participant_id: claims.participant_id.clone(),
        is_resident: claims.role == Role::Resident,
        direction,
        offer_sdp,
        signals: None,
    };
    let answer = match state.media.start_session(request).await {
        Ok(answer) => answer,
        Err(err) => {
            warn!(room_id = %room_id, participant_id = %claims.participant_id, error = %err,
                "session rejected");
            return Err(err.into());
        }
    };
    state.sessions.insert(
        answer.session_id.clone(),
        SessionOwner { room_id: room_id.clone(), participant_id: claims.participant_id.clone() },
    );
    info!(room_id = %room_id, participant_id = %claims.participant_id, session_id = %answer.session_id,
        direction = ?direction, "session created");

    let location = format!("/{}/{}/{}", prefix(direction), room_id, answer.session_id);
    let mut response = (StatusCode::CREATED, answer.answer_sdp).into_response();
    let response_headers = response.headers_mut();
    response_headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(SDP_MEDIA_TYPE));
    if let Ok(value) = HeaderValue::from_str(&location) {
        response_headers.insert(header::LOCATION, value);
    }
    Ok(response)
}

/// `DELETE /whip|whep/{room_id}/{session_id}`: end the session.
pub async fn delete_session(
    State(state): State<SignalState>,
    Path((room_id, session_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, SignalError> {
    let claims = authorize(&state.signer, &headers, &room_id)?;
    check_owner(&state, &room_id, &session_id, &claims.participant_id)?;
    state.sessions.remove(&session_id);
    state.media.end_session(&session_id, "client ended session").await?;
    Ok(StatusCode::OK)
}

/// `PATCH /whip|whep/{room_id}/{session_id}`: trickle ICE from the client.
pub async fn patch_session(
    State(state): State<SignalState>,
    Path((room_id, session_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, SignalError> {
    let claims = authorize(&state.signer, &headers, &room_id)?;
    require_content_type(&headers, TRICKLE_MEDIA_TYPE)?;
    check_owner(&state, &room_id, &session_id, &claims.participant_id)?;
    Ok(StatusCode::NO_CONTENT)
}

/// `OPTIONS` without a CORS preflight: what the endpoint accepts.
pub async fn options() -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    response
        .headers_mut()
        .insert("accept-post", HeaderValue::from_static(SDP_MEDIA_TYPE));
    response
}

/// Rejects a token whose participant the control plane removed; a valid
/// signature alone does not outlive a RemoveParticipant.
pub(crate) async fn check_admitted(state: &SignalState, room_id: &str, participant_id: &str) -> Result<(), SignalError> {
    let row = state.store.participant_row(participant_id).await.map_err(|err| {
        warn!(room_id, participant_id, error = %err, "session record lookup failed");
        SignalError::StoreUnavailable
    })?;
    match row {
        Some(row) if row.room_id == room_id && row.removed_at_ms.is_none() => Ok(()),
        Some(row) if row.room_id == room_id => Err(SignalError::ParticipantRemoved(participant_id.to_owned())),
        _ => Err(SignalError::ParticipantUnknown(participant_id.to_owned())),
    }
}

fn prefix(direction: Direction) -> &'static str {
    match direction {
        Direction::Publish => "whip",
        Direction::Subscribe => "whep",
        Direction::Participate => "ws",
    }
}

fn check_owner(state: &SignalState, room_id: &str, session_id: &str, participant_id: &str) -> Result<(), SignalError> {
    let owner = state
        .sessions
        .get(session_id)
        .ok_or_else(|| MediaError::SessionNotFound(session_id.to_owned()))?;
    if owner.room_id != room_id {
        return Err(MediaError::SessionNotFound(session_id.to_owned()).into());
    }
    if owner.participant_id != participant_id {
        return Err(SignalError::NotSessionOwner);
    }
    Ok(())
}

fn require_content_type(headers: &HeaderMap, expected: &'static str) -> Result<(), SignalError> {
    let found = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    let essence = found.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case(expected) {
        Ok(())
    } else {
        Err(SignalError::UnsupportedMediaType { found: found.to_owned(), expected })
    }
}
