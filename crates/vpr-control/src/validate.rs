//! Argument checks for RoomService requests. Each failure names the proto
//! field and the rule it breaks.

use crate::convert::{disposition_to_str, role_from_pb};
use crate::error::ControlError;
use crate::pb;
use crate::token::Role;

/// Maximum length of ids and names (incident_id, request_id, identity, ...),
/// in characters.
pub const MAX_NAME_CHARS: usize = 128;

/// Maximum size of free-text fields (metadata, notes), in bytes.
pub const MAX_TEXT_BYTES: usize = 4096;

/// Checks that `value` is 1 to [`MAX_NAME_CHARS`] characters.
pub fn required_name(field: &'static str, value: &str) -> Result<(), ControlError> {
    if value.is_empty() {
        return Err(ControlError::invalid(
            field,
            "required, must be 1 to 128 characters",
        ));
    }
    optional_name(field, value)
}

/// Checks that `value` is at most [`MAX_NAME_CHARS`] characters.
pub fn optional_name(field: &'static str, value: &str) -> Result<(), ControlError> {
    let chars = value.chars().count();
    if chars > MAX_NAME_CHARS {
        return Err(ControlError::invalid(
            field,
            format!("must be at most {MAX_NAME_CHARS} characters, got {chars}"),
        ));
    }
    Ok(())
}

/// Checks that `value` is at most [`MAX_TEXT_BYTES`] bytes.
pub fn text(field: &'static str, value: &str) -> Result<(), ControlError> {
    if value.len() > MAX_TEXT_BYTES {
        return Err(ControlError::invalid(
            field,
            format!(
                "must be at most {MAX_TEXT_BYTES} bytes, got {}",
                value.len()
            ),
        ));
    }
    Ok(())
}

/// Checks a room id argument: required, at most [`MAX_NAME_CHARS`] characters.
pub fn room_id(value: &str) -> Result<(), ControlError> {
    required_name("room_id", value)
}

/// Checks a CreateRoom request against `max_participants_limit`.
pub fn create_room(
    request: &pb::CreateRoomRequest,
    max_participants_limit: u32,
) -> Result<(), ControlError> {
    required_name("incident_id", &request.incident_id)?;
    required_name("request_id", &request.request_id)?;
    optional_name("call_type", &request.call_type)?;
    text("metadata", &request.metadata)?;

    if request.max_participants > max_participants_limit {
        return Err(ControlError::invalid(
            "max_participants",
            format!(
                "must be at most {max_participants_limit} (0 selects the server default), got {}",
                request.max_participants
            ),
        ));
    }
    Ok(())
}

/// Checks an AdmitParticipant request and returns its role.
pub fn admit_participant(
    request: &pb::AdmitParticipantRequest,
    max_token_ttl_s: u32,
) -> Result<Role, ControlError> {
    room_id(&request.room_id)?;
    required_name("identity", &request.identity)?;
    optional_name("display_name", &request.display_name)?;

    let role = pb::Role::try_from(request.role)
        .map_err(|_| ControlError::invalid("role", format!("unknown value {}", request.role)))?;
    let role = role_from_pb(role)
        .ok_or_else(|| ControlError::invalid("role", "required: resident, officer or observer"))?;

    if request.token_ttl_seconds > max_token_ttl_s {
        return Err(ControlError::invalid(
            "token_ttl_seconds",
            format!(
                "must be at most {max_token_ttl_s} (0 selects the server default), got {}",
                request.token_ttl_seconds
            ),
        ));
    }
    Ok(role)
}

/// Checks a CloseRoom request and returns the stored name of its disposition.
pub fn close_room(request: &pb::CloseRoomRequest) -> Result<&'static str, ControlError> {
    room_id(&request.room_id)?;
    text("notes", &request.notes)?;

    let disposition = pb::Disposition::try_from(request.disposition).map_err(|_| {
        ControlError::invalid(
            "disposition",
            format!("unknown value {}", request.disposition),
        )
    })?;
    disposition_to_str(disposition).ok_or_else(|| ControlError::invalid("disposition", "required"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(error: ControlError) -> &'static str {
        match error {
            ControlError::InvalidArgument { field, .. } => field,
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn name_limits_count_characters() {
        assert!(required_name("identity", &"é".repeat(128)).is_ok());
        assert_eq!(
            field_of(required_name("identity", &"é".repeat(129)).unwrap_err()),
            "identity"
        );
        assert_eq!(
            field_of(required_name("identity", "").unwrap_err()),
            "identity"
        );
    }

    #[test]
    fn metadata_limit_counts_bytes() {
        assert!(text("metadata", &"a".repeat(4096)).is_ok());
        assert_eq!(
            field_of(text("metadata", &"é".repeat(2049)).unwrap_err()),
            "metadata"
        );
    }

    #[test]
    fn unknown_enum_values_rejected() {
        let admit = pb::AdmitParticipantRequest {
            room_id: "rm_1".to_owned(),
            identity: "x".to_owned(),
            role: 42,
            ..Default::default()
        };
        assert_eq!(
            field_of(admit_participant(&admit, 3600).unwrap_err()),
            "role"
        );

        let close = pb::CloseRoomRequest {
            room_id: "rm_1".to_owned(),
            disposition: 42,
            notes: String::new(),
        };
        assert_eq!(field_of(close_room(&close).unwrap_err()), "disposition");
    }
}
