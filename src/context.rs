//! [`NodeContext`]: what a service running on a node can use.

use std::fmt;
use std::sync::Arc;

use spectrum_core::{ClusterId, NodeId};
use spectrum_replication::ConfigStore;
use spectrum_resources::{ClusterKey, ResourceResolver};

use crate::namespace::{NamespaceValue, TypedView};

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
}

impl fmt::Debug for NodeContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeContext")
            .field("id", &self.id)
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}
