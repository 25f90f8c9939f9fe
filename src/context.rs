//! [`NodeContext`]: what a service running on a node can use.

use std::fmt;
use std::sync::Arc;

use spectrum_core::{ClusterId, NodeId};
use spectrum_replication::ConfigStore;
use spectrum_resources::{ClusterKey, ResourceResolver};

use crate::namespace::{NamespaceValue, TypedView};
use crate::watch::{WatchError, WatchLimits, WatchPosition, WatchStream};

/// What a service running on a node can use: the node's identity, its copy of
/// the configuration database and its resource resolver.
#[derive(Clone)]
pub struct NodeContext {
    /// This node's id.
    pub id: NodeId,
    /// The cluster's id.
    pub cluster: ClusterId,
    /// This node's copy of the configuration database.
    pub store: Arc<dyn ConfigStore>,
    /// Resolves resource definitions on this node.
    pub resolver: Arc<dyn ResourceResolver>,
    /// The cluster key that seals and opens resource secrets, when configured.
    pub cluster_key: Option<Arc<ClusterKey>>,
    /// Previous cluster keys, still used to open secrets sealed before a key
    /// rotation (and to authenticate peers not yet given the new key).
    pub previous_keys: Vec<Arc<ClusterKey>>,
}

impl NodeContext {
    /// A typed, read-only view of one namespace of this node's copy of the
    /// configuration database: `ctx.view::<License>().get("main")`.
    pub fn view<T: NamespaceValue>(&self) -> TypedView<T> {
        TypedView::new(self.store.clone())
    }

    /// Follows every change under `prefix` of this node's copy, from `from` (a
    /// position from an earlier event; from now when `None`), as the management
    /// API's `Watch` does (see [`watch`](crate::watch)), with values as stored:
    /// the service runs inside the node, so nothing is redacted.
    ///
    /// ```no_run
    /// # async fn run(ctx: spectrum::NodeContext) -> Result<(), Box<dyn std::error::Error>> {
    /// use futures::StreamExt;
    ///
    /// let mut changes = ctx.watch("dataflows/", None).await?;
    /// while let Some(event) = changes.next().await {
    ///     let event = event?;
    ///     println!("{} {} (resume from {})", event.kind, event.key, event.position);
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`WatchError`] when the watch cannot start from `from` (compacted, or a
    /// position of another node this one has not caught up with); the stream
    /// ends with one when the store fails.
    pub async fn watch(&self, prefix: &str, from: Option<WatchPosition>) -> Result<WatchStream, WatchError> {
        crate::watch::watch(self.store.clone(), prefix, from, WatchLimits::default()).await
    }
}

impl fmt::Debug for NodeContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeContext")
            .field("id", &self.id)
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}
