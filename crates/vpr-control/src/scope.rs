//! API key scopes and the check each RPC makes before it runs.
//!
//! "rooms:read" allows the Get*, List* and WatchEvents calls; "rooms:write"
//! allows the calls that change rooms and participants. Neither implies the
//! other.

use std::fmt;

use tonic::{Request, Status};

use crate::auth::CallerKeyId;

/// A permission that an API key grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Reading rooms, sessions, events and the audit trail.
    RoomsRead,
    /// Creating and closing rooms and managing participants and tracks.
    RoomsWrite,
}

impl Scope {
    /// Returns the scope's name in configuration files and error messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::RoomsRead => "rooms:read",
            Scope::RoomsWrite => "rooms:write",
        }
    }

    /// Returns the scope named `name`, or `None` for an unknown name.
    pub fn parse(name: &str) -> Option<Scope> {
        match name {
            "rooms:read" => Some(Scope::RoomsRead),
            "rooms:write" => Some(Scope::RoomsWrite),
            _ => None,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The scopes of the key that authenticated a request, stored in the request
/// extensions by [`crate::ApiKeyAuth`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScopeSet {
    read: bool,
    write: bool,
}

impl ScopeSet {
    /// Builds the set from configured scope names. Unknown names are logged
    /// with the key id and ignored, so a typo removes a right instead of
    /// adding one.
    pub fn parse_lenient(key_id: &str, names: &[String]) -> ScopeSet {
        let mut set = ScopeSet::default();
        for name in names {
            match Scope::parse(name) {
                Some(scope) => set.insert(scope),
                None => {
                    tracing::warn!(key_id, scope = %name, "unknown API key scope ignored");
                }
            }
        }
        set
    }

    /// Adds `scope` to the set.
    pub fn insert(&mut self, scope: Scope) {
        match scope {
            Scope::RoomsRead => self.read = true,
            Scope::RoomsWrite => self.write = true,
        }
    }

    /// Returns whether the set contains `scope`.
    pub fn contains(self, scope: Scope) -> bool {
        match scope {
            Scope::RoomsRead => self.read,
            Scope::RoomsWrite => self.write,
        }
    }
}

/// Checks that the caller of `request` has `scope` and returns its key id.
///
/// Fails with PERMISSION_DENIED naming the scope and the RPC. A request that
/// did not pass [`crate::ApiKeyAuth`] has no scopes and is denied too.
pub fn require<T>(request: &Request<T>, scope: Scope, rpc: &str) -> Result<String, Status> {
    let key_id = request
        .extensions()
        .get::<CallerKeyId>()
        .map(|CallerKeyId(key_id)| key_id.clone())
        .unwrap_or_default();
    let scopes = request
        .extensions()
        .get::<ScopeSet>()
        .copied()
        .unwrap_or_default();

    if scopes.contains(scope) {
        return Ok(key_id);
    }
    tracing::info!(key_id, rpc, missing_scope = %scope, "control-plane call denied");
    Err(Status::permission_denied(format!(
        "API key {key_id:?} lacks scope {scope:?} required by {rpc}",
        scope = scope.as_str()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_scope_names_are_ignored() {
        let names = vec!["rooms:read".to_owned(), "rooms:admin".to_owned()];
        let set = ScopeSet::parse_lenient("report", &names);

        assert!(set.contains(Scope::RoomsRead));
        assert!(!set.contains(Scope::RoomsWrite));
    }

    #[test]
    fn missing_scope_is_permission_denied() {
        let mut request = Request::new(());
        request
            .extensions_mut()
            .insert(CallerKeyId("report".to_owned()));
        let mut read_only = ScopeSet::default();
        read_only.insert(Scope::RoomsRead);
        request.extensions_mut().insert(read_only);

        assert_eq!(
            require(&request, Scope::RoomsRead, "GetRoom").unwrap(),
            "report"
        );
        let status = require(&request, Scope::RoomsWrite, "CreateRoom").unwrap_err();
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
        assert_eq!(
            status.message(),
            "API key \"report\" lacks scope \"rooms:write\" required by CreateRoom"
        );
    }
}
