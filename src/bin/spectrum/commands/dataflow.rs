//! `spectrum dataflow`: dataflow definitions.

use anyhow::Result;
use spectrum::client::{AckLevel, AdminClient, ReadAfter};

use crate::cli::DataflowCommand;
use crate::output::{emit, read_input};

pub(super) async fn run(client: &AdminClient, cmd: DataflowCommand, ack: AckLevel, json: bool) -> Result<()> {
    match cmd {
        DataflowCommand::Create { name, file, replace } => {
            emit(&client.create_dataflow(&name, read_input(&file)?, replace, ack).await?, json)
        }
        DataflowCommand::List => emit(&client.dataflows(ReadAfter::Anything).await?, json),
        DataflowCommand::Show { name } => emit(&client.dataflow(&name, ReadAfter::Anything).await?, json),
        DataflowCommand::Delete { name } => emit(&client.delete_dataflow(&name, ack).await?, json),
    }
}
