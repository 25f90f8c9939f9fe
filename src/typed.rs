//! Typed views of the configuration database's namespaces.
//!
//! The store holds bytes under keys; each namespace holds one kind of value. A
//! [`TypedView`] reads a namespace as values of its type, decoded and validated,
//! with the version token of the write that set each one:
//!
//! | type | namespace |
//! |---|---|
//! | [`License`] | `license/` |
//! | [`Dataflow`] (a JSON object) | `dataflows/` |
//! | [`ResourceDefinition`] | `resources/` (secrets stay sealed; open them with [`ResourceRegistry`](crate::registry::ResourceRegistry)) |
//! | [`Setting`] (bytes) | `settings/` |
//! | [`Member`] | `membership/` |
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
//! use spectrum::typed::TypedView;
//!
//! let store: Arc<dyn ConfigStore> = Arc::new(MemoryStore::new("n1".parse()?, Arc::new(Hlc::system())));
//! store.apply(WriteBatch::new().put("membership/n1", r#"{"id":"n1","addr":"http://127.0.0.1:7001","state":"active"}"#)).await?;
//!
//! let members = TypedView::<Member>::new(store.clone());
//! let n1 = members.get("n1").await?.expect("recorded");
//! assert_eq!(n1.value.addr, "http://127.0.0.1:7001");
//! assert_eq!(members.list().await?.len(), 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use bytes::Bytes;
use spectrum_core::Member;
use spectrum_replication::{ConfigStore, Record, StoreError, VersionToken};
use spectrum_resources::ResourceDefinition;

use crate::keys::Namespace;
use crate::license::License;

/// A type stored in one namespace of the configuration database.
pub trait NamespaceValue: Sized + Send + Sync + 'static {
    /// The namespace holding values of this type.
    const NAMESPACE: Namespace;

    /// Decodes and validates a stored value.
    ///
    /// # Errors
    ///
    /// Why the bytes are not a valid value.
    fn decode(bytes: &[u8]) -> Result<Self, String>;
}

impl NamespaceValue for License {
    const NAMESPACE: Namespace = Namespace::License;
    fn decode(bytes: &[u8]) -> Result<Self, String> {
        License::from_json_bytes(bytes).map_err(|e| e.to_string())
    }
}

impl NamespaceValue for ResourceDefinition {
    const NAMESPACE: Namespace = Namespace::Resources;
    fn decode(bytes: &[u8]) -> Result<Self, String> {
        ResourceDefinition::from_json_bytes(bytes).map_err(|e| e.to_string())
    }
}

impl NamespaceValue for Member {
    const NAMESPACE: Namespace = Namespace::Membership;
    fn decode(bytes: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
    }
}

/// A dataflow definition: a JSON object whose schema belongs to the services that
/// run dataflows (see [`crate::demo::DataflowDefinition`] for one).
#[derive(Debug, Clone, PartialEq)]
pub struct Dataflow(pub serde_json::Map<String, serde_json::Value>);

impl NamespaceValue for Dataflow {
    const NAMESPACE: Namespace = Namespace::Dataflows;
    fn decode(bytes: &[u8]) -> Result<Self, String> {
        match serde_json::from_slice(bytes).map_err(|e| e.to_string())? {
            serde_json::Value::Object(map) => Ok(Dataflow(map)),
            _ => Err("expected a JSON object".into()),
        }
    }
}

/// A setting: free-form bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting(pub Bytes);

impl NamespaceValue for Setting {
    const NAMESPACE: Namespace = Namespace::Settings;
    fn decode(bytes: &[u8]) -> Result<Self, String> {
        Ok(Setting(Bytes::copy_from_slice(bytes)))
    }
}

/// One value with its name and the version of the write that set it.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<T> {
    /// The name within the namespace (the key without its prefix).
    pub name: String,
    /// The decoded value.
    pub value: T,
    /// The write that set it; a read carrying it is answered once a node holds it.
    pub version: VersionToken,
}

/// Why a typed read failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TypedError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored value is not valid for its namespace.
    #[error("stored value {key:?} is invalid: {reason}")]
    Invalid {
        /// The key.
        key: String,
        /// Why.
        reason: String,
    },
}

/// Reads one namespace as values of type `T`.
pub struct TypedView<T> {
    store: Arc<dyn ConfigStore>,
    _values: PhantomData<fn() -> T>,
}

impl<T> Clone for TypedView<T> {
    fn clone(&self) -> Self {
        Self { store: self.store.clone(), _values: PhantomData }
    }
}

impl<T: NamespaceValue> fmt::Debug for TypedView<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TypedView").field("namespace", &T::NAMESPACE).finish()
    }
}

impl<T: NamespaceValue> TypedView<T> {
    /// A view of `T`'s namespace in `store`.
    pub fn new(store: Arc<dyn ConfigStore>) -> Self {
        Self { store, _values: PhantomData }
    }

    fn decode(record: &Record) -> Option<Result<Versioned<T>, TypedError>> {
        let bytes = record.value.as_ref()?;
        let name = record.key.strip_prefix(T::NAMESPACE.prefix()).unwrap_or(&record.key).to_owned();
        Some(
            T::decode(bytes)
                .map(|value| Versioned { name, value, version: record.token() })
                .map_err(|reason| TypedError::Invalid { key: record.key.clone(), reason }),
        )
    }

    /// The value named `name`, or `None` when there is none (or it was deleted).
    ///
    /// # Errors
    ///
    /// [`TypedError::Invalid`] when the stored value does not decode;
    /// [`TypedError::Store`] when the store fails.
    pub async fn get(&self, name: &str) -> Result<Option<Versioned<T>>, TypedError> {
        let record = self.store.get(&T::NAMESPACE.key(name)).await?;
        record.as_ref().and_then(Self::decode).transpose()
    }

    /// Every value in the namespace, in name order. A value that does not decode
    /// is reported as an error, not skipped.
    ///
    /// # Errors
    ///
    /// The first [`TypedError`] met.
    pub async fn list(&self) -> Result<Vec<Versioned<T>>, TypedError> {
        self.store.scan(T::NAMESPACE.prefix()).await?.iter().filter_map(Self::decode).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spectrum_core::Hlc;
    use spectrum_replication::{MemoryStore, WriteBatch};

    fn store() -> Arc<dyn ConfigStore> {
        Arc::new(MemoryStore::new("n1".parse().unwrap(), Arc::new(Hlc::system())))
    }

    #[tokio::test]
    async fn views_decode_their_namespace_and_skip_deleted_values() {
        let store = store();
        store
            .apply(
                WriteBatch::new()
                    .put("dataflows/a", r#"{"steps":[]}"#)
                    .put("dataflows/b", r#"{"steps":["trim"]}"#)
                    .put("settings/x", "1"),
            )
            .await
            .unwrap();
        store.apply(WriteBatch::new().delete("dataflows/b")).await.unwrap();
        let flows = TypedView::<Dataflow>::new(store.clone()).list().await.unwrap();
        assert_eq!(flows.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(), ["a"]);
        assert!(TypedView::<Dataflow>::new(store.clone()).get("b").await.unwrap().is_none());
        let x = TypedView::<Setting>::new(store).get("x").await.unwrap().unwrap();
        assert_eq!(x.value.0, "1");
        assert_eq!(x.version.seq, 3);
    }

    #[tokio::test]
    async fn an_invalid_stored_value_is_an_error_naming_its_key() {
        let store = store();
        store.apply(WriteBatch::new().put("license/main", r#"{"owner":"acme"}"#)).await.unwrap();
        let err = TypedView::<License>::new(store).get("main").await.unwrap_err();
        assert!(err.to_string().contains("license/main"), "{err}");
    }
}
