//! Resource definitions: what a cluster's configuration database says about each
//! external resource, typed and validated.
//!
//! A [`ResourceDefinition`] is a [`ResourceName`], an optional description and a
//! [`ResourceSpec`] saying which kind of resource it is and how to reach it. Its wire
//! form is JSON (see [`ResourceDefinition::to_json_bytes`]); the caller stores the
//! bytes. Decoding validates, so an invalid definition never gets past
//! [`ResourceDefinition::from_json_bytes`], and every error names its field.
//!
//! Each kind of resource has its own module here, holding its spec, validation,
//! decoding and tests: [`DatabaseSpec`] (with [`DatabaseCategory`]) and where its data
//! lives, [`DataLocation`]; [`JdbcSpec`]; [`FileServerSpec`] (with [`FileProtocol`]);
//! [`WebServiceSpec`]. [`ResourceSpec`] dispatches to them, and [`Endpoint`] is the
//! host and port the networked kinds are reached at. Adding a kind means a new module
//! and the arms of [`ResourceSpec`]'s matches.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::decode::{Object, unknown_kind};
use crate::error::{DefinitionError, ROOT};
use crate::name::ResourceName;
use crate::secret::Secret;

/// Implements `TryFrom<Value>` (and so serde's `try_from = "Value"`) for a spec with a
/// `decode(&mut Object)` function: decode, then validate.
macro_rules! decode_via_value {
    ($ty:ty) => {
        impl TryFrom<Value> for $ty {
            type Error = DefinitionError;
            fn try_from(value: Value) -> Result<Self, Self::Error> {
                let spec = Self::decode(&mut Object::new(value)?)?;
                spec.validate()?;
                Ok(spec)
            }
        }
    };
}

mod check;
mod database;
mod endpoint;
mod file_server;
mod jdbc;
mod location;
mod secrets;
mod web_service;

pub use database::{DatabaseCategory, DatabaseSpec};
pub use endpoint::Endpoint;
pub use file_server::{FileProtocol, FileServerSpec};
pub use jdbc::JdbcSpec;
pub use location::DataLocation;
pub use secrets::KeptSecrets;
pub use web_service::{DEFAULT_TIMEOUT_MS, MAX_TIMEOUT_MS, WebServiceSpec};

use check::check_text;

/// Longest string accepted in any field (URLs, paths, users, secrets, …), in bytes.
pub const MAX_VALUE_LEN: usize = 4 * 1024;
/// Longest sealed secret text accepted, in bytes: room for a sealed secret of
/// [`MAX_VALUE_LEN`] bytes.
pub const MAX_SEALED_LEN: usize = 2 * MAX_VALUE_LEN;
/// Largest encoded definition accepted, in bytes.
pub const MAX_ENCODED_LEN: usize = 64 * 1024;

const SPEC_KINDS: &str = "database, jdbc, file_server, web_service";

/// One external resource as the configuration database holds it.
///
/// `Debug` and `Display` never show a secret; [`redacted`](Self::redacted) gives the
/// form to return from an API or print.
///
/// ```
/// use spectrum_resources::{
///     DataLocation, DatabaseCategory, DatabaseSpec, ResourceDefinition, ResourceName, ResourceSpec,
/// };
///
/// let def = ResourceDefinition::new(
///     ResourceName::new("postal-us").unwrap(),
///     ResourceSpec::Database(DatabaseSpec {
///         category: DatabaseCategory::Postal,
///         location: DataLocation::local("/opt/data/postal-us"),
///     }),
/// );
/// let bytes = def.to_json_bytes().unwrap();
/// assert_eq!(ResourceDefinition::from_json_bytes(&bytes).unwrap(), def);
///
/// let err = ResourceDefinition::from_json_bytes(br#"{"name":"x","spec":{"kind":"teleporter"}}"#)
///     .unwrap_err();
/// assert_eq!(err.field(), "spec.kind");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Value")]
pub struct ResourceDefinition {
    /// The resource's name, unique within a cluster.
    pub name: ResourceName,
    /// What the resource is for, for people (at most [`MAX_VALUE_LEN`] bytes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Which kind of resource it is and how to reach it.
    pub spec: ResourceSpec,
}

impl ResourceDefinition {
    /// A definition without a description.
    pub fn new(name: ResourceName, spec: ResourceSpec) -> Self {
        Self { name, description: None, spec }
    }

    /// The same definition with a description.
    pub fn with_description(mut self, description: impl Into<String>) -> Self {
        self.description = Some(description.into());
        self
    }

    /// The kind of resource: `"database"`, `"jdbc"`, `"file_server"` or `"web_service"`.
    pub fn kind(&self) -> &'static str {
        self.spec.kind()
    }

    /// Checks every field.
    ///
    /// # Errors
    ///
    /// The first [`DefinitionError`] found, naming its field (`"spec.url"`, …).
    pub fn validate(&self) -> Result<(), DefinitionError> {
        if let Some(description) = &self.description {
            check_text("description", description, true)?;
        }
        self.spec.validate().map_err(|e| e.prefixed("spec"))
    }

    /// Validates and encodes the definition as JSON, secrets included as they are held
    /// (store only [`sealed`](Self::sealed) definitions; see [`Secret`]).
    ///
    /// # Errors
    ///
    /// A [`DefinitionError`] when the definition is invalid or its encoding is larger
    /// than [`MAX_ENCODED_LEN`].
    pub fn to_json_bytes(&self) -> Result<Vec<u8>, DefinitionError> {
        self.validate()?;
        let bytes = serde_json::to_vec(self)
            .map_err(|e| DefinitionError::Malformed { field: ROOT.into(), reason: e.to_string() })?;
        check_encoded_len(bytes.len())?;
        Ok(bytes)
    }

    /// Decodes and validates a definition from JSON. Unknown fields are ignored (a
    /// newer node may have written them); unknown kinds are not.
    ///
    /// # Errors
    ///
    /// A [`DefinitionError`] naming the field: malformed JSON or oversized input
    /// (field `"definition"`), an unknown kind (`"spec.kind"`), a missing or invalid
    /// value.
    pub fn from_json_bytes(bytes: &[u8]) -> Result<Self, DefinitionError> {
        let result = check_encoded_len(bytes.len()).and_then(|()| {
            let value: Value = serde_json::from_slice(bytes)
                .map_err(|e| DefinitionError::Malformed { field: ROOT.into(), reason: e.to_string() })?;
            Self::try_from(value)
        });
        if let Err(err) = &result {
            tracing::debug!(field = err.field(), error = %err, "rejected resource definition");
        }
        result
    }
}

impl ResourceDefinition {
    /// Decodes and validates a definition a caller sends, as
    /// [`from_json_bytes`](Self::from_json_bytes) does, and also refuses any
    /// field this kind of resource does not have: read from the store an
    /// unknown field is a newer node's and is ignored, but from a caller it is
    /// a mistake (a misspelt `"pasword"` would otherwise be dropped, and the
    /// secret with it). A field given empty (`null`, `""`, `{}`, `[]`) says
    /// nothing and passes.
    ///
    /// # Errors
    ///
    /// As [`from_json_bytes`](Self::from_json_bytes); [`DefinitionError::Malformed`]
    /// naming the first unknown field (`spec.pasword`).
    pub fn from_caller_json_bytes(bytes: &[u8]) -> Result<Self, DefinitionError> {
        let definition = Self::from_json_bytes(bytes)?;
        let malformed = |reason: String| DefinitionError::Malformed { field: ROOT.into(), reason };
        let given: Value = serde_json::from_slice(bytes).map_err(|e| malformed(e.to_string()))?;
        let known = serde_json::to_value(&definition).map_err(|e| malformed(e.to_string()))?;
        match unknown_field(&given, &known, "") {
            Some(field) => Err(DefinitionError::Malformed {
                field,
                reason: format!(
                    "not a field of a {} resource (misspelt?); nothing was stored",
                    definition.kind()
                ),
            }),
            None => Ok(definition),
        }
    }
}

/// The dotted path (under `at`) of the first non-empty field of `given` that
/// `known`, the decoded definition encoded again, does not have.
fn unknown_field(given: &Value, known: &Value, at: &str) -> Option<String> {
    let (Value::Object(given), Value::Object(known)) = (given, known) else { return None };
    given.iter().find_map(|(name, value)| {
        let empty = match value {
            Value::Null => true,
            Value::String(s) => s.is_empty(),
            Value::Object(o) => o.is_empty(),
            Value::Array(a) => a.is_empty(),
            Value::Bool(_) | Value::Number(_) => false,
        };
        let path = if at.is_empty() { name.clone() } else { format!("{at}.{name}") };
        match known.get(name) {
            None if !empty => Some(path),
            None => None,
            Some(inner) => unknown_field(value, inner, &path),
        }
    })
}

impl fmt::Display for ResourceDefinition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name, self.spec.kind())
    }
}

impl TryFrom<Value> for ResourceDefinition {
    type Error = DefinitionError;
    fn try_from(value: Value) -> Result<Self, Self::Error> {
        let mut obj = Object::new(value)?;
        let name: String = obj.required("name")?;
        let name = ResourceName::new(name)?;
        let description: Option<String> = obj.optional("description")?;
        if let Some(description) = &description {
            check_text("description", description, true)?;
        }
        let spec = ResourceSpec::try_from(obj.required_value("spec")?).map_err(|e| e.prefixed("spec"))?;
        Ok(Self { name, description, spec })
    }
}

/// Which kind of resource a definition describes, and how to reach it.
///
/// Encoded as a JSON object tagged by `"kind"`: `database`, `jdbc`, `file_server`,
/// `web_service`. More kinds may come, hence `#[non_exhaustive]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", try_from = "Value")]
#[non_exhaustive]
pub enum ResourceSpec {
    /// A database (postal, geocoding, spatial, custom) installed on each node or at a
    /// shared location.
    Database(DatabaseSpec),
    /// A JDBC connection.
    Jdbc(JdbcSpec),
    /// A file server (local, FTP, SFTP, SMB, HTTP).
    FileServer(FileServerSpec),
    /// A web service.
    WebService(WebServiceSpec),
}

impl ResourceSpec {
    /// The kind tag: `"database"`, `"jdbc"`, `"file_server"` or `"web_service"`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Database(_) => "database",
            Self::Jdbc(_) => "jdbc",
            Self::FileServer(_) => "file_server",
            Self::WebService(_) => "web_service",
        }
    }

    /// Checks every field; errors name fields relative to the spec (`"url"`).
    ///
    /// # Errors
    ///
    /// The first [`DefinitionError`] found.
    pub fn validate(&self) -> Result<(), DefinitionError> {
        match self {
            Self::Database(s) => s.validate(),
            Self::Jdbc(s) => s.validate(),
            Self::FileServer(s) => s.validate(),
            Self::WebService(s) => s.validate(),
        }
    }

    /// The secret fields of this spec, by field name.
    pub(crate) fn secrets(&self) -> impl Iterator<Item = (&'static str, Option<&Secret>)> {
        let password = match self {
            Self::Database(_) => None,
            Self::Jdbc(s) => Some(s.password.as_ref()),
            Self::FileServer(s) => Some(s.password.as_ref()),
            Self::WebService(s) => Some(s.password.as_ref()),
        };
        password.map(|p| ("password", p)).into_iter()
    }

    /// Where and as whom this spec's secret is presented: the fields that, once
    /// changed, make a stored secret one meant for somewhere or someone else
    /// (a JDBC or web service `url` and `user`; a file server's `protocol`,
    /// `host`, `port` and `user`). Empty for a kind without a secret.
    pub(crate) fn secret_audience(&self) -> Vec<(&'static str, String)> {
        let user = |u: &Option<String>| ("user", u.clone().unwrap_or_default());
        match self {
            Self::Database(_) => Vec::new(),
            Self::Jdbc(s) => vec![("url", s.url.clone()), user(&s.user)],
            Self::WebService(s) => vec![("url", s.url.clone()), user(&s.user)],
            Self::FileServer(s) => vec![
                ("protocol", s.protocol.to_string()),
                ("host", s.host.clone()),
                ("port", s.port.map(|p| p.to_string()).unwrap_or_default()),
                user(&s.user),
            ],
        }
    }

    /// The secret fields of this spec, by field name, for replacing.
    pub(crate) fn secrets_mut(&mut self) -> impl Iterator<Item = (&'static str, &mut Option<Secret>)> {
        let password = match self {
            Self::Database(_) => None,
            Self::Jdbc(s) => Some(&mut s.password),
            Self::FileServer(s) => Some(&mut s.password),
            Self::WebService(s) => Some(&mut s.password),
        };
        password.map(|p| ("password", p)).into_iter()
    }
}

impl TryFrom<Value> for ResourceSpec {
    type Error = DefinitionError;
    fn try_from(value: Value) -> Result<Self, Self::Error> {
        let mut obj = Object::new(value)?;
        let kind = obj.kind()?;
        let spec = match kind.as_str() {
            "database" => Self::Database(DatabaseSpec::decode(&mut obj)?),
            "jdbc" => Self::Jdbc(JdbcSpec::decode(&mut obj)?),
            "file_server" => Self::FileServer(FileServerSpec::decode(&mut obj)?),
            "web_service" => Self::WebService(WebServiceSpec::decode(&mut obj)?),
            other => return Err(unknown_kind(other, SPEC_KINDS)),
        };
        spec.validate()?;
        Ok(spec)
    }
}

fn check_encoded_len(len: usize) -> Result<(), DefinitionError> {
    if len > MAX_ENCODED_LEN {
        return Err(DefinitionError::TooLarge { field: ROOT.into(), len, max: MAX_ENCODED_LEN });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use spectrum_core::NodeId;

    use super::*;

    fn name(s: &str) -> ResourceName {
        ResourceName::new(s).unwrap()
    }

    fn jdbc_with_password() -> ResourceDefinition {
        ResourceDefinition::new(
            name("orders"),
            ResourceSpec::Jdbc(JdbcSpec {
                user: Some("app".into()),
                password: Some(Secret::new("correct-horse")),
                ..JdbcSpec::new("jdbc:postgresql://db:5432/orders", "org.postgresql.Driver")
            }),
        )
    }

    #[test]
    fn a_callers_definition_with_a_field_its_kind_lacks_is_refused_naming_it() {
        let jdbc = |extra: &str| {
            format!(
                r#"{{"name":"orders","spec":{{"kind":"jdbc","url":"jdbc:postgresql://db:5432/orders","driver":"org.postgresql.Driver","user":"app"{extra}}}}}"#
            )
        };
        let misspelt = ResourceDefinition::from_caller_json_bytes(jdbc(r#","pasword":"s3cret""#).as_bytes())
            .unwrap_err();
        assert_eq!(misspelt.field(), "spec.pasword", "{misspelt}");
        assert!(misspelt.to_string().contains("not a field of a jdbc resource"), "{misspelt}");
        assert!(!misspelt.to_string().contains("s3cret"), "{misspelt}");
        // The store's reader ignores it (a newer node may have written it).
        assert!(ResourceDefinition::from_json_bytes(jdbc(r#","pasword":"s3cret""#).as_bytes()).is_ok());
        let top = format!(r#"{{"bogus":1,{}"#, &jdbc("")[1..]);
        assert_eq!(ResourceDefinition::from_caller_json_bytes(top.as_bytes()).unwrap_err().field(), "bogus");
        let fine = ResourceDefinition::from_caller_json_bytes(
            jdbc(r#","password":"s3cret","note":null"#).as_bytes(),
        );
        assert!(fine.is_ok(), "{fine:?}");
        let postal = r#"{"name":"p","spec":{"kind":"database","category":"postal","location":{"kind":"local","path":"/data/p","pth":"x"}}}"#;
        let nested = ResourceDefinition::from_caller_json_bytes(postal.as_bytes()).unwrap_err();
        assert_eq!(nested.field(), "spec.location.pth", "{nested}");
        let postal = postal.replace(r#","pth":"x""#, "");
        assert!(ResourceDefinition::from_caller_json_bytes(postal.as_bytes()).is_ok());
    }

    #[test]
    fn the_wire_form_is_tagged_by_kind_and_round_trips() {
        let mut overrides = BTreeMap::new();
        overrides.insert(NodeId::new("n2").unwrap(), PathBuf::from("/mnt/geo"));
        let def = ResourceDefinition::new(
            name("geo"),
            ResourceSpec::Database(DatabaseSpec {
                category: DatabaseCategory::Custom("elevation".into()),
                location: DataLocation::Local { path: "/data/geo".into(), overrides },
            }),
        )
        .with_description("elevation grid");
        let bytes = def.to_json_bytes().unwrap();
        let json: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(json["spec"]["kind"], "database");
        assert_eq!(json["spec"]["category"], "elevation");
        assert_eq!(json["spec"]["location"]["kind"], "local");
        assert_eq!(json["spec"]["location"]["overrides"]["n2"], "/mnt/geo");
        assert_eq!(ResourceDefinition::from_json_bytes(&bytes).unwrap(), def);
        assert_eq!(serde_json::from_slice::<ResourceDefinition>(&bytes).unwrap(), def);
    }

    #[test]
    fn the_stored_form_keeps_the_secret_and_the_redacted_form_does_not() {
        let def = jdbc_with_password();
        let stored = String::from_utf8(def.to_json_bytes().unwrap()).unwrap();
        assert!(stored.contains("correct-horse"));
        let shown = String::from_utf8(def.redacted().to_json_bytes().unwrap()).unwrap();
        assert!(!shown.contains("correct-horse"));
        assert!(shown.contains("\"password\":\"***\""));
        assert!(def.redacted().has_redacted_secret());
        assert!(!def.has_redacted_secret());
    }

    #[test]
    fn debug_and_display_of_a_definition_never_show_the_secret() {
        let def = jdbc_with_password();
        for text in [format!("{def:?}"), format!("{def:#?}"), def.to_string(), format!("{:?}", def.spec)] {
            assert!(!text.contains("correct-horse"), "{text}");
        }
        assert_eq!(def.to_string(), "orders (jdbc)");
    }

    #[test]
    fn unknown_fields_are_ignored_for_rolling_upgrades() {
        let json =
            br#"{"name":"w","future":1,"spec":{"kind":"web_service","url":"http://a","new_field":true}}"#;
        let def = ResourceDefinition::from_json_bytes(json).unwrap();
        let ResourceSpec::WebService(web) = def.spec else { panic!("wrong kind") };
        assert_eq!(web.timeout_ms, DEFAULT_TIMEOUT_MS);
    }
}
