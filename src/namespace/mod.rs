//! The configuration database's namespaces: what each holds, one codec per
//! namespace, and the typed read views built on them.
//!
//! Every key lives under one namespace: `license/`, `dataflows/`, `resources/`,
//! `settings/`, `membership/` (kept by the nodes themselves), `users/` (written by
//! the user operations), `audit/` (written by the nodes) or `balancer/` (written
//! by the balancer operations, read by every balancer). Each namespace
//! holds one type of value, and that type's [`NamespaceValue`] impl (in this
//! module's files, one per namespace) is the single codec for it: the management
//! API validates a write with it ([`validate_write`], which returns the decoded
//! value so nothing is parsed twice), and the [`TypedView`]s read with it.
//!
//! | type | namespace | file |
//! |---|---|---|
//! | [`License`] | `license/` | `license.rs` |
//! | [`Dataflow`] (a JSON object) | `dataflows/` | `dataflow.rs` |
//! | [`ResourceDefinition`] | `resources/` (secrets stay sealed; open them with [`ResourceRegistry`](crate::registry::ResourceRegistry)) | `resource.rs` |
//! | [`Setting`] (bytes) | `settings/` | `setting.rs` |
//! | [`Member`](spectrum_core::Member) | `membership/` (its codec is core's) | `membership.rs` |
//! | [`User`] | `users/` (a token hash, never a token) | `users.rs` |
//! | [`AuditRecord`] | `audit/` | `audit.rs` |
//! | [`BalancerSetting`] | `balancer/` (the strategy and weights every balancer follows) | `balancer.rs` |
//!
//! Views only read: writes go through the management API, which validates them and
//! replicates them at the requested acknowledgement level. A service on a node gets
//! a view with [`NodeContext::view`](crate::NodeContext::view).
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! use std::sync::Arc;
//! use spectrum::core::{Hlc, Member, NodeId};
//! use spectrum::replication::{ConfigStore, MemoryStore, WriteBatch};
//! use spectrum::namespace::TypedView;
//!
//! let store: Arc<dyn ConfigStore> = Arc::new(MemoryStore::new("n1".parse()?, Arc::new(Hlc::system())));
//! store.apply(WriteBatch::new().put("membership/n1", r#"{"id":"n1","addr":"http://127.0.0.1:7001","state":"active"}"#)).await?;
//!
//! let members = TypedView::<Member>::new(store.clone());
//! let n1 = members.get("n1").await?.expect("recorded");
//! assert_eq!(n1.value.addr.as_str(), "http://127.0.0.1:7001");
//! assert_eq!(members.list().await?.len(), 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

mod audit;
mod balancer;
mod dataflow;
mod license;
mod membership;
mod resource;
mod setting;
mod users;
mod view;

pub(crate) use audit::AuditKey;
pub use audit::{AuditRecord, MAX_AUDIT_MESSAGE};
pub use balancer::{BalancerKey, BalancerSetting, STRATEGY_NAME, WEIGHT_PREFIX};
pub use dataflow::Dataflow;
pub use setting::Setting;
pub use users::User;
pub use view::{TypedError, TypedView, Versioned};

use std::fmt;

use spectrum_core::{IdentifierError, check_identifier};
use spectrum_resources::ResourceDefinition;

use crate::license::License;

/// One namespace of the configuration database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Namespace {
    /// License information (`license/<name>`): a [`License`] document.
    License,
    /// Dataflow definitions (`dataflows/<name>`): a JSON object.
    Dataflows,
    /// External resource definitions (`resources/<name>`): a validated
    /// [`ResourceDefinition`] whose name matches the key.
    Resources,
    /// Free-form settings (`settings/<name>`): any bytes.
    Settings,
    /// Cluster membership (`membership/<node-id>`): written by the nodes only.
    Membership,
    /// Users of the management API (`users/<name>`): a [`User`], written only by
    /// the user operations.
    Users,
    /// The audit log (`audit/<node>/<slot>`, each node's ring): an [`AuditRecord`], written
    /// only by the nodes.
    Audit,
    /// What every balancer follows (`balancer/strategy`,
    /// `balancer/weight/<node-id>`): a [`BalancerSetting`], written only by the
    /// balancer operations.
    Balancer,
}

impl Namespace {
    /// Every namespace.
    pub const ALL: [Namespace; 8] = [
        Namespace::License,
        Namespace::Dataflows,
        Namespace::Resources,
        Namespace::Settings,
        Namespace::Membership,
        Namespace::Users,
        Namespace::Audit,
        Namespace::Balancer,
    ];

    /// The key prefix, with its trailing `/`.
    pub fn prefix(self) -> &'static str {
        match self {
            Namespace::License => "license/",
            Namespace::Dataflows => "dataflows/",
            Namespace::Resources => "resources/",
            Namespace::Settings => "settings/",
            Namespace::Membership => "membership/",
            Namespace::Users => "users/",
            Namespace::Audit => "audit/",
            Namespace::Balancer => "balancer/",
        }
    }

    /// What one entry of it is called, for messages (`user`, `dataflow`).
    pub fn entry(self) -> &'static str {
        match self {
            Namespace::License => "license",
            Namespace::Dataflows => "dataflow",
            Namespace::Resources => "resource",
            Namespace::Settings => "setting",
            Namespace::Membership => "member",
            Namespace::Users => "user",
            Namespace::Audit => "audit record",
            Namespace::Balancer => "balancer setting",
        }
    }

    /// Whether a raw `Put` or `Delete` may write it; if not, why not.
    pub fn read_only_reason(self) -> Option<&'static str> {
        match self {
            Namespace::Membership => Some("is maintained by the nodes and cannot be written directly"),
            Namespace::Users => {
                Some("cannot be written directly; use the user operations (spectrum user add|revoke|rotate)")
            }
            Namespace::Audit => Some("is written by the nodes only (the audit log) and cannot be changed"),
            Namespace::Balancer => Some(
                "cannot be written directly; use the balancer operations \
                 (spectrum balancer set-strategy|clear-strategy|set-weight|clear-weight)",
            ),
            _ => None,
        }
    }

    /// The key for `name` in this namespace.
    pub fn key(self, name: &str) -> String {
        format!("{}{name}", self.prefix())
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.prefix().trim_end_matches('/'))
    }
}

/// Why a key or value was refused by the management API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key was empty.
    #[error("config key must not be empty")]
    Empty,
    /// The key is in no known namespace.
    #[error(
        "unknown config key {key:?}: keys live under license/, dataflows/, resources/ or settings/ \
         (membership/, users/, audit/ and balancer/ are kept by their own operations)"
    )]
    UnknownNamespace {
        /// The key (cut to 80 characters).
        key: String,
    },
    /// The key named a namespace but no entry in it.
    #[error("config key {key:?} names a namespace but no entry; add a name after the '/'")]
    MissingName {
        /// The key.
        key: String,
    },
    /// The namespace cannot be written through the management API.
    #[error("{namespace}/ {}", namespace.read_only_reason().unwrap_or("cannot be written directly"))]
    ReadOnly {
        /// The namespace.
        namespace: Namespace,
    },
    /// A name given to the management API is not acceptable.
    #[error("invalid {} name: {reason}", namespace.entry())]
    InvalidName {
        /// The namespace.
        namespace: Namespace,
        /// Why.
        reason: String,
    },
    /// The value is not valid for its namespace.
    #[error("invalid value for {key:?}: {reason}")]
    InvalidValue {
        /// The key.
        key: String,
        /// Why.
        reason: String,
    },
}

/// Splits a key into its namespace and the name within it.
///
/// # Errors
///
/// [`KeyError::Empty`], [`KeyError::UnknownNamespace`] or [`KeyError::MissingName`].
pub fn classify(key: &str) -> Result<(Namespace, &str), KeyError> {
    if key.is_empty() {
        return Err(KeyError::Empty);
    }
    for ns in Namespace::ALL {
        if let Some(name) = key.strip_prefix(ns.prefix()) {
            if name.is_empty() {
                return Err(KeyError::MissingName { key: key.to_owned() });
            }
            return Ok((ns, name));
        }
    }
    Err(KeyError::UnknownNamespace { key: key.chars().take(80).collect() })
}

/// Longest name accepted by [`validate_name`], in bytes.
pub const MAX_NAME_LEN: usize = 128;

/// Checks the name of a license or dataflow: 1 to [`MAX_NAME_LEN`] bytes of ASCII
/// letters, digits, `.`, `_` and `-`, starting with a letter or digit.
///
/// # Errors
///
/// [`KeyError::InvalidName`] saying what is wrong.
pub fn validate_name(namespace: Namespace, name: &str) -> Result<(), KeyError> {
    let invalid = |reason: String| KeyError::InvalidName { namespace, reason };
    check_identifier(name, MAX_NAME_LEN).map_err(|e| match e {
        IdentifierError::TooLong { len, max } => invalid(format!("{len} bytes; at most {max} are allowed")),
        other => invalid(other.to_string()),
    })?;
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(invalid("must start with an ASCII letter or digit".into()));
    }
    Ok(())
}

/// A type stored in one namespace of the configuration database: its codec.
pub trait NamespaceValue: Sized + Send + Sync + 'static {
    /// The namespace holding values of this type.
    const NAMESPACE: Namespace;

    /// Decodes and validates a stored value.
    ///
    /// # Errors
    ///
    /// [`ValueError`] saying why the bytes are not a valid value.
    fn decode(bytes: &[u8]) -> Result<Self, ValueError>;

    /// Checks a decoded value against the name it is stored under; by default
    /// every name fits. Resource definitions override it (a definition must be
    /// stored under its own name).
    ///
    /// # Errors
    ///
    /// [`ValueError`] when value and name disagree.
    fn check_name(&self, _name: &str) -> Result<(), ValueError> {
        Ok(())
    }
}

/// Why bytes are not a valid value of their namespace.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct ValueError {
    /// What is wrong, naming the field where there is one.
    pub reason: String,
}

impl ValueError {
    /// An error saying `reason`.
    pub fn new(reason: impl fmt::Display) -> Self {
        Self { reason: reason.to_string() }
    }
}

/// A value accepted for a write, decoded once by its namespace's codec.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum WriteValue {
    /// A license document.
    License(License),
    /// A dataflow definition.
    Dataflow(Dataflow),
    /// A resource definition (secrets possibly in clear: seal before storing).
    Resource(ResourceDefinition),
    /// A setting.
    Setting(Setting),
}

fn decoded<T: NamespaceValue>(key: &str, name: &str, bytes: &[u8]) -> Result<T, KeyError> {
    let invalid = |e: ValueError| KeyError::InvalidValue { key: key.to_owned(), reason: e.reason };
    let value = T::decode(bytes).map_err(invalid)?;
    value.check_name(name).map_err(invalid)?;
    Ok(value)
}

/// Checks that `key` may be written through the management API with `value`
/// (`None` for a delete), and returns the value decoded by its namespace's codec.
///
/// # Errors
///
/// A [`KeyError`] naming what is wrong: an unknown namespace, `membership/`
/// (read-only), or a value its namespace does not accept.
pub fn validate_write(key: &str, value: Option<&[u8]>) -> Result<(Namespace, Option<WriteValue>), KeyError> {
    let (ns, name) = classify(key)?;
    if ns.read_only_reason().is_some() {
        return Err(KeyError::ReadOnly { namespace: ns });
    }
    let Some(bytes) = value else {
        return Ok((ns, None));
    };
    // URL clients rewrite `.` and `..` segments away (RFC 3986 §5.2.4), so a
    // key holding one could not be read or deleted through the HTTP API.
    if let Some(segment) = name.split('/').find(|s| matches!(*s, "." | "..")) {
        return Err(KeyError::InvalidName {
            namespace: ns,
            reason: format!("{key:?} has a {segment:?} segment, which URL clients rewrite away"),
        });
    }
    // Licenses and dataflows are named as their commands name them (a raw write
    // of `dataflows/x y` could be neither shown nor deleted by name, and the
    // cluster's export of it could not be imported).
    if matches!(ns, Namespace::License | Namespace::Dataflows) {
        validate_name(ns, name)?;
    }
    let value = match ns {
        Namespace::Membership | Namespace::Users | Namespace::Audit | Namespace::Balancer => {
            return Err(KeyError::ReadOnly { namespace: ns });
        }
        Namespace::License => WriteValue::License(decoded(key, name, bytes)?),
        Namespace::Dataflows => WriteValue::Dataflow(decoded(key, name, bytes)?),
        Namespace::Resources => WriteValue::Resource(decoded(key, name, bytes)?),
        Namespace::Settings => WriteValue::Setting(decoded(key, name, bytes)?),
    };
    Ok((ns, Some(value)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_key_with_a_dot_segment_is_refused_and_a_delete_of_one_passes() {
        for key in ["settings/../users/evil", "settings/a/./b", "settings/.."] {
            let err = validate_write(key, Some(b"v")).unwrap_err();
            assert!(err.to_string().contains("segment, which URL clients rewrite away"), "{key}: {err}");
        }
        assert!(validate_write("settings/a..b/.c", Some(b"v")).is_ok());
        assert!(validate_write("settings/../users/evil", None).is_ok(), "one written before can be deleted");
    }

    #[test]
    fn a_raw_write_of_a_license_or_dataflow_takes_the_names_their_commands_take() {
        let long = format!("dataflows/{}", "x".repeat(300));
        for key in ["dataflows/x y", "dataflows/p/sub", long.as_str()] {
            let err = validate_write(key, Some(br#"{"steps":[]}"#)).unwrap_err();
            assert!(matches!(err, KeyError::InvalidName { .. }), "{key}: {err}");
        }
        assert!(validate_write("dataflows/x y", None).is_ok(), "one written before can be deleted");
        assert!(validate_write("settings/x y/z", Some(b"v")).is_ok(), "settings keep free-form names");
    }

    #[test]
    fn keys_are_classified_by_namespace() {
        assert_eq!(classify("license/main").unwrap(), (Namespace::License, "main"));
        assert_eq!(classify("resources/postal-db").unwrap(), (Namespace::Resources, "postal-db"));
    }

    #[test]
    fn unknown_empty_and_nameless_keys_are_refused_with_a_reason() {
        assert_eq!(classify(""), Err(KeyError::Empty));
        let err = classify("colour").unwrap_err();
        assert!(err.to_string().contains("unknown config key"), "{err}");
        assert!(matches!(classify("settings/"), Err(KeyError::MissingName { .. })));
    }

    #[test]
    fn names_are_checked_for_length_and_characters() {
        assert!(validate_name(Namespace::Dataflows, "normalize-address.v2").is_ok());
        for bad in ["", "a/b", "-x", "a b", &"x".repeat(129)] {
            let err = validate_name(Namespace::Dataflows, bad).unwrap_err();
            assert!(err.to_string().starts_with("invalid dataflow name"), "{err}");
        }
    }

    #[test]
    fn membership_users_and_audit_cannot_be_written_through_the_api() {
        let err = validate_write("membership/n1", Some(b"{}")).unwrap_err();
        assert!(matches!(err, KeyError::ReadOnly { namespace: Namespace::Membership }));
        for key in [
            "users/alice",
            "audit/n1/000001",
            "audit/000000000000001-n1-0",
            "balancer/strategy",
            "balancer/weight/n1",
        ] {
            for value in [Some(&b"{}"[..]), None] {
                let err = validate_write(key, value).unwrap_err();
                assert!(matches!(err, KeyError::ReadOnly { .. }), "{key}: {err}");
            }
        }
        let err = validate_write("users/alice", None).unwrap_err();
        assert!(err.to_string().contains("spectrum user"), "{err}");
    }

    #[test]
    fn license_and_dataflow_values_must_be_json_objects() {
        assert!(
            validate_write("license/main", Some(br#"{"owner":"acme","seats":2,"expires":"2031-01-01"}"#))
                .is_ok()
        );
        let err = validate_write("license/main", Some(br#"{"owner":"acme"}"#)).unwrap_err();
        assert!(err.to_string().contains("license field seats"), "{err}");
        assert!(validate_write("dataflows/x", Some(b"[1,2]")).is_err());
        assert!(validate_write("dataflows/x", Some(b"not json")).is_err());
        assert!(validate_write("settings/x", Some(b"anything at all")).is_ok());
        assert!(validate_write("dataflows/x", None).is_ok(), "deletes carry no value");
    }
}
