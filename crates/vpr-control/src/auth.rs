//! API key authentication of control-plane callers (the CAD system, vprctl).
//!
//! A caller has an API key (`key_id`, `secret`) and sends every call with
//! `authorization: Bearer <JWT>`: an HS256 JWT signed with the secret, whose
//! header `kid` names the key, with `iat` and `exp` claims at most
//! [`MAX_API_JWT_LIFETIME_S`] apart. The secret itself never travels.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::error::ControlError;
use crate::scope::{Scope, ScopeSet};
use crate::token::exp_required_validation;

/// Maximum lifetime (`exp - iat`) of an API JWT, in seconds.
pub const MAX_API_JWT_LIFETIME_S: u64 = 3600;

/// How far in the future `iat` may lie, in seconds, to allow for clock skew
/// between the caller and the server.
pub const MAX_CLOCK_SKEW_S: u64 = 60;

/// Maximum length of a key id, in bytes.
const MAX_KEY_ID_LEN: usize = 128;

/// An API key from the server configuration.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    /// Public name of the key, sent as the JWT header `kid`.
    pub key_id: String,
    /// Shared HS256 secret.
    pub secret: String,
    /// Scopes granted to the key, such as "rooms:read" and "rooms:write"
    /// (see [`crate::scope::Scope`]); both when the configuration names none.
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
}

impl ApiKey {
    /// Creates a key with the default scopes ("rooms:write" and "rooms:read").
    pub fn new(key_id: impl Into<String>, secret: impl Into<String>) -> Self {
        Self {
            key_id: key_id.into(),
            secret: secret.into(),
            scopes: default_scopes(),
        }
    }
}

/// Returns the scopes of a key whose configuration names none.
pub fn default_scopes() -> Vec<String> {
    vec![
        Scope::RoomsWrite.as_str().to_owned(),
        Scope::RoomsRead.as_str().to_owned(),
    ]
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey")
            .field("key_id", &self.key_id)
            .field("secret", &"<redacted>")
            .field("scopes", &self.scopes)
            .finish()
    }
}

/// Claims of an API JWT.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ApiClaims {
    /// Issue time, unix seconds.
    iat: u64,
    /// Expiry time, unix seconds.
    exp: u64,
}

/// Reasons an API call is not authenticated. Messages never contain the
/// token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `authorization` metadata was sent.
    #[error(
        "authorization metadata missing: send `authorization: Bearer <JWT>` signed with an API key"
    )]
    MissingHeader,
    /// The `authorization` value is not `Bearer <token>`.
    #[error("authorization metadata invalid: expected `Bearer <JWT>`")]
    NotBearer,
    /// The token is not a well-formed HS256 JWT with `iat` and `exp`.
    #[error("API JWT malformed: {0}")]
    Malformed(String),
    /// The JWT header has no `kid`.
    #[error("API JWT header has no `kid` naming the API key")]
    MissingKeyId,
    /// The `kid` names no configured API key.
    #[error("API key {0:?} unknown")]
    UnknownKey(String),
    /// The signature does not match the named key's secret.
    #[error("API JWT signature invalid for key {0:?}")]
    BadSignature(String),
    /// `exp` is at or before the current time.
    #[error("API JWT expired at unix time {exp_unix_s}; mint a new one")]
    Expired {
        /// The token's `exp` claim, unix seconds.
        exp_unix_s: u64,
    },
    /// `exp - iat` exceeds [`MAX_API_JWT_LIFETIME_S`], or `exp` is before `iat`.
    #[error("API JWT lifetime invalid: exp - iat must be between 0 and {MAX_API_JWT_LIFETIME_S} s, got iat {iat} exp {exp}")]
    BadLifetime {
        /// The token's `iat` claim, unix seconds.
        iat: u64,
        /// The token's `exp` claim, unix seconds.
        exp: u64,
    },
    /// `iat` lies further in the future than [`MAX_CLOCK_SKEW_S`] allows.
    #[error(
        "API JWT issued in the future (iat {iat}, server time {now}); check the caller's clock"
    )]
    IssuedInFuture {
        /// The token's `iat` claim, unix seconds.
        iat: u64,
        /// Server time, unix seconds.
        now: u64,
    },
}

/// Key id of the API key that authenticated a request, stored in the request
/// extensions by [`ApiKeyAuth`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerKeyId(pub String);

/// A configured key as the verifier keeps it.
struct VerifyingKey {
    decoding_key: DecodingKey,
    scopes: ScopeSet,
}

/// Verifies API JWTs against the configured keys; used as a tonic interceptor.
/// It stores [`CallerKeyId`] and the key's [`ScopeSet`] in the request
/// extensions, and each RPC checks the scope it needs.
#[derive(Clone)]
pub struct ApiKeyAuth {
    keys: Arc<HashMap<String, VerifyingKey>>,
}

impl fmt::Debug for ApiKeyAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut key_ids: Vec<&String> = self.keys.keys().collect();
        key_ids.sort();
        f.debug_struct("ApiKeyAuth")
            .field("key_ids", &key_ids)
            .finish()
    }
}

impl ApiKeyAuth {
    /// Creates a verifier for `keys`. A later key with the same id replaces an
    /// earlier one. Unknown scope names are logged and ignored.
    pub fn new(keys: &[ApiKey]) -> Self {
        let keys = keys
            .iter()
            .map(|key| {
                let verifying = VerifyingKey {
                    decoding_key: DecodingKey::from_secret(key.secret.as_bytes()),
                    scopes: ScopeSet::parse_lenient(&key.key_id, &key.scopes),
                };
                (key.key_id.clone(), verifying)
            })
            .collect();
        Self {
            keys: Arc::new(keys),
        }
    }

    /// Checks an `authorization` metadata value at `now_unix_s` and returns
    /// the id of the key that signed it.
    pub fn verify(
        &self,
        authorization: Option<&str>,
        now_unix_s: u64,
    ) -> Result<String, AuthError> {
        self.verify_with_scopes(authorization, now_unix_s)
            .map(|(key_id, _)| key_id)
    }

    /// Checks an `authorization` metadata value at `now_unix_s` and returns
    /// the id of the key that signed it with the key's scopes.
    pub fn verify_with_scopes(
        &self,
        authorization: Option<&str>,
        now_unix_s: u64,
    ) -> Result<(String, ScopeSet), AuthError> {
        let value = authorization.ok_or(AuthError::MissingHeader)?;
        let token = value
            .strip_prefix("Bearer ")
            .map(str::trim)
            .filter(|token| !token.is_empty())
            .ok_or(AuthError::NotBearer)?;

        let header = jsonwebtoken::decode_header(token)
            .map_err(|error| AuthError::Malformed(format!("header unreadable: {error}")))?;
        let key_id = header.kid.ok_or(AuthError::MissingKeyId)?;
        if key_id.len() > MAX_KEY_ID_LEN {
            return Err(AuthError::Malformed(format!(
                "`kid` longer than {MAX_KEY_ID_LEN} bytes"
            )));
        }
        let key = self
            .keys
            .get(&key_id)
            .ok_or_else(|| AuthError::UnknownKey(key_id.clone()))?;

        let mut validation = exp_required_validation();
        validation.required_spec_claims.insert("iat".to_owned());
        let claims = jsonwebtoken::decode::<ApiClaims>(token, &key.decoding_key, &validation)
            .map_err(|error| match error.kind() {
                ErrorKind::InvalidSignature => AuthError::BadSignature(key_id.clone()),
                ErrorKind::InvalidAlgorithm => {
                    AuthError::Malformed("algorithm is not HS256".to_owned())
                }
                _ => AuthError::Malformed(error.to_string()),
            })?
            .claims;

        check_times(&claims, now_unix_s)?;
        Ok((key_id, key.scopes))
    }
}

fn check_times(claims: &ApiClaims, now_unix_s: u64) -> Result<(), AuthError> {
    let ApiClaims { iat, exp } = *claims;

    if exp < iat || exp - iat > MAX_API_JWT_LIFETIME_S {
        return Err(AuthError::BadLifetime { iat, exp });
    }
    if iat > now_unix_s + MAX_CLOCK_SKEW_S {
        return Err(AuthError::IssuedInFuture {
            iat,
            now: now_unix_s,
        });
    }
    if exp <= now_unix_s {
        return Err(AuthError::Expired { exp_unix_s: exp });
    }
    Ok(())
}

impl Interceptor for ApiKeyAuth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let authorization =
            match request.metadata().get("authorization") {
                None => None,
                Some(value) => Some(value.to_str().map_err(|_| {
                    Status::from(ControlError::Unauthenticated(AuthError::NotBearer))
                })?),
            };

        match self.verify_with_scopes(authorization, unix_now_s()) {
            Ok((key_id, scopes)) => {
                request.extensions_mut().insert(CallerKeyId(key_id));
                request.extensions_mut().insert(scopes);
                Ok(request)
            }
            Err(error) => {
                tracing::info!(%error, "rejected control-plane call");
                Err(ControlError::Unauthenticated(error).into())
            }
        }
    }
}

/// Mints an API JWT for `key_id` valid for `ttl` from now; for clients such
/// as vprctl and tests. Servers reject a `ttl` over one hour.
pub fn mint_api_jwt(key_id: &str, secret: &str, ttl: Duration) -> String {
    mint_api_jwt_at(key_id, secret, unix_now_s(), ttl.as_secs())
}

/// Mints an API JWT for `key_id` with explicit `iat` and `iat + ttl_s` as
/// `exp`, both unix seconds.
pub fn mint_api_jwt_at(key_id: &str, secret: &str, issued_at_unix_s: u64, ttl_s: u64) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(key_id.to_owned());
    let claims = ApiClaims {
        iat: issued_at_unix_s,
        exp: issued_at_unix_s + ttl_s,
    };

    // HS256 signing of a serializable struct has no failure path in
    // jsonwebtoken 9: the key family always matches the algorithm.
    jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("HS256 signing of API claims cannot fail")
}

/// Returns the current unix time in seconds.
pub(crate) fn unix_now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000;

    fn auth() -> ApiKeyAuth {
        ApiKeyAuth::new(&[ApiKey::new("cad", "cad-secret")])
    }

    fn bearer(token: &str) -> String {
        format!("Bearer {token}")
    }

    #[test]
    fn valid_jwt_returns_key_id() {
        let token = mint_api_jwt_at("cad", "cad-secret", NOW, 300);
        assert_eq!(
            auth().verify(Some(&bearer(&token)), NOW + 10),
            Ok("cad".to_owned())
        );
    }

    #[test]
    fn each_failure_has_its_reason() {
        let auth = auth();

        assert_eq!(auth.verify(None, NOW), Err(AuthError::MissingHeader));
        assert_eq!(
            auth.verify(Some("Basic abc"), NOW),
            Err(AuthError::NotBearer)
        );
        assert_eq!(auth.verify(Some("Bearer "), NOW), Err(AuthError::NotBearer));
        assert!(matches!(
            auth.verify(Some("Bearer x.y"), NOW),
            Err(AuthError::Malformed(_))
        ));

        let unknown = mint_api_jwt_at("other", "cad-secret", NOW, 300);
        assert_eq!(
            auth.verify(Some(&bearer(&unknown)), NOW),
            Err(AuthError::UnknownKey("other".to_owned()))
        );

        let wrong_secret = mint_api_jwt_at("cad", "not-the-secret", NOW, 300);
        assert_eq!(
            auth.verify(Some(&bearer(&wrong_secret)), NOW),
            Err(AuthError::BadSignature("cad".to_owned()))
        );

        let expired = mint_api_jwt_at("cad", "cad-secret", NOW - 600, 300);
        assert_eq!(
            auth.verify(Some(&bearer(&expired)), NOW),
            Err(AuthError::Expired {
                exp_unix_s: NOW - 300
            })
        );

        let too_long = mint_api_jwt_at("cad", "cad-secret", NOW, MAX_API_JWT_LIFETIME_S + 1);
        assert_eq!(
            auth.verify(Some(&bearer(&too_long)), NOW),
            Err(AuthError::BadLifetime {
                iat: NOW,
                exp: NOW + MAX_API_JWT_LIFETIME_S + 1
            })
        );

        let future = mint_api_jwt_at("cad", "cad-secret", NOW + 3600, 300);
        assert_eq!(
            auth.verify(Some(&bearer(&future)), NOW),
            Err(AuthError::IssuedInFuture {
                iat: NOW + 3600,
                now: NOW
            })
        );
    }

    #[test]
    fn jwt_without_kid_rejected() {
        let claims = ApiClaims {
            iat: NOW,
            exp: NOW + 60,
        };
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(b"cad-secret"),
        )
        .unwrap();

        assert_eq!(
            auth().verify(Some(&bearer(&token)), NOW),
            Err(AuthError::MissingKeyId)
        );
    }

    #[test]
    fn error_messages_do_not_contain_token() {
        let token = mint_api_jwt_at("cad", "not-the-secret", NOW, 300);
        let error = auth().verify(Some(&bearer(&token)), NOW).unwrap_err();
        let message = Status::from(ControlError::Unauthenticated(error))
            .message()
            .to_owned();

        assert!(!message.contains(&token));
        assert!(message.contains("signature invalid"), "message: {message}");
    }
}
