//! [`ResourceRegistry`]: the resource definitions of a node's configuration
//! database, read, sealed and opened with the cluster key, and checked on the node.
//!
//! Definitions live under `resources/<name>` as JSON whose secrets are sealed with
//! the cluster's [`ClusterKey`]. The registry is how the node (its management API,
//! its status) and the services on it use them: [`ResourceRegistry::list`] and
//! [`ResourceRegistry::get`] give them as stored (sealed, safe to redact and show),
//! [`ResourceRegistry::open`] gives one with its secrets in clear for the resource's
//! own use, and [`ResourceRegistry::check_all`] says which are available on this node.

use std::fmt;
use std::sync::Arc;

use futures::future::join_all;
use spectrum_core::NodeId;
use spectrum_replication::{ConfigStore, Record, StoreError, VersionToken};
use spectrum_resources::{
    Availability, ClusterKey, DefinitionError, ResourceDefinition, ResourceResolver, SecretError,
};
use tracing::warn;

use crate::namespace::Namespace;

/// A definition as stored, with the version token of the write that set it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResource {
    /// The definition, secrets sealed.
    pub definition: ResourceDefinition,
    /// The version token (`origin:seq`, such as `n1~3f09c2d4a1b87e65:42`) of the
    /// write that stored it.
    pub version: VersionToken,
}

/// What [`ResourceRegistry::reseal`] found.
#[derive(Debug, Default)]
pub struct Reseal {
    /// Definitions sealed with a previous key, resealed with the current one (to
    /// store).
    pub resealed: Vec<(String, ResourceDefinition)>,
    /// Definitions already sealed with the current key.
    pub current: usize,
    /// Definitions no key of this node opens.
    pub unreadable: Vec<String>,
}

/// Whether one resource is available on one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceStatus {
    /// The resource's name.
    pub name: String,
    /// Its kind (`database`, `jdbc`, …).
    pub kind: String,
    /// Whether it can be used on the node, and why (or why not).
    pub availability: Availability,
}

/// Why the registry could not answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No resource has this name.
    #[error("no resource named {name:?}")]
    NotFound {
        /// The name asked for.
        name: String,
    },
    /// The stored definition does not decode (written by a newer version, or damaged).
    #[error("stored resource {name:?} is invalid: {source}")]
    Invalid {
        /// The resource's name.
        name: String,
        /// Why.
        #[source]
        source: DefinitionError,
    },
    /// A secret could not be sealed or opened.
    #[error("resource {name:?}: {source}")]
    Secret {
        /// The resource's name.
        name: String,
        /// Why.
        #[source]
        source: SecretError,
    },
}

/// The resource definitions of one node's configuration database.
#[derive(Clone)]
pub struct ResourceRegistry {
    store: Arc<dyn ConfigStore>,
    key: Option<Arc<ClusterKey>>,
    previous: Vec<Arc<ClusterKey>>,
}

impl fmt::Debug for ResourceRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResourceRegistry").field("has_key", &self.key.is_some()).finish_non_exhaustive()
    }
}

impl ResourceRegistry {
    /// The registry over `store`, sealing and opening secrets with `key` (without
    /// one, secrets can be neither stored nor read).
    pub fn new(store: Arc<dyn ConfigStore>, key: Option<Arc<ClusterKey>>) -> Self {
        Self { store, key, previous: Vec::new() }
    }

    /// Also opens secrets sealed with one of `previous` (keys before a rotation);
    /// new secrets are always sealed with the current key.
    pub fn with_previous_keys(mut self, previous: Vec<Arc<ClusterKey>>) -> Self {
        self.previous = previous;
        self
    }

    /// Whether `def`'s secrets are sealed with a previous key, not the current one:
    /// `Some(opened)` (secrets in clear, for resealing) when so.
    fn sealed_with_previous(&self, def: &ResourceDefinition) -> Option<ResourceDefinition> {
        if def.opened_with(self.key.as_deref()).is_ok() {
            return None;
        }
        self.previous.iter().find_map(|k| def.opened_with(Some(k)).ok())
    }

    /// Reseals, in one write batch, every stored definition whose secrets are sealed
    /// with a previous key, with the current key. Secrets are in clear only in this
    /// node's memory, in [`Secret`](spectrum_resources::Secret)s wiped on drop.
    ///
    /// # Errors
    ///
    /// [`RegistryError::Store`]; [`RegistryError::Secret`] when there is no
    /// current key.
    pub async fn reseal(&self) -> Result<Reseal, RegistryError> {
        let mut out = Reseal::default();
        for stored in self.list().await? {
            let def = &stored.definition;
            if !def.has_sealed_secret() {
                continue;
            }
            match self.sealed_with_previous(def) {
                Some(opened) => {
                    let sealed = self.seal_definition(&opened)?;
                    out.resealed.push((def.name.to_string(), sealed));
                }
                None if self.open_definition(def).is_ok() => out.current += 1,
                None => out.unreadable.push(def.name.to_string()),
            }
        }
        Ok(out)
    }

    /// Whether this registry has a cluster key.
    pub fn has_key(&self) -> bool {
        self.key.is_some()
    }

    /// Every stored definition, sorted by name. Definitions that do not decode are
    /// left out (and logged, without their contents).
    ///
    /// # Errors
    ///
    /// [`RegistryError::Store`] when the store fails.
    pub async fn list(&self) -> Result<Vec<StoredResource>, RegistryError> {
        let records = self.store.scan(Namespace::Resources.prefix()).await?;
        let mut out: Vec<StoredResource> = records
            .iter()
            .filter_map(|record| match decode(record) {
                Some(Ok(stored)) => Some(stored),
                Some(Err(e)) => {
                    warn!(key = %record.key, error = %e, "skipping a stored resource that does not decode");
                    None
                }
                None => None,
            })
            .collect();
        out.sort_by(|a, b| a.definition.name.cmp(&b.definition.name));
        Ok(out)
    }

    /// The stored definition named `name`, if any.
    ///
    /// # Errors
    ///
    /// [`RegistryError::Store`]; [`RegistryError::Invalid`] when it does not decode.
    pub async fn get(&self, name: &str) -> Result<Option<StoredResource>, RegistryError> {
        let record = self.store.get(&Namespace::Resources.key(name)).await?;
        record.as_ref().and_then(decode).transpose()
    }

    /// The definition named `name` with its secrets in clear: for handing to the
    /// resource itself (a driver, a client), never for showing.
    ///
    /// # Errors
    ///
    /// [`RegistryError::NotFound`]; [`RegistryError::Secret`] when a secret is sealed
    /// and this node has no key, or another one.
    pub async fn open(&self, name: &str) -> Result<ResourceDefinition, RegistryError> {
        let stored =
            self.get(name).await?.ok_or_else(|| RegistryError::NotFound { name: name.to_owned() })?;
        self.open_definition(&stored.definition)
    }

    /// `def` with its secrets opened with this registry's key.
    ///
    /// # Errors
    ///
    /// [`RegistryError::Secret`] when a secret is sealed and cannot be opened here.
    pub fn open_definition(&self, def: &ResourceDefinition) -> Result<ResourceDefinition, RegistryError> {
        def.opened_with(self.key.as_deref())
            .or_else(|e| self.previous.iter().find_map(|k| def.opened_with(Some(k)).ok()).ok_or(e))
            .map_err(|source| RegistryError::Secret { name: def.name.to_string(), source })
    }

    /// `def` with every clear secret sealed with this registry's key: the form to store.
    ///
    /// # Errors
    ///
    /// [`RegistryError::Secret`] with [`SecretError::NoKey`] when `def` holds a clear
    /// secret and there is no key; with [`SecretError::Placeholder`] for a redaction
    /// placeholder.
    pub fn seal_definition(&self, def: &ResourceDefinition) -> Result<ResourceDefinition, RegistryError> {
        let err = |source| RegistryError::Secret { name: def.name.to_string(), source };
        match &self.key {
            Some(key) => def.sealed(key).map_err(err),
            None if def.has_clear_secret() => Err(err(SecretError::Field {
                field: "spec.password".into(),
                source: Box::new(SecretError::NoKey),
            })),
            None if def.has_redacted_secret() => Err(err(SecretError::Field {
                field: "spec.password".into(),
                source: Box::new(SecretError::Placeholder),
            })),
            None => Ok(def.clone()),
        }
    }

    /// Checks every stored definition (or those named in `only`, when not empty) on
    /// `node` with `resolver`, concurrently. A definition whose secret this node
    /// cannot open is reported unavailable, with the reason.
    ///
    /// # Errors
    ///
    /// [`RegistryError::Store`] when the store fails.
    pub async fn check_all(
        &self,
        resolver: &dyn ResourceResolver,
        node: &NodeId,
        only: &[String],
    ) -> Result<Vec<ResourceStatus>, RegistryError> {
        let defs = self.list().await?;
        let mut statuses: Vec<ResourceStatus> = join_all(
            defs.iter()
                .filter(|s| only.is_empty() || only.iter().any(|n| n == s.definition.name.as_str()))
                .map(|stored| async move {
                    let def = &stored.definition;
                    let availability = match self.open_definition(def) {
                        Ok(opened) => resolver.check(&opened, node).await,
                        Err(RegistryError::Secret { source, .. }) => {
                            Availability::unavailable(format!("secret unreadable on this node: {source}"))
                        }
                        Err(other) => Availability::unavailable(other.to_string()),
                    };
                    ResourceStatus { name: def.name.to_string(), kind: def.kind().to_owned(), availability }
                }),
        )
        .await;
        for name in only {
            if !statuses.iter().any(|s| &s.name == name) {
                statuses.push(ResourceStatus {
                    name: name.clone(),
                    kind: String::new(),
                    availability: Availability::unavailable("not defined on this node"),
                });
            }
        }
        statuses.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(statuses)
    }
}

fn decode(record: &Record) -> Option<Result<StoredResource, RegistryError>> {
    let value = record.value.as_ref()?;
    let name = record.key.strip_prefix(Namespace::Resources.prefix()).unwrap_or(&record.key);
    Some(
        ResourceDefinition::from_json_bytes(value)
            .map(|definition| StoredResource { definition, version: record.token() })
            .map_err(|source| RegistryError::Invalid { name: name.to_owned(), source }),
    )
}

#[cfg(test)]
mod tests {
    use spectrum_core::{Hlc, SystemClock};
    use spectrum_replication::{MemoryStore, WriteBatch};
    use spectrum_resources::{CompositeResolver, JdbcSpec, ResourceName, ResourceSpec, Secret};

    use super::*;

    fn jdbc(password: &str) -> ResourceDefinition {
        ResourceDefinition::new(
            ResourceName::new("orders").unwrap(),
            ResourceSpec::Jdbc(JdbcSpec {
                password: Some(Secret::new(password)),
                ..JdbcSpec::new("jdbc:postgresql://127.0.0.1:1/orders", "org.postgresql.Driver")
            }),
        )
    }

    fn store() -> Arc<dyn ConfigStore> {
        let node = NodeId::new("n1").unwrap();
        Arc::new(MemoryStore::new(node, Arc::new(Hlc::new(Arc::new(SystemClock)))))
    }

    #[tokio::test]
    async fn secrets_are_stored_sealed_and_only_the_key_opens_them() {
        let store = store();
        let key = Arc::new(ClusterKey::generate());
        let registry = ResourceRegistry::new(store.clone(), Some(key.clone()));
        let sealed = registry.seal_definition(&jdbc("pa55word")).unwrap();
        store
            .apply(WriteBatch::new().put("resources/orders", sealed.to_json_bytes().unwrap()))
            .await
            .unwrap();

        let raw = store.get("resources/orders").await.unwrap().unwrap().value.unwrap();
        assert!(!String::from_utf8_lossy(&raw).contains("pa55word"));
        assert_eq!(registry.open("orders").await.unwrap(), jdbc("pa55word"));

        let keyless = ResourceRegistry::new(store.clone(), None);
        assert_eq!(keyless.list().await.unwrap().len(), 1, "still listed without the key");
        let err = keyless.open("orders").await.unwrap_err();
        assert!(err.to_string().contains("no cluster key"), "{err}");
        let other = ResourceRegistry::new(store, Some(Arc::new(ClusterKey::generate())));
        let err = other.open("orders").await.unwrap_err();
        assert!(err.to_string().contains("another key"), "{err}");
        let checks =
            other.check_all(&CompositeResolver::standard(), &NodeId::new("n1").unwrap(), &[]).await.unwrap();
        assert!(!checks[0].availability.available);
        assert!(checks[0].availability.detail.contains("secret unreadable"));
    }

    #[test]
    fn without_a_key_a_clear_secret_cannot_be_stored() {
        let registry = ResourceRegistry::new(store(), None);
        let err = registry.seal_definition(&jdbc("pw")).unwrap_err();
        assert!(err.to_string().contains("spec.password"), "{err}");
        assert!(!err.to_string().contains("pw\""));
    }
}
