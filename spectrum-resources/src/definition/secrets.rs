//! The secrets of a definition: redacting, sealing and opening them, and keeping an
//! existing definition's secrets where an update or import gives the placeholder.

use super::ResourceDefinition;
use crate::cluster_key::ClusterKey;
use crate::error::SecretError;
use crate::secret::Secret;

impl ResourceDefinition {
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
    /// `existing` is of the same kind, presents its secret to the same place as the
    /// same user (a JDBC or web service `url` and `user`, a file server's
    /// `protocol`, `host`, `port` and `user` unchanged: a definition from elsewhere
    /// must not send this cluster's password to another host or account), and
    /// holds a real secret (clear or sealed, kept as it is) in that field;
    /// otherwise it stays the placeholder and its field is listed in
    /// [`KeptSecrets::placeholders`]. Secrets that are not the placeholder, and
    /// every other field, are this definition's.
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
        let same_kind = existing.filter(|old| {
            old.kind() == self.kind() && old.spec.secret_audience() == self.spec.secret_audience()
        });
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::{
        DataLocation, DatabaseCategory, DatabaseSpec, JdbcSpec, ResourceSpec, WebServiceSpec,
    };
    use crate::name::ResourceName;

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
    fn a_secret_is_not_kept_for_another_host_or_user() {
        let existing = jdbc_with_password();
        let elsewhere = |f: fn(&mut JdbcSpec)| {
            let mut update = existing.redacted();
            let ResourceSpec::Jdbc(spec) = &mut update.spec else { unreachable!() };
            f(spec);
            update.keep_secrets_from(&existing)
        };
        for kept in [
            elsewhere(|s| s.url = "jdbc:postgresql://attacker:5432/orders".into()),
            elsewhere(|s| s.user = Some("admin".into())),
            elsewhere(|s| s.user = None),
        ] {
            assert_eq!(kept.placeholders, ["spec.password"]);
        }
        assert!(elsewhere(|s| s.driver = "org.postgresql.Driver2".into()).is_complete());
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
}
