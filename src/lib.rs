//! # Spectrum
//!
//! Run a service as a **cluster of identical nodes behind one load balancer**.
//! Clients use the balancer's address as if it were a single server; the balancer
//! picks a node for each request through a pluggable
//! [`BalancingStrategy`](spectrum_balancer::BalancingStrategy) and fails over when a
//! node dies. Every node holds a full copy of the configuration database (license,
//! dataflows, resources, settings, membership), kept in sync by a
//! [`Replicator`](spectrum_replication::Replicator) over a
//! [`ConfigStore`](spectrum_replication::ConfigStore); external resources are
//! defined there and resolved on each node by a
//! [`ResourceResolver`](spectrum_resources::ResourceResolver).
//!
//! This crate assembles the parts:
//!
//! - [`Node`] / [`NodeBuilder`]: one member, serving the replication service, the
//!   [management API](management), `grpc.health.v1`, gRPC reflection, and the
//!   application's own tonic services; durable by default (a `RedbStore`).
//! - [`Cluster`]: nodes and a balancer in one process, for examples and tests.
//! - [`namespace`]: the configuration database's namespaces, one codec per
//!   namespace for validating writes and for typed views ([`NodeContext::view`]).
//! - [`client`]: the typed management client ([`client::AdminClient`]), whose
//!   results are the [`model`] types; [`admin`]: the same operations on a node,
//!   which the gRPC [`management`] service adapts.
//! - [`watch`]: following the changes under a prefix, resumable across restarts
//!   and on any node ([`client::AdminClient::watch`], [`NodeContext::watch`]).
//! - [`registry`] and [`license`]: resource definitions with sealed secrets, and
//!   licenses with their expiry.
//! - [`auth`]: who may call the management API: bearer tokens, users stored as
//!   token hashes, and their roles; every management write is audited
//!   ([`admin::Admin::audit`]).
//! - [`http_api`]: the same management API over HTTP/JSON at `/api/v1/` (with its
//!   OpenAPI document), and [`console`]: the browser Management Console at
//!   `/console`, built on it; both on every node's public port.
//! - [`discovery`]: the balancer follows membership, and the strategy and weights
//!   set in the database (`balancer/`), through the management API.
//! - [`config`]: the TOML files of `spectrum node` and `spectrum balancer`.
//! - [`demo`]: a small dataflow service used by the examples.
//!
//! ## A cluster in a few lines
//!
//! Start three nodes and a balancer, write a setting through the balancer with the
//! typed [`AdminClient`](client::AdminClient), and read it back from every node:
//!
//! ```
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use spectrum::Cluster;
//! use spectrum::client::{AckLevel, AdminClient, ReadAfter};
//!
//! let cluster = Cluster::builder("docs".parse()?).size(3).start().await?;
//!
//! let admin = AdminClient::connect(&cluster.balancer_addr(), None).await?;
//! let put = admin.put("settings/greeting", "hello", AckLevel::All).await?;
//!
//! for node in cluster.nodes() {
//!     let direct = AdminClient::connect(node.addr(), None).await?;
//!     let got = direct.get("settings/greeting", ReadAfter::from(&put.write)).await?;
//!     assert_eq!(got.value, b"hello");
//! }
//! cluster.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! ## Your own service on every node
//!
//! Add any tonic service with [`NodeBuilder::add_service`], or with
//! [`NodeBuilder::add_service_with`] when it needs the node's store or resolver
//! (see [`NodeContext`]); [`ClusterBuilder::configure_nodes`] does it for every
//! node of an in-process cluster.

pub mod admin;
pub mod auth;
pub mod cert;
pub mod client;
pub mod cluster;
pub mod config;
pub mod console;
pub mod context;
pub mod demo;
pub mod discovery;
pub mod error;
pub mod http_api;
mod kill;
pub mod license;
pub mod management;
pub mod model;
pub mod namespace;
pub mod node;
pub mod pb;
pub mod readiness;
pub mod registry;
pub mod resolve;
pub mod session;
pub mod watch;

pub use cluster::{Cluster, ClusterBuilder};
pub use error::NodeError;
pub use node::{Node, NodeBuilder, NodeContext};

pub use spectrum_balancer as balancer;
pub use spectrum_core as core;
pub use spectrum_replication as replication;
pub use spectrum_resources as resources;

/// The README's Rust examples, compiled (and the strategy example run) as
/// doctests, so the README cannot drift from the API: an embedding trial
/// found its node example no longer compiled.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
