//! # spectrum-replication
//!
//! Spectrum's replicated configuration database. Every node of a cluster holds a
//! full copy; any node accepts writes; the copies converge.
//!
//! - [`ConfigStore`] is one node's copy. Each record carries a value or a
//!   tombstone, the writer's HLC stamp, its [`Origin`] and a per-origin sequence
//!   number. An origin is a store incarnation, not just a node: the node id plus
//!   an incarnation drawn when the store is created empty and kept as long as it
//!   lives (`n1~3f09c2d4a1b87e65`), so a node restarted on an empty disk starts a
//!   new sequence instead of reusing numbers its peers already hold (Corrosion's
//!   site id; see [`origin`]). Merging is last-writer-wins by `(stamp, origin)`: commutative,
//!   associative and idempotent, so copies that merged the same records are equal
//!   whatever the order. [`RedbStore`] is the durable default: every change is
//!   committed to a redb file (fsync) before it is acknowledged, with the HLC
//!   high-water mark, so a node killed with `kill -9` restarts with every
//!   acknowledged write and never issues a smaller stamp. [`MemoryStore`] keeps
//!   everything in memory, for tests and demos. Both run one state machine and
//!   pass one conformance suite (`testing`, feature `testing`).
//! - A store's [`digest`](ConfigStore::digest) is a [`VersionVector`]: per origin,
//!   the highest contiguous sequence number seen. It is O(nodes) (one entry per
//!   incarnation that wrote: one more per lost disk), never O(keys).
//!   Given a peer's digest, [`delta`](ConfigStore::delta) returns what the peer
//!   lacks (within a byte budget), and [`merge`](ConfigStore::merge) of that delta
//!   with its `covers` brings the peer up to date.
//! - Two writes to one key made without seeing each other are a
//!   [conflict]: last-writer-wins still decides what the key reads,
//!   but the loser is kept, replicated, and listed by
//!   [`conflicts`](ConfigStore::conflicts) on every replica until a later
//!   write that saw both clears it.
//! - Deletes are tombstones. [`collect_tombstones`](ConfigStore::collect_tombstones)
//!   drops the ones every member has seen (see [`horizon`], which reads each
//!   member through the origin its store writes under now); a peer whose
//!   digest is below the store's tombstone floor then gets a [`Snapshot`]
//!   instead of a delta, and [`restore`](ConfigStore::restore) drops what the
//!   snapshot shows was deleted, so a deleted key never comes back. A store
//!   that has not written yet (a new disk) makes its first write only once
//!   [`horizon::FirstWrite`] is due, so it follows every tombstone a peer may
//!   have collected on the strength of the digest of a store its node lost.
//! - Every stored change has a gap-free index in the store's change feed:
//!   [`changes_since`](ConfigStore::changes_since) reads it from a resume
//!   position, and [`subscribe`](ConfigStore::subscribe) wakes a watcher up.
//! - [`Replicator`] moves writes between nodes. [`AntiEntropy`] pushes every local
//!   write to every peer at once (acknowledged at [`AckLevel::Local`], `Quorum` or
//!   `All`), and every interval exchanges digests with a random peer so that
//!   anything a push missed is repaired. [`ReplicationService`] is its gRPC
//!   server side (the wire protocol is private to this crate); both refuse peers
//!   of another cluster and peers whose clocks run too far ahead of the majority, and, given a
//!   [`PeerCredential`], every call that does not carry it (see [`credential`]).
//! - Every exchange measures the peer's physical clock offset over the round
//!   trip, with its uncertainty, into the [`PeerTable`]; [`ClockCheck`] judges
//!   from it whether this node's own clock is the one that is off (a node then
//!   refuses writes, yet keeps taking its peers' data).
//! - Behind the `testing` feature, besides the conformance suites:
//!   `linearizability`, a checker (Wing & Gong's search with Lowe's
//!   memoization, per key) that decides whether a recorded history of reads,
//!   writes, deletes and compare-and-sets on keyed registers is linearizable,
//!   and reads histories as JSON lines.
//!
//! ## Two copies converging
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use std::sync::Arc;
//! use spectrum_core::{Hlc, NodeId};
//! use spectrum_replication::{ConfigStore, MemoryStore, WriteBatch};
//!
//! let a = MemoryStore::new(NodeId::new("a")?, Arc::new(Hlc::system()));
//! let b = MemoryStore::new(NodeId::new("b")?, Arc::new(Hlc::system()));
//!
//! // Local writes: a batch applies atomically and is numbered 1, 2, 3 under
//! // a's origin (node `a`, a fresh incarnation).
//! let written = a.apply(WriteBatch::new().put("license/key", "XYZ").put("settings/mode", "fast")).await?;
//! assert_eq!((written[1].origin.node().as_str(), written[1].seq), ("a", 2));
//! a.apply(WriteBatch::new().delete("settings/mode")).await?;
//! b.apply(WriteBatch::new().put("settings/region", "eu")).await?;
//!
//! // Anti-entropy by hand: each side sends what the other's digest lacks.
//! let for_b = a.delta(&b.digest().await?, 64 * 1024).await?;
//! assert!(for_b.complete);
//! b.merge(for_b.records, &for_b.covers).await?;
//! let for_a = b.delta(&a.digest().await?, 64 * 1024).await?;
//! a.merge(for_a.records, &for_a.covers).await?;
//!
//! assert_eq!(a.digest().await?, b.digest().await?);
//! assert_eq!(a.scan("").await?, b.scan("").await?);
//! // A delete is a tombstone record: it replicates like a put.
//! assert!(b.get("settings/mode").await?.expect("tombstone").is_tombstone());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```
//!
//! ## Durable, and watched
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use std::sync::Arc;
//! use spectrum_core::Hlc;
//! use spectrum_replication::{ConfigStore, RedbStore, WriteBatch};
//!
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("node-1.redb");
//! let store = RedbStore::open(&path, "node-1".parse()?, Arc::new(Hlc::system()))?;
//!
//! // A watcher takes a consistent copy, then follows the feed from its position.
//! let start = store.snapshot().await?;
//! store.apply(WriteBatch::new().put("settings/mode", "fast").put("license/key", "XYZ")).await?;
//! let page = store.changes_since("settings/", start.position, 100).await?;
//! assert_eq!(page.changes.len(), 1);
//! assert_eq!(page.changes[0].key, "settings/mode");
//!
//! // Acknowledged means on disk: a restart finds it.
//! drop(store);
//! let store = RedbStore::open(&path, "node-1".parse()?, Arc::new(Hlc::system()))?;
//! assert!(store.get("license/key").await?.is_some());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```
//!
//! ## Over the network
//!
//! A node builds an [`AntiEntropy`] over its store, serves
//! [`AntiEntropy::service`] with its other gRPC services, starts the periodic
//! rounds, and hands every local write's records to
//! [`Replicator::replicate`]:
//!
//! ```no_run
//! # async fn node() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use std::time::Duration;
//! use spectrum_core::{Hlc, TransportConfig, transport::bind};
//! use spectrum_replication::{
//!     AckLevel, AntiEntropy, ConfigStore, PeerCredential, RedbStore, Replicator, WriteBatch,
//! };
//!
//! let hlc = Arc::new(Hlc::system());
//! let store = Arc::new(RedbStore::open("/var/lib/spectrum/node-1.redb", "node-1".parse()?, hlc.clone())?);
//! let listener = bind("127.0.0.1:0".parse()?).await?;
//! let transport = TransportConfig::default();
//! let replicator = AntiEntropy::builder(store.clone(), hlc, "prod".parse()?, listener.addr())
//!     .seeds(vec!["http://10.0.0.2:7000".parse()?])
//!     .transport(transport.clone())
//!     // The same secret on every node (derive it from the cluster key): calls
//!     // without it are refused, both ways.
//!     .credential(PeerCredential::from_bytes([7; 32]))
//!     .build();
//! let server = transport
//!     .server()?
//!     .add_service(replicator.service().into_server(transport.max_message_bytes))
//!     .serve_with_incoming(listener.incoming);
//! tokio::spawn(server);
//! let _rounds = replicator.start(); // rounds stop when this handle is dropped
//!
//! let records = store.apply(WriteBatch::new().put("settings/mode", "fast")).await?;
//! replicator.replicate(records, AckLevel::Quorum, Duration::from_secs(2)).await?;
//! # Ok(())
//! # }
//! ```
//!
//! ## Why the traits are async
//!
//! [`ConfigStore`] and [`Replicator`] are I/O plug-ins (a durable store writes to
//! disk, a replicator talks to peers), so they use `#[async_trait]`, are
//! `Send + Sync + 'static`, and are held as `Arc<dyn …>`. Implementations prove
//! themselves with the conformance suites (feature `testing`): `testing` for a
//! store, `conformance` for a replicator (real nodes over gRPC: ack levels,
//! convergence, deletes, restarts, membership, shutdown, bad input, and what
//! the replicator's declared mode promises).
//! [`RedbStore`] serves reads from memory and runs each disk commit on Tokio's
//! blocking pool, so no async worker waits for an fsync.

pub mod anti_entropy;
pub mod changelog;
pub mod clock;
pub mod conflict;
#[cfg(feature = "testing")]
pub mod conformance;
pub mod credential;
pub mod error;
mod feed;
mod gate;
mod group_commit;
mod handshake;
pub mod horizon;
#[cfg(feature = "testing")]
pub mod linearizability;
pub mod liveness;
mod log_limit;
pub mod memory;
pub mod origin;
pub mod peers;
pub mod raft;
pub mod record;
pub mod redb;
mod redb_log;
pub mod replicator;
pub mod service;
mod state;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;
pub mod transaction;
mod wire;

/// Generated protobuf types and gRPC stubs of the replication protocol, private
/// to this crate: users reach it through [`ReplicationService`] and
/// [`AntiEntropy`]. [`RedbStore`] stores its `Record` message on disk, so a change
/// to the wire format is also a change to the disk format.
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub(crate) mod proto {
    tonic::include_proto!("spectrum.replication.v1");
}

pub use anti_entropy::{AntiEntropy, AntiEntropyBuilder, AntiEntropyHandle};
pub use changelog::{
    ChangeLogLimits, DEFAULT_CHANGE_LOG_CAPACITY, DEFAULT_CHANGE_LOG_ENTRIES, DEFAULT_CHANGE_LOG_MAX_AGE,
    FeedHead,
};
pub use clock::{ClockCheck, OFFSET_FRESH};
pub use conflict::Conflict;
pub use credential::PeerCredential;
pub use error::{PeerFailure, ReplicationError, StoreError};
pub use memory::MemoryStore;
pub use origin::{InvalidOrigin, Origin};
pub use peers::PeerTable;
pub use raft::{RaftMemoryLog, RaftReplicator, RaftReplicatorBuilder, RaftService, RaftSettings};
pub use record::{
    Change, ChangeBatch, Delta, Lineage, MergeReport, Record, Snapshot, VersionToken, VersionVector, Write,
    WriteBatch,
};
pub use redb::RedbStore;
pub use replicator::{AckLevel, AckReport, ConsensusRole, ConsensusStatus, PeerStatus, Replicator};
pub use service::ReplicationService;
pub use store::{ConfigStore, FEED_CAPACITY};
pub use transaction::{Committed, Condition, FailedCondition, Outcome, ReplicationMode, Transaction};
