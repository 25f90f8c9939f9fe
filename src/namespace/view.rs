//! [`TypedView`]: one namespace read as values of its type.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use spectrum_replication::{ConfigStore, Record, StoreError, VersionToken};

use super::NamespaceValue;

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
                .map_err(|e| TypedError::Invalid { key: record.key.clone(), reason: e.reason }),
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
    use crate::license::License;
    use crate::namespace::{Dataflow, Setting};
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
