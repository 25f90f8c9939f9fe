//! The configuration database's namespaces and what each accepts.
//!
//! Every key lives under one namespace: `license/`, `dataflows/`, `resources/`,
//! `settings/`, or `membership/` (kept by the nodes themselves). Values written
//! through the management API are validated for their namespace before anything
//! is stored.

use std::fmt;

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
}

impl Namespace {
    /// Every namespace.
    pub const ALL: [Namespace; 5] = [
        Namespace::License,
        Namespace::Dataflows,
        Namespace::Resources,
        Namespace::Settings,
        Namespace::Membership,
    ];

    /// The key prefix, with its trailing `/`.
    pub fn prefix(self) -> &'static str {
        match self {
            Namespace::License => "license/",
            Namespace::Dataflows => "dataflows/",
            Namespace::Resources => "resources/",
            Namespace::Settings => "settings/",
            Namespace::Membership => "membership/",
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
         (membership/ is kept by the nodes)"
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
    #[error("{namespace}/ is maintained by the nodes and cannot be written directly")]
    ReadOnly {
        /// The namespace.
        namespace: Namespace,
    },
    /// A name given to the management API is not acceptable.
    #[error("invalid {namespace} name: {reason}")]
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
    if name.is_empty() {
        return Err(invalid("must not be empty".into()));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(invalid(format!("{} bytes; at most {MAX_NAME_LEN} are allowed", name.len())));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(invalid("must start with an ASCII letter or digit".into()));
    }
    if let Some(ch) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return Err(invalid(format!(
            "holds {ch:?}; only ASCII letters, digits, '.', '_' and '-' are allowed"
        )));
    }
    Ok(())
}

/// Checks that `key` may be written through the management API with `value`
/// (`None` for a delete).
///
/// # Errors
///
/// A [`KeyError`] naming what is wrong.
pub fn validate_write(key: &str, value: Option<&[u8]>) -> Result<Namespace, KeyError> {
    let (ns, name) = classify(key)?;
    let invalid = |reason: String| KeyError::InvalidValue { key: key.to_owned(), reason };
    match (ns, value) {
        (Namespace::Membership, _) => return Err(KeyError::ReadOnly { namespace: ns }),
        (_, None) | (Namespace::Settings, _) => {}
        (Namespace::License, Some(v)) => {
            License::from_json_bytes(v).map_err(|e| invalid(e.to_string()))?;
        }
        (Namespace::Dataflows, Some(v)) => {
            let doc: serde_json::Value =
                serde_json::from_slice(v).map_err(|e| invalid(format!("expected a JSON object: {e}")))?;
            if !doc.is_object() {
                return Err(invalid("expected a JSON object".into()));
            }
        }
        (Namespace::Resources, Some(v)) => {
            let def = ResourceDefinition::from_json_bytes(v).map_err(|e| invalid(e.to_string()))?;
            if def.name.as_str() != name {
                return Err(invalid(format!(
                    "the definition is named {:?} but stored under {:?}",
                    def.name.as_str(),
                    name
                )));
            }
        }
    }
    Ok(ns)
}

#[cfg(test)]
mod tests {
    use super::*;

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
            assert!(err.to_string().starts_with("invalid dataflows name"), "{err}");
        }
    }

    #[test]
    fn membership_cannot_be_written_through_the_api() {
        let err = validate_write("membership/n1", Some(b"{}")).unwrap_err();
        assert!(matches!(err, KeyError::ReadOnly { namespace: Namespace::Membership }));
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
