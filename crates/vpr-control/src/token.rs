//! Join tokens: the HS256 JWTs that admit one participant into one room.
//!
//! The control plane mints a token in AdmitParticipant; the media plane
//! verifies it on the WHIP and WHEP endpoints. Verification takes the current
//! time as an argument, so expiry is decided here with zero leeway and tests
//! need no clock.

use std::fmt;
use std::str::FromStr;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// Permission level of a participant in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The member of the public who reported the incident.
    Resident,
    /// A police officer handling the call.
    Officer,
    /// A viewer who receives media and by default does not publish.
    Observer,
    /// A dispatcher following the call; by default receives only.
    Dispatcher,
}

impl Role {
    /// Returns the name used in tokens, the store and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Resident => "resident",
            Role::Officer => "officer",
            Role::Observer => "observer",
            Role::Dispatcher => "dispatcher",
        }
    }

    /// Returns whether this role publishes media (WHIP) when the admission
    /// sets no permission. Residents and officers publish, and observers and
    /// dispatchers receive only.
    pub fn can_publish(self) -> bool {
        matches!(self, Role::Resident | Role::Officer)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error for a role name that is not "resident", "officer", "observer" or
/// "dispatcher".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid role {0:?}: expected resident, officer, observer or dispatcher")]
pub struct InvalidRole(pub String);

impl FromStr for Role {
    type Err = InvalidRole;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "resident" => Ok(Role::Resident),
            "officer" => Ok(Role::Officer),
            "observer" => Ok(Role::Observer),
            "dispatcher" => Ok(Role::Dispatcher),
            other => Err(InvalidRole(other.to_owned())),
        }
    }
}

/// Claims of a join token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinClaims {
    /// Room the token admits into.
    #[serde(rename = "room")]
    pub room_id: String,
    /// Participant id, "pt_" followed by 16 hex digits.
    #[serde(rename = "sub")]
    pub participant_id: String,
    /// Identity given at admission.
    #[serde(rename = "name")]
    pub identity: String,
    /// Role given at admission.
    pub role: Role,
    /// Issue time, unix seconds.
    pub iat: u64,
    /// Expiry time, unix seconds. The token is rejected from this second on.
    pub exp: u64,
    /// Whether the holder may publish media (WHIP). A token without this
    /// claim allows what its role allows by default.
    #[serde(rename = "can_publish", default, skip_serializing_if = "Option::is_none")]
    pub publish: Option<bool>,
    /// Whether the holder may receive media (WHEP). A token without this
    /// claim allows it.
    #[serde(rename = "can_subscribe", default, skip_serializing_if = "Option::is_none")]
    pub subscribe: Option<bool>,
}

impl JoinClaims {
    /// Returns whether the holder may publish media (WHIP): the
    /// `can_publish` claim, or the role's default without it.
    pub fn can_publish(&self) -> bool {
        self.publish.unwrap_or_else(|| self.role.can_publish())
    }

    /// Returns whether the holder may receive media (WHEP): the
    /// `can_subscribe` claim, or true without it.
    pub fn can_subscribe(&self) -> bool {
        self.subscribe.unwrap_or(true)
    }
}

/// Reasons a join token is rejected or cannot be minted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// No token was presented.
    #[error("join token missing")]
    Missing,
    /// The token is not a well-formed HS256 JWT with join claims.
    #[error("join token malformed: {0}")]
    Malformed(String),
    /// The signature does not match the server's signing secret.
    #[error("join token signature invalid")]
    BadSignature,
    /// The token's `exp` is at or before the current time.
    #[error("join token expired at unix time {exp_unix_s}")]
    Expired {
        /// The token's `exp` claim, unix seconds.
        exp_unix_s: u64,
    },
    /// Encoding the token failed.
    #[error("join token could not be signed: {0}")]
    Signing(String),
}

/// Mints and verifies join tokens with one HS256 secret.
#[derive(Clone)]
pub struct JoinTokenSigner {
    encoding_key: EncodingKey,
    decoding_key: DecodingKey,
    validation: Validation,
}

impl fmt::Debug for JoinTokenSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinTokenSigner").finish_non_exhaustive()
    }
}

impl JoinTokenSigner {
    /// Creates a signer for the HS256 `secret`.
    pub fn new(secret: &[u8]) -> Self {
        Self {
            encoding_key: EncodingKey::from_secret(secret),
            decoding_key: DecodingKey::from_secret(secret),
            validation: exp_required_validation(),
        }
    }

    /// Signs `claims` into a compact JWT.
    pub fn mint(&self, claims: JoinClaims) -> Result<String, TokenError> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding_key)
            .map_err(|error| TokenError::Signing(error.to_string()))
    }

    /// Checks the signature and expiry of `token` at `now_unix_s` and returns
    /// its claims.
    pub fn verify(&self, token: &str, now_unix_s: u64) -> Result<JoinClaims, TokenError> {
        if token.is_empty() {
            return Err(TokenError::Missing);
        }

        let data = jsonwebtoken::decode::<JoinClaims>(token, &self.decoding_key, &self.validation)
            .map_err(|error| classify_jwt_error(&error))?;

        if data.claims.exp <= now_unix_s {
            return Err(TokenError::Expired {
                exp_unix_s: data.claims.exp,
            });
        }
        Ok(data.claims)
    }
}

/// Returns HS256 validation that requires `exp` but leaves the expiry check to
/// the caller, who compares it with an explicit `now`.
pub(crate) fn exp_required_validation() -> Validation {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = 0;
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims = ["exp".to_owned()].into_iter().collect();
    validation
}

fn classify_jwt_error(error: &jsonwebtoken::errors::Error) -> TokenError {
    match error.kind() {
        ErrorKind::InvalidSignature => TokenError::BadSignature,
        ErrorKind::MissingRequiredClaim(claim) => {
            TokenError::Malformed(format!("required claim {claim:?} missing"))
        }
        ErrorKind::InvalidAlgorithm => TokenError::Malformed("algorithm is not HS256".to_owned()),
        _ => TokenError::Malformed(error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000;

    fn claims(room_id: &str, role: Role) -> JoinClaims {
        JoinClaims {
            room_id: room_id.to_owned(),
            participant_id: "pt_0123456789abcdef".to_owned(),
            identity: "officer-17".to_owned(),
            role,
            iat: NOW,
            exp: NOW + 60,
            publish: None,
            subscribe: None,
        }
    }

    #[test]
    fn verify_returns_minted_claims() {
        let signer = JoinTokenSigner::new(b"secret-a");
        let token = signer.mint(claims("rm_a", Role::Officer)).unwrap();

        let verified = signer.verify(&token, NOW + 1).unwrap();
        assert_eq!(verified, claims("rm_a", Role::Officer));
    }

    #[test]
    fn token_for_room_a_names_only_room_a() {
        let signer = JoinTokenSigner::new(b"secret-a");
        let token_a = signer
            .mint(claims("rm_aaaaaaaaaaaaaaaa", Role::Resident))
            .unwrap();
        let token_b = signer
            .mint(claims("rm_bbbbbbbbbbbbbbbb", Role::Resident))
            .unwrap();

        let verified_a = signer.verify(&token_a, NOW).unwrap();
        let verified_b = signer.verify(&token_b, NOW).unwrap();
        assert_eq!(verified_a.room_id, "rm_aaaaaaaaaaaaaaaa");
        assert_eq!(verified_b.room_id, "rm_bbbbbbbbbbbbbbbb");
        assert_ne!(token_a, token_b);
    }

    #[test]
    fn expired_token_rejected() {
        let signer = JoinTokenSigner::new(b"secret-a");
        let token = signer.mint(claims("rm_a", Role::Officer)).unwrap();

        assert!(signer.verify(&token, NOW + 59).is_ok());
        assert_eq!(
            signer.verify(&token, NOW + 60),
            Err(TokenError::Expired {
                exp_unix_s: NOW + 60
            })
        );
        assert_eq!(
            signer.verify(&token, NOW + 3600),
            Err(TokenError::Expired {
                exp_unix_s: NOW + 60
            })
        );
    }

    #[test]
    fn wrong_secret_is_bad_signature() {
        let minting = JoinTokenSigner::new(b"secret-a");
        let verifying = JoinTokenSigner::new(b"secret-b");
        let token = minting.mint(claims("rm_a", Role::Officer)).unwrap();

        assert_eq!(verifying.verify(&token, NOW), Err(TokenError::BadSignature));
    }

    #[test]
    fn tampered_claims_are_bad_signature() {
        let signer = JoinTokenSigner::new(b"secret-a");
        let token_a = signer.mint(claims("rm_a", Role::Observer)).unwrap();
        let token_b = signer.mint(claims("rm_b", Role::Officer)).unwrap();

        // Header and signature of token A around the payload of token B.
        let parts_a: Vec<&str> = token_a.split('.').collect();
        let parts_b: Vec<&str> = token_b.split('.').collect();
        let spliced = format!("{}.{}.{}", parts_a[0], parts_b[1], parts_a[2]);

        assert_eq!(signer.verify(&spliced, NOW), Err(TokenError::BadSignature));
    }

    #[test]
    fn malformed_and_missing_tokens_rejected() {
        let signer = JoinTokenSigner::new(b"secret-a");

        assert_eq!(signer.verify("", NOW), Err(TokenError::Missing));
        assert!(matches!(
            signer.verify("not-a-jwt", NOW),
            Err(TokenError::Malformed(_))
        ));
        assert!(matches!(
            signer.verify("a.b.c", NOW),
            Err(TokenError::Malformed(_))
        ));
    }

    #[test]
    fn token_without_exp_is_malformed() {
        let signer = JoinTokenSigner::new(b"secret-a");
        let no_exp = serde_json::json!({
            "room": "rm_a", "sub": "pt_1", "name": "x", "role": "officer", "iat": NOW
        });
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &no_exp,
            &EncodingKey::from_secret(b"secret-a"),
        )
        .unwrap();

        assert!(matches!(
            signer.verify(&token, NOW),
            Err(TokenError::Malformed(_))
        ));
    }

    #[test]
    fn role_names_round_trip() {
        for role in [Role::Resident, Role::Officer, Role::Observer, Role::Dispatcher] {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        assert_eq!(
            "admin".parse::<Role>(),
            Err(InvalidRole("admin".to_owned()))
        );
    }

    #[test]
    fn role_defaults_apply_without_permission_claims() {
        assert!(!claims("rm_a", Role::Observer).can_publish());
        assert!(!claims("rm_a", Role::Dispatcher).can_publish());
        assert!(claims("rm_a", Role::Officer).can_publish());
        assert!(claims("rm_a", Role::Resident).can_publish());
        assert!(claims("rm_a", Role::Observer).can_subscribe());
    }

    #[test]
    fn permission_claims_round_trip() {
        let signer = JoinTokenSigner::new(b"secret-a");
        let mut restricted = claims("rm_a", Role::Officer);
        restricted.publish = Some(false);
        restricted.subscribe = Some(false);
        let token = signer.mint(restricted.clone()).unwrap();

        let verified = signer.verify(&token, NOW).unwrap();
        assert_eq!(verified, restricted);
        assert!(!verified.can_publish());
        assert!(!verified.can_subscribe());
    }
}
