//! The dataflows a node has loaded, kept current by a watch of `dataflows/`
//! through the node's [`NodeContext::watch`]: a changed definition is reloaded
//! as soon as the node applies the change, before any request needs it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use parking_lot::RwLock;
use spectrum_core::Timestamp;
use spectrum_replication::{Record, VersionToken};
use tokio::sync::oneshot;
use tracing::{info, warn};

use super::DataflowDefinition;
use crate::namespace::{Namespace, NamespaceValue};
use crate::node::NodeContext;
use crate::watch::{EventKind, WatchEvent};

/// One loaded dataflow: its definition (or why it does not decode), the write
/// that set it, and whether the watch loaded it (rather than a request that
/// found it missing or stale).
#[derive(Debug, Clone)]
pub(super) struct Flow {
    pub(super) definition: Result<DataflowDefinition, String>,
    pub(super) version: VersionToken,
    stamp: Timestamp,
    pub(super) by_watch: bool,
}

/// The dataflows loaded on one node.
#[derive(Debug, Default)]
pub(super) struct Loaded {
    flows: RwLock<HashMap<String, Flow>>,
    reloads: AtomicU64,
}

/// Stops the watch task when the last clone of the service is dropped.
#[derive(Debug)]
pub(super) struct StopOnDrop(#[allow(dead_code)] oneshot::Sender<()>);

fn flow_of(key: &str, value: &[u8], version: VersionToken, stamp: Timestamp, by_watch: bool) -> Flow {
    let definition = DataflowDefinition::decode(value).map_err(|e| format!("{key}: {e}"));
    Flow { definition, version, stamp, by_watch }
}

impl Loaded {
    /// How many times a definition was loaded or reloaded.
    pub(super) fn reloads(&self) -> u64 {
        self.reloads.load(Ordering::Relaxed)
    }

    /// Keeps `flow` for `name` unless a newer write is loaded already.
    fn keep(&self, name: &str, flow: Flow) {
        let mut flows = self.flows.write();
        if flows.get(name).is_some_and(|held| held.stamp > flow.stamp) {
            return;
        }
        info!(dataflow = name, version = %flow.version, by_watch = flow.by_watch, "dataflow loaded");
        self.reloads.fetch_add(1, Ordering::Relaxed);
        flows.insert(name.to_owned(), flow);
    }

    fn apply(&self, event: &WatchEvent) {
        let Some(name) = event.key.strip_prefix(Namespace::Dataflows.prefix()) else { return };
        match (event.kind, &event.version) {
            (EventKind::Put, Some(version)) => {
                self.keep(name, flow_of(&event.key, &event.value, version.clone(), event.stamp, true));
            }
            (EventKind::Delete, _) => {
                let mut flows = self.flows.write();
                if flows.get(name).is_some_and(|held| held.stamp <= event.stamp || event.version.is_none()) {
                    info!(dataflow = name, "dataflow unloaded");
                    flows.remove(name);
                }
            }
            _ => {}
        }
    }

    /// The flow for the live `record` of dataflow `name`: the loaded one when it
    /// is that write, else `record` loaded now (the watch had not got there yet).
    pub(super) fn current(&self, name: &str, record: &Record) -> Flow {
        if let Some(flow) = self.flows.read().get(name).filter(|f| f.version == record.token()) {
            return flow.clone();
        }
        let value = record.value.as_deref().unwrap_or_default();
        let flow = flow_of(&record.key, value, record.token(), record.stamp, false);
        self.keep(name, flow.clone());
        flow
    }
}

/// Loads every dataflow of `ctx`'s node and keeps them current until the
/// returned guard is dropped.
pub(super) fn start(ctx: &NodeContext) -> (Arc<Loaded>, StopOnDrop) {
    let loaded = Arc::new(Loaded::default());
    let (stop_tx, mut stop) = oneshot::channel();
    let (ctx, held) = (ctx.clone(), loaded.clone());
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = follow(&ctx, &held) => {}
                _ = &mut stop => return,
            }
            // The watch failed (the store could not be read): start again shortly.
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = &mut stop => return,
            }
        }
    });
    (loaded, StopOnDrop(stop_tx))
}

/// Watches `dataflows/` from now, loads what is there, then applies each change.
async fn follow(ctx: &NodeContext, loaded: &Loaded) {
    let prefix = Namespace::Dataflows.prefix();
    let mut events = match ctx.watch(prefix, None).await {
        Ok(events) => events,
        Err(error) => return warn!(%error, "cannot watch dataflows"),
    };
    match ctx.store.scan(prefix).await {
        Ok(records) => {
            for r in records.iter().filter(|r| !r.is_tombstone()) {
                let name = &r.key[prefix.len()..];
                let value = r.value.as_deref().unwrap_or_default();
                loaded.keep(name, flow_of(&r.key, value, r.token(), r.stamp, true));
            }
        }
        Err(error) => return warn!(%error, "cannot read dataflows"),
    }
    while let Some(event) = events.next().await {
        match event {
            Ok(event) => loaded.apply(&event),
            Err(error) => return warn!(%error, "dataflow watch ended"),
        }
    }
}
