//! [`Secret`]: a password or key inside a resource definition.
//!
//! A secret prints as `***` in `Debug` and `Display`, so logging a definition, an
//! error or a plan never shows it. It is either *clear* (as given by an operator, or
//! opened on a node that needs it) or *sealed*: encrypted with the cluster's
//! [`ClusterKey`], which is the only form the configuration database stores.
//!
//! On the wire a clear secret is a JSON string and a sealed one is an object
//! `{"enc":"v1:<base64>"}`, so the two can never be confused. Anything shown to people
//! or returned by an API goes through
//! [`ResourceDefinition::redacted`](crate::ResourceDefinition::redacted) first, which
//! replaces every secret, clear or sealed, with [`Secret::REDACTED`].
//!
//! ```
//! use spectrum_resources::{ClusterKey, Secret};
//!
//! let key = ClusterKey::generate();
//! let sealed = Secret::new("hunter2").sealed(&key).unwrap();
//! assert!(sealed.is_sealed());
//! assert_eq!(sealed.expose(), None, "a sealed secret has no clear value");
//! assert!(!serde_json::to_string(&sealed).unwrap().contains("hunter2"));
//! assert_eq!(sealed.opened(&key).unwrap().expose(), Some("hunter2"));
//! ```

use std::fmt;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::cluster_key::ClusterKey;
use crate::error::SecretError;

/// A secret value (a password or key): never shown by `Debug` or `Display`.
///
/// The clear value [`Secret::REDACTED`] (`"***"`) is the placeholder left by
/// redaction; it is never treated as a real secret (see [`Secret::is_redacted`]). The
/// memory holding the value is overwritten with zeros when the secret is dropped
/// ([`ZeroizeOnDrop`]).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Inner);

/// Both forms are wiped on drop: the sealed text is not secret on its own, but costs
/// nothing to wipe too.
#[derive(Clone, PartialEq, Eq)]
enum Inner {
    Clear(Zeroizing<String>),
    Sealed(Zeroizing<String>),
}

impl Secret {
    /// The placeholder that replaces a secret in redacted output.
    pub const REDACTED: &'static str = "***";

    /// Wraps a clear secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(Inner::Clear(Zeroizing::new(value.into())))
    }

    /// A sealed secret from its sealed text (`v1:<base64>`, as made by
    /// [`ClusterKey::seal`]). The text is checked only when opened.
    pub fn from_sealed(sealed: impl Into<String>) -> Self {
        Self(Inner::Sealed(Zeroizing::new(sealed.into())))
    }

    /// The redaction placeholder as a secret.
    pub fn redacted() -> Self {
        Self::new(Self::REDACTED)
    }

    /// Whether this is the redaction placeholder rather than a real value.
    pub fn is_redacted(&self) -> bool {
        matches!(&self.0, Inner::Clear(v) if v.as_str() == Self::REDACTED)
    }

    /// Whether this secret is sealed with a cluster key.
    pub fn is_sealed(&self) -> bool {
        matches!(self.0, Inner::Sealed(_))
    }

    /// The secret value in clear, or `None` when it is sealed (open it first with
    /// [`opened`](Self::opened)). Call this only to hand the value to the resource
    /// itself (a driver, a client); never to log or display it.
    pub fn expose(&self) -> Option<&str> {
        match &self.0 {
            Inner::Clear(v) => Some(v.as_str()),
            Inner::Sealed(_) => None,
        }
    }

    /// The length in bytes of the value as held: the clear value, or the sealed text.
    pub fn len(&self) -> usize {
        match &self.0 {
            Inner::Clear(v) | Inner::Sealed(v) => v.len(),
        }
    }

    /// Whether the value as held is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// This secret sealed with `key`. A sealed secret is returned as it is; the
    /// redaction placeholder cannot be sealed.
    ///
    /// # Errors
    ///
    /// [`SecretError::Placeholder`] for the redaction placeholder.
    pub fn sealed(&self, key: &ClusterKey) -> Result<Self, SecretError> {
        match &self.0 {
            Inner::Sealed(_) => Ok(self.clone()),
            Inner::Clear(_) if self.is_redacted() => Err(SecretError::Placeholder),
            Inner::Clear(v) => Ok(Self::from_sealed(key.seal(v.as_bytes())?)),
        }
    }

    /// This secret in clear, opened with `key` when sealed.
    ///
    /// # Errors
    ///
    /// [`SecretError::WrongKey`] when it was sealed with another key (or altered);
    /// [`SecretError::Malformed`] when the sealed text is not valid.
    pub fn opened(&self, key: &ClusterKey) -> Result<Self, SecretError> {
        match &self.0 {
            Inner::Clear(_) => Ok(self.clone()),
            Inner::Sealed(text) => {
                let clear = key.open(text)?;
                let clear = String::from_utf8(clear).map_err(|e| {
                    e.into_bytes().zeroize();
                    SecretError::Malformed { reason: "the clear value is not UTF-8".into() }
                })?;
                Ok(Self::new(clear))
            }
        }
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Inner::Clear(v) => serializer.serialize_str(v),
            Inner::Sealed(text) => {
                use serde::ser::SerializeMap;
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry("enc", text.as_str())?;
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Secret {
    /// A JSON string (clear) or `{"enc":"…"}` (sealed). Errors never echo the value.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(deserializer)? {
            serde_json::Value::String(v) => Ok(Self::new(v)),
            value => Self::from_json_object(value).map_err(D::Error::custom),
        }
    }
}

impl Secret {
    /// Decodes the sealed form `{"enc":"…"}`; the error never holds the value.
    pub(crate) fn from_json_object(value: serde_json::Value) -> Result<Self, String> {
        let text = match value {
            serde_json::Value::Object(mut map) if map.len() == 1 => map.remove("enc"),
            _ => None,
        };
        match text {
            Some(serde_json::Value::String(text)) => Ok(Self::from_sealed(text)),
            _ => Err("expected a string or a sealed secret {\"enc\":\"v1:…\"}".into()),
        }
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

/// Every field is a [`Zeroizing`], which wipes it when dropped.
impl ZeroizeOnDrop for Secret {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_and_cluster_keys_are_wiped_when_dropped() {
        fn wiped_on_drop<T: ZeroizeOnDrop>() {}
        wiped_on_drop::<Secret>();
        wiped_on_drop::<ClusterKey>();
    }

    #[test]
    fn debug_and_display_never_show_the_value() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret}"), "***");
        assert_eq!(format!("{secret:?}"), "Secret(***)");
        assert!(!format!("{secret:#?}").contains("hunter2"));
        assert_eq!(secret.expose(), Some("hunter2"));
    }

    #[test]
    fn a_clear_secret_serializes_as_a_string_and_a_sealed_one_as_an_object() {
        let secret = Secret::new("s3cr3t");
        let json = serde_json::to_string(&secret).unwrap();
        assert_eq!(json, "\"s3cr3t\"");
        let back: Secret = serde_json::from_str(&json).unwrap();
        assert_eq!(back, secret);

        let key = ClusterKey::generate();
        let sealed = secret.sealed(&key).unwrap();
        let json = serde_json::to_value(&sealed).unwrap();
        assert!(json["enc"].as_str().unwrap().starts_with("v1:"));
        assert!(!json.to_string().contains("s3cr3t"));
        let back: Secret = serde_json::from_value(json).unwrap();
        assert!(back.is_sealed());
        assert_eq!(back.opened(&key).unwrap(), secret);
        assert_eq!(back.sealed(&key).unwrap(), back, "sealing twice changes nothing");
    }

    #[test]
    fn another_key_cannot_open_a_sealed_secret() {
        let sealed = Secret::new("pw").sealed(&ClusterKey::generate()).unwrap();
        assert!(matches!(sealed.opened(&ClusterKey::generate()), Err(SecretError::WrongKey)));
    }

    #[test]
    fn the_placeholder_is_recognised_as_redacted_and_cannot_be_sealed() {
        assert!(Secret::redacted().is_redacted());
        assert!(!Secret::new("x").is_redacted());
        assert!(!Secret::from_sealed("***").is_redacted());
        assert!(matches!(Secret::redacted().sealed(&ClusterKey::generate()), Err(SecretError::Placeholder)));
    }
}
