//! `spectrum cert`: a cluster CA, and certificates for nodes and balancers.

use std::fmt;

use anyhow::Result;
use serde::Serialize;
use spectrum::cert::{
    CertPaths, init_dir, issue_client_in_dir, issue_in_dir, issue_server_in_dir, node_dns_name,
};

use crate::cli::CertCommand;
use crate::output::emit;

/// The files one command wrote.
#[derive(Serialize)]
struct Written {
    /// What the certificate is for: `ca`, or the node id.
    of: String,
    /// The names it carries (for a node: its id name, then each `--san`).
    names: Vec<String>,
    cert: String,
    key: String,
}

impl fmt::Display for Written {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "certificate {}", self.cert)?;
        writeln!(f, "private key {} (mode 0600)", self.key)?;
        if !self.names.is_empty() {
            write!(f, "names       {}", self.names.join(", "))?;
        }
        Ok(())
    }
}

fn written(of: String, names: Vec<String>, paths: &CertPaths) -> Written {
    Written { of, names, cert: paths.cert.display().to_string(), key: paths.key.display().to_string() }
}

/// Runs one `cert` subcommand.
pub(super) fn run(cmd: CertCommand, json: bool) -> Result<()> {
    match cmd {
        CertCommand::Init { dir } => emit(&written("ca".into(), Vec::new(), &init_dir(&dir)?), json),
        CertCommand::Issue { id, dir, client_only: true, .. } => {
            let paths = issue_client_in_dir(&dir, &id)?;
            emit(&written(id.to_string(), Vec::new(), &paths), json)
        }
        CertCommand::Issue { id, dir, sans, server_only: true, .. } => {
            let paths = issue_server_in_dir(&dir, &id, &sans)?;
            emit(&written(id.to_string(), sans, &paths), json)
        }
        CertCommand::Issue { id, dir, sans, server_only: false, .. } => {
            let paths = issue_in_dir(&dir, &id, &sans)?;
            let names = std::iter::once(node_dns_name(&id)).chain(sans).collect();
            emit(&written(id.to_string(), names, &paths), json)
        }
    }
}
