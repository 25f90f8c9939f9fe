//! `users/`: the [`User`]s who may call the management API.

use serde::{Deserialize, Serialize};

use super::{Namespace, NamespaceValue, ValueError};
use crate::auth::{Role, TokenHash};

/// A user of the management API, stored at `users/<name>`. Only the hash of the
/// user's token is kept ([`TokenHash`] says why SHA-256 is the right hash for
/// it). Written only by the user operations (`AddUser`, `RevokeUser`,
/// `RotateUser`), never through a raw `Put`; a revoked user stays recorded, so
/// the name is not reused and the audit log keeps meaning one person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// The user's name (the key's).
    pub name: String,
    /// What the user may do.
    pub role: Role,
    /// The SHA-256 of the user's token.
    pub token_hash: TokenHash,
    /// When the user was added, in ms since the Unix epoch.
    pub created_ms: u64,
    /// Whether the user's token was revoked.
    pub revoked: bool,
}

impl User {
    /// The stored form (JSON).
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

impl NamespaceValue for User {
    const NAMESPACE: Namespace = Namespace::Users;
    fn decode(bytes: &[u8]) -> Result<Self, ValueError> {
        serde_json::from_slice(bytes).map_err(|e| ValueError::new(format!("user record: {e}")))
    }
    fn check_name(&self, name: &str) -> Result<(), ValueError> {
        if self.name == name {
            Ok(())
        } else {
            Err(ValueError::new(format!("user record names {:?}, not {name:?}", self.name)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_record_round_trips_and_holds_only_the_hash() {
        let token = crate::auth::Token::generate().unwrap();
        let user = User {
            name: "alice".into(),
            role: Role::Operator,
            token_hash: TokenHash::of(&token),
            created_ms: 7,
            revoked: false,
        };
        let bytes = user.encode();
        assert!(!String::from_utf8_lossy(&bytes).contains(token.expose()));
        assert_eq!(User::decode(&bytes).unwrap(), user);
        assert!(user.check_name("bob").is_err());
        assert!(User::decode(br#"{"name":"a","role":"root"}"#).is_err());
    }
}
