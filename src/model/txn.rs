//! A transaction as people and scripts write it: the JSON body of
//! `POST /api/v1/txn` and the file `spectrum config txn FILE` reads.
//!
//! ```json
//! {
//!   "conditions": [
//!     {"key": "dataflows/orders"},
//!     {"key": "settings/region", "version": "raft~5f0c2e71a9d3b804:4259840"}
//!   ],
//!   "writes": [
//!     {"key": "dataflows/orders", "value": "{\"steps\": []}"},
//!     {"key": "settings/old", "delete": true}
//!   ]
//! }
//! ```
//!
//! A condition without `version` asks for the key to hold no live entry; with
//! one, for the key to hold exactly that live version. Writes apply all
//! together, only if every condition holds (Raft mode).

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use spectrum_replication::{Condition, StoreError};
use utoipa::ToSchema;

/// One write of a decoded transaction: the key, and the value to put (`None`:
/// delete).
pub type TxnWrite = (String, Option<Bytes>);

/// A transaction: conditions, then writes applied only if all hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TxnSpec {
    /// Conditions that must all hold.
    #[serde(default)]
    pub conditions: Vec<TxnConditionSpec>,
    /// The writes, in order (at least one).
    pub writes: Vec<TxnWriteSpec>,
}

/// One condition of a [`TxnSpec`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TxnConditionSpec {
    /// The key.
    pub key: String,
    /// The live version it must hold; absent: it must hold no live entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// One write of a [`TxnSpec`]: a put of `value`, or a delete.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TxnWriteSpec {
    /// The key.
    pub key: String,
    /// The value to put (text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Delete the key instead.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub delete: bool,
}

/// Why a [`TxnSpec`] is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TxnSpecError {
    /// A write has both a value and `delete`, or neither.
    #[error("writes[{index}] ({key:?}) needs exactly one of \"value\" and \"delete\": true")]
    Write {
        /// Its position.
        index: usize,
        /// Its key.
        key: String,
    },
    /// A condition's version does not parse.
    #[error("conditions[{index}].version: {reason}")]
    Version {
        /// Its position.
        index: usize,
        /// Why.
        reason: String,
    },
}

impl TxnSpec {
    /// The conditions and writes, checked.
    ///
    /// # Errors
    ///
    /// [`TxnSpecError`] naming the first malformed condition or write.
    pub fn decode(&self) -> Result<(Vec<Condition>, Vec<TxnWrite>), TxnSpecError> {
        let conditions = self
            .conditions
            .iter()
            .enumerate()
            .map(|(index, c)| match &c.version {
                None => Ok(Condition::absent(c.key.clone())),
                Some(v) => v
                    .parse()
                    .map(|v| Condition::version(c.key.clone(), v))
                    .map_err(|e: StoreError| TxnSpecError::Version { index, reason: e.to_string() }),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let writes = self
            .writes
            .iter()
            .enumerate()
            .map(|(index, w)| match (&w.value, w.delete) {
                (Some(v), false) => Ok((w.key.clone(), Some(Bytes::from(v.clone().into_bytes())))),
                (None, true) => Ok((w.key.clone(), None)),
                _ => Err(TxnSpecError::Write { index, key: w.key.clone() }),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok((conditions, writes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transaction_file_decodes_and_a_write_with_value_and_delete_is_refused_by_position() {
        let spec: TxnSpec = serde_json::from_str(
            r#"{"conditions":[{"key":"dataflows/a"},{"key":"settings/b","version":"n1:4"}],
                "writes":[{"key":"dataflows/a","value":"{}"},{"key":"settings/c","delete":true}]}"#,
        )
        .unwrap();
        let (conditions, writes) = spec.decode().unwrap();
        assert_eq!(conditions[0], Condition::absent("dataflows/a"));
        assert_eq!(conditions[1], Condition::version("settings/b", "n1:4".parse().unwrap()));
        assert_eq!(writes[1], ("settings/c".to_owned(), None));
        let bad: TxnSpec =
            serde_json::from_str(r#"{"writes":[{"key":"settings/x","value":"1","delete":true}]}"#).unwrap();
        assert!(bad.decode().unwrap_err().to_string().starts_with("writes[0]"));
        assert!(serde_json::from_str::<TxnSpec>(r#"{"writes":[],"colour":1}"#).is_err());
    }
}
