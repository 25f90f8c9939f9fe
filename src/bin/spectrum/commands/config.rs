//! `spectrum config`: raw entries of the configuration database.

use std::io::Write as _;

use anyhow::{Context, Result};
use futures::StreamExt;
use spectrum::client::{AckLevel, AdminClient, PutCondition, ReadAfter, WatchEvent, WatchPosition};
use spectrum::model::TxnSpec;

use crate::cli::ConfigCommand;
use crate::output::{emit, emit_entry, read_input};

pub(super) async fn run(client: &AdminClient, cmd: ConfigCommand, ack: AckLevel, json: bool) -> Result<()> {
    match cmd {
        ConfigCommand::Get { key, consistent: false } => {
            emit_entry(&client.get(&key, ReadAfter::Anything).await?, json)
        }
        ConfigCommand::Get { key, consistent: true } => emit_entry(&client.get_consistent(&key).await?, json),
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
        ConfigCommand::Watch { prefix, from } => watch(client, &prefix, from.as_deref(), json).await,
        ConfigCommand::Conflicts { prefix } => {
            emit(&client.conflicts(&prefix, ReadAfter::Anything).await?, json)
        }
    }
}

/// `spectrum config watch`: prints events as they come until Ctrl-C or SIGTERM
/// (exit 0), or until the watch fails for good (exit 1 with the reason). The
/// table's header comes with the first event, so a watch refused at once (a
/// wrong token, a prefix the role may not read) prints only its error.
async fn watch(client: &AdminClient, prefix: &str, from: Option<&str>, json: bool) -> Result<()> {
    let from = from.map(str::parse::<WatchPosition>).transpose().context("--from")?;
    let mut events = client.watch(prefix, from);
    let mut out = std::io::stdout();
    let mut header = !json;
    let mut last: Option<WatchPosition> = None;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("SIGTERM handler")?;
    loop {
        let event = tokio::select! {
            event = events.next() => event,
            _ = tokio::signal::ctrl_c() => None,
            _ = terminate.recv() => None,
        };
        let Some(event) = event else { break };
        let event = event?;
        if std::mem::take(&mut header) {
            writeln!(out, "{:<8} {:<40} {:<32} VALUE", "KIND", "KEY", "VERSION")?;
        }
        print_event(&mut out, &event, json)?;
        last = Some(event.position);
    }
    if let Some(position) = last {
        eprintln!("stopped; resume with --from {position}");
    }
    Ok(())
}

fn print_event(out: &mut impl std::io::Write, event: &WatchEvent, json: bool) -> Result<()> {
    if json {
        writeln!(out, "{}", serde_json::to_string(event)?)?;
    } else {
        let version = event.version.as_ref().map(ToString::to_string).unwrap_or_default();
        let value = if event.kind == spectrum::client::EventKind::Put {
            String::from_utf8_lossy(&event.value).replace(['\n', '\r'], " ")
        } else {
            String::new()
        };
        writeln!(out, "{:<8} {:<40} {:<32} {value}", event.kind.to_string(), event.key, version)?;
    }
    out.flush()?;
    Ok(())
}
