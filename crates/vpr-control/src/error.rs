//! Errors of the control plane and their one mapping to gRPC status codes.

use tonic::{Code, Status};
use vpr_store::StoreError;

use crate::auth::AuthError;
use crate::token::TokenError;

/// An error from a RoomService call.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// A request field breaks a rule; maps to INVALID_ARGUMENT.
    #[error("invalid argument {field}: {rule}")]
    InvalidArgument {
        /// Proto name of the field.
        field: &'static str,
        /// The rule the value breaks, e.g. "must be 1 to 128 characters".
        rule: String,
    },
    /// The server is shutting down and opens no rooms and admits no one;
    /// maps to UNAVAILABLE so the caller retries on another server.
    #[error("server is shutting down; retry on another server")]
    Draining,
    /// No room has this id; maps to NOT_FOUND.
    #[error("room {0} not found")]
    RoomNotFound(String),
    /// The room is closed and takes no more changes; maps to FAILED_PRECONDITION.
    #[error("room {0} is closed")]
    RoomClosed(String),
    /// The room already has its maximum of admitted participants; maps to
    /// RESOURCE_EXHAUSTED.
    #[error("room {room_id} is full: {max_participants} participants already admitted")]
    RoomFull {
        /// The full room.
        room_id: String,
        /// The room's maximum.
        max_participants: u32,
    },
    /// A resident was admitted without consent; maps to FAILED_PRECONDITION.
    #[error("resident consent is required before a join token is issued")]
    ConsentRequired,
    /// The room has no participant with this id; maps to NOT_FOUND.
    #[error("participant {participant_id} not found in room {room_id}")]
    ParticipantNotFound {
        /// Room named in the request.
        room_id: String,
        /// Participant named in the request.
        participant_id: String,
    },
    /// The participant was removed and takes no more changes; maps to
    /// FAILED_PRECONDITION.
    #[error("participant {0} was removed")]
    ParticipantRemoved(String),
    /// The identity is already admitted to the room with another role; maps to
    /// FAILED_PRECONDITION.
    #[error("identity {identity:?} is already admitted to room {room_id} as {role}; remove it before admitting it with another role")]
    RoleMismatch {
        /// Room named in the request.
        room_id: String,
        /// Identity named in the request.
        identity: String,
        /// Role stored at the earlier admission.
        role: String,
    },
    /// The room has no track with this id; maps to NOT_FOUND.
    #[error("track {track_id} not found in room {room_id}")]
    TrackNotFound {
        /// Room named in the request.
        room_id: String,
        /// Track named in the request.
        track_id: String,
    },
    /// The caller's API JWT was rejected; maps to UNAUTHENTICATED.
    #[error("unauthenticated: {0}")]
    Unauthenticated(#[from] AuthError),
    /// Minting a join token failed; maps to INTERNAL.
    #[error("join token could not be minted: {0}")]
    Token(#[from] TokenError),
    /// The session store failed or rejected the change; mapped per variant.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ControlError {
    /// Builds a [`ControlError::InvalidArgument`] for `field`.
    pub fn invalid(field: &'static str, rule: impl Into<String>) -> Self {
        ControlError::InvalidArgument {
            field,
            rule: rule.into(),
        }
    }

    /// Returns the gRPC code this error maps to.
    pub fn code(&self) -> Code {
        match self {
            ControlError::InvalidArgument { .. } => Code::InvalidArgument,
            ControlError::Draining => Code::Unavailable,
            ControlError::RoomNotFound(_) => Code::NotFound,
            ControlError::RoomClosed(_) => Code::FailedPrecondition,
            ControlError::RoomFull { .. } => Code::ResourceExhausted,
            ControlError::ConsentRequired => Code::FailedPrecondition,
            ControlError::ParticipantNotFound { .. } => Code::NotFound,
            ControlError::ParticipantRemoved(_) => Code::FailedPrecondition,
            ControlError::RoleMismatch { .. } => Code::FailedPrecondition,
            ControlError::TrackNotFound { .. } => Code::NotFound,
            ControlError::Unauthenticated(_) => Code::Unauthenticated,
            ControlError::Token(_) => Code::Internal,
            ControlError::Store(StoreError::NotFound { .. }) => Code::NotFound,
            ControlError::Store(StoreError::AlreadyClosed { .. }) => Code::FailedPrecondition,
            // A conflict here comes from a race, such as a generated id that
            // already exists, so the caller may retry.
            ControlError::Store(StoreError::Conflict { .. }) => Code::Aborted,
            ControlError::Store(_) => Code::Internal,
        }
    }
}

impl From<ControlError> for Status {
    fn from(error: ControlError) -> Self {
        let code = error.code();

        // Database details stay in the server log, and the caller gets a
        // generic message.
        if code == Code::Internal {
            tracing::error!(%error, "control-plane call failed");
            return Status::internal("internal error; see the server log");
        }
        Status::new(code, error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_errors_map_to_codes() {
        let not_found = StoreError::NotFound {
            what: "session",
            id: "rm_x".to_owned(),
        };
        let closed = StoreError::AlreadyClosed {
            room_id: "rm_x".to_owned(),
        };
        let conflict = StoreError::Conflict {
            what: "session",
            id: "rm_x".to_owned(),
            reason: "room id already exists",
        };

        assert_eq!(
            Status::from(ControlError::from(not_found)).code(),
            Code::NotFound
        );
        assert_eq!(
            Status::from(ControlError::from(closed)).code(),
            Code::FailedPrecondition
        );
        assert_eq!(
            Status::from(ControlError::from(conflict)).code(),
            Code::Aborted
        );
    }

    #[test]
    fn invalid_argument_names_field() {
        let status = Status::from(ControlError::invalid(
            "incident_id",
            "must be 1 to 128 characters",
        ));

        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "invalid argument incident_id: must be 1 to 128 characters"
        );
    }
}
