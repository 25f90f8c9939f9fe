//! The audit log: recording management writes, and reading them back.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use spectrum_replication::{AckLevel, WriteBatch};
use tracing::{debug, warn};

use super::{Admin, AdminError, now_ms};
use crate::auth::Caller;
use crate::management::idempotency;
use crate::model::{AuditEntry, AuditLog, AuditQuery, DEFAULT_AUDIT_LIMIT};
use crate::namespace::{AuditKey, AuditRecord, MAX_AUDIT_MESSAGE, Namespace, NamespaceValue};
use spectrum_core::MemberState;

/// How many audit records each node keeps by default: the size of its ring (see
/// [`AuditRecord`] and [`Admin::audit_retention`]). A three-node cluster keeps
/// 12,000, about as many as earlier versions kept in all (10,000).
pub const DEFAULT_AUDIT_RETENTION: usize = 4_000;

/// Most deletes in one write when a node tidies the audit log (a write holds
/// at most 65,535).
const TIDY_BATCH: usize = 1_000;

/// The largest ring a node may keep: slots have six digits.
pub(super) const MAX_AUDIT_RETENTION: usize = 1_000_000;

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
    /// task appended, the first time it writes (see [`with_pending`]), and that
    /// record's `seq`.
    ///
    /// # Errors
    ///
    /// Finding where this node's ring resumes (see [`Admin::next_audit_seq`]).
    pub(super) async fn with_audit_record(
        &self,
        batch: WriteBatch,
    ) -> Result<(WriteBatch, Option<u64>), AdminError> {
        let pending = PENDING.try_with(|p| {
            let p = p.borrow();
            (!p.recorded).then(|| (p.caller.clone(), p.operation, p.target.clone()))
        });
        let Ok(Some((caller, operation, target))) = pending else {
            return Ok((batch, None));
        };
        let (key, value, seq) = self.audit_record(&caller, operation, &target, AuditOutcome::Ok).await?;
        PENDING.with(|p| p.borrow_mut().recorded = true);
        Ok((batch.put(key, value), Some(seq)))
    }

    /// The key, value and `seq` of this node's next audit record.
    async fn audit_record(
        &self,
        caller: &Caller,
        operation: &str,
        target: &str,
        outcome: AuditOutcome,
    ) -> Result<(String, Bytes, u64), AdminError> {
        let (ok, code, message) = match outcome {
            AuditOutcome::Ok => (true, "Ok".to_owned(), String::new()),
            AuditOutcome::Failed { code, message } => {
                (false, code, message.chars().take(MAX_AUDIT_MESSAGE).collect())
            }
        };
        let seq = self.next_audit_seq().await?;
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
            seq,
        };
        let key = AuditRecord::key(self.ctx.id.as_str(), seq % self.audit_slots());
        Ok((key, Bytes::from(record.encode()), seq))
    }

    /// The size of this node's ring.
    fn audit_slots(&self) -> u64 {
        self.audit_retained as u64
    }

    /// Takes the `seq` of this node's next audit record. The first call reads
    /// where its ring stopped: one past the highest `seq` in it, so a restart
    /// overwrites the oldest record rather than the newest. In Raft mode it
    /// first waits for this node to apply every committed write (a
    /// [`barrier`](Admin::barrier)), since its own last records may be in the
    /// log and not yet in its store.
    ///
    /// # Errors
    ///
    /// The barrier's and the store's, on the first call; later calls retry.
    async fn next_audit_seq(&self) -> Result<u64, AdminError> {
        let next = self
            .audit_next
            .get_or_try_init(|| async {
                if self.consensus() {
                    self.barrier().await?;
                }
                let ring = self.ctx.store.scan(&AuditRecord::ring_prefix(self.ctx.id.as_str())).await?;
                let next = ring
                    .iter()
                    .filter_map(|r| AuditRecord::decode(r.value.as_deref()?).ok())
                    .map(|r| r.seq.saturating_add(1))
                    .max()
                    .unwrap_or(0);
                Ok::<_, AdminError>(AtomicU64::new(next))
            })
            .await?;
        Ok(next.fetch_add(1, Ordering::Relaxed))
    }

    /// Records that `caller` ran `operation` on `target` (a key or a name, never
    /// a value) through this node, and how it ended, in this node's ring (see
    /// [`AuditRecord`]) with acknowledgement `local` (the record replicates like
    /// any write). A failure to record is logged, never returned: the operation
    /// already happened.
    pub async fn audit(&self, caller: &Caller, operation: &str, target: &str, outcome: AuditOutcome) {
        let written = async {
            // Checked before a number is taken: a node catching up must not read
            // where its ring stopped from a store that has not caught up.
            self.check_writable()?;
            let (key, value, seq) = self.audit_record(caller, operation, target, outcome).await?;
            self.write(WriteBatch::new().put(key, value), AckLevel::Local).await?;
            Ok::<_, AdminError>(seq)
        };
        match written.await {
            Ok(seq) => self.after_audit_record(seq).await,
            Err(error) => {
                warn!(%error, operation, caller = %caller.name, "could not record a management write in the audit log");
            }
        }
    }

    /// After this node wrote its audit record `seq`: when that record filled its
    /// ring (its slot is the last), tidies the log (see [`Admin::tidy_audit`]).
    /// A failure is logged; the next lap tries again.
    pub(super) async fn after_audit_record(&self, seq: u64) {
        // Boxed: tidying writes, and writing may tidy.
        if (seq + 1) % self.audit_slots() == 0
            && let Err(error) = Box::pin(idempotency::unkeyed(self.tidy_audit())).await
        {
            warn!(%error, "could not tidy the audit log");
        }
    }

    /// Deletes the audit records that this node's full ring makes redundant:
    /// - its own slots past the ring's end (its retention was made smaller);
    /// - records of earlier versions, and those of nodes removed from the
    ///   cluster (or with no membership record), older than the oldest record
    ///   its ring keeps.
    ///
    /// Every node does this for itself, once a lap, in batches of at most
    /// [`TIDY_BATCH`] deletes; the deletes are the same from any node, and
    /// deleting twice is harmless.
    async fn tidy_audit(&self) -> Result<(), AdminError> {
        let me = self.ctx.id.as_str();
        // The oldest of the ring, not slot 0's: a write of the next lap may
        // already have replaced that one.
        let ring = self.ctx.store.scan(&AuditRecord::ring_prefix(me)).await?;
        let Some(oldest) =
            ring.iter().filter_map(|r| AuditRecord::decode(r.value.as_deref()?).ok()).map(|r| r.at_ms).min()
        else {
            return Ok(());
        };
        let members = self.members().await?;
        let departed = |node: &str| {
            members.iter().find(|m| m.id.as_str() == node).is_none_or(|m| m.state == MemberState::Removed)
        };
        let mut doomed = Vec::new();
        let mut departed_rings = BTreeSet::new();
        for key in self.ctx.store.live_keys(Namespace::Audit.prefix()).await? {
            match AuditKey::parse(&key) {
                Some(AuditKey::Slot { node, slot }) if node == me && slot >= self.audit_slots() => {
                    doomed.push(key.clone());
                }
                Some(AuditKey::Slot { node, .. }) if node != me && departed(node) => {
                    departed_rings.insert(node.to_owned());
                }
                Some(AuditKey::Legacy { at_ms, .. }) if at_ms < oldest => doomed.push(key.clone()),
                _ => {}
            }
        }
        for node in departed_rings {
            let ring = self.ctx.store.scan(&AuditRecord::ring_prefix(&node)).await?;
            doomed.extend(ring.into_iter().filter_map(|r| {
                let record = AuditRecord::decode(r.value.as_deref()?).ok()?;
                (record.at_ms < oldest).then_some(r.key)
            }));
        }
        for chunk in doomed.chunks(TIDY_BATCH) {
            let batch = chunk.iter().fold(WriteBatch::new(), |b, key| b.delete(key.as_str()));
            self.write(batch, AckLevel::Local).await?;
        }
        if !doomed.is_empty() {
            debug!(deleted = doomed.len(), "tidied the audit log");
        }
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
        let mut entries: Vec<AuditEntry> = records
            .iter()
            .filter_map(|r| {
                let record = AuditRecord::decode(r.value.as_deref()?).ok()?;
                let id = match AuditKey::parse(&r.key)? {
                    AuditKey::Slot { .. } => record.id(),
                    AuditKey::Legacy { .. } => r.key.strip_prefix(Namespace::Audit.prefix())?.to_owned(),
                };
                Some(AuditEntry { id, record })
            })
            .filter(|e| e.record.at_ms >= query.since_ms)
            .filter(|e| query.user.as_ref().is_none_or(|u| *u == e.record.caller))
            .collect();
        entries.sort_unstable_by(|a, b| b.id.cmp(&a.id));
        entries.truncate(limit);
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
        admin_on(Arc::new(MemoryStore::new("n1".parse().unwrap(), hlc)), retained)
    }

    /// Node n1 of cluster `c` on `store`, as if started on it.
    fn admin_on(store: Arc<dyn ConfigStore>, retained: usize) -> Admin {
        let hlc = Arc::new(Hlc::system());
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

    /// The targets of the audit log, newest first.
    async fn targets(admin: &Admin) -> Vec<String> {
        let all = admin.audit_log(&AuditQuery { limit: Some(1000), ..AuditQuery::default() }).await.unwrap();
        all.0.into_iter().map(|e| e.record.target).collect()
    }

    /// Writes records for `settings/<i>`, `i` in `range`, through `admin`.
    async fn write_records(admin: &Admin, range: std::ops::Range<usize>) {
        let ada = Caller { name: "ada".into(), role: Role::Admin };
        for i in range {
            admin.audit(&ada, "Put", &format!("settings/{i}"), AuditOutcome::Ok).await;
        }
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
    async fn the_audit_log_is_read_newest_first_filtered_and_kept_to_its_retention_without_deletes() {
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
        let expected: Vec<_> = (60..70).rev().map(|i| format!("settings/{i}")).collect();
        assert_eq!(
            all.0.iter().map(|e| &e.record.target).collect::<Vec<_>>(),
            expected.iter().collect::<Vec<_>>()
        );
        assert_eq!(all.0[0].id, all.0[0].record.id());
        assert_eq!((all.0[0].record.seq, all.0[0].id.ends_with("-n1-0000000069")), (69, true));
        assert_eq!(all.0[0].record.message.len(), MAX_AUDIT_MESSAGE);
        assert_eq!((all.0[1].record.ok, all.0[1].record.code.as_str()), (true, "Ok"));
        let stored = admin.ctx.store.scan(Namespace::Audit.prefix()).await.unwrap();
        assert_eq!(stored.len(), 10, "ten slots, overwritten in place: no tombstone");
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
    async fn a_restarted_node_overwrites_its_oldest_record_not_its_newest() {
        let before = admin(10);
        write_records(&before, 0..15).await;
        let restarted = admin_on(before.ctx.store.clone(), 10);
        write_records(&restarted, 15..17).await;
        let expected: Vec<_> = (7..17).rev().map(|i| format!("settings/{i}")).collect();
        assert_eq!(targets(&restarted).await, expected);
    }

    #[tokio::test]
    async fn a_node_catching_up_takes_no_number_until_it_can_write() {
        let before = admin(10);
        write_records(&before, 0..10).await;
        let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let hlc = Arc::new(Hlc::system());
        let fresh =
            admin_on(Arc::new(MemoryStore::new("n1".parse().unwrap(), hlc)), 10).ready_flag(ready.clone());
        let ada = Caller { name: "ada".into(), role: Role::Admin };
        let refused = AuditOutcome::Failed { code: "Unavailable".into(), message: "catching up".into() };
        fresh.audit(&ada, "Put", "settings/refused", refused).await;
        let stored = fresh.ctx.store.scan(Namespace::Audit.prefix()).await.unwrap();
        assert!(stored.is_empty(), "nothing is written while catching up");
        // It catches up: its ring arrives from a peer.
        let ring = before.ctx.store.scan(Namespace::Audit.prefix()).await.unwrap();
        let batch =
            ring.iter().fold(WriteBatch::new(), |b, r| b.put(r.key.clone(), r.value.clone().unwrap()));
        fresh.ctx.store.apply(batch).await.unwrap();
        ready.store(true, Ordering::Release);
        write_records(&fresh, 10..11).await;
        let all = fresh.audit_log(&AuditQuery::default()).await.unwrap();
        assert_eq!((all.0[0].record.seq, all.0.len()), (10, 10), "it goes on after its newest record");
        let expected: Vec<_> = (1..11).rev().map(|i| format!("settings/{i}")).collect();
        assert_eq!(targets(&fresh).await, expected);
    }

    #[tokio::test]
    async fn a_full_ring_deletes_older_legacy_records_departed_rings_and_slots_past_a_smaller_ring() {
        let admin = admin(10);
        let store = admin.ctx.store.clone();
        let old = |node: &str, seq| {
            let record = AuditRecord {
                at_ms: 1,
                node: node.into(),
                caller: "ada".into(),
                role: Role::Admin,
                operation: "Put".into(),
                target: format!("old/{node}"),
                ok: true,
                code: "Ok".into(),
                message: String::new(),
                seq,
            };
            Bytes::from(record.encode())
        };
        let member = |id: &str, state| {
            let member =
                spectrum_core::Member::new(id.parse().unwrap(), "http://127.0.0.1:2".parse().unwrap(), state);
            (member.record_key(), Bytes::from(member.to_record_value()))
        };
        let (n2, n2_value) = member("n2", MemberState::Active);
        let (n3, n3_value) = member("n3", MemberState::Removed);
        let later = now_ms() + 3_600_000;
        let legacy_later = format!("audit/{later:015}-n2-0000000000");
        let mut legacy_later_value: serde_json::Value = serde_json::from_slice(&old("n2", 0)).unwrap();
        legacy_later_value["at_ms"] = later.into();
        legacy_later_value["target"] = "later/n2".into();
        let batch = WriteBatch::new()
            .put(n2, n2_value)
            .put(n3, n3_value)
            .put("audit/000000000000001-n1-0000000000", old("n1", 0))
            .put(legacy_later, Bytes::from(serde_json::to_vec(&legacy_later_value).unwrap()))
            .put(AuditRecord::key("n2", 0), old("n2", 0))
            .put(AuditRecord::key("n3", 0), old("n3", 0))
            .put(AuditRecord::key("n9", 0), old("n9", 0));
        store.apply(batch).await.unwrap();
        write_records(&admin, 0..9).await;
        assert_eq!(targets(&admin).await.len(), 9 + 5, "nothing is deleted before the ring is full");
        write_records(&admin, 9..10).await;
        let mut kept = targets(&admin).await;
        assert_eq!(kept.drain(..1).collect::<Vec<_>>(), ["later/n2"], "newer than anything n1 keeps");
        assert_eq!(kept.pop().as_deref(), Some("old/n2"), "n2 is a member: its ring is its own to keep");
        assert_eq!(kept, (0..10).rev().map(|i| format!("settings/{i}")).collect::<Vec<_>>());

        let smaller = admin_on(store.clone(), 4);
        write_records(&smaller, 10..11).await;
        assert_eq!(
            targets(&smaller).await.len(),
            10 + 2,
            "seq 10 replaced slot 2; 4 to 9 stay until slot 3 is written"
        );
        write_records(&smaller, 11..14).await;
        let expected = ["later/n2", "settings/13", "settings/12", "settings/11", "settings/10", "old/n2"];
        assert_eq!(targets(&smaller).await, expected);
    }
}
