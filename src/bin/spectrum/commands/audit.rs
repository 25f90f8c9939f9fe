//! `spectrum audit [--since T] [--user U] [--limit N]`.

use anyhow::Result;
use spectrum::client::{AdminClient, AuditQuery};

use crate::cli::AuditArgs;
use crate::output::emit;

pub(super) async fn run(client: &AdminClient, args: AuditArgs, json: bool) -> Result<()> {
    let query = AuditQuery {
        since_ms: args.since.unwrap_or(0),
        user: args.user,
        limit: Some(args.limit),
        ..AuditQuery::default()
    };
    emit(&client.audit(&query).await?, json)
}
