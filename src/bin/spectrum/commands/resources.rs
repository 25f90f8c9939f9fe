//! `spectrum resources`: external resource definitions, their checks, export and
//! import.

use std::fmt;
use std::path::PathBuf;

use anyhow::Result;
use serde::Serialize;
use spectrum::client::{AckLevel, AdminClient, ReadAfter};
use spectrum::model::ResourceExport;

use crate::cli::ResourcesCommand;
use crate::output::{emit, read_input, write_export};

/// An export written to a file: `{"file", "count", "served_by"}`.
#[derive(Serialize)]
struct Exported {
    file: PathBuf,
    #[serde(flatten)]
    export: ResourceExport,
}

impl fmt::Display for Exported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "exported {} resources to {} (secrets redacted)", self.export.count, self.file.display())
    }
}

pub(super) async fn run(
    client: &AdminClient,
    cmd: ResourcesCommand,
    ack: AckLevel,
    json: bool,
) -> Result<()> {
    match cmd {
        ResourcesCommand::Create { file, replace } => {
            emit(&client.create_resource(read_input(&file)?, replace, ack).await?, json)
        }
        ResourcesCommand::List => emit(&client.resources(ReadAfter::Anything).await?, json),
        ResourcesCommand::Show { name } => emit(&client.resource(&name, ReadAfter::Anything).await?, json),
        ResourcesCommand::Delete { name } => emit(&client.delete_resource(&name, ack).await?, json),
        ResourcesCommand::Check { names } => emit(&client.check_resources(&names).await?, json),
        ResourcesCommand::Export { output } => {
            let export = client.export_resources(ReadAfter::Anything).await?;
            write_export(output.as_deref(), &export.file)?;
            match output {
                Some(file) => emit(&Exported { file, export }, json),
                None => Ok(()),
            }
        }
        ResourcesCommand::Import { file, dry_run } => {
            emit(&client.import_resources(read_input(&file)?, dry_run, ack).await?, json)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_export_to_a_file_names_the_file_beside_the_count() {
        let export = ResourceExport { file: b"{}".to_vec(), count: 2, served_by: "node-1".parse().unwrap() };
        let exported = Exported { file: "east.json".into(), export };
        assert_eq!(
            serde_json::to_value(&exported).unwrap(),
            serde_json::json!({"file": "east.json", "count": 2, "served_by": "node-1"})
        );
        assert_eq!(exported.to_string(), "exported 2 resources to east.json (secrets redacted)");
    }
}
