//! Resource definitions: what a cluster's configuration database says about each
//! external resource, typed and validated.
//!
//! A [`ResourceDefinition`] is a [`ResourceName`], an optional description and a
//! [`ResourceSpec`] saying which kind of resource it is and how to reach it. Its wire
//! form is JSON (see [`ResourceDefinition::to_json_bytes`]); the caller stores the
//! bytes. Decoding validates, so an invalid definition never gets past
//! [`ResourceDefinition::from_json_bytes`], and every error names its field.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use spectrum_core::{NodeId, check_identifier};

use crate::cluster_key::ClusterKey;
use crate::decode::{Object, unknown_kind};
use crate::error::{DefinitionError, ROOT, SecretError};
use crate::jdbc::{InvalidUrl, JdbcUrl};
use crate::name::ResourceName;
use crate::net;
use crate::secret::Secret;

/// Longest string accepted in any field (URLs, paths, users, secrets, …), in bytes.
pub const MAX_VALUE_LEN: usize = 4 * 1024;
/// Longest sealed secret text accepted, in bytes: room for a sealed secret of
/// [`MAX_VALUE_LEN`] bytes.
pub const MAX_SEALED_LEN: usize = 2 * MAX_VALUE_LEN;
/// Largest encoded definition accepted, in bytes.
pub const MAX_ENCODED_LEN: usize = 64 * 1024;
/// The web service timeout used when a definition gives none, in milliseconds.
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;
/// The longest web service timeout accepted, in milliseconds (one hour).
pub const MAX_TIMEOUT_MS: u64 = 3_600_000;

const SPEC_KINDS: &str = "database, jdbc, file_server, web_service";
const LOCATION_KINDS: &str = "local, shared";

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

    /// A copy with every secret replaced by [`Secret::REDACTED`]: the form to return
    /// from an API, print, or export without secrets.
    pub fn redacted(&self) -> Self {
        let mut copy = self.clone();
        for (_, slot) in copy.spec.secrets_mut() {
            if slot.is_some() {
                *slot = Some(Secret::redacted());
            }
        }
        copy
    }

    /// A copy with every clear secret sealed with `key` (the form to store). Sealed
    /// secrets stay as they are.
    ///
    /// # Errors
    ///
    /// [`SecretError::Field`] naming the secret (`"spec.password"`) when one is the
    /// redaction placeholder.
    pub fn sealed(&self, key: &ClusterKey) -> Result<Self, SecretError> {
        self.map_secrets(|s| s.sealed(key))
    }

    /// A copy with every sealed secret opened with `key` (the form a resource that
    /// needs its secret uses, on a node).
    ///
    /// # Errors
    ///
    /// [`SecretError::Field`] naming the secret when it was sealed with another key,
    /// altered, or is malformed.
    pub fn opened(&self, key: &ClusterKey) -> Result<Self, SecretError> {
        self.map_secrets(|s| s.opened(key))
    }

    /// A copy with every secret opened with `key`, or, without a key, this definition
    /// when it holds no sealed secret.
    ///
    /// # Errors
    ///
    /// [`SecretError::Field`] with [`SecretError::NoKey`] when a secret is sealed and
    /// `key` is `None`; otherwise as [`opened`](Self::opened).
    pub fn opened_with(&self, key: Option<&ClusterKey>) -> Result<Self, SecretError> {
        match key {
            Some(key) => self.opened(key),
            None => self.map_secrets(|s| if s.is_sealed() { Err(SecretError::NoKey) } else { Ok(s.clone()) }),
        }
    }

    /// Whether any secret is sealed with a cluster key.
    pub fn has_sealed_secret(&self) -> bool {
        self.spec.secrets().any(|(_, s)| s.is_some_and(Secret::is_sealed))
    }

    /// Whether any secret is held in clear (and is not the redaction placeholder).
    pub fn has_clear_secret(&self) -> bool {
        self.spec.secrets().any(|(_, s)| s.is_some_and(|s| !s.is_sealed() && !s.is_redacted()))
    }

    fn map_secrets(
        &self,
        mut f: impl FnMut(&Secret) -> Result<Secret, SecretError>,
    ) -> Result<Self, SecretError> {
        let mut copy = self.clone();
        for (field, slot) in copy.spec.secrets_mut() {
            if let Some(secret) = slot.as_ref() {
                let mapped = f(secret).map_err(|e| SecretError::Field {
                    field: format!("spec.{field}"),
                    source: Box::new(e),
                })?;
                *slot = Some(mapped);
            }
        }
        Ok(copy)
    }

    /// Whether any secret is the redaction placeholder (as in an export made without
    /// secrets).
    pub fn has_redacted_secret(&self) -> bool {
        self.spec.secrets().any(|(_, s)| s.is_some_and(Secret::is_redacted))
    }

    /// This definition with every secret given as the redaction placeholder
    /// ([`Secret::REDACTED`]) replaced by `existing`'s secret in the same field, and the
    /// list of those it could not replace.
    ///
    /// This is how an update or an import that sends back a redacted definition keeps
    /// the password it did not mean to change. A placeholder is replaced only when
    /// `existing` is of the same kind and holds a real secret (clear or sealed, kept as
    /// it is) in that field; otherwise it stays the placeholder and its field is listed
    /// in [`KeptSecrets::placeholders`]. Secrets that are not the placeholder, and every
    /// other field, are this definition's.
    ///
    /// ```
    /// use spectrum_resources::{JdbcSpec, ResourceDefinition, ResourceName, ResourceSpec, Secret};
    ///
    /// let jdbc = |password: &str| {
    ///     ResourceDefinition::new(
    ///         ResourceName::new("orders").unwrap(),
    ///         ResourceSpec::Jdbc(JdbcSpec {
    ///             password: Some(Secret::new(password)),
    ///             ..JdbcSpec::new("jdbc:postgresql://db/orders", "org.postgresql.Driver")
    ///         }),
    ///     )
    /// };
    /// let stored = jdbc("hunter2");
    /// // A client read the redacted form, and sends it back with another description.
    /// let update = stored.redacted().with_description("orders, moved");
    ///
    /// let kept = update.keep_secrets_from(&stored);
    /// assert!(kept.placeholders.is_empty());
    /// let def = kept.into_complete().unwrap();
    /// assert_eq!(def, stored.clone().with_description("orders, moved"));
    ///
    /// // With nothing to keep, the caller learns which secret is still missing.
    /// let err = update.keep_secrets_from(&stored.redacted()).into_complete().unwrap_err();
    /// assert!(err.to_string().starts_with("spec.password: "));
    /// ```
    pub fn keep_secrets_from(&self, existing: &ResourceDefinition) -> KeptSecrets {
        self.keep_secrets(Some(existing))
    }

    /// [`keep_secrets_from`](Self::keep_secrets_from), with `None` for a definition
    /// that has nothing to keep secrets from (every placeholder stays).
    pub(crate) fn keep_secrets(&self, existing: Option<&ResourceDefinition>) -> KeptSecrets {
        let mut definition = self.clone();
        let mut placeholders = Vec::new();
        let same_kind = existing.filter(|old| old.kind() == self.kind());
        for (field, slot) in definition.spec.secrets_mut() {
            if !slot.as_ref().is_some_and(Secret::is_redacted) {
                continue;
            }
            let kept = same_kind.and_then(|old| {
                old.spec
                    .secrets()
                    .find(|(f, _)| *f == field)
                    .and_then(|(_, s)| s.cloned())
                    .filter(|s| !s.is_redacted())
            });
            match kept {
                Some(secret) => *slot = Some(secret),
                None => placeholders.push(format!("spec.{field}")),
            }
        }
        KeptSecrets { definition, placeholders }
    }
}

/// What [`ResourceDefinition::keep_secrets_from`] made of a definition: the definition
/// with the existing secrets kept, and the secrets that are still the redaction
/// placeholder.
///
/// `Debug` never shows a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptSecrets {
    /// The definition, each placeholder that could be filled replaced by the existing
    /// secret. Those that could not are still [`Secret::REDACTED`]: such a definition
    /// cannot be [`sealed`](ResourceDefinition::sealed) for storing until they are set
    /// or unset.
    pub definition: ResourceDefinition,
    /// The dotted paths (`"spec.password"`) of the secrets still the placeholder, in
    /// field order: the existing definition is of another kind, or has no real secret
    /// in that field. Empty when every placeholder was filled.
    pub placeholders: Vec<String>,
}

impl KeptSecrets {
    /// Whether no secret is still the placeholder.
    pub fn is_complete(&self) -> bool {
        self.placeholders.is_empty()
    }

    /// The definition, when no secret is still the placeholder: the form to store for
    /// an update.
    ///
    /// # Errors
    ///
    /// [`SecretError::Field`] naming the first secret still the placeholder
    /// (`"spec.password"`), with [`SecretError::Placeholder`] as its source.
    pub fn into_complete(self) -> Result<ResourceDefinition, SecretError> {
        match self.placeholders.into_iter().next() {
            None => Ok(self.definition),
            Some(field) => Err(SecretError::Field { field, source: Box::new(SecretError::Placeholder) }),
        }
    }

    /// The definition with every secret still the placeholder unset: the form an
    /// import stores, for the operator to set the secret afterwards.
    pub fn without_placeholders(self) -> ResourceDefinition {
        let mut definition = self.definition;
        for (_, slot) in definition.spec.secrets_mut() {
            if slot.as_ref().is_some_and(Secret::is_redacted) {
                *slot = None;
            }
        }
        definition
    }
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

    fn decode(obj: &mut Object) -> Result<Self, DefinitionError> {
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
    fn from(name: String) -> Self {
        match name.as_str() {
            "postal" => Self::Postal,
            "geocoding" => Self::Geocoding,
            "spatial" => Self::Spatial,
            _ => Self::Custom(name),
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

/// Where a database's data lives. Encoded as a JSON object tagged by `"kind"`
/// (`local`, `shared`); further kinds (a URL, an object store) can be added.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", try_from = "Value")]
#[non_exhaustive]
pub enum DataLocation {
    /// Installed on every node: the same absolute `path` on all of them, except on the
    /// nodes named in `overrides`.
    Local {
        /// The absolute path on every node without an override.
        path: PathBuf,
        /// Per-node absolute paths that replace `path` on those nodes.
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        overrides: BTreeMap<NodeId, PathBuf>,
    },
    /// On a network share that every node reaches at the same absolute path (a
    /// mounted NFS or SMB share, for instance).
    Shared {
        /// The absolute path of the share's data on every node.
        path: PathBuf,
    },
}

impl DataLocation {
    /// Installed at the same path on every node, without overrides.
    pub fn local(path: impl Into<PathBuf>) -> Self {
        Self::Local { path: path.into(), overrides: BTreeMap::new() }
    }

    /// On a network share mounted at `path` on every node.
    pub fn shared(path: impl Into<PathBuf>) -> Self {
        Self::Shared { path: path.into() }
    }

    /// The kind tag: `"local"` or `"shared"`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Local { .. } => "local",
            Self::Shared { .. } => "shared",
        }
    }

    /// The path the data has on `node`: its override if it has one, else the
    /// common path.
    pub fn path_for(&self, node: &NodeId) -> &Path {
        match self {
            Self::Local { path, overrides } => overrides.get(node).unwrap_or(path),
            Self::Shared { path } => path,
        }
    }

    /// Checks every field; errors name fields relative to the location.
    ///
    /// # Errors
    ///
    /// The first [`DefinitionError`] found.
    pub fn validate(&self) -> Result<(), DefinitionError> {
        match self {
            Self::Local { path, overrides } => {
                check_path("path", path)?;
                for (node, path) in overrides {
                    check_path(&format!("overrides.{node}"), path)?;
                }
                Ok(())
            }
            Self::Shared { path } => check_path("path", path),
        }
    }
}

impl TryFrom<Value> for DataLocation {
    type Error = DefinitionError;
    fn try_from(value: Value) -> Result<Self, Self::Error> {
        let mut obj = Object::new(value)?;
        let kind = obj.kind()?;
        let location = match kind.as_str() {
            "local" => {
                let path = obj.required("path")?;
                let mut overrides = BTreeMap::new();
                for (node, path) in obj.optional::<Map<String, Value>>("overrides")?.unwrap_or_default() {
                    let field = format!("overrides.{}", cut(&node, 64));
                    let node =
                        NodeId::new(&node).map_err(|e| DefinitionError::invalid(&field, e.to_string()))?;
                    let path: PathBuf = serde_json::from_value(path)
                        .map_err(|e| DefinitionError::Malformed { field, reason: e.to_string() })?;
                    overrides.insert(node, path);
                }
                Self::Local { path, overrides }
            }
            "shared" => Self::Shared { path: obj.required("path")? },
            other => return Err(unknown_kind(other, LOCATION_KINDS)),
        };
        location.validate()?;
        Ok(location)
    }
}

/// A JDBC connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Value")]
pub struct JdbcSpec {
    /// The `jdbc:` URL (see [`JdbcUrl`] for the accepted forms); it must not hold
    /// credentials.
    pub url: String,
    /// The driver's Java class name (`org.postgresql.Driver`).
    pub driver: String,
    /// The user to connect as.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
}

impl JdbcSpec {
    /// A connection without credentials.
    pub fn new(url: impl Into<String>, driver: impl Into<String>) -> Self {
        Self { url: url.into(), driver: driver.into(), user: None, password: None }
    }

    /// The URL parsed into its parts.
    ///
    /// # Errors
    ///
    /// [`InvalidUrl`] when the URL is malformed.
    pub fn parsed_url(&self) -> Result<JdbcUrl, InvalidUrl> {
        JdbcUrl::parse(&self.url)
    }

    /// The host and port to connect to: the URL's port or the subprotocol's usual one.
    ///
    /// # Errors
    ///
    /// [`DefinitionError`] for field `url` when it is malformed or names no port for a
    /// subprotocol without a known usual one.
    pub fn endpoint(&self) -> Result<Endpoint, DefinitionError> {
        let url = self.parsed_url().map_err(|e| DefinitionError::invalid("url", e.reason))?;
        let port = url.effective_port().ok_or_else(|| {
            DefinitionError::invalid(
                "url",
                format!("no port given, and subprotocol {:?} has no known usual port", url.subprotocol),
            )
        })?;
        Ok(Endpoint { host: url.host, port })
    }

    /// Checks every field; errors name fields relative to the spec.
    ///
    /// # Errors
    ///
    /// The first [`DefinitionError`] found.
    pub fn validate(&self) -> Result<(), DefinitionError> {
        check_text("url", &self.url, false)?;
        self.endpoint()?;
        check_text("driver", &self.driver, false)?;
        if let Some(ch) =
            self.driver.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '$')))
        {
            return Err(DefinitionError::invalid(
                "driver",
                format!("holds {ch:?}; expected a Java class name such as org.postgresql.Driver"),
            ));
        }
        check_credentials(self.user.as_deref(), self.password.as_ref())
    }

    fn decode(obj: &mut Object) -> Result<Self, DefinitionError> {
        Ok(Self {
            url: obj.required("url")?,
            driver: obj.required("driver")?,
            user: obj.optional("user")?,
            password: obj.optional_secret("password")?,
        })
    }
}
decode_via_value!(JdbcSpec);

/// How a file server is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FileProtocol {
    /// A directory on each node (no host, no port).
    Local,
    /// FTP.
    Ftp,
    /// SFTP (SSH).
    Sftp,
    /// SMB (Windows file sharing).
    Smb,
    /// HTTP.
    Http,
    /// HTTPS.
    Https,
}

impl FileProtocol {
    /// The protocol's usual port (`None` for [`FileProtocol::Local`]).
    pub fn default_port(self) -> Option<u16> {
        match self {
            Self::Local => None,
            Self::Ftp => Some(21),
            Self::Sftp => Some(22),
            Self::Smb => Some(445),
            Self::Http => Some(80),
            Self::Https => Some(443),
        }
    }

    /// The protocol's name as encoded.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Ftp => "ftp",
            Self::Sftp => "sftp",
            Self::Smb => "smb",
            Self::Http => "http",
            Self::Https => "https",
        }
    }
}

impl fmt::Display for FileProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A file server.
///
/// A [`FileProtocol::Local`] server has no host or port and an absolute `root` path
/// on each node; the others need a host, and use the protocol's usual port unless one
/// is given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Value")]
pub struct FileServerSpec {
    /// How the server is reached.
    pub protocol: FileProtocol,
    /// The server's host (empty for a local server).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub host: String,
    /// The server's port, when not the protocol's usual one: 1 to 65535.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The root directory (or share) on the server; an absolute path for a local one.
    pub root: String,
    /// The user to connect as.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
}

impl FileServerSpec {
    /// A local file server rooted at an absolute path on each node.
    pub fn local(root: impl Into<String>) -> Self {
        Self {
            protocol: FileProtocol::Local,
            host: String::new(),
            port: None,
            root: root.into(),
            user: None,
            password: None,
        }
    }

    /// A remote file server on the protocol's usual port, without credentials.
    pub fn remote(protocol: FileProtocol, host: impl Into<String>, root: impl Into<String>) -> Self {
        Self { protocol, host: host.into(), port: None, root: root.into(), user: None, password: None }
    }

    /// The host and port to connect to (`None` for a local server).
    pub fn endpoint(&self) -> Option<Endpoint> {
        let port = self.port.or(self.protocol.default_port())?;
        Some(Endpoint { host: self.host.clone(), port })
    }

    /// Checks every field; errors name fields relative to the spec.
    ///
    /// # Errors
    ///
    /// The first [`DefinitionError`] found.
    pub fn validate(&self) -> Result<(), DefinitionError> {
        if self.protocol == FileProtocol::Local {
            if !self.host.is_empty() {
                return Err(DefinitionError::invalid("host", "a local file server has no host"));
            }
            if self.port.is_some() {
                return Err(DefinitionError::invalid("port", "a local file server has no port"));
            }
            check_path("root", Path::new(&self.root))?;
        } else {
            check_text("host", &self.host, false)?;
            net::validate_host(&self.host).map_err(|r| DefinitionError::invalid("host", r))?;
            if self.port == Some(0) {
                return Err(DefinitionError::invalid("port", "port 0 is out of range 1-65535"));
            }
            check_text("root", &self.root, false)?;
        }
        check_credentials(self.user.as_deref(), self.password.as_ref())
    }

    fn decode(obj: &mut Object) -> Result<Self, DefinitionError> {
        let port = obj
            .optional::<u64>("port")?
            .map(|p| net::check_port(p).map_err(|r| DefinitionError::invalid("port", r)))
            .transpose()?;
        Ok(Self {
            protocol: obj.required("protocol")?,
            host: obj.optional("host")?.unwrap_or_default(),
            port,
            root: obj.required("root")?,
            user: obj.optional("user")?,
            password: obj.optional_secret("password")?,
        })
    }
}
decode_via_value!(FileServerSpec);

/// A web service reached over HTTP or HTTPS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Value")]
pub struct WebServiceSpec {
    /// The service's `http://` or `https://` URL; it must not hold credentials.
    pub url: String,
    /// How long a call may take, in milliseconds: 1 to [`MAX_TIMEOUT_MS`]
    /// ([`DEFAULT_TIMEOUT_MS`] when not given).
    pub timeout_ms: u64,
    /// The user to authenticate as.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The password (or key).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
}

impl WebServiceSpec {
    /// A web service with the default timeout, without credentials.
    pub fn new(url: impl Into<String>) -> Self {
        Self { url: url.into(), timeout_ms: DEFAULT_TIMEOUT_MS, user: None, password: None }
    }

    /// The host and port to connect to: the URL's port or the scheme's usual one.
    ///
    /// # Errors
    ///
    /// [`DefinitionError`] for field `url` when it is malformed.
    pub fn endpoint(&self) -> Result<Endpoint, DefinitionError> {
        let url = net::parse_http_url(&self.url).map_err(|r| DefinitionError::invalid("url", r))?;
        Ok(Endpoint { host: url.host, port: url.port })
    }

    /// Checks every field; errors name fields relative to the spec.
    ///
    /// # Errors
    ///
    /// The first [`DefinitionError`] found.
    pub fn validate(&self) -> Result<(), DefinitionError> {
        check_text("url", &self.url, false)?;
        self.endpoint()?;
        if self.timeout_ms == 0 || self.timeout_ms > MAX_TIMEOUT_MS {
            return Err(DefinitionError::invalid(
                "timeout_ms",
                format!("{} is out of range 1-{MAX_TIMEOUT_MS}", self.timeout_ms),
            ));
        }
        check_credentials(self.user.as_deref(), self.password.as_ref())
    }

    fn decode(obj: &mut Object) -> Result<Self, DefinitionError> {
        Ok(Self {
            url: obj.required("url")?,
            timeout_ms: obj.optional("timeout_ms")?.unwrap_or(DEFAULT_TIMEOUT_MS),
            user: obj.optional("user")?,
            password: obj.optional_secret("password")?,
        })
    }
}
decode_via_value!(WebServiceSpec);

/// A host and port to connect to, without credentials.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Endpoint {
    /// The host name or IP address (IPv6 without brackets).
    pub host: String,
    /// The port.
    pub port: u16,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

fn check_encoded_len(len: usize) -> Result<(), DefinitionError> {
    if len > MAX_ENCODED_LEN {
        return Err(DefinitionError::TooLarge { field: ROOT.into(), len, max: MAX_ENCODED_LEN });
    }
    Ok(())
}

/// Checks a string: not empty, at most [`MAX_VALUE_LEN`] bytes, and no control
/// characters (line breaks and tabs allowed when `multiline`).
fn check_text(field: &str, value: &str, multiline: bool) -> Result<(), DefinitionError> {
    if value.trim().is_empty() {
        return Err(DefinitionError::missing(field));
    }
    if value.len() > MAX_VALUE_LEN {
        return Err(DefinitionError::TooLarge { field: field.into(), len: value.len(), max: MAX_VALUE_LEN });
    }
    let allowed = |c: char| multiline && matches!(c, '\n' | '\r' | '\t');
    if let Some(ch) = value.chars().find(|&c| c.is_control() && !allowed(c)) {
        return Err(DefinitionError::invalid(field, format!("holds the control character {ch:?}")));
    }
    Ok(())
}

fn check_path(field: &str, path: &Path) -> Result<(), DefinitionError> {
    let text = path.to_str().ok_or_else(|| DefinitionError::invalid(field, "is not valid UTF-8"))?;
    check_text(field, text, false)?;
    if !path.is_absolute() {
        return Err(DefinitionError::invalid(field, format!("{text:?} is not an absolute path")));
    }
    Ok(())
}

fn check_credentials(user: Option<&str>, password: Option<&Secret>) -> Result<(), DefinitionError> {
    if let Some(user) = user {
        check_text("user", user, false)?;
    }
    if let Some(password) = password {
        if password.is_empty() {
            return Err(DefinitionError::invalid("password", "is empty; leave the field out instead"));
        }
        let max = if password.is_sealed() { MAX_SEALED_LEN } else { MAX_VALUE_LEN };
        if password.len() > max {
            return Err(DefinitionError::TooLarge { field: "password".into(), len: password.len(), max });
        }
    }
    Ok(())
}

fn cut(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
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

    fn web_with_password() -> ResourceDefinition {
        ResourceDefinition::new(
            name("orders"),
            ResourceSpec::WebService(WebServiceSpec {
                password: Some(Secret::new("web-secret")),
                ..WebServiceSpec::new("https://api.example/orders")
            }),
        )
    }

    #[test]
    fn a_placeholder_takes_the_existing_secret_of_the_same_kind() {
        let existing = jdbc_with_password();
        let update = existing.redacted().with_description("moved");
        let kept = update.keep_secrets_from(&existing);
        assert!(kept.is_complete());
        assert_eq!(kept.definition, existing.clone().with_description("moved"));
        assert_eq!(kept.into_complete().unwrap(), existing.with_description("moved"));
    }

    #[test]
    fn a_sealed_existing_secret_is_kept_sealed() {
        let key = ClusterKey::generate();
        let existing = jdbc_with_password().sealed(&key).unwrap();
        let kept = jdbc_with_password().redacted().keep_secrets_from(&existing);
        assert!(kept.is_complete());
        assert!(kept.definition.has_sealed_secret());
        assert_eq!(kept.definition.opened(&key).unwrap(), jdbc_with_password());
    }

    #[test]
    fn a_real_secret_in_the_update_replaces_the_existing_one() {
        let mut update = jdbc_with_password();
        let ResourceSpec::Jdbc(spec) = &mut update.spec else { unreachable!() };
        spec.password = Some(Secret::new("new-password"));
        let kept = update.keep_secrets_from(&jdbc_with_password());
        assert!(kept.is_complete());
        assert_eq!(kept.definition, update);
    }

    #[test]
    fn a_placeholder_is_not_filled_from_another_kind_and_is_reported() {
        let kept = jdbc_with_password().redacted().keep_secrets_from(&web_with_password());
        assert_eq!(kept.placeholders, ["spec.password"]);
        assert!(!kept.is_complete());
        assert!(kept.definition.has_redacted_secret(), "left as the placeholder");
        let err = kept.clone().into_complete().unwrap_err();
        assert!(
            matches!(&err, SecretError::Field { field, source }
                if field == "spec.password" && **source == SecretError::Placeholder),
            "{err:?}"
        );
        let ResourceSpec::Jdbc(spec) = kept.without_placeholders().spec else { panic!("kind") };
        assert_eq!(spec.password, None);
    }

    #[test]
    fn a_placeholder_is_not_filled_from_a_missing_or_redacted_secret() {
        let mut without = jdbc_with_password();
        let ResourceSpec::Jdbc(spec) = &mut without.spec else { unreachable!() };
        spec.password = None;
        let update = jdbc_with_password().redacted();
        for existing in [without, jdbc_with_password().redacted()] {
            let kept = update.keep_secrets_from(&existing);
            assert_eq!(kept.placeholders, ["spec.password"], "{existing:?}");
        }
    }

    #[test]
    fn a_definition_without_placeholders_is_kept_as_it_is() {
        let def = ResourceDefinition::new(
            name("geo"),
            ResourceSpec::Database(DatabaseSpec {
                category: DatabaseCategory::Postal,
                location: DataLocation::local("/data/geo"),
            }),
        );
        let kept = def.keep_secrets_from(&jdbc_with_password());
        assert!(kept.is_complete());
        assert_eq!(kept.clone().without_placeholders(), def);
        assert_eq!(kept.into_complete().unwrap(), def);
    }

    #[test]
    fn the_path_for_a_node_is_its_override_or_the_common_path() {
        let n1 = NodeId::new("n1").unwrap();
        let n2 = NodeId::new("n2").unwrap();
        let mut overrides = BTreeMap::new();
        overrides.insert(n2.clone(), PathBuf::from("/other"));
        let location = DataLocation::Local { path: "/common".into(), overrides };
        assert_eq!(location.path_for(&n1), Path::new("/common"));
        assert_eq!(location.path_for(&n2), Path::new("/other"));
        assert_eq!(DataLocation::shared("/mnt/share").path_for(&n2), Path::new("/mnt/share"));
    }

    #[test]
    fn endpoints_use_the_given_port_or_the_usual_one() {
        let ftp = FileServerSpec::remote(FileProtocol::Ftp, "files", "/pub");
        assert_eq!(ftp.endpoint(), Some(Endpoint { host: "files".into(), port: 21 }));
        assert_eq!(FileServerSpec::local("/srv").endpoint(), None);
        let web = WebServiceSpec::new("https://[::1]/api");
        assert_eq!(web.endpoint().unwrap().to_string(), "[::1]:443");
    }

    #[test]
    fn unknown_fields_are_ignored_for_rolling_upgrades() {
        let json =
            br#"{"name":"w","future":1,"spec":{"kind":"web_service","url":"http://a","new_field":true}}"#;
        let def = ResourceDefinition::from_json_bytes(json).unwrap();
        let ResourceSpec::WebService(web) = def.spec else { panic!("wrong kind") };
        assert_eq!(web.timeout_ms, DEFAULT_TIMEOUT_MS);
    }

    #[test]
    fn a_custom_category_cannot_take_a_built_in_name() {
        let err = DatabaseCategory::Custom("postal".into()).validate().unwrap_err();
        assert_eq!(err.field(), "category");
        assert_eq!(DatabaseCategory::from("postal".to_owned()), DatabaseCategory::Postal);
    }
}
