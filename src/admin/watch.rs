//! Following changes: [`Admin::watch`].

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use parking_lot::Mutex;

use super::config::shown_value;
use super::{Admin, AdminError, OutOfCluster};
use crate::model::ReadAfter;
use crate::session::Session;
use crate::watch::{self, EventKind, WatchError, WatchEvent, WatchLimits, WatchPosition};

/// Longest prefix a watch accepts, in bytes.
pub const MAX_WATCH_PREFIX: usize = 1024;

impl Admin {
    /// Follows every change under `prefix` from `from` (from now when `None`),
    /// once this node holds `after` and, for a position another node issued,
    /// every write the position's `seen` names (see [`crate::watch`]).
    /// Values are shown as reads show them: resource definitions redacted, users
    /// without their token hash. The stream ends with [`WatchError::Stopping`]
    /// when the node stops, and with [`WatchError::OutOfCluster`] (within a
    /// second) when it goes out of the cluster: both `UNAVAILABLE`, so a
    /// client resumes on another node.
    ///
    /// # Errors
    ///
    /// [`AdminError::InvalidArgument`] for a prefix over [`MAX_WATCH_PREFIX`]
    /// bytes; [`AdminError::NotCaughtUp`]; [`AdminError::Watch`] when the watch
    /// cannot start from `from` (compacted, beyond this node's feed).
    pub async fn watch(
        &self,
        prefix: &str,
        from: Option<WatchPosition>,
        after: &ReadAfter,
    ) -> Result<BoxStream<'static, Result<WatchEvent, WatchError>>, AdminError> {
        if prefix.len() > MAX_WATCH_PREFIX {
            return Err(AdminError::InvalidArgument(format!(
                "prefix is {} bytes; at most {MAX_WATCH_PREFIX} are accepted",
                prefix.len()
            )));
        }
        let mut session = after.session();
        if let Some(p) = from.as_ref().filter(|p| &p.origin != self.ctx.store.origin()) {
            session.merge(&Session::from_vector(p.seen.clone()));
        }
        let wait = match after {
            ReadAfter::Session { wait, .. } => *wait,
            _ => None,
        };
        self.wait_for(&ReadAfter::Session { session, wait }).await?;
        let events = watch::watch(self.ctx.store.clone(), prefix, from, WatchLimits::default()).await?;
        // Why the watch ended early, for the error that closes it.
        let ended = Arc::new(Mutex::new(None));
        let end = {
            let (stopping, node, ended) = (self.watches.clone(), self.ctx.id.clone(), ended.clone());
            let went_out = went_out(self.out_of_cluster.clone());
            async move {
                let why = tokio::select! {
                    () = stopping.cancelled_owned() => WatchError::Stopping { node },
                    reason = went_out => WatchError::OutOfCluster { node, reason },
                };
                *ended.lock() = Some(why);
            }
        };
        let closing =
            futures::stream::once(async move { ended.lock().take().map(Err) }).filter_map(std::future::ready);
        Ok(events.map(|event| event.map(redacted)).take_until(end).chain(closing).boxed())
    }

    /// Ends every watch this node serves, now and from now on, with
    /// [`WatchError::Stopping`] (`UNAVAILABLE`): a stopping node tells its
    /// watchers to resume on another node rather than hold their connections.
    pub fn stop_watches(&self) {
        self.watches.cancel();
    }
}

/// How often a running watch looks whether its node went out of the cluster.
const OUT_OF_CLUSTER_POLL: Duration = Duration::from_secs(1);

/// Resolves, with the reason, once `out` says the node is out of the cluster
/// (looked at every [`OUT_OF_CLUSTER_POLL`]); never without `out`.
async fn went_out(out: Option<OutOfCluster>) -> String {
    let Some(out) = out else { return std::future::pending().await };
    let mut every = tokio::time::interval(OUT_OF_CLUSTER_POLL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if let Some(reason) = out() {
            return reason;
        }
    }
}

fn redacted(mut event: WatchEvent) -> WatchEvent {
    if event.kind == EventKind::Put {
        event.value = shown_value(&event.key, &event.value);
    }
    event
}
