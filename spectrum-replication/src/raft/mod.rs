//! Raft mode: the consensus [`Replicator`](crate::Replicator), on openraft.
//!
//! Last-writer-wins keeps every node writable; Raft mode trades that for
//! compare-and-set, multi-key transactions and linearizable reads, as etcd and
//! Consul offer them. The consensus itself is openraft's (its stable 0.9
//! line: leader election, log replication, snapshots, joint-consensus
//! membership changes); this module supplies what openraft asks of an
//! application:
//!
//! - **The log and the vote** (`log_store`): the entries in append-only
//!   segment files (`raft-wal/` beside the store; `wal`), each record
//!   checksummed, as etcd's WAL keeps them; the vote, the purge mark and the
//!   state machine's position in a redb file of their own (`raft.redb`).
//!   Every follower's append, every vote and truncation is fsynced before
//!   openraft is told it is durable. The leader's own entries are synced in
//!   the background while they travel to the followers (the Raft thesis,
//!   §10.2.1, as etcd does), and nothing acts on an entry (applying it,
//!   answering its client, telling a follower it is committed) before the
//!   leader's copy is on disk: an acknowledged write is on disk on a
//!   majority, and survives `kill -9` of any minority.
//!   A simulation keeps the entries in a table of redb's in-memory backend
//!   instead ([`RaftMemoryLog`]), held across a simulated host's crashes.
//! - **The state machine** (`state_machine`) is the node's [`ConfigStore`](crate::ConfigStore).
//!   A log entry carries one or more [`Transaction`](crate::Transaction)s,
//!   each with its proposer's HLC stamp. Applying it evaluates its conditions against the
//!   store, deterministically, and turns its writes into [`Record`](crate::Record)s that
//!   are the same on every node: written under the cluster's Raft origin
//!   ([`raft_origin`]), numbered from the log index (write `j` of entry `i` is
//!   sequence number `i × 2¹⁶ + j`, [`SEQ_PER_ENTRY`]), stamped with the
//!   proposer's stamp raised above the previous entry's, and merged with
//!   [`ConfigStore::merge`](crate::ConfigStore::merge) whose `covers` raise the
//!   digest over the whole entry. Merging is idempotent, and entries the store
//!   already held are not decided again, so replaying entries after a crash
//!   changes nothing. The log is the durable truth, so applying
//!   does not fsync the store ([`ConfigStore::merge_deferred`](crate::ConfigStore::merge_deferred):
//!   the durable store applies the entry in memory and writes it to its file
//!   behind, many entries in one transaction, as etcd's backend batches its
//!   applies into one bbolt transaction every 100 ms);
//!   the last applied log id is saved only after a
//!   [`sync`](crate::ConfigStore::sync) of the store (every 1,000 entries or
//!   second, and before every snapshot), so it is never durable ahead of the
//!   store, and a restart replays the tail after it. Snapshots are the store's
//!   [`snapshot`](crate::ConfigStore::snapshot) (and installed with
//!   [`restore`](crate::ConfigStore::restore)); the log is compacted behind
//!   them, and a node far behind installs one.
//! - **Each write decided once** (`recent`): every proposal carries an id
//!   drawn once per write; the state machine keeps the answers of the ids it
//!   decided lately (part of the replicated state, in snapshots) and answers a
//!   retry with the first decision, so a follower whose forwarded write's
//!   answer was lost proposes it again safely (Ongaro's thesis, §6.3).
//! - **Batching** (`batcher`): every proposal of a node, and every one
//!   forwarded to it, goes through one queue; while entries are being
//!   committed the proposals made meanwhile wait, and the next entry carries
//!   all of them (as etcd batches its proposals), so one log append and one
//!   fsync serve many writes. An entry is a batch of transactions decided in
//!   order, each answered on its own; its writes share the entry's
//!   [`SEQ_PER_ENTRY`] sequence numbers, numbered in order.
//! - **The network** (`network`, `service`): an internal gRPC service
//!   (`spectrum.replication.v1.Raft`, never forwarded by the balancer) that
//!   carries openraft's messages, a follower's forwarded writes and read-index
//!   requests, joins and bootstrap probes. It admits callers exactly like the
//!   anti-entropy service: the cluster's peer credential, or with TLS a client
//!   certificate naming the calling node, and the same header checks (cluster,
//!   clock). The leader's AppendEntries to a follower go on one long-lived
//!   bidirectional stream (`AppendStream`), one call in flight and answered
//!   in order, as etcd's peers keep a stream open for their appends: a call is
//!   one data frame each way, not a request with headers and trailers, and
//!   the follower serves it on the stream's task. The stream is admitted on
//!   its first call; every later call's header must claim the same node and
//!   passes the same checks. It ends when the follower is shut down, and a
//!   follower of an older version, without the stream, is sent one call each
//!   (a stream is tried again a minute later).
//! - **Forwarding** (`forward`): a follower sends its clients' writes to the
//!   leader on one long-lived stream too (`ForwardStream`, as etcd's members
//!   send proposals on their peer streams): many proposals in flight, each
//!   numbered and answered with its number when decided. A proposal whose
//!   stream ends or times out before its answer may have been taken, and is
//!   proposed again under its id, as a lost unary answer would be.
//! - **Membership** (`membership`): joins go learner first, then voter;
//!   [`RaftReplicator::leave`] and operator removal are joint-consensus
//!   changes that the leader makes only while the remaining voters keep a
//!   reachable majority.
//! - **Tombstones** ([`tombstones`]): collected once their entry is far
//!   enough behind the applied index, the same on every replica.
//! - **Status** ([`RaftReplicator::status`]): role, leader, term, indexes,
//!   voters and learners, from openraft's metrics.
//!
//! Nodes are named in openraft by a 64-bit id derived from their node id
//! ([`raft_node_id`]); the member record carries the node id and address.

mod batcher;
mod codec;
mod forward;
// openraft's storage traits dictate its (large) `StorageError` as the error type.
#[allow(clippy::result_large_err)]
mod log_store;
mod lost_state;
mod membership;
mod memory_log;
mod network;
mod recent;
mod replicator;
mod service;
#[allow(clippy::result_large_err)]
mod state_machine;
mod status;
pub mod tombstones;
mod wal;

use std::fmt;
use std::io::Cursor;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use spectrum_core::{ClusterId, NodeId};

use crate::origin::Origin;

pub use memory_log::RaftMemoryLog;
pub use replicator::{RAFT_FILE, RaftReplicator, RaftReplicatorBuilder, RaftSettings};
pub use service::RaftService;
pub use tombstones::DEFAULT_TOMBSTONE_KEEP;

/// Sequence numbers the Raft origin reserves per log entry: write `j` of the
/// entry at index `i` (counting the writes of every transaction the entry
/// carries, in order) is numbered `i × SEQ_PER_ENTRY + j`, so an entry, and a
/// transaction, holds fewer writes than this.
pub const SEQ_PER_ENTRY: u64 = 1 << 16;

/// The node id every Raft-applied record is written under (with the
/// cluster's incarnation, see [`raft_origin`]).
pub const RAFT_ORIGIN_NODE: &str = "raft";

/// The origin of every record applied from a cluster's Raft log: node
/// [`RAFT_ORIGIN_NODE`], incarnation derived from the cluster id, so every
/// replica names every write alike.
pub fn raft_origin(cluster: &ClusterId) -> Origin {
    let digest = Sha256::digest(format!("spectrum raft origin\0{cluster}").as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    let incarnation = u64::from_be_bytes(bytes).max(1);
    Origin::new(NodeId::new(RAFT_ORIGIN_NODE).expect("a valid node id"), incarnation)
}

/// The 64-bit id openraft knows node `id` by: the first 8 bytes of
/// SHA-256 of the node id.
pub fn raft_node_id(id: &NodeId) -> u64 {
    let digest = Sha256::digest(format!("spectrum raft node\0{id}").as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(bytes)
}

/// A member of the Raft group as openraft stores it: the node id, the
/// address its Raft service is reached at, and the incarnation of its Raft
/// state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftMember {
    /// The node id.
    pub id: String,
    /// Its address, `http://host:port`.
    pub addr: String,
    /// A number drawn at random when the node's Raft file was created empty
    /// (never 0), so the group can tell a voter that lost its Raft state from
    /// the one it admitted (see `lost_state`); 0 in the records of nodes from
    /// before it, which tell nothing.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub incarnation: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl fmt::Display for RaftMember {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at {}", self.id, self.addr)
    }
}

openraft::declare_raft_types!(
    /// The openraft type configuration of Raft mode.
    pub(crate) TypeConfig:
        D = codec::Batch,
        R = codec::Answers,
        NodeId = u64,
        Node = RaftMember,
        SnapshotData = Cursor<Vec<u8>>,
);

/// A log entry of Raft mode.
pub(crate) type Entry = openraft::Entry<TypeConfig>;
/// The Raft node of Raft mode.
pub(crate) type Raft = openraft::Raft<TypeConfig>;
/// openraft's storage error, for this configuration.
pub(crate) type StorageError = openraft::StorageError<u64>;
