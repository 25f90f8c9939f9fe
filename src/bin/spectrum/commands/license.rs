//! `spectrum license`: install and show licenses.

use anyhow::Result;
use spectrum::client::{AckLevel, AdminClient, ReadAfter};

use crate::cli::LicenseCommand;
use crate::output::{emit, read_input};

pub(super) async fn run(client: &AdminClient, cmd: LicenseCommand, ack: AckLevel, json: bool) -> Result<()> {
    match cmd {
        LicenseCommand::Set { file, name } => {
            emit(&client.set_license(Some(&name), read_input(&file)?, ack).await?, json)
        }
        LicenseCommand::Show { name } => emit(&client.license(Some(&name), ReadAfter::Anything).await?, json),
    }
}
