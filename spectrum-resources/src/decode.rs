//! Decoding JSON objects field by field, so that every decoding error names its field
//! (serde's derived decoders do not, inside tagged enums).
//!
//! Unknown fields are ignored rather than refused: during a rolling upgrade a newer
//! node may store a definition with a field an older node does not know yet, and the
//! older node must still read it.
//!
//! # How a decoder uses [`Object`]
//!
//! A type with a JSON form implements `TryFrom<serde_json::Value>` by wrapping the value
//! in an [`Object`] and taking each field it knows once, by name:
//!
//! - [`Object::required`] and [`Object::optional`] decode a field with its own
//!   `Deserialize` impl (strings, numbers, small enums);
//! - [`Object::optional_secret`] decodes a [`Secret`] without ever echoing it;
//! - [`Object::required_value`] hands a nested object to that type's own decoder,
//!   whose error the caller places under the field with
//!   [`DefinitionError::prefixed`] (`"url"` inside `"spec"` becomes `"spec.url"`);
//! - [`Object::kind`] takes the `kind` tag of a tagged object; a tag naming no known
//!   kind is reported with [`unknown_kind`].
//!
//! Whatever is left in the object afterwards is dropped: that is how unknown fields
//! are ignored. Decoding checks only the shape; the caller validates the values once
//! decoded (a definition's `validate`), so the same rules hold for values built in
//! code. `ResourceSpec`'s and `ExportFile`'s `TryFrom<Value>` impls are the
//! examples to copy, and the test `nested_decoders_name_the_field_from_the_root`
//! below shows the pattern in a few lines.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::{DefinitionError, ROOT};
use crate::secret::Secret;

/// A JSON object whose fields are taken one at a time, each error naming its field.
///
/// Every method *removes* the field it takes, so a field is decoded once; taking it
/// again finds it absent. Field names in errors are relative to this object (`"url"`,
/// not `"spec.url"`): the caller that decoded the enclosing object adds the prefix.
/// The error type is [`DefinitionError`], whose `Malformed` variant carries serde's
/// message; secrets never appear in one.
pub(crate) struct Object(Map<String, Value>);

impl Object {
    /// Takes a value that must be a JSON object.
    ///
    /// Any other value is [`DefinitionError::Malformed`] for the root field
    /// (`"definition"`), which [`DefinitionError::prefixed`] turns into the field the
    /// caller took it from.
    pub(crate) fn new(value: Value) -> Result<Self, DefinitionError> {
        match value {
            Value::Object(map) => Ok(Self(map)),
            other => Err(DefinitionError::Malformed {
                field: ROOT.into(),
                reason: format!("expected a JSON object, found {}", type_name(&other)),
            }),
        }
    }

    /// Takes an optional field; absent and `null` are both `None`. A value of the wrong
    /// shape is [`DefinitionError::Malformed`] naming the field.
    pub(crate) fn optional<T: DeserializeOwned>(&mut self, name: &str) -> Result<Option<T>, DefinitionError> {
        match self.0.remove(name) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => serde_json::from_value(value)
                .map(Some)
                .map_err(|e| DefinitionError::Malformed { field: name.into(), reason: e.to_string() }),
        }
    }

    /// Takes an optional secret: a string (clear) or `{"enc":"…"}` (sealed). A malformed
    /// one is reported without echoing the value (serde's messages quote what they
    /// found, so [`optional`](Self::optional) must not be used for secrets).
    pub(crate) fn optional_secret(&mut self, name: &str) -> Result<Option<Secret>, DefinitionError> {
        match self.0.remove(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(value)) => Ok(Some(Secret::new(value))),
            Some(other @ Value::Object(_)) => Secret::from_json_object(other)
                .map(Some)
                .map_err(|reason| DefinitionError::Malformed { field: name.into(), reason }),
            Some(other) => Err(DefinitionError::Malformed {
                field: name.into(),
                reason: format!("expected a string or a sealed secret, found {}", type_name(&other)),
            }),
        }
    }

    /// Takes a required field: absent or `null` is [`DefinitionError::Missing`].
    pub(crate) fn required<T: DeserializeOwned>(&mut self, name: &str) -> Result<T, DefinitionError> {
        self.optional(name)?.ok_or_else(|| DefinitionError::missing(name))
    }

    /// Takes a required field as raw JSON, to be decoded by a nested decoder (whose
    /// errors the caller prefixes with the field's name).
    pub(crate) fn required_value(&mut self, name: &str) -> Result<Value, DefinitionError> {
        match self.0.remove(name) {
            None | Some(Value::Null) => Err(DefinitionError::missing(name)),
            Some(value) => Ok(value),
        }
    }

    /// Takes the `kind` tag of a tagged object: a non-empty string, else
    /// [`DefinitionError::Missing`] for `"kind"`.
    pub(crate) fn kind(&mut self) -> Result<String, DefinitionError> {
        let kind: String = self.required("kind")?;
        if kind.is_empty() {
            return Err(DefinitionError::missing("kind"));
        }
        Ok(kind)
    }
}

/// The error for a `kind` tag naming no known kind; `expected` lists the known ones
/// for the message. The kind is cut to 64 bytes (on a character boundary).
pub(crate) fn unknown_kind(kind: &str, expected: &'static str) -> DefinitionError {
    let mut end = kind.len().min(64);
    while !kind.is_char_boundary(end) {
        end -= 1;
    }
    DefinitionError::UnknownKind { field: "kind".into(), kind: kind[..end].to_owned(), expected }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_malformed_secret_is_reported_without_its_value() {
        let mut obj = Object::new(serde_json::json!({"password": 8_675_309})).unwrap();
        let err = obj.optional_secret("password").unwrap_err();
        assert_eq!(err.field(), "password");
        assert!(!err.to_string().contains("8675309"), "{err}");
    }

    #[test]
    fn nested_decoders_name_the_field_from_the_root() {
        // How a decoder nests: the inner one names fields relative to itself, and the
        // outer one places its errors under the field it took the inner object from.
        fn port(value: Value) -> Result<u16, DefinitionError> {
            Object::new(value)?.required("port")
        }
        let mut outer = Object::new(serde_json::json!({"spec": {"port": "http"}, "future": 1})).unwrap();
        let err = port(outer.required_value("spec").unwrap()).map_err(|e| e.prefixed("spec")).unwrap_err();
        assert_eq!(err.field(), "spec.port");
        let mut taken = Object::new(serde_json::json!({"port": 80})).unwrap();
        assert_eq!(taken.required::<u16>("port").unwrap(), 80);
        assert_eq!(taken.optional::<u16>("port").unwrap(), None, "a field is taken once");
    }

    #[test]
    fn absent_and_null_fields_are_both_none_and_required_ones_are_missing() {
        let mut obj = Object::new(serde_json::json!({"a": null})).unwrap();
        assert_eq!(obj.optional::<String>("a").unwrap(), None);
        assert_eq!(obj.optional::<String>("b").unwrap(), None);
        assert_eq!(obj.required::<String>("c").unwrap_err(), DefinitionError::missing("c"));
        assert_eq!(Object::new(Value::Bool(true)).err().map(|e| e.field().to_owned()), Some(ROOT.to_owned()));
    }
}
