//! [`ResourceName`]: the validated name of a resource definition.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use spectrum_core::check_identifier;

use crate::error::DefinitionError;

/// Longest resource name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 128;

/// The name of a resource, unique within a cluster: 1 to 128 bytes of
/// `[A-Za-z0-9._-]`, so it is safe in store keys, file names and command lines.
///
/// ```
/// use spectrum_resources::ResourceName;
///
/// assert_eq!(ResourceName::new("postal-us.2024").unwrap().as_str(), "postal-us.2024");
/// assert!(ResourceName::new("").is_err());
/// assert!(ResourceName::new("no spaces").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ResourceName(String);

impl ResourceName {
    /// Validates and wraps a name.
    ///
    /// # Errors
    ///
    /// [`DefinitionError`] for field `name` when the value is empty, longer than
    /// [`MAX_NAME_LEN`], or holds another character.
    pub fn new(value: impl Into<String>) -> Result<Self, DefinitionError> {
        let value = value.into();
        check_identifier(&value, MAX_NAME_LEN).map_err(|e| DefinitionError::identifier("name", e))?;
        Ok(Self(value))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ResourceName {
    type Err = DefinitionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<String> for ResourceName {
    type Error = DefinitionError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl TryFrom<&str> for ResourceName {
    type Error = DefinitionError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl From<ResourceName> for String {
    fn from(name: ResourceName) -> String {
        name.0
    }
}

impl AsRef<str> for ResourceName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ResourceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ResourceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ResourceName({:?})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_accept_the_documented_alphabet_up_to_128_bytes() {
        assert!(ResourceName::new("a").is_ok());
        assert!(ResourceName::new("x".repeat(MAX_NAME_LEN)).is_ok());
        assert!(ResourceName::new("Geo_DB-1.v2").is_ok());
    }

    #[test]
    fn bad_names_are_rejected_naming_the_field() {
        for bad in [String::new(), "x".repeat(MAX_NAME_LEN + 1), "a/b".into(), "é".into(), "a b".into()] {
            let err = ResourceName::new(bad.clone()).expect_err(&bad);
            assert_eq!(err.field(), "name", "{bad:?}");
        }
    }

    #[test]
    fn names_validate_when_deserialized() {
        assert!(serde_json::from_str::<ResourceName>("\"ok\"").is_ok());
        assert!(serde_json::from_str::<ResourceName>("\"not ok\"").is_err());
    }
}
