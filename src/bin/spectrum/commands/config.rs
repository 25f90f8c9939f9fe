//! `spectrum config`: raw entries of the configuration database.

use anyhow::{Context, Result};
use spectrum::client::{AckLevel, AdminClient, PutCondition, ReadAfter};
use spectrum::model::TxnSpec;

use crate::cli::ConfigCommand;
use crate::output::{emit, read_input};

pub(super) async fn run(client: &AdminClient, cmd: ConfigCommand, ack: AckLevel, json: bool) -> Result<()> {
    match cmd {
        ConfigCommand::Get { key, consistent: false } => {
            emit(&client.get(&key, ReadAfter::Anything).await?, json)
        }
        ConfigCommand::Get { key, consistent: true } => emit(&client.get_consistent(&key).await?, json),
        ConfigCommand::Put { key, value, if_version, if_absent } => {
            let value = if value == "-" { read_input("-")? } else { value.into_bytes() };
            let condition = match (if_version, if_absent) {
                (Some(v), _) => Some(PutCondition::Version(v.parse().context("--if-version")?)),
                (None, true) => Some(PutCondition::Absent),
                (None, false) => None,
            };
            match condition {
                Some(condition) => emit(&client.put_if(&key, value, condition).await?, json),
                None => emit(&client.put(&key, value, ack).await?, json),
            }
        }
        ConfigCommand::Txn { file } => {
            let spec: TxnSpec = serde_json::from_slice(&read_input(&file)?)
                .with_context(|| format!("{file}: not a transaction"))?;
            emit(&client.txn(&spec).await?, json)
        }
        ConfigCommand::Delete { key } => emit(&client.delete(&key, ack).await?, json),
        ConfigCommand::List { prefix, consistent: false } => {
            emit(&client.list(&prefix, ReadAfter::Anything).await?, json)
        }
        ConfigCommand::List { prefix, consistent: true } => {
            emit(&client.list_consistent(&prefix).await?, json)
        }
    }
}
