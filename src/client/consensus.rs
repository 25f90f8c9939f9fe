//! The calls only a Raft-mode cluster answers: compare-and-set, transactions
//! and consistent reads. A last-writer-wins cluster refuses each with
//! `FAILED_PRECONDITION` naming Raft mode.

use spectrum_replication::{AckLevel, VersionToken};

use super::{AdminClient, ClientError, required};
use crate::model::{Entries, Entry, KeyWritten, ReadAfter, TxnSpec, WriteReceipt};
use crate::pb::proto;

/// The condition of [`AdminClient::put_if`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PutCondition {
    /// The key holds no live entry.
    Absent,
    /// The key holds exactly this live version.
    Version(VersionToken),
}

impl AdminClient {
    /// Writes `value` at `key` only if `condition` holds when the write is
    /// decided (Raft mode).
    ///
    /// # Errors
    ///
    /// `FAILED_PRECONDITION` when the condition does not hold (the message
    /// names the version the key holds; nothing is written), or in a
    /// last-writer-wins cluster; as [`put`](Self::put).
    pub async fn put_if(
        &self,
        key: &str,
        value: impl Into<Vec<u8>>,
        condition: PutCondition,
    ) -> Result<KeyWritten, ClientError> {
        let (if_absent, if_version) = match condition {
            PutCondition::Absent => (true, String::new()),
            PutCondition::Version(v) => (false, v.to_string()),
        };
        let request = proto::PutRequest {
            key: key.to_owned(),
            value: value.into(),
            ack: crate::pb::ack_to_wire(AckLevel::Quorum),
            if_version,
            if_absent,
        };
        let write = self.call().put(request).await?.into_inner().try_into()?;
        Ok(self.noted(KeyWritten { key: key.to_owned(), deleted: false, write }))
    }

    /// Applies the writes of `txn` all together, only if every condition
    /// holds (Raft mode).
    ///
    /// # Errors
    ///
    /// `INVALID_ARGUMENT` for a malformed transaction; as [`put_if`](Self::put_if).
    pub async fn txn(&self, txn: &TxnSpec) -> Result<WriteReceipt, ClientError> {
        let (conditions, writes) = txn.decode().map_err(|e| ClientError::Refused {
            code: tonic::Code::InvalidArgument,
            message: e.to_string(),
        })?;
        let request = proto::TxnRequest {
            conditions: conditions
                .iter()
                .map(|c| proto::TxnCondition {
                    key: c.key().to_owned(),
                    version: match c {
                        spectrum_replication::Condition::Version { version, .. } => version.to_string(),
                        _ => String::new(),
                    },
                })
                .collect(),
            writes: writes
                .into_iter()
                .map(|(key, value)| proto::TxnWrite {
                    key,
                    delete: value.is_none(),
                    value: value.map(|v| v.to_vec()).unwrap_or_default(),
                })
                .collect(),
        };
        let write: WriteReceipt = self.call().txn(request).await?.into_inner().try_into()?;
        if let Some(kept) = &self.session {
            kept.lock().unwrap_or_else(std::sync::PoisonError::into_inner).merge_token(&write.version);
        }
        Ok(write)
    }

    /// Reads one entry linearizably: every write committed before the call
    /// is seen, whichever node answers (Raft mode).
    ///
    /// # Errors
    ///
    /// `FAILED_PRECONDITION` in a last-writer-wins cluster; `UNAVAILABLE`
    /// when no majority confirmed in time; as [`get`](Self::get).
    pub async fn get_consistent(&self, key: &str) -> Result<Entry, ClientError> {
        let request = proto::GetRequest {
            key: key.to_owned(),
            min_version: String::new(),
            read: Some(consistent(self.read_options(&ReadAfter::Anything))),
        };
        let answer = self.call().get(request).await?.into_inner();
        Ok(required("entry", answer.entry)?.try_into()?)
    }

    /// Every live entry under `prefix`, linearizably (Raft mode).
    ///
    /// # Errors
    ///
    /// As [`get_consistent`](Self::get_consistent).
    pub async fn list_consistent(&self, prefix: &str) -> Result<Entries, ClientError> {
        let request = proto::ListRequest {
            prefix: prefix.to_owned(),
            min_version: String::new(),
            read: Some(consistent(self.read_options(&ReadAfter::Anything))),
        };
        let answer = self.call().list(request).await?.into_inner();
        Ok(Entries(answer.entries.into_iter().map(Entry::try_from).collect::<Result<_, _>>()?))
    }
}

fn consistent(read: Option<proto::ReadOptions>) -> proto::ReadOptions {
    proto::ReadOptions { consistent: true, ..read.unwrap_or_default() }
}
