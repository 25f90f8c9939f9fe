//! Raw entries of the configuration database: get, put, delete, list.

use bytes::Bytes;
use spectrum_replication::{AckLevel, Record, WriteBatch};
use spectrum_resources::ResourceDefinition;
use tracing::debug;

use super::{Admin, AdminError};
use crate::license::Date;
use crate::model::{ConflictInfo, Conflicts, Entry, ReadAfter, WriteReceipt};
use crate::namespace::{self, Namespace, WriteValue};

impl Admin {
    /// The live entry at `key`, once this node holds `after`.
    ///
    /// # Errors
    ///
    /// [`AdminError::Key`] for a key outside the namespaces; [`AdminError::NotFound`];
    /// [`AdminError::NotCaughtUp`].
    pub async fn get(&self, key: &str, after: &ReadAfter) -> Result<Entry, AdminError> {
        namespace::classify(key)?;
        self.wait_for(after).await?;
        let record = self.ctx.store.get(key).await?;
        record
            .as_ref()
            .and_then(entry)
            .ok_or_else(|| AdminError::not_found(format!("no config entry {key:?}")))
    }

    /// Writes `value` at `key` after checking it with its namespace's codec: a
    /// license must be current; a resource's secrets are sealed (a redacted secret
    /// keeps the stored one).
    ///
    /// # Errors
    ///
    /// [`AdminError::Key`] naming what is wrong; [`AdminError::License`] for an
    /// expired license; the write's own errors.
    pub async fn put(&self, key: &str, value: Bytes, ack: AckLevel) -> Result<WriteReceipt, AdminError> {
        let value = self.checked_value(key, value).await?;
        let write = self.write(WriteBatch::new().put(key.to_owned(), value), ack).await?;
        debug!(key, version = %write.version, "config entry written");
        Ok(write)
    }

    /// `value` checked with `key`'s namespace codec, as it is stored: a
    /// license must be current; a resource's secrets are sealed.
    pub(super) async fn checked_value(&self, key: &str, value: Bytes) -> Result<Bytes, AdminError> {
        let (ns, decoded) = namespace::validate_write(key, Some(&value))?;
        if ns == Namespace::Dataflows {
            self.check_dataflow(key.strip_prefix(ns.prefix()).unwrap_or(key), &value)?;
        }
        Ok(match decoded {
            Some(WriteValue::Resource(def)) => Bytes::from(self.resource_to_store(&def).await?),
            Some(WriteValue::License(license)) => {
                license.check_current(Date::today())?;
                value
            }
            _ => value,
        })
    }

    /// Deletes the live entry at `key`.
    ///
    /// # Errors
    ///
    /// [`AdminError::NotFound`] when it holds nothing; as [`put`](Self::put).
    pub async fn delete(&self, key: &str, ack: AckLevel) -> Result<WriteReceipt, AdminError> {
        namespace::validate_write(key, None)?;
        if self.live(key).await?.is_none() {
            return Err(AdminError::not_found(format!("no config entry {key:?}")));
        }
        let write = self.write(WriteBatch::new().delete(key.to_owned()), ack).await?;
        debug!(key, version = %write.version, "config entry deleted");
        Ok(write)
    }

    /// Every live entry under `prefix`, once this node holds `after`.
    ///
    /// # Errors
    ///
    /// [`AdminError::NotCaughtUp`]; store failures.
    pub async fn list(&self, prefix: &str, after: &ReadAfter) -> Result<Vec<Entry>, AdminError> {
        self.wait_for(after).await?;
        Ok(self.ctx.store.scan(prefix).await?.iter().filter_map(entry).collect())
    }

    /// The open conflicts of keys under `prefix` (writes to one key made without
    /// seeing each other; see [`spectrum_replication::conflict`]), once this
    /// node holds `after`.
    ///
    /// # Errors
    ///
    /// [`AdminError::NotCaughtUp`]; store failures.
    pub async fn conflicts(&self, prefix: &str, after: &ReadAfter) -> Result<Conflicts, AdminError> {
        self.wait_for(after).await?;
        Ok(Conflicts(self.ctx.store.conflicts(prefix).await?.iter().map(ConflictInfo::from).collect()))
    }
}

/// A live record as the API shows it: resource definitions redacted, users
/// without their token hash.
fn entry(record: &Record) -> Option<Entry> {
    let value = record.value.as_ref()?;
    Some(Entry {
        key: record.key.clone(),
        value: shown_value(&record.key, value),
        version: record.token(),
        stamp_wall_ms: record.stamp.wall_ms,
        stamp_logical: record.stamp.logical,
    })
}

/// A value as the API shows it: resource definitions redacted, users without
/// their token hash, anything else as stored.
pub(super) fn shown_value(key: &str, value: &[u8]) -> Vec<u8> {
    if key.starts_with(Namespace::Users.prefix()) {
        // A token hash reveals nothing usable, but no reader needs it either.
        return serde_json::from_slice::<serde_json::Value>(value)
            .ok()
            .and_then(|mut v| {
                v.as_object_mut()?.insert("token_hash".into(), "***".into());
                serde_json::to_vec(&v).ok()
            })
            .unwrap_or_default();
    }
    if !key.starts_with(Namespace::Resources.prefix()) {
        return value.to_vec();
    }
    ResourceDefinition::from_json_bytes(value)
        .ok()
        .and_then(|def| def.redacted().to_json_bytes().ok())
        .unwrap_or_default()
}
