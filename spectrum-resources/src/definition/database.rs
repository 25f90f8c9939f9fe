//! The `database` kind: [`DatabaseSpec`] and its [`DatabaseCategory`].

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use spectrum_core::check_identifier;

use super::DataLocation;
use crate::decode::Object;
use crate::error::DefinitionError;

/// A database resource: what it holds and where its data lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Value")]
pub struct DatabaseSpec {
    /// What the database holds.
    pub category: DatabaseCategory,
    /// Where its data lives.
    pub location: DataLocation,
}

impl DatabaseSpec {
    /// Checks every field; errors name fields relative to the spec.
    ///
    /// # Errors
    ///
    /// The first [`DefinitionError`] found.
    pub fn validate(&self) -> Result<(), DefinitionError> {
        self.category.validate()?;
        self.location.validate().map_err(|e| e.prefixed("location"))
    }

    /// Takes this kind's fields from its object (the `kind` tag already taken); the
    /// caller validates.
    pub(super) fn decode(obj: &mut Object) -> Result<Self, DefinitionError> {
        let category = obj.required::<String>("category")?.into();
        let location =
            DataLocation::try_from(obj.required_value("location")?).map_err(|e| e.prefixed("location"))?;
        Ok(Self { category, location })
    }
}
decode_via_value!(DatabaseSpec);

/// What a database resource holds. Encoded as a plain string: `"postal"`,
/// `"geocoding"`, `"spatial"`, or any other name for a custom category.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
#[non_exhaustive]
pub enum DatabaseCategory {
    /// Postal data (postcodes, addresses).
    Postal,
    /// Geocoding data.
    Geocoding,
    /// Spatial data.
    Spatial,
    /// Another category, by name: 1 to 64 bytes of `[A-Za-z0-9._-]`, not one of the
    /// names above.
    Custom(String),
}

impl DatabaseCategory {
    /// The category's name as encoded.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Postal => "postal",
            Self::Geocoding => "geocoding",
            Self::Spatial => "spatial",
            Self::Custom(name) => name,
        }
    }

    fn validate(&self) -> Result<(), DefinitionError> {
        let Self::Custom(name) = self else { return Ok(()) };
        check_identifier(name, 64).map_err(|e| DefinitionError::identifier("category", e))?;
        if matches!(name.as_str(), "postal" | "geocoding" | "spatial") {
            return Err(DefinitionError::invalid(
                "category",
                format!("{name:?} is a built-in category, not a custom one"),
            ));
        }
        Ok(())
    }
}

impl From<String> for DatabaseCategory {
    /// A built-in category's name in any case (`Postal` is `postal`: a custom
    /// category differing only in case would read as the same thing to people
    /// and not to programs); any other name is a custom category, as written.
    fn from(name: String) -> Self {
        let is = |builtin: &str| name.eq_ignore_ascii_case(builtin);
        if is("postal") {
            Self::Postal
        } else if is("geocoding") {
            Self::Geocoding
        } else if is("spatial") {
            Self::Spatial
        } else {
            Self::Custom(name)
        }
    }
}

impl From<DatabaseCategory> for String {
    fn from(category: DatabaseCategory) -> String {
        match category {
            DatabaseCategory::Custom(name) => name,
            other => other.as_str().to_owned(),
        }
    }
}

impl fmt::Display for DatabaseCategory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_custom_category_cannot_take_a_built_in_name() {
        let err = DatabaseCategory::Custom("postal".into()).validate().unwrap_err();
        assert_eq!(err.field(), "category");
        assert_eq!(DatabaseCategory::from("postal".to_owned()), DatabaseCategory::Postal);
        assert_eq!(DatabaseCategory::from("GeoCoding".to_owned()), DatabaseCategory::Geocoding);
        assert_eq!(DatabaseCategory::from("Streets".to_owned()).as_str(), "Streets");
    }
}
