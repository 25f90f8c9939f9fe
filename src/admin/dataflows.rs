//! Dataflow definitions: create, list, show, delete.

use bytes::Bytes;
use spectrum_replication::{AckLevel, Record, WriteBatch};
use tracing::debug;

use super::{Admin, AdminError};
use crate::model::{Dataflow, ReadAfter, WriteReceipt};
use crate::namespace::{self, Namespace};

impl Admin {
    /// Stores the dataflow `name`; with `replace` false, a name already taken is
    /// refused.
    ///
    /// # Errors
    ///
    /// [`AdminError::Key`] for a bad name or a definition that is not a JSON
    /// object; [`AdminError::InvalidArgument`] for one the application's check
    /// refuses (see [`Admin::dataflow_check`]); [`AdminError::AlreadyExists`].
    pub async fn create_dataflow(
        &self,
        name: &str,
        definition: Bytes,
        replace: bool,
        ack: AckLevel,
    ) -> Result<WriteReceipt, AdminError> {
        namespace::validate_name(Namespace::Dataflows, name)?;
        let key = Namespace::Dataflows.key(name);
        namespace::validate_write(&key, Some(&definition))?;
        self.check_dataflow(name, &definition)?;
        if !replace && self.live(&key).await?.is_some() {
            return Err(AdminError::AlreadyExists { what: "dataflow", name: name.to_owned() });
        }
        let write = self.create(key, definition, replace, ack, "dataflow", name).await?;
        debug!(dataflow = name, version = %write.version, "dataflow stored");
        Ok(write)
    }

    /// Every dataflow, once this node holds `after`.
    ///
    /// # Errors
    ///
    /// [`AdminError::NotCaughtUp`]; store failures.
    pub async fn dataflows(&self, after: &ReadAfter) -> Result<Vec<Dataflow>, AdminError> {
        self.wait_for(after).await?;
        Ok(self.ctx.store.scan(Namespace::Dataflows.prefix()).await?.iter().filter_map(dataflow).collect())
    }

    /// The dataflow `name`, once this node holds `after`.
    ///
    /// # Errors
    ///
    /// [`AdminError::NotFound`].
    pub async fn dataflow(&self, name: &str, after: &ReadAfter) -> Result<Dataflow, AdminError> {
        namespace::validate_name(Namespace::Dataflows, name)?;
        self.wait_for(after).await?;
        let record = self.live(&Namespace::Dataflows.key(name)).await?;
        record
            .as_ref()
            .and_then(dataflow)
            .ok_or_else(|| AdminError::not_found(format!("no dataflow {name:?}")))
    }

    /// Deletes the dataflow `name`.
    ///
    /// # Errors
    ///
    /// [`AdminError::NotFound`].
    pub async fn delete_dataflow(&self, name: &str, ack: AckLevel) -> Result<WriteReceipt, AdminError> {
        namespace::validate_name(Namespace::Dataflows, name)?;
        let key = Namespace::Dataflows.key(name);
        if self.live(&key).await?.is_none() {
            return Err(AdminError::not_found(format!("no dataflow {name:?}")));
        }
        self.write(WriteBatch::new().delete(key), ack).await
    }
}

fn dataflow(record: &Record) -> Option<Dataflow> {
    let value = record.value.as_ref()?;
    Some(Dataflow {
        name: record.key.strip_prefix(Namespace::Dataflows.prefix()).unwrap_or(&record.key).to_owned(),
        definition: value.to_vec(),
        version: record.token(),
    })
}
