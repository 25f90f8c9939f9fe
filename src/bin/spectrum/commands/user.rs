//! `spectrum user add|list|revoke|rotate`.

use anyhow::Result;
use spectrum::client::{AdminClient, ReadAfter};

use crate::cli::UserCommand;
use crate::output::emit;

pub(super) async fn run(client: &AdminClient, cmd: UserCommand, json: bool) -> Result<()> {
    match cmd {
        UserCommand::Add { name, role, ack } => emit(&client.add_user(&name, role, ack.into()).await?, json),
        UserCommand::List => emit(&client.users(ReadAfter::Anything).await?, json),
        UserCommand::Revoke { name, ack } => emit(&client.revoke_user(&name, ack.into()).await?, json),
        UserCommand::Rotate { name, ack } => emit(&client.rotate_user(&name, ack.into()).await?, json),
    }
}
