//! Errors of node assembly.

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
    /// The configuration was invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
}
