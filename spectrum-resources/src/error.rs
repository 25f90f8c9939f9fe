//! The crate's errors: [`DefinitionError`] for bad definitions, [`ResolveError`] for
//! definitions that cannot be used on a node, [`TransferError`] for export files,
//! [`SecretError`] for sealing and opening secrets with the cluster key.
//!
//! None of them ever holds a secret: they name fields, paths, hosts and ports.

use std::path::PathBuf;

use spectrum_core::IdentifierError;
use thiserror::Error;

/// The field name used for the definition as a whole (its encoding, its size).
pub(crate) const ROOT: &str = "definition";

/// A resource definition was rejected. Every variant names the offending field as a
/// dotted path (`"spec.url"`, `"spec.location.overrides.node-2"`), and nothing
/// built from a rejected definition is ever stored.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DefinitionError {
    /// A value is present but not acceptable (malformed URL, relative path, port
    /// out of range, …).
    #[error("{field}: {reason}")]
    Invalid {
        /// The dotted path of the field.
        field: String,
        /// Why the value was rejected.
        reason: String,
    },
    /// A required value is missing or empty.
    #[error("{field}: missing or empty")]
    Missing {
        /// The dotted path of the field.
        field: String,
    },
    /// A value (or the whole encoded definition, field `"definition"`) is too large.
    #[error("{field}: {len} bytes; at most {max} are allowed")]
    TooLarge {
        /// The dotted path of the field.
        field: String,
        /// The size found, in bytes.
        len: usize,
        /// The maximum size, in bytes.
        max: usize,
    },
    /// A `kind` tag names no known kind.
    #[error("{field}: unknown kind {kind:?}; expected one of {expected}")]
    UnknownKind {
        /// The dotted path of the tag (`"spec.kind"`, `"spec.location.kind"`).
        field: String,
        /// The kind found (cut to 64 bytes).
        kind: String,
        /// The kinds accepted, for the message.
        expected: &'static str,
    },
    /// The encoding is not what a definition looks like (not JSON, a number where a
    /// string belongs, …).
    #[error("{field}: malformed: {reason}")]
    Malformed {
        /// The dotted path of the field (`"definition"` for the whole document).
        field: String,
        /// What the decoder found wrong.
        reason: String,
    },
}

impl DefinitionError {
    /// The dotted path of the rejected field.
    pub fn field(&self) -> &str {
        match self {
            Self::Invalid { field, .. }
            | Self::Missing { field }
            | Self::TooLarge { field, .. }
            | Self::UnknownKind { field, .. }
            | Self::Malformed { field, .. } => field,
        }
    }

    /// The same error with its field placed under `prefix` (`"url"` under `"spec"`
    /// becomes `"spec.url"`; the root field becomes `prefix` itself).
    pub fn prefixed(mut self, prefix: &str) -> Self {
        let field = match &mut self {
            Self::Invalid { field, .. }
            | Self::Missing { field }
            | Self::TooLarge { field, .. }
            | Self::UnknownKind { field, .. }
            | Self::Malformed { field, .. } => field,
        };
        *field = if field == ROOT { prefix.to_owned() } else { format!("{prefix}.{field}") };
        self
    }

    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid { field: field.into(), reason: reason.into() }
    }

    pub(crate) fn missing(field: impl Into<String>) -> Self {
        Self::Missing { field: field.into() }
    }

    /// The error for a name that breaks the cluster's identifier rule
    /// ([`check_identifier`](spectrum_core::check_identifier)).
    pub(crate) fn identifier(field: &str, e: IdentifierError) -> Self {
        match e {
            IdentifierError::Empty => Self::missing(field),
            IdentifierError::TooLong { len, max } => Self::TooLarge { field: field.into(), len, max },
            other => Self::invalid(field, other.to_string()),
        }
    }
}

/// A definition could not be turned into something usable on a node.
///
/// Implementors of [`ResourceResolver`](crate::ResourceResolver) that fail in their own
/// way return [`ResolveError::Failed`] with their error as the source.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// The resolver does not handle this kind of resource.
    #[error("no resolver handles resources of kind {kind:?}")]
    Unsupported {
        /// The definition's kind (`"database"`, `"jdbc"`, …).
        kind: String,
    },
    /// The path the definition resolves to does not exist on this node.
    #[error("{} does not exist", path.display())]
    NotFound {
        /// The path looked for.
        path: PathBuf,
    },
    /// The path exists but cannot be read on this node.
    #[error("{} cannot be read: {reason}", path.display())]
    NotReadable {
        /// The path.
        path: PathBuf,
        /// Why (permission denied, …).
        reason: String,
    },
    /// The host and port cannot be connected to from this node.
    #[error("{host}:{port} is unreachable: {reason}")]
    Unreachable {
        /// The host.
        host: String,
        /// The port.
        port: u16,
        /// Why (refused, timed out, no such host, …).
        reason: String,
    },
    /// A check took longer than allowed (a hung network mount, …).
    #[error("checking {target} timed out after {after_ms} ms")]
    TimedOut {
        /// What was being checked (a path or `host:port`).
        target: String,
        /// The time allowed, in milliseconds.
        after_ms: u64,
    },
    /// The definition itself is invalid.
    #[error("invalid definition: {0}")]
    InvalidDefinition(#[from] DefinitionError),
    /// A resolver failed in its own way.
    #[error("resolving {resource} failed: {source}")]
    Failed {
        /// The resource's name.
        resource: String,
        /// The resolver's own error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
}

/// An export file could not be written or read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum TransferError {
    /// One of the definitions (or the file's own fields) is invalid; the field is a
    /// path from the file's root, such as `"resources[2].spec.url"`.
    #[error("invalid export file: {0}")]
    Definition(#[from] DefinitionError),
    /// The file was written by a format this version cannot read.
    #[error("export format version {found} is not supported; this version reads {supported}")]
    UnsupportedVersion {
        /// The version in the file.
        found: u64,
        /// The version this crate reads and writes.
        supported: u32,
    },
    /// Two definitions in the file have the same name.
    #[error("resources[{index}].name: {name:?} is defined twice")]
    DuplicateName {
        /// The repeated name.
        name: String,
        /// The index of the second definition with that name.
        index: usize,
    },
}

/// A secret could not be sealed or opened with the cluster key, or a key could not be
/// read. No variant ever holds a secret or a key.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SecretError {
    /// The secret is sealed and no cluster key was given to open it.
    #[error("the secret is encrypted with the cluster key, and this node has no cluster key")]
    NoKey,
    /// The secret was sealed with another key, or altered since.
    #[error(
        "the secret cannot be decrypted with this node's cluster key (sealed with another key, or damaged)"
    )]
    WrongKey,
    /// The sealed text is not in a known format.
    #[error("the sealed secret is malformed: {reason}")]
    Malformed {
        /// What is wrong with it.
        reason: String,
    },
    /// The redaction placeholder was given where a real secret is needed.
    #[error(
        "is the redaction placeholder \"***\", not a secret; give the real value or leave the field out (a \
         stored secret is kept for \"***\" only by a definition of the same kind with the same url, or \
         protocol, host and port, and user)"
    )]
    Placeholder,
    /// A cluster key could not be parsed.
    #[error("invalid cluster key: {reason}")]
    InvalidKey {
        /// Why (never the key itself).
        reason: String,
    },
    /// A secret of a definition could not be sealed or opened; `field` is its dotted path.
    #[error("{field}: {source}")]
    Field {
        /// The dotted path of the secret (`"spec.password"`).
        field: String,
        /// What went wrong.
        #[source]
        source: Box<SecretError>,
    },
}
