//! Errors of the media plane.

use crate::offer::OfferError;

/// Reason the media plane rejected a request.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// The SDP offer failed a check.
    #[error(transparent)]
    Offer(#[from] OfferError),
    /// The room is not open on this server.
    #[error("room {0} is not open")]
    RoomNotOpen(String),
    /// The session id names no live session.
    #[error("session {0} not found")]
    SessionNotFound(String),
    /// The peer connection rejected the offer or failed to answer.
    #[error("negotiation failed: {0}")]
    Negotiation(String),
    /// The media worker has stopped (server shutting down).
    #[error("media worker is not running")]
    WorkerStopped,
}

impl From<rtc::shared::error::Error> for MediaError {
    fn from(err: rtc::shared::error::Error) -> Self {
        MediaError::Negotiation(err.to_string())
    }
}
