//! `spectrum user add|list|revoke|rotate`.

use anyhow::Result;
use spectrum::client::{AckLevel, AdminClient, ReadAfter};

use crate::cli::UserCommand;
use crate::output::emit;

pub(super) async fn run(client: &AdminClient, cmd: UserCommand, ack: AckLevel, json: bool) -> Result<()> {
    match cmd {
        UserCommand::Add { name, role } => emit(&client.add_user(&name, role, ack).await?, json),
        UserCommand::List => emit(&client.users(ReadAfter::Anything).await?, json),
        UserCommand::Revoke { name } => emit(&client.revoke_user(&name, ack).await?, json),
        UserCommand::Rotate { name } => emit(&client.rotate_user(&name, ack).await?, json),
    }
}
