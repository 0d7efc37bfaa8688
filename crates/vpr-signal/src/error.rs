//! Errors of the signalling endpoints and their HTTP statuses.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use vpr_control::TokenError;
use vpr_sfu::MediaError;

/// Failure of a signalling request. Each variant maps to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    /// No usable join token: missing, malformed, badly signed or expired.
    #[error("join token rejected: {0}")]
    Unauthorized(#[from] TokenError),
    /// The token is valid but names another room.
    #[error("join token is for another room")]
    WrongRoom,
    /// The token's role may not do this, such as an observer publishing.
    #[error("role {role} may not {action}")]
    RoleNotAllowed {
        /// Role named by the token.
        role: &'static str,
        /// The attempted action.
        action: &'static str,
    },
    /// The control plane removed the participant; its token is void.
    #[error("participant {0} was removed from the room")]
    ParticipantRemoved(String),
    /// The token names a participant the session record does not have.
    #[error("participant {0} is not admitted to this room")]
    ParticipantUnknown(String),
    /// The session record could not be read.
    #[error("session record unavailable")]
    StoreUnavailable,
    /// The session exists but belongs to another participant.
    #[error("session belongs to another participant")]
    NotSessionOwner,
    /// The request body is not the expected media type.
    #[error("unsupported content type {found:?}; expected {expected}")]
    UnsupportedMediaType {
        /// The Content-Type sent.
        found: String,
        /// The one accepted.
        expected: &'static str,
    },
    /// The body does not start like an image of its declared type.
    #[error("body is not a valid {0} image")]
    InvalidImage(&'static str),
    /// The server is draining and takes no new sessions.
    #[error("server is shutting down; no new sessions")]
    Draining,
    /// Failure in the media plane.
    #[error(transparent)]
    Media(#[from] MediaError),
}

impl SignalError {
    fn status(&self) -> StatusCode {
        match self {
            SignalError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            SignalError::WrongRoom
            | SignalError::RoleNotAllowed { .. }
            | SignalError::NotSessionOwner
            | SignalError::ParticipantRemoved(_)
            | SignalError::ParticipantUnknown(_) => StatusCode::FORBIDDEN,
            SignalError::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            SignalError::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            SignalError::InvalidImage(_) => StatusCode::BAD_REQUEST,
            SignalError::Draining => StatusCode::SERVICE_UNAVAILABLE,
            SignalError::Media(err) => match err {
                MediaError::Offer(_) | MediaError::Negotiation(_) => StatusCode::BAD_REQUEST,
                MediaError::RoomNotOpen(_) | MediaError::SessionNotFound(_) => StatusCode::NOT_FOUND,
                MediaError::WorkerStopped => StatusCode::SERVICE_UNAVAILABLE,
            },
        }
    }
}

impl IntoResponse for SignalError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = (status, format!("{self}\n")).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
