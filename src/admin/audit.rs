//! The audit log: recording management writes, and reading them back.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use spectrum_replication::{AckLevel, WriteBatch};
use tracing::{debug, warn};

use super::{Admin, AdminError, now_ms};
use crate::auth::Caller;
use crate::model::{AuditEntry, AuditLog, AuditQuery, DEFAULT_AUDIT_LIMIT};
use crate::namespace::{AuditRecord, MAX_AUDIT_MESSAGE, Namespace, NamespaceValue};

/// How many audit records the cluster keeps by default: older ones are deleted
/// (see [`Admin::audit_retention`]).
pub const DEFAULT_AUDIT_RETENTION: usize = 10_000;

/// A node checks the audit log's size after every this many records it writes,
/// or a sixteenth of the retention when that is more: a check lists every key
/// kept, so checking every 64 of 10,000 cost each management write a walk of
/// 156 keys on average; a sixteenth bounds it at 16, and the log at most a
/// sixteenth over its retention per node. (It lists keys, not records: copying
/// 10,000 records and their lineage made 16 writers 35 % slower once the log
/// was full.)
const PRUNE_EVERY: u64 = 64;

/// How a management write ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuditOutcome {
    /// It succeeded.
    Ok,
    /// It was refused or failed, with this gRPC code and message.
    Failed {
        /// The code's name (`PermissionDenied`).
        code: String,
        /// The message the caller got.
        message: String,
    },
}

/// The management write under way in this task, so that its audit record goes
/// into the same write batch (one commit, atomic with the write it records).
#[derive(Debug)]
pub(crate) struct PendingAudit {
    caller: Caller,
    operation: &'static str,
    target: String,
    /// Whether a batch already carried the record.
    recorded: bool,
}

tokio::task_local! {
    static PENDING: std::cell::RefCell<PendingAudit>;
}

/// Runs `op`, the management write `operation` of `caller` on `target`: the first
/// batch it writes carries the audit record of its success. Returns what `op`
/// returned and whether that record was written.
pub(crate) async fn with_pending<F: std::future::Future>(
    caller: &Caller,
    operation: &'static str,
    target: &str,
    op: F,
) -> (F::Output, bool) {
    let pending =
        PendingAudit { caller: caller.clone(), operation, target: target.to_owned(), recorded: false };
    let cell = std::cell::RefCell::new(pending);
    PENDING
        .scope(cell, async {
            let out = op.await;
            let recorded = PENDING.with(|p| p.borrow().recorded);
            (out, recorded)
        })
        .await
}

impl Admin {
    /// `batch` with the audit record of the management write under way in this
    /// task appended, the first time it writes (see [`with_pending`]).
    pub(super) fn with_audit_record(&self, batch: WriteBatch) -> (WriteBatch, bool) {
        let record = PENDING.try_with(|p| {
            let mut p = p.borrow_mut();
            if p.recorded {
                return None;
            }
            p.recorded = true;
            Some(self.audit_record(&p.caller, p.operation, &p.target, AuditOutcome::Ok))
        });
        match record {
            Ok(Some((key, value))) => (batch.put(key, value), true),
            _ => (batch, false),
        }
    }

    /// The key and value of an audit record.
    fn audit_record(
        &self,
        caller: &Caller,
        operation: &str,
        target: &str,
        outcome: AuditOutcome,
    ) -> (String, Bytes) {
        let (ok, code, message) = match outcome {
            AuditOutcome::Ok => (true, "Ok".to_owned(), String::new()),
            AuditOutcome::Failed { code, message } => {
                (false, code, message.chars().take(MAX_AUDIT_MESSAGE).collect())
            }
        };
        let record = AuditRecord {
            at_ms: now_ms(),
            node: self.ctx.id.to_string(),
            caller: caller.name.clone(),
            role: caller.role,
            operation: operation.to_owned(),
            target: target.to_owned(),
            ok,
            code,
            message,
        };
        let n = self.audit_seq.fetch_add(1, Ordering::Relaxed);
        (AuditRecord::key(record.at_ms, self.ctx.id.as_str(), n), Bytes::from(record.encode()))
    }

    /// Records that `caller` ran `operation` on `target` (a key or a name, never
    /// a value) through this node, and how it ended, at `audit/<time>-<node>-<n>`
    /// with acknowledgement `local` (the record replicates like any write). A
    /// failure to record is logged, never returned: the operation already
    /// happened.
    pub async fn audit(&self, caller: &Caller, operation: &str, target: &str, outcome: AuditOutcome) {
        let (key, value) = self.audit_record(caller, operation, target, outcome);
        let batch = WriteBatch::new().put(key, value);
        match self.write(batch, AckLevel::Local).await {
            Ok(_) => self.maybe_prune_audit().await,
            Err(error) => {
                warn!(%error, operation, caller = %caller.name, "could not record a management write in the audit log");
            }
        }
    }

    /// Deletes the oldest audit records beyond the retention, every
    /// [`PRUNE_EVERY`] records this node writes (or a sixteenth of the
    /// retention, when more).
    pub(super) async fn maybe_prune_audit(&self) {
        let every = (self.audit_retained as u64 / 16).max(PRUNE_EVERY);
        // Boxed: pruning writes, and writing may prune.
        if self.audit_seq.load(Ordering::Relaxed) % every == 0
            && let Err(error) = Box::pin(self.prune_audit()).await
        {
            warn!(%error, "could not prune the audit log");
        }
    }

    /// Deletes the oldest audit records beyond the retention.
    async fn prune_audit(&self) -> Result<(), AdminError> {
        let live = self.ctx.store.live_keys(Namespace::Audit.prefix()).await?;
        let excess = live.len().saturating_sub(self.audit_retained);
        if excess == 0 {
            return Ok(());
        }
        let batch = live[..excess].iter().fold(WriteBatch::new(), |b, key| b.delete(key.as_str()));
        self.write(batch, AckLevel::Local).await?;
        debug!(deleted = excess, kept = self.audit_retained, "pruned the audit log");
        Ok(())
    }

    /// Audit records matching `query`, newest first, once this node holds what
    /// `query.after` names (records replicate: a write made through another node
    /// appears here within one sync interval).
    ///
    /// # Errors
    ///
    /// [`AdminError::NotCaughtUp`]; store failures. A record that does not decode is skipped.
    pub async fn audit_log(&self, query: &AuditQuery) -> Result<AuditLog, AdminError> {
        self.wait_for(&query.after).await?;
        let limit = query.limit.unwrap_or(DEFAULT_AUDIT_LIMIT) as usize;
        let records = self.ctx.store.scan(Namespace::Audit.prefix()).await?;
        let entries = records
            .iter()
            .rev()
            .filter_map(|r| {
                let record = AuditRecord::decode(r.value.as_deref()?).ok()?;
                let id = r.key.strip_prefix(Namespace::Audit.prefix()).unwrap_or(&r.key).to_owned();
                Some(AuditEntry { id, record })
            })
            .filter(|e| e.record.at_ms >= query.since_ms)
            .filter(|e| query.user.as_ref().is_none_or(|u| *u == e.record.caller))
            .take(limit)
            .collect();
        Ok(AuditLog(entries))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use spectrum_core::{Hlc, PeerAddr};
    use spectrum_replication::{AntiEntropy, ConfigStore, MemoryStore};
    use spectrum_resources::CompositeResolver;

    use super::*;
    use crate::auth::Role;
    use crate::context::NodeContext;

    fn admin(retained: usize) -> Admin {
        let hlc = Arc::new(Hlc::system());
        let store: Arc<dyn ConfigStore> = Arc::new(MemoryStore::new("n1".parse().unwrap(), hlc.clone()));
        let addr: PeerAddr = "http://127.0.0.1:1".parse().unwrap();
        let replicator = AntiEntropy::builder(store.clone(), hlc, "c".parse().unwrap(), addr.clone()).build();
        let ctx = NodeContext {
            id: "n1".parse().unwrap(),
            cluster: "c".parse().unwrap(),
            store,
            resolver: Arc::new(CompositeResolver::standard()),
            cluster_key: None,
            previous_keys: Vec::new(),
        };
        Admin::new(ctx, Arc::new(replicator), addr, Duration::from_secs(1)).audit_retention(retained)
    }

    #[tokio::test]
    async fn a_successful_write_carries_its_audit_record_in_the_same_commit() {
        let admin = admin(100);
        let ada = Caller { name: "ada".into(), role: Role::Admin };
        let put = admin.put("settings/a", Bytes::from_static(b"1"), AckLevel::Local);
        let (receipt, recorded) = with_pending(&ada, "Put", "settings/a", put).await;
        let receipt = receipt.unwrap();
        assert!(recorded);
        let key = admin.ctx.store.get("settings/a").await.unwrap().unwrap();
        assert_eq!(receipt.version, key.token(), "the receipt names the write, not its audit record");
        let audit = admin.ctx.store.scan(Namespace::Audit.prefix()).await.unwrap();
        assert_eq!(audit.len(), 1);
        assert_eq!((audit[0].origin.clone(), audit[0].seq), (key.origin.clone(), key.seq + 1), "one batch");
        // A second write in the same operation carries no second record.
        let again = admin.put("settings/b", Bytes::from_static(b"2"), AckLevel::Local);
        let (_, recorded) = with_pending(&ada, "Put", "settings/b", again).await;
        assert!(recorded);
        assert_eq!(admin.ctx.store.scan(Namespace::Audit.prefix()).await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn the_audit_log_is_read_newest_first_filtered_and_pruned_to_its_retention() {
        let admin = admin(10);
        let alice = Caller { name: "alice".into(), role: Role::Admin };
        let bob = Caller { name: "bob".into(), role: Role::Viewer };
        for i in 0..70 {
            let (caller, outcome) = if i % 2 == 0 {
                (&alice, AuditOutcome::Ok)
            } else {
                (&bob, AuditOutcome::Failed { code: "PermissionDenied".into(), message: "x".repeat(1000) })
            };
            admin.audit(caller, "Put", &format!("settings/{i}"), outcome).await;
        }
        let all = admin.audit_log(&AuditQuery { limit: Some(1000), ..AuditQuery::default() }).await.unwrap();
        assert_eq!(all.0.len(), 10 + 6, "pruned to 10 after the 64th record, then 6 more");
        assert_eq!(all.0[0].record.target, "settings/69", "newest first");
        assert_eq!(all.0[0].record.message.len(), MAX_AUDIT_MESSAGE);
        assert_eq!((all.0[1].record.ok, all.0[1].record.code.as_str()), (true, "Ok"));
        let bobs = admin
            .audit_log(&AuditQuery { user: Some("bob".into()), limit: Some(3), ..AuditQuery::default() })
            .await
            .unwrap();
        let targets: Vec<_> = bobs.0.iter().map(|e| e.record.target.as_str()).collect();
        assert_eq!(targets, ["settings/69", "settings/67", "settings/65"]);
        let later = AuditQuery { since_ms: all.0[0].record.at_ms + 1, ..AuditQuery::default() };
        assert!(admin.audit_log(&later).await.unwrap().0.is_empty());
    }

    #[tokio::test]
    async fn a_long_retention_is_checked_every_sixteenth_of_it_and_pruned_back_to_it() {
        let admin = admin(1_600);
        let alice = Caller { name: "alice".into(), role: Role::Admin };
        let live = || async {
            let records = admin.ctx.store.scan(Namespace::Audit.prefix()).await.unwrap();
            records.iter().filter(|r| !r.is_tombstone()).count()
        };
        for i in 0..1_699 {
            admin.audit(&alice, "Put", &format!("settings/{i}"), AuditOutcome::Ok).await;
        }
        assert_eq!(live().await, 1_699, "no check since the 1,600th record: the next is at 1,700");
        admin.audit(&alice, "Put", "settings/last", AuditOutcome::Ok).await;
        assert_eq!(live().await, 1_600);
    }
}
