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

/// Maximum length of badge ids and consent channels, in characters.
pub const MAX_SHORT_CHARS: usize = 64;

/// Number of hex digits after the prefix of a room, participant or track id.
pub const ID_HEX_DIGITS: usize = 16;

/// Largest page a List call returns.
pub const MAX_PAGE_SIZE: u32 = 500;

/// Page size of a List call that gives 0.
pub const DEFAULT_PAGE_SIZE: u32 = 50;

/// Maximum empty-room timeout CreateRoom accepts, in seconds (one day).
pub const MAX_EMPTY_TIMEOUT_S: u32 = 86_400;

/// How far in the future a consent time may lie, to allow for clock skew
/// between CAD and the server.
const MAX_CONSENT_CLOCK_SKEW_MS: i64 = 60_000;

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

/// Checks that `value` is `prefix` followed by [`ID_HEX_DIGITS`] lowercase hex
/// digits, the form of every id the server and the media plane assign.
pub fn id(field: &'static str, prefix: &str, value: &str) -> Result<(), ControlError> {
    let well_formed = value
        .strip_prefix(prefix)
        .is_some_and(|digits| {
            digits.len() == ID_HEX_DIGITS
                && digits
                    .bytes()
                    .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte))
        });
    if well_formed {
        return Ok(());
    }
    let rule = if value.is_empty() {
        format!("required, must be \"{prefix}\" followed by {ID_HEX_DIGITS} lowercase hex digits")
    } else {
        format!("must be \"{prefix}\" followed by {ID_HEX_DIGITS} lowercase hex digits")
    };
    Err(ControlError::invalid(field, rule))
}

/// Checks a room id argument ("rm_" and 16 hex digits).
pub fn room_id(value: &str) -> Result<(), ControlError> {
    id("room_id", "rm_", value)
}

/// Checks a participant id argument ("pt_" and 16 hex digits).
pub fn participant_id(value: &str) -> Result<(), ControlError> {
    id("participant_id", "pt_", value)
}

/// Checks a track id argument ("tr_" and 16 hex digits).
pub fn track_id(value: &str) -> Result<(), ControlError> {
    id("track_id", "tr_", value)
}

/// Checks a page size and returns it with 0 replaced by
/// [`DEFAULT_PAGE_SIZE`].
pub fn page_size(value: u32) -> Result<u32, ControlError> {
    match value {
        0 => Ok(DEFAULT_PAGE_SIZE),
        1..=MAX_PAGE_SIZE => Ok(value),
        _ => Err(ControlError::invalid(
            "page_size",
            format!("must be 1 to {MAX_PAGE_SIZE} (0 selects {DEFAULT_PAGE_SIZE}), got {value}"),
        )),
    }
}

/// Returns the proto enum value `value` of `field`, or INVALID_ARGUMENT for
/// a number the enum does not define.
fn known_enum<E: TryFrom<i32>>(field: &'static str, value: i32) -> Result<E, ControlError> {
    E::try_from(value).map_err(|_| ControlError::invalid(field, format!("unknown value {value}")))
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
    if request.empty_timeout_seconds > MAX_EMPTY_TIMEOUT_S {
        return Err(ControlError::invalid(
            "empty_timeout_seconds",
            format!(
                "must be at most {MAX_EMPTY_TIMEOUT_S} (0 = no limit), got {}",
                request.empty_timeout_seconds
            ),
        ));
    }
    Ok(())
}

/// A checked ListRooms request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomListQuery {
    /// Stored state to match, or `None` for every state.
    pub state: Option<&'static str>,
    /// Incident id to match, or `None` for every incident.
    pub incident_id: Option<String>,
    /// Page size in 1..=[`MAX_PAGE_SIZE`].
    pub page_size: u32,
}

/// Checks a ListRooms request.
pub fn list_rooms(request: &pb::ListRoomsRequest) -> Result<RoomListQuery, ControlError> {
    let state = room_state_filter(request.state)?;
    optional_name("incident_id", &request.incident_id)?;
    Ok(RoomListQuery {
        state,
        incident_id: Some(request.incident_id.clone()).filter(|id| !id.is_empty()),
        page_size: page_size(request.page_size)?,
    })
}

fn room_state_filter(value: i32) -> Result<Option<&'static str>, ControlError> {
    let state: pb::RoomState = known_enum("state", value)?;
    Ok(match state {
        pb::RoomState::Unspecified => None,
        pb::RoomState::Open => Some(vpr_store::STATE_OPEN),
        pb::RoomState::Closed => Some(vpr_store::STATE_CLOSED),
    })
}

/// A checked ListSessions request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionListQuery {
    /// Store filter built from the request.
    pub filter: vpr_store::SessionFilter,
    /// Page size in 1..=[`MAX_PAGE_SIZE`].
    pub page_size: u32,
}

/// Checks a ListSessions request.
pub fn list_sessions(request: &pb::ListSessionsRequest) -> Result<SessionListQuery, ControlError> {
    if request.created_from_unix_ms < 0 {
        return Err(ControlError::invalid(
            "created_from_unix_ms",
            "must not be negative (0 = no lower bound)",
        ));
    }
    if request.created_to_unix_ms < 0 {
        return Err(ControlError::invalid(
            "created_to_unix_ms",
            "must not be negative (0 = no upper bound)",
        ));
    }
    if request.created_to_unix_ms != 0 && request.created_to_unix_ms <= request.created_from_unix_ms {
        return Err(ControlError::invalid(
            "created_to_unix_ms",
            format!(
                "must be greater than created_from_unix_ms ({}) when set",
                request.created_from_unix_ms
            ),
        ));
    }
    optional_name("incident_id", &request.incident_id)?;
    let disposition: pb::Disposition = known_enum("disposition", request.disposition)?;
    let state = room_state_filter(request.state)?;

    let filter = vpr_store::SessionFilter {
        state: state.map(str::to_owned),
        incident_id: Some(request.incident_id.clone()).filter(|id| !id.is_empty()),
        disposition: disposition_to_str(disposition).map(str::to_owned),
        created_from_ms: Some(request.created_from_unix_ms).filter(|ms| *ms != 0),
        created_to_ms: Some(request.created_to_unix_ms).filter(|ms| *ms != 0),
    };
    Ok(SessionListQuery {
        filter,
        page_size: page_size(request.page_size)?,
    })
}

/// A checked resident consent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentArgs {
    /// Whether live video was agreed to.
    pub live_video: bool,
    /// Whether audio was agreed to.
    pub audio: bool,
    /// Whether recording was agreed to.
    pub recording: bool,
    /// Channel the consent was obtained through, such as "web_form".
    pub channel: String,
    /// When the consent was given, unix ms, with 0 replaced by now.
    pub consented_at_ms: i64,
}

/// A checked AdmitParticipant request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmitArgs {
    /// Role of the participant.
    pub role: Role,
    /// Publish permission, with the role's default applied.
    pub can_publish: bool,
    /// Subscribe permission, with the default (true) applied.
    pub can_subscribe: bool,
    /// The resident's consent; `None` for other roles.
    pub consent: Option<ConsentArgs>,
}

/// Checks an AdmitParticipant request at `now_ms`.
///
/// Fails with [`ControlError::ConsentRequired`] for a resident without
/// consent, after every field check has passed.
pub fn admit_participant(
    request: &pb::AdmitParticipantRequest,
    max_token_ttl_s: u32,
    now_ms: i64,
) -> Result<AdmitArgs, ControlError> {
    room_id(&request.room_id)?;
    required_name("identity", &request.identity)?;
    optional_name("display_name", &request.display_name)?;

    let role: pb::Role = known_enum("role", request.role)?;
    let role = role_from_pb(role).ok_or_else(|| {
        ControlError::invalid("role", "required: resident, officer, observer or dispatcher")
    })?;

    if request.token_ttl_seconds > max_token_ttl_s {
        return Err(ControlError::invalid(
            "token_ttl_seconds",
            format!(
                "must be at most {max_token_ttl_s} (0 selects the server default), got {}",
                request.token_ttl_seconds
            ),
        ));
    }

    short_text("badge_id", &request.badge_id)?;
    if role == Role::Officer && request.badge_id.is_empty() {
        return Err(ControlError::invalid(
            "badge_id",
            format!("required for role officer, 1 to {MAX_SHORT_CHARS} characters"),
        ));
    }

    let consent = match (role, &request.consent) {
        (Role::Resident, None) => return Err(ControlError::ConsentRequired),
        (Role::Resident, Some(consent)) => Some(consent_args(consent, now_ms)?),
        _ => None,
    };

    Ok(AdmitArgs {
        role,
        can_publish: request.can_publish.unwrap_or_else(|| role.can_publish()),
        can_subscribe: request.can_subscribe.unwrap_or(true),
        consent,
    })
}

fn consent_args(consent: &pb::Consent, now_ms: i64) -> Result<ConsentArgs, ControlError> {
    if consent.channel.is_empty() {
        return Err(ControlError::invalid(
            "consent.channel",
            format!("required, must be 1 to {MAX_SHORT_CHARS} characters"),
        ));
    }
    short_text("consent.channel", &consent.channel)?;

    let consented_at_ms = match consent.consented_at_unix_ms {
        0 => now_ms,
        at if at < 0 => {
            return Err(ControlError::invalid(
                "consent.consented_at_unix_ms",
                "must not be negative (0 = now)",
            ))
        }
        at if at > now_ms + MAX_CONSENT_CLOCK_SKEW_MS => {
            return Err(ControlError::invalid(
                "consent.consented_at_unix_ms",
                format!("must not lie in the future (server time {now_ms}, got {at})"),
            ))
        }
        at => at,
    };

    Ok(ConsentArgs {
        live_video: consent.live_video,
        audio: consent.audio,
        recording: consent.recording,
        channel: consent.channel.clone(),
        consented_at_ms,
    })
}

/// Checks a CloseRoom request and returns the stored name of its disposition.
pub fn close_room(request: &pb::CloseRoomRequest) -> Result<&'static str, ControlError> {
    room_id(&request.room_id)?;
    text("notes", &request.notes)?;

    let disposition: pb::Disposition = known_enum("disposition", request.disposition)?;
    disposition_to_str(disposition).ok_or_else(|| {
        ControlError::invalid(
            "disposition",
            "required: resolved virtually, patrol dispatched, forensic unit dispatched, referred or abandoned",
        )
    })
}

/// Checks a RemoveParticipant request.
pub fn remove_participant(request: &pb::RemoveParticipantRequest) -> Result<(), ControlError> {
    room_id(&request.room_id)?;
    participant_id(&request.participant_id)?;
    required_name("reason", &request.reason)
}

/// Checks a MuteTrack request.
pub fn mute_track(request: &pb::MuteTrackRequest) -> Result<(), ControlError> {
    room_id(&request.room_id)?;
    track_id(&request.track_id)
}

/// Checks an UpdateParticipantPermissions request.
pub fn update_permissions(
    request: &pb::UpdateParticipantPermissionsRequest,
) -> Result<(), ControlError> {
    room_id(&request.room_id)?;
    participant_id(&request.participant_id)
}

/// Checks a WatchEvents request.
pub fn watch_events(request: &pb::WatchEventsRequest) -> Result<(), ControlError> {
    if !request.room_id.is_empty() {
        room_id(&request.room_id)?;
    }
    if request.after_seq < 0 {
        return Err(ControlError::invalid(
            "after_seq",
            format!("must not be negative (0 = from the first event), got {}", request.after_seq),
        ));
    }
    Ok(())
}

/// Checks that `value` is at most [`MAX_SHORT_CHARS`] characters.
fn short_text(field: &'static str, value: &str) -> Result<(), ControlError> {
    let chars = value.chars().count();
    if chars > MAX_SHORT_CHARS {
        return Err(ControlError::invalid(
            field,
            format!("must be at most {MAX_SHORT_CHARS} characters, got {chars}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOM: &str = "rm_0123456789abcdef";
    const NOW_MS: i64 = 1_700_000_000_000;

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
            room_id: ROOM.to_owned(),
            identity: "x".to_owned(),
            role: 42,
            ..Default::default()
        };
        assert_eq!(
            field_of(admit_participant(&admit, 3600, NOW_MS).unwrap_err()),
            "role"
        );

        let close = pb::CloseRoomRequest {
            room_id: ROOM.to_owned(),
            disposition: 42,
            notes: String::new(),
        };
        assert_eq!(field_of(close_room(&close).unwrap_err()), "disposition");
    }

    #[test]
    fn ids_need_prefix_and_sixteen_hex_digits() {
        assert!(room_id(ROOM).is_ok());
        assert!(participant_id("pt_00000000000000ff").is_ok());
        assert!(track_id("tr_abcdefabcdefabcd").is_ok());

        for bad in ["", "rm_", "rm_0123456789abcde", "rm_0123456789ABCDEF", "pt_0123456789abcdef", "rm_0123456789abcdef0"] {
            assert_eq!(field_of(room_id(bad).unwrap_err()), "room_id", "value {bad:?}");
        }
    }

    #[test]
    fn page_size_bounds() {
        assert_eq!(page_size(0).unwrap(), DEFAULT_PAGE_SIZE);
        assert_eq!(page_size(1).unwrap(), 1);
        assert_eq!(page_size(500).unwrap(), 500);
        assert_eq!(field_of(page_size(501).unwrap_err()), "page_size");
    }

    #[test]
    fn permissions_default_by_role() {
        let mut request = pb::AdmitParticipantRequest {
            room_id: ROOM.to_owned(),
            identity: "dispatch-1".to_owned(),
            role: pb::Role::Dispatcher as i32,
            ..Default::default()
        };
        let args = admit_participant(&request, 3600, NOW_MS).unwrap();
        assert!(!args.can_publish);
        assert!(args.can_subscribe);

        request.can_publish = Some(true);
        request.can_subscribe = Some(false);
        let args = admit_participant(&request, 3600, NOW_MS).unwrap();
        assert!(args.can_publish);
        assert!(!args.can_subscribe);
    }

    #[test]
    fn resident_consent_and_officer_badge_required() {
        let mut resident = pb::AdmitParticipantRequest {
            room_id: ROOM.to_owned(),
            identity: "caller".to_owned(),
            role: pb::Role::Resident as i32,
            ..Default::default()
        };
        assert!(matches!(
            admit_participant(&resident, 3600, NOW_MS),
            Err(ControlError::ConsentRequired)
        ));

        resident.consent = Some(pb::Consent {
            live_video: true,
            audio: true,
            recording: false,
            channel: "web_form".to_owned(),
            consented_at_unix_ms: 0,
        });
        let args = admit_participant(&resident, 3600, NOW_MS).unwrap();
        assert_eq!(args.consent.unwrap().consented_at_ms, NOW_MS);

        resident.consent.as_mut().unwrap().consented_at_unix_ms = NOW_MS + 3_600_000;
        assert_eq!(
            field_of(admit_participant(&resident, 3600, NOW_MS).unwrap_err()),
            "consent.consented_at_unix_ms"
        );

        let officer = pb::AdmitParticipantRequest {
            room_id: ROOM.to_owned(),
            identity: "officer".to_owned(),
            role: pb::Role::Officer as i32,
            ..Default::default()
        };
        assert_eq!(
            field_of(admit_participant(&officer, 3600, NOW_MS).unwrap_err()),
            "badge_id"
        );
    }
}
