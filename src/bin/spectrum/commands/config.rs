//! `spectrum config`: raw entries of the configuration database.

use anyhow::Result;
use spectrum::client::{AckLevel, AdminClient, ReadAfter};

use crate::cli::ConfigCommand;
use crate::output::{emit, read_input};

pub(super) async fn run(client: &AdminClient, cmd: ConfigCommand, ack: AckLevel, json: bool) -> Result<()> {
    match cmd {
        ConfigCommand::Get { key } => emit(&client.get(&key, ReadAfter::Anything).await?, json),
        ConfigCommand::Put { key, value } => {
            let value = if value == "-" { read_input("-")? } else { value.into_bytes() };
            emit(&client.put(&key, value, ack).await?, json)
        }
        ConfigCommand::Delete { key } => emit(&client.delete(&key, ack).await?, json),
        ConfigCommand::List { prefix } => emit(&client.list(&prefix, ReadAfter::Anything).await?, json),
        ConfigCommand::Conflicts { prefix } => {
            emit(&client.conflicts(&prefix, ReadAfter::Anything).await?, json)
        }
    }
}
