//! Following changes: [`Admin::watch`].

use futures::StreamExt;
use futures::stream::BoxStream;

use super::config::shown_value;
use super::{Admin, AdminError};
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
    /// without their token hash.
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
        let (stop, node) = (self.watches.clone(), self.ctx.id.clone());
        let stopped = futures::stream::once(async move { stop.is_cancelled().then_some(node) })
            .filter_map(|node| async move { node.map(|node| Err(WatchError::Stopping { node })) });
        Ok(events
            .map(|event| event.map(redacted))
            .take_until(self.watches.clone().cancelled_owned())
            .chain(stopped)
            .boxed())
    }

    /// Ends every watch this node serves, now and from now on, with
    /// [`WatchError::Stopping`] (`UNAVAILABLE`): a stopping node tells its
    /// watchers to resume on another node rather than hold their connections.
    pub fn stop_watches(&self) {
        self.watches.cancel();
    }
}

fn redacted(mut event: WatchEvent) -> WatchEvent {
    if event.kind == EventKind::Put {
        event.value = shown_value(&event.key, &event.value);
    }
    event
}
