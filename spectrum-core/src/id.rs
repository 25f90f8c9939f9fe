//! Validated identifiers for nodes and clusters.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{IdentifierError, InvalidId};

/// Longest identifier accepted, in bytes.
pub const MAX_ID_LEN: usize = 64;

/// The one identifier rule of a cluster: 1 to `max_len` bytes of ASCII letters,
/// digits, `.`, `_` and `-`. Node and cluster ids, resource names and categories,
/// and the names of licenses and dataflows all use it (each with its own maximum
/// and error type), so a name valid in one place is valid in every other.
///
/// # Errors
///
/// [`IdentifierError`] saying what is wrong; its text reads after the value's
/// name ("node id must not be empty").
pub fn check_identifier(value: &str, max_len: usize) -> Result<(), IdentifierError> {
    if value.is_empty() {
        return Err(IdentifierError::Empty);
    }
    if value.len() > max_len {
        return Err(IdentifierError::TooLong { len: value.len(), max: max_len });
    }
    match value.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        Some(ch) => Err(IdentifierError::BadChar { ch }),
        None => Ok(()),
    }
}

fn validate(kind: &'static str, s: &str) -> Result<(), InvalidId> {
    check_identifier(s, MAX_ID_LEN).map_err(|e| match e {
        IdentifierError::Empty => InvalidId::Empty { kind },
        IdentifierError::TooLong { len, max } => InvalidId::TooLong { kind, len, max },
        IdentifierError::BadChar { ch } => InvalidId::BadChar { kind, value: s.to_owned(), ch },
    })
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(Arc<str>);

        impl $name {
            /// Validates and wraps an identifier: 1 to 64 bytes of `[A-Za-z0-9._-]`.
            ///
            /// # Errors
            ///
            /// [`InvalidId`] when the value is empty, too long, or holds another character.
            pub fn new(value: impl AsRef<str>) -> Result<Self, InvalidId> {
                let value = value.as_ref();
                validate($kind, value)?;
                Ok(Self(Arc::from(value)))
            }

            /// The identifier as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = InvalidId;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidId;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                Self::new(s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0.to_string()
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), &*self.0)
            }
        }
    };
}

id_type!(
    /// The identity of one node, stable across restarts (it names the node's
    /// entry in membership, and, with the incarnation of its current store, the
    /// origin of its records in the replicated store: `node~incarnation`, whose
    /// `~` no identifier holds).
    NodeId,
    "node id"
);
id_type!(
    /// The identity of a cluster. Every replication exchange carries it, and a peer
    /// of another cluster is refused.
    ClusterId,
    "cluster id"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_accept_the_documented_alphabet() {
        assert!(NodeId::new("node-1.eu_west").is_ok());
        assert!(ClusterId::new("a").is_ok());
    }

    #[test]
    fn ids_reject_empty_long_and_odd_values_with_a_reason() {
        assert_eq!(NodeId::new("").unwrap_err(), InvalidId::Empty { kind: "node id" });
        let long = "x".repeat(MAX_ID_LEN + 1);
        assert!(matches!(NodeId::new(&long), Err(InvalidId::TooLong { len: 65, .. })));
        let err = ClusterId::new("a b").unwrap_err();
        assert!(err.to_string().contains("' '"), "{err}");
    }

    #[test]
    fn ids_round_trip_through_serde_and_validate_on_the_way_in() {
        let id = NodeId::new("n1").unwrap();
        let json = serde_json_like(&id);
        assert_eq!(json, "n1");
        let bad: Result<NodeId, _> = NodeId::try_from(String::from("no/slash"));
        assert!(bad.is_err());
    }

    fn serde_json_like(id: &NodeId) -> String {
        String::from(id.clone())
    }
}
