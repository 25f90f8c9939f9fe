//! [`Secret`]: a password or key inside a resource definition.
//!
//! A secret prints as `***` in `Debug` and `Display`, so logging a definition, an
//! error or a plan never shows it. It *does* serialize its value, because the
//! definition's JSON is what the configuration database stores and replicates, and a
//! definition must survive that round trip. Anything shown to people or returned by an
//! API goes through [`ResourceDefinition::redacted`](crate::ResourceDefinition::redacted)
//! first, which replaces every secret with [`Secret::REDACTED`].
//!
//! Encryption at rest is the next step (issue 5): the node will encrypt secret values
//! with a cluster key before they reach the store, so a node without the key cannot
//! read them. Until then the stored JSON holds secrets in clear.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A secret value (a password or key): never shown by `Debug` or `Display`.
///
/// The value [`Secret::REDACTED`] (`"***"`) is the placeholder left by redaction; it is
/// never treated as a real secret (see [`Secret::is_redacted`]). The memory holding the
/// value is overwritten with zeros when the secret is dropped.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The placeholder that replaces a secret in redacted output.
    pub const REDACTED: &'static str = "***";

    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The redaction placeholder as a secret.
    pub fn redacted() -> Self {
        Self(Self::REDACTED.to_owned())
    }

    /// Whether this is the redaction placeholder rather than a real value.
    pub fn is_redacted(&self) -> bool {
        self.0 == Self::REDACTED
    }

    /// The secret value in clear. Call this only to hand the value to the resource
    /// itself (a driver, a client); never to log or display it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The length of the value in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the value is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({})", Self::REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Self::REDACTED)
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        let mut bytes = std::mem::take(&mut self.0).into_bytes();
        bytes.fill(0);
        std::hint::black_box(&bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret}"), "***");
        assert_eq!(format!("{secret:?}"), "Secret(***)");
        assert!(!format!("{secret:#?}").contains("hunter2"));
        assert_eq!(secret.expose(), "hunter2");
    }

    #[test]
    fn serializes_its_value_so_the_store_round_trips() {
        let secret = Secret::new("s3cr3t");
        let json = serde_json::to_string(&secret).unwrap();
        assert_eq!(json, "\"s3cr3t\"");
        let back: Secret = serde_json::from_str(&json).unwrap();
        assert_eq!(back, secret);
    }

    #[test]
    fn the_placeholder_is_recognised_as_redacted() {
        assert!(Secret::redacted().is_redacted());
        assert!(!Secret::new("x").is_redacted());
    }
}
