//! [`Role`]: what a caller may do, and [`Caller`]: who is calling.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// What a caller of the management API may do. Roles are ordered: each one may do
/// everything the roles below it may.
///
/// | role | may |
/// |---|---|
/// | `viewer` | read: entries, status, license, dataflows, resources (redacted), exports |
/// | `operator` | also drain and undrain nodes, check resources, read the audit log |
/// | `admin` | also every write (entries, license, dataflows, resources, imports) and users |
///
/// Which role each RPC needs is one table: `Rpc::required_role` in the
/// [`management`](crate::management) service.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Role {
    /// Reads and status.
    Viewer,
    /// Reads, drain and undrain, resource checks, the audit log.
    Operator,
    /// Everything.
    Admin,
}

impl Role {
    /// Every role, lowest first.
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Operator, Role::Admin];

    /// Its name: `viewer`, `operator`, `admin`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    /// Whether a caller with this role may do what `needed` may.
    pub fn allows(self, needed: Role) -> bool {
        self >= needed
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role name that is none of `viewer`, `operator`, `admin`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("unknown role {given:?}: expected viewer, operator or admin")]
pub struct UnknownRole {
    /// What was given (cut to 40 characters).
    pub given: String,
}

impl FromStr for Role {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownRole { given: s.chars().take(40).collect() })
    }
}

/// Who is calling the management API: [`BearerAuth`](super::BearerAuth) puts it
/// into each request's extensions, and the service reads it to authorise and
/// audit the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The user's name; [`Caller::BOOTSTRAP`] for the node file's token,
    /// [`Caller::ANONYMOUS`] in development mode (no token, no users).
    pub name: String,
    /// The user's role.
    pub role: Role,
}

impl Caller {
    /// The name of whoever holds the token in the node file: the first admin.
    pub const BOOTSTRAP: &'static str = "bootstrap";
    /// The name of every caller of a node with no token and no users (development
    /// mode, where every call is allowed).
    pub const ANONYMOUS: &'static str = "anonymous";

    /// The holder of the node file's token.
    pub fn bootstrap() -> Self {
        Self { name: Self::BOOTSTRAP.to_owned(), role: Role::Admin }
    }

    /// A caller of a node in development mode.
    pub fn anonymous() -> Self {
        Self { name: Self::ANONYMOUS.to_owned(), role: Role::Admin }
    }

    /// Whether `name` is one of the names above, which no user may take.
    pub fn is_reserved(name: &str) -> bool {
        name == Self::BOOTSTRAP || name == Self::ANONYMOUS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_role_allows_what_the_roles_below_it_allow() {
        assert!(Role::Admin.allows(Role::Operator) && Role::Admin.allows(Role::Viewer));
        assert!(Role::Operator.allows(Role::Viewer) && !Role::Operator.allows(Role::Admin));
        assert!(!Role::Viewer.allows(Role::Operator));
        for role in Role::ALL {
            assert!(role.allows(role));
            assert_eq!(role.as_str().parse::<Role>().unwrap(), role);
            assert_eq!(serde_json::to_value(role).unwrap(), role.as_str());
        }
        assert!("root".parse::<Role>().unwrap_err().to_string().contains("viewer, operator or admin"));
    }
}
