//! Join-token checks for signalling requests.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::{header, HeaderMap};
use vpr_control::{JoinClaims, JoinTokenSigner, TokenError};

use crate::error::SignalError;

/// Verifies the bearer join token of a request for `room_id`.
pub fn authorize(signer: &JoinTokenSigner, headers: &HeaderMap, room_id: &str) -> Result<JoinClaims, SignalError> {
    let claims = authorize_any_room(signer, headers)?;
    if claims.room_id != room_id {
        return Err(SignalError::WrongRoom);
    }
    Ok(claims)
}

/// Verifies the bearer join token of a request whose room is the token's own.
pub fn authorize_any_room(signer: &JoinTokenSigner, headers: &HeaderMap) -> Result<JoinClaims, SignalError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|token| !token.is_empty())
        .ok_or(TokenError::Missing)?;

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Ok(signer.verify(token, now)?)
}
