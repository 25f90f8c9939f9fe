//! `spectrum export` and `spectrum import`: the whole configuration (licenses,
//! dataflows, settings, resources) between clusters.

use std::fmt;
use std::path::PathBuf;

use anyhow::Result;
use serde::Serialize;
use spectrum::client::{AckLevel, AdminClient, ReadAfter};
use spectrum::model::ConfigExport;

use crate::output::{emit, read_input, write_export};

/// An export written to a file: `{"file", "licenses", "dataflows", "settings",
/// "resources", "served_by"}`.
#[derive(Serialize)]
struct Exported {
    file: PathBuf,
    #[serde(flatten)]
    export: ConfigExport,
}

impl fmt::Display for Exported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = &self.export;
        write!(
            f,
            "exported {} licenses, {} dataflows, {} settings and {} resources to {} (secrets redacted)",
            e.licenses,
            e.dataflows,
            e.settings,
            e.resources,
            self.file.display()
        )
    }
}

pub(super) async fn export(client: &AdminClient, output: Option<PathBuf>, json: bool) -> Result<()> {
    let export = client.export_config(ReadAfter::Anything).await?;
    write_export(output.as_deref(), &export.file)?;
    match output {
        Some(file) => emit(&Exported { file, export }, json),
        None => Ok(()),
    }
}

pub(super) async fn import(
    client: &AdminClient,
    file: &str,
    dry_run: bool,
    ack: AckLevel,
    json: bool,
) -> Result<()> {
    emit(&client.import_config(read_input(file)?, dry_run, ack).await?, json)
}
