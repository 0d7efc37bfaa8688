//! Opaque page tokens of the List calls.
//!
//! A token is a kind letter and a version, then the hex of the position
//! after which the next page starts: `(created_at_ms, room_id)` for rooms and
//! sessions, an audit seq for the audit trail. Callers pass tokens back
//! unchanged; anything else is INVALID_ARGUMENT on `page_token`.

use crate::error::ControlError;

/// Prefix of room and session tokens.
const ROOM_TOKEN_PREFIX: &str = "r1.";
/// Prefix of audit trail tokens.
const AUDIT_TOKEN_PREFIX: &str = "a1.";

/// Returns the token for the page after the room created at `created_at_ms`
/// with `room_id`.
pub fn room_token(created_at_ms: i64, room_id: &str) -> String {
    format!("{ROOM_TOKEN_PREFIX}{}", hex(&format!("{created_at_ms}:{room_id}")))
}

/// Returns the position in a room or session token, or `None` for an empty
/// token (the first page).
pub fn parse_room_token(token: &str) -> Result<Option<(i64, String)>, ControlError> {
    if token.is_empty() {
        return Ok(None);
    }
    let text = token
        .strip_prefix(ROOM_TOKEN_PREFIX)
        .and_then(unhex)
        .ok_or_else(invalid_token)?;
    let (created_at_ms, room_id) = text.split_once(':').ok_or_else(invalid_token)?;
    let created_at_ms = created_at_ms.parse().map_err(|_| invalid_token())?;
    Ok(Some((created_at_ms, room_id.to_owned())))
}

/// Returns the token for the page after audit entry `seq`.
pub fn audit_token(seq: i64) -> String {
    format!("{AUDIT_TOKEN_PREFIX}{}", hex(&seq.to_string()))
}

/// Returns the seq in an audit token, or 0 for an empty token (the first
/// page).
pub fn parse_audit_token(token: &str) -> Result<i64, ControlError> {
    if token.is_empty() {
        return Ok(0);
    }
    token
        .strip_prefix(AUDIT_TOKEN_PREFIX)
        .and_then(unhex)
        .and_then(|text| text.parse::<i64>().ok())
        .filter(|seq| *seq >= 0)
        .ok_or_else(invalid_token)
}

fn invalid_token() -> ControlError {
    ControlError::invalid(
        "page_token",
        "malformed; pass the next_page_token of the previous response unchanged",
    )
}

fn hex(text: &str) -> String {
    text.bytes().map(|byte| format!("{byte:02x}")).collect()
}

fn unhex(digits: &str) -> Option<String> {
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..digits.len())
        .step_by(2)
        .map(|index| u8::from_str_radix(digits.get(index..index + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        let token = room_token(1_700_000_000_123, "rm_0123456789abcdef");
        assert_eq!(
            parse_room_token(&token).unwrap(),
            Some((1_700_000_000_123, "rm_0123456789abcdef".to_owned()))
        );
        assert_eq!(parse_room_token("").unwrap(), None);
        assert_eq!(parse_audit_token(&audit_token(42)).unwrap(), 42);
        assert_eq!(parse_audit_token("").unwrap(), 0);
    }

    #[test]
    fn foreign_tokens_rejected() {
        for token in ["x", "r1.zz", "r1.3", &audit_token(3)] {
            assert!(parse_room_token(token).is_err(), "token {token:?}");
        }
        assert!(parse_audit_token(&room_token(1, "rm_x")).is_err());
        assert!(parse_audit_token(&format!("a1.{}", hex("-1"))).is_err());
    }
}
