//! [`Admin`]: the management operations of one node, on domain types.
//!
//! Each operation takes domain values ([`AckLevel`], [`ReadAfter`], names, JSON
//! documents) and returns a [`model`](crate::model) value or an [`AdminError`];
//! nothing here knows protobuf. The gRPC service ([`management`](crate::management))
//! is a thin adapter over it, so the logic can be driven and tested without a
//! network. One file per area: `config.rs` (raw entries), `license.rs`,
//! `dataflows.rs`, `resources.rs`, `nodes.rs` (status, drain and undrain),
//! `users.rs` (users of the management API), `audit.rs` (the audit log),
//! `balancer.rs` (the strategy and weights every balancer follows), `watch.rs`
//! (following changes).

mod audit;
mod balancer;
mod config;
mod consensus;
mod dataflows;
mod error;
mod license;
mod nodes;
mod resources;
mod transfer;
mod users;
mod watch;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use spectrum_core::channels::ChannelCache;
use spectrum_core::{Member, PeerAddr, TransportConfig};
use spectrum_replication::{AckLevel, Record, ReplicationError, Replicator, StoreError, WriteBatch};
use tracing::warn;

pub(crate) use audit::with_pending;
pub use audit::{AuditOutcome, DEFAULT_AUDIT_RETENTION};
pub use error::AdminError;
pub use resources::STATUS_CHECK_EVERY;
pub use transfer::{CONFIG_EXPORT_FORMAT, CONFIG_EXPORT_VERSION};
pub use watch::MAX_WATCH_PREFIX;

use crate::context::NodeContext;
use crate::model::{ReadAfter, WriteReceipt};
use crate::namespace::Namespace;
use crate::registry::ResourceRegistry;

/// Longest a read carrying a version token or session waits for this node to
/// catch up, when the read names no wait of its own.
pub const READ_YOUR_WRITES_WAIT: Duration = Duration::from_secs(2);

/// Longest wait a read may ask for (a longer one is cut to this).
pub const MAX_READ_WAIT: Duration = Duration::from_secs(30);

/// Longest the answering node waits for a member's answer to a resource check.
pub const PEER_CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// The management operations of one node.
#[derive(Clone)]
pub struct Admin {
    ctx: NodeContext,
    replicator: Arc<dyn Replicator>,
    addr: PeerAddr,
    write_timeout: Duration,
    /// Channels for the calls this node makes to other members (resource checks).
    channels: Arc<ChannelCache>,
    ready: Arc<AtomicBool>,
    /// Why this node's clock is fenced, if it is (writes are refused then).
    clock_fence: Option<ClockFence>,
    /// Why this node's store cannot write, if it cannot (reads are refused then).
    store_fault: Option<StoreFault>,
    /// Why this node is out of the cluster, if it is (reads and writes are
    /// refused then).
    out_of_cluster: Option<OutOfCluster>,
    /// The `seq` of this node's next audit record, once its first has found
    /// where its ring stopped.
    audit_next: Arc<tokio::sync::OnceCell<AtomicU64>>,
    /// The size of this node's ring of audit records.
    audit_retained: usize,
    /// Ends every watch this node serves (see [`Admin::stop_watches`]).
    watches: tokio_util::sync::CancellationToken,
    /// This node's resource checks as `status` last made them.
    status_checks: Arc<resources::StatusChecks>,
    /// What a dataflow definition must be, beyond a JSON object, if the
    /// application says (see [`Admin::dataflow_check`]).
    dataflow_check: Option<DataflowCheck>,
}

/// Checks a dataflow definition (a JSON object) against the application's
/// schema: `Err` says what is wrong with it. See [`Admin::dataflow_check`].
pub type DataflowCheck = Arc<dyn Fn(&serde_json::Value) -> Result<(), String> + Send + Sync>;

/// Says why this node's clock is fenced ([`ClockCheck::fenced`](spectrum_replication::ClockCheck::fenced)),
/// or `None` while it is in bounds.
pub type ClockFence = Arc<dyn Fn() -> Option<String> + Send + Sync>;

/// Says why this node's store cannot write, if it cannot (a full disk, an I/O
/// error): see [`Admin::store_fault`].
pub type StoreFault = Arc<dyn Fn() -> Option<String> + Send + Sync>;

/// Says why this node is out of the cluster (removed by an operator, refused
/// by the cluster when it asked to be taken back, or its Raft stopped on an
/// error), or `None` while it is a member: see [`Admin::out_of_cluster`].
pub type OutOfCluster = Arc<dyn Fn() -> Option<String> + Send + Sync>;

/// Now, in ms since the Unix epoch.
fn now_ms() -> u64 {
    let since = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

impl fmt::Debug for Admin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admin")
            .field("node", &self.ctx.id)
            .field("addr", &self.addr)
            .field("has_cluster_key", &self.ctx.cluster_key.is_some())
            .finish_non_exhaustive()
    }
}

impl Admin {
    /// The operations of the node described by `ctx`, serving at `addr`; writes
    /// wait at most `write_timeout` for their acknowledgement level. Secrets are
    /// sealed with the node's cluster key ([`NodeContext::cluster_key`]); without
    /// one, the node refuses to store secrets.
    pub fn new(
        ctx: NodeContext,
        replicator: Arc<dyn Replicator>,
        addr: PeerAddr,
        write_timeout: Duration,
    ) -> Self {
        Self {
            ctx,
            replicator,
            addr,
            write_timeout,
            channels: Arc::new(ChannelCache::new(TransportConfig::default())),
            ready: Arc::new(AtomicBool::new(true)),
            clock_fence: None,
            store_fault: None,
            out_of_cluster: None,
            audit_next: Arc::new(tokio::sync::OnceCell::new()),
            audit_retained: DEFAULT_AUDIT_RETENTION,
            watches: tokio_util::sync::CancellationToken::new(),
            status_checks: Arc::default(),
            dataflow_check: None,
        }
    }

    /// Keeps the newest `records` audit records written through this node (1
    /// to 1,000,000; default [`DEFAULT_AUDIT_RETENTION`]): the size of its ring
    /// (see [`AuditRecord`](crate::namespace::AuditRecord)), each new record
    /// overwriting its oldest. Made smaller, the slots past the new end are
    /// deleted once the node has written the smaller ring's last slot; until
    /// its next lap it then keeps fewer records, and not only the newest.
    pub fn audit_retention(mut self, records: usize) -> Self {
        self.audit_retained = records.clamp(1, audit::MAX_AUDIT_RETENTION);
        self
    }

    /// Refuses dataflow definitions `check` refuses (created, written raw or
    /// imported), naming what is wrong; without it, any JSON object is a
    /// dataflow. The service that runs dataflows knows their schema (the demo's:
    /// [`check_dataflow`](crate::demo::check_dataflow)).
    #[must_use]
    pub fn dataflow_check(mut self, check: Option<DataflowCheck>) -> Self {
        self.dataflow_check = check;
        self
    }

    /// Status shows resource checks for `every` before refreshing them (tests;
    /// nodes use [`STATUS_CHECK_EVERY`]).
    #[cfg(test)]
    pub(crate) fn status_check_every(mut self, every: Duration) -> Self {
        self.status_checks = Arc::new(resources::StatusChecks::every(every));
        self
    }

    /// Refuses `definition`, the dataflow `name`'s, when the application's
    /// check does ([`AdminError::InvalidArgument`] naming the dataflow).
    pub(super) fn check_dataflow(&self, name: &str, definition: &[u8]) -> Result<(), AdminError> {
        if self.dataflow_check.is_none() {
            return Ok(());
        }
        let value = serde_json::from_slice(definition)
            .map_err(|e| AdminError::InvalidArgument(format!("dataflow {name:?}: not JSON: {e}")))?;
        self.check_dataflow_value(name, &value)
    }

    /// [`check_dataflow`](Self::check_dataflow) of a definition already parsed
    /// (an import file's).
    pub(super) fn check_dataflow_value(
        &self,
        name: &str,
        definition: &serde_json::Value,
    ) -> Result<(), AdminError> {
        let Some(check) = &self.dataflow_check else { return Ok(()) };
        check(definition)
            .map_err(|reason| AdminError::InvalidArgument(format!("dataflow {name:?}: {reason}")))
    }

    /// Refuses writes ([`AdminError::CatchingUp`]) while `ready` is false: a node
    /// with an empty store writes nothing until it has heard from a peer (it
    /// would decide on a copy that has not seen the cluster's). Default: always
    /// ready.
    pub fn ready_flag(mut self, ready: Arc<AtomicBool>) -> Self {
        self.ready = ready;
        self
    }

    /// Refuses writes ([`AdminError::ClockFenced`]) while `fence` says why this
    /// node's clock is off from its peers. Default: never fenced.
    pub fn clock_fence(mut self, fence: ClockFence) -> Self {
        self.clock_fence = Some(fence);
        self
    }

    /// Refuses reads ([`AdminError::Stale`]) while `fault` says why this node's
    /// store cannot write: it then misses what its peers send, and its answers
    /// could be stale. Default: never.
    pub fn store_fault(mut self, fault: StoreFault) -> Self {
        self.store_fault = Some(fault);
        self
    }

    /// Refuses reads and writes ([`AdminError::OutOfCluster`]) while `out`
    /// says why this node is out of the cluster: its copy is no longer kept up
    /// to date then (peers refuse a removed node's traffic; a Raft group
    /// stops replicating to a node it left out; a Raft node stopped on an
    /// error follows nothing). Default: never.
    pub fn out_of_cluster(mut self, out: OutOfCluster) -> Self {
        self.out_of_cluster = Some(out);
        self
    }

    /// Transport settings for the calls this node makes to other members (resource
    /// checks); the default otherwise.
    pub fn transport(mut self, transport: TransportConfig) -> Self {
        self.channels = Arc::new(ChannelCache::new(transport));
        self
    }

    /// Makes the calls this node makes to other members on `channels`, shared with
    /// the node's replicator (so a rotated client certificate reaches both; see
    /// [`ChannelCache::set_tls`]).
    pub fn channels(mut self, channels: Arc<ChannelCache>) -> Self {
        self.channels = channels;
        self
    }

    /// The node these operations run on.
    pub fn context(&self) -> &NodeContext {
        &self.ctx
    }

    fn registry(&self) -> ResourceRegistry {
        ResourceRegistry::new(self.ctx.store.clone(), self.ctx.cluster_key.clone())
            .with_previous_keys(self.ctx.previous_keys.clone())
    }

    /// Applies `batch` locally and replicates it at `ack` (last-writer-wins),
    /// or commits it through consensus (Raft mode, where `ack` is always a
    /// majority).
    async fn write(&self, batch: WriteBatch, ack: AckLevel) -> Result<WriteReceipt, AdminError> {
        if self.consensus() {
            return self.write_if(batch, Vec::new()).await;
        }
        self.write_local(batch, ack).await
    }

    /// Refuses writes while this node is out of the cluster, catching up or
    /// its clock is fenced.
    fn check_writable(&self) -> Result<(), AdminError> {
        self.refuse_if_out()?;
        // The clock first: a fenced node also waits to record itself (it is
        // not ready), and the clock is what it waits for.
        if let Some(reason) = self.clock_fence.as_ref().and_then(|fence| fence()) {
            return Err(AdminError::ClockFenced { node: self.ctx.id.clone(), reason });
        }
        if !self.ready.load(Ordering::Acquire) {
            return Err(self.catching_up());
        }
        Ok(())
    }

    /// [`AdminError::CatchingUp`], with what the peers answered instead, if
    /// they answered with errors (an embedding trial's node, seeded with
    /// another cluster's node, said only that no peer had answered yet).
    fn catching_up(&self) -> AdminError {
        let errors: Vec<String> = self
            .replicator
            .peers()
            .into_iter()
            .filter_map(|p| Some(format!("{}: {}", p.addr, p.last_error?)))
            .collect();
        let why =
            if errors.is_empty() { String::new() } else { format!("; it was told {}", errors.join("; ")) };
        AdminError::CatchingUp { node: self.ctx.id.clone(), why }
    }

    /// Refuses any call that reads or writes the database while this node is
    /// out of the cluster.
    fn refuse_if_out(&self) -> Result<(), AdminError> {
        match self.out_of_cluster.as_ref().and_then(|out| out()) {
            Some(reason) => Err(AdminError::OutOfCluster { node: self.ctx.id.clone(), reason }),
            None => Ok(()),
        }
    }

    /// Commits `batch` through consensus only if `conditions` hold (Raft mode).
    async fn write_if(
        &self,
        batch: WriteBatch,
        conditions: Vec<spectrum_replication::Condition>,
    ) -> Result<WriteReceipt, AdminError> {
        self.check_writable()?;
        let (batch, audited) = self.with_audit_record(batch).await?;
        let write = self.commit_write(batch, conditions).await?;
        if let Some(seq) = audited {
            self.after_audit_record(seq).await;
        }
        Ok(write)
    }

    /// Applies `batch` locally and replicates it at `ack` (last-writer-wins).
    async fn write_local(&self, batch: WriteBatch, ack: AckLevel) -> Result<WriteReceipt, AdminError> {
        self.check_writable()?;
        let (batch, audited) = self.with_audit_record(batch).await?;
        // A store that cannot write fails before anything is stored: the
        // write can go to another node.
        let records = self.ctx.store.apply(batch).await.map_err(|e| match e {
            e @ StoreError::Storage { .. } => AdminError::Unwritable(e),
            other => AdminError::Store(other),
        })?;
        // The write's version is its own last record's, not its audit record's.
        let own = records.iter().rev().find(|r| !r.key.starts_with(Namespace::Audit.prefix()));
        let Some(version) = own.or(records.last()).map(Record::token) else {
            return Err(AdminError::Internal { reason: "the store applied no records".into() });
        };
        let report =
            self.replicator.replicate(records, ack, self.write_timeout).await.map_err(|e| match e {
                ReplicationError::AckTimeout { ref missing, .. } => AdminError::AckTimeout {
                    version: version.clone(),
                    node: self.ctx.id.clone(),
                    reason: format!("{e} ({})", self.liveness_of(missing)),
                },
                other => AdminError::Replication(other),
            })?;
        if let Some(seq) = audited {
            self.after_audit_record(seq).await;
        }
        Ok(WriteReceipt {
            version,
            acked: u32::try_from(report.acked).unwrap_or(u32::MAX),
            members: u32::try_from(report.members).unwrap_or(u32::MAX),
            served_by: self.ctx.id.clone(),
        })
    }

    /// Waits until this node holds every write `after` names: up to the wait the
    /// read asked for (capped by [`MAX_READ_WAIT`]), else [`READ_YOUR_WRITES_WAIT`].
    /// Every read goes through here: a node out of the cluster, catching up, or
    /// whose store cannot write, refuses ([`AdminError::OutOfCluster`],
    /// [`AdminError::CatchingUp`], [`AdminError::Stale`]) rather than answer
    /// from a copy that may be behind.
    async fn wait_for(&self, after: &ReadAfter) -> Result<(), AdminError> {
        self.refuse_if_out()?;
        if !self.ready.load(Ordering::Acquire) {
            return Err(self.catching_up());
        }
        if let Some(reason) = self.store_fault.as_ref().and_then(|fault| fault()) {
            let reason = format!("its store cannot write: {reason}");
            return Err(AdminError::Stale { node: self.ctx.id.clone(), reason });
        }
        let session = after.session();
        if session.is_empty() {
            return Ok(());
        }
        let waited = match after {
            ReadAfter::Session { wait: Some(wait), .. } => (*wait).min(MAX_READ_WAIT),
            _ => READ_YOUR_WRITES_WAIT,
        };
        let deadline = Instant::now() + waited;
        let mut feed = self.ctx.store.subscribe();
        loop {
            let missing = session.missing_from(&self.ctx.store.digest().await?);
            if missing.is_empty() {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(AdminError::NotCaughtUp { node: self.ctx.id.clone(), missing, waited });
            }
            // Wake on any stored record, and re-check at least every 50 ms (a digest can
            // also advance through `covers` with no record stored).
            let _ = tokio::time::timeout(left.min(Duration::from_millis(50)), feed.recv()).await;
        }
    }

    /// Who each of `addrs` is and whether it is up, for an error message:
    /// `node-3 at http://…: down`.
    fn liveness_of(&self, addrs: &[PeerAddr]) -> String {
        let peers = self.replicator.peers();
        let describe = |addr: &PeerAddr| match peers.iter().find(|p| &p.addr == addr) {
            Some(p) => {
                let id = p.id.as_ref().map_or_else(|| "a peer".to_owned(), ToString::to_string);
                format!("{id} at {addr}: {}", p.liveness)
            }
            None => format!("{addr}: unknown"),
        };
        addrs.iter().map(describe).collect::<Vec<_>>().join("; ")
    }

    /// The live record at `key`, if any.
    async fn live(&self, key: &str) -> Result<Option<Record>, AdminError> {
        Ok(self.ctx.store.get(key).await?.filter(|r| !r.is_tombstone()))
    }

    /// Membership as this node holds it; an unreadable record is logged and skipped.
    async fn members(&self) -> Result<Vec<Member>, AdminError> {
        let records = self.ctx.store.scan(Namespace::Membership.prefix()).await?;
        Ok(records
            .iter()
            .filter_map(|r| Some((r, r.value.as_ref()?)))
            .filter_map(|(r, v)| match Member::from_record_value(v) {
                Ok(m) => Some(m),
                Err(error) => {
                    warn!(key = %r.key, %error, "ignoring unreadable membership record");
                    None
                }
            })
            .collect())
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Arc;
    use std::time::Duration;

    use spectrum_core::{Hlc, Member, MemberState, PeerAddr};
    use spectrum_replication::{AntiEntropy, ConfigStore, MemoryStore, WriteBatch};
    use spectrum_resources::ResourceResolver;

    use super::Admin;
    use crate::context::NodeContext;

    /// The admin of a lone node `n1` of cluster `c`, on a memory store, with
    /// `resolver`.
    pub(crate) async fn admin(resolver: Arc<dyn ResourceResolver>) -> Admin {
        let hlc = Arc::new(Hlc::system());
        let store: Arc<dyn ConfigStore> = Arc::new(MemoryStore::new("n1".parse().unwrap(), hlc.clone()));
        let addr: PeerAddr = "http://127.0.0.1:1".parse().unwrap();
        let me = Member::new("n1".parse().unwrap(), addr.clone(), MemberState::Active);
        store.apply(WriteBatch::new().put(me.record_key(), me.to_record_value())).await.unwrap();
        let replicator = AntiEntropy::builder(store.clone(), hlc, "c".parse().unwrap(), addr.clone()).build();
        let ctx = NodeContext {
            id: "n1".parse().unwrap(),
            cluster: "c".parse().unwrap(),
            store,
            resolver,
            cluster_key: None,
            previous_keys: Vec::new(),
        };
        Admin::new(ctx, Arc::new(replicator), addr, Duration::from_secs(1))
    }
}
