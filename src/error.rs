//! Errors of node assembly.

use std::path::PathBuf;

use spectrum_core::NodeId;
use thiserror::Error;

/// Errors starting or running a [`Node`](crate::Node) or a [`Cluster`](crate::Cluster).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum NodeError {
    /// Core plumbing failed (bind, bad address).
    #[error(transparent)]
    Core(#[from] spectrum_core::CoreError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] spectrum_replication::StoreError),
    /// Replication failed.
    #[error(transparent)]
    Replication(#[from] spectrum_replication::ReplicationError),
    /// The balancer failed.
    #[error(transparent)]
    Balancer(#[from] spectrum_balancer::BalancerError),
    /// A setting is invalid.
    #[error("invalid configuration: {field}: {reason}")]
    Config {
        /// The setting (`size`, `cluster_key`, …).
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// A configuration file could not be read or parsed.
    #[error("{}: {reason}", path.display())]
    ConfigFile {
        /// The file.
        path: PathBuf,
        /// What is wrong (line and field; never the offending text).
        reason: String,
    },
    /// No running node has this id.
    #[error("no running node {id:?}")]
    UnknownNode {
        /// The id asked for.
        id: String,
    },
    /// An id could not be made.
    #[error(transparent)]
    InvalidId(#[from] spectrum_core::InvalidId),
    /// The data directory could not be created.
    #[error("data directory {}: {source}", path.display())]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A blocking store task failed (it panicked or was cancelled).
    #[error("the store task of {node} failed: {source}")]
    StoreTask {
        /// The node.
        node: NodeId,
        /// Why.
        source: tokio::task::JoinError,
    },
    /// This node was removed from the cluster by an operator; it may return only
    /// once an operator undrains it.
    #[error(
        "node {id} was removed from the cluster (membership version {version}); run `spectrum node undrain \
         {id}` through another node to let it return"
    )]
    Removed {
        /// This node.
        id: NodeId,
        /// The write that removed it.
        version: String,
    },
    /// Another running node already has this node's id: the membership record
    /// of the id gives another address, and the node there answers with this
    /// id. Starting would take its place (membership, the balancer's traffic,
    /// its audit records), so this node does not start.
    #[error(
        "node id {id} is in use by a running node at {addr}; give this node another id, or stop that \
         node first (a node moved to a new address starts once its old address no longer answers)"
    )]
    IdInUse {
        /// This node's id.
        id: NodeId,
        /// Where the other node with this id runs.
        addr: String,
    },
    /// Raft mode: the cluster's membership record of this node is not the one
    /// this node holds, so it did not record itself (it may have been removed
    /// while it was down). A member catches up and records itself; a removed
    /// node never does.
    #[error(
        "node {id}: the cluster's membership record of this node changed since this node last saw it          ({reason}); waiting to catch up. A node removed while it was down never does: start it on an          empty data_dir to join anew"
    )]
    MembershipChanged {
        /// This node.
        id: NodeId,
        /// The failed condition, as the state machine put it.
        reason: String,
    },
    /// gRPC reflection could not be set up from the descriptors.
    #[error("gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}
