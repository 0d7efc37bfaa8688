//! Errors of the WHIP/WHEP test clients.

use std::time::Duration;

/// Failure of a WHIP/WHEP client operation.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The WebRTC stack rejected an operation (offer, description, track).
    #[error("webrtc: {0}")]
    WebRtc(#[from] webrtc::error::Error),

    /// The HTTP request to the WHIP/WHEP endpoint could not be sent or read.
    #[error("http request to {url} failed: {source}")]
    Http {
        /// URL of the request.
        url: String,
        /// Underlying transport error.
        source: reqwest::Error,
    },

    /// The endpoint returned a status other than the one the protocol requires.
    #[error("{method} {url} returned {status}, expected {expected}: {body}")]
    UnexpectedStatus {
        /// HTTP method of the request.
        method: &'static str,
        /// URL of the request.
        url: String,
        /// Status the endpoint returned.
        status: reqwest::StatusCode,
        /// Status the protocol requires.
        expected: reqwest::StatusCode,
        /// Response body, for the server's reason.
        body: String,
    },

    /// A `201 Created` response had no valid `Location` header.
    #[error("response from {url} has no valid Location header")]
    MissingLocation {
        /// URL of the request.
        url: String,
    },

    /// A URL given by the caller or the server could not be parsed.
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// Parser message.
        reason: String,
    },

    /// A media file could not be opened or parsed.
    #[error("media file {path}: {reason}")]
    Media {
        /// Path of the file.
        path: String,
        /// What went wrong.
        reason: String,
    },

    /// The impaired link of a client could not be set up.
    #[error("impaired link: {0}")]
    Link(String),
    /// The local description was missing after ICE gathering finished.
    #[error("local description missing after ICE gathering")]
    NoLocalDescription,

    /// A wait (ICE gathering, connection, frames) did not finish in time.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        /// What the client was waiting for.
        what: &'static str,
        /// How long it waited.
        after: Duration,
    },

    /// The peer connection reached the failed or closed state while waiting.
    #[error("peer connection {state} while waiting for {what}")]
    ConnectionLost {
        /// What the client was waiting for.
        what: &'static str,
        /// The state reached.
        state: String,
    },
}
