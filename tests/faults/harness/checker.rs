//! The checker: reads a run's history and the replicas' final contents, and names
//! every anomaly with the operations involved.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use super::history::{FaultEvent, Op, OpKind, Outcome, Replica};

/// What a check asserts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Check {
    /// An acknowledged write is missing from a replica after heal and settle.
    LostWrite,
    /// A key whose delete was acknowledged is back.
    ResurrectedDelete,
    /// A read carrying a version token returned older state than the token.
    StaleTokenRead,
    /// Two acknowledged writes were given the same version token.
    DuplicateToken,
    /// Replicas still differ a bounded number of sync intervals after heal.
    Divergence,
    /// An idempotent user-service call failed while a node was up.
    FailedIdempotentCall,
    /// A process exited without the nemesis stopping it, or panicked.
    ProcessFailure,
}

impl Check {
    /// Every check, in table order.
    #[cfg_attr(test, allow(dead_code))]
    pub(crate) const ALL: [Check; 7] = [
        Check::LostWrite,
        Check::ResurrectedDelete,
        Check::StaleTokenRead,
        Check::DuplicateToken,
        Check::Divergence,
        Check::FailedIdempotentCall,
        Check::ProcessFailure,
    ];

    /// Its name in tables.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Check::LostWrite => "lost write",
            Check::ResurrectedDelete => "resurrected delete",
            Check::StaleTokenRead => "stale token read",
            Check::DuplicateToken => "duplicate token",
            Check::Divergence => "divergence",
            Check::FailedIdempotentCall => "failed idempotent call",
            Check::ProcessFailure => "process failure",
        }
    }
}

/// One anomaly: the check, what was seen, and the operations involved.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Anomaly {
    /// The check that failed.
    pub(crate) check: Check,
    /// What was seen.
    pub(crate) detail: String,
    /// The operations involved, as [`Op::summary`] lines.
    pub(crate) ops: Vec<String>,
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}: {}", self.check.name(), self.detail)?;
        for op in &self.ops {
            writeln!(f, "    {op}")?;
        }
        Ok(())
    }
}

/// Everything the checker reads.
#[derive(Debug)]
pub(crate) struct Evidence<'a> {
    /// Every operation.
    pub(crate) ops: &'a [Op],
    /// Every fault event.
    pub(crate) events: &'a [FaultEvent],
    /// The nodes of the run.
    pub(crate) nodes: usize,
    /// Each node's final contents, after heal and settle.
    pub(crate) replicas: &'a [(String, Replica)],
    /// Sync intervals after heal until every replica was identical; `None` when
    /// they still differed at the bound.
    pub(crate) converged_after: Option<u32>,
    /// The bound, in sync intervals.
    pub(crate) bound: u32,
    /// When (ms) each node (by id) lost its disk.
    pub(crate) wipes: &'a [(u64, String)],
    /// Processes that exited unexpectedly, and panics in logs.
    pub(crate) process_failures: &'a [String],
}

/// Runs every check.
pub(crate) fn check(e: &Evidence<'_>) -> Vec<Anomaly> {
    let mut found = Vec::new();
    lost_and_resurrected(e, &mut found);
    token_reads(e, &mut found);
    divergence(e, &mut found);
    idempotent_calls(e, &mut found);
    for failure in e.process_failures {
        found.push(Anomaly { check: Check::ProcessFailure, detail: failure.clone(), ops: Vec::new() });
    }
    found
}

/// Whether `op` was acknowledged at a level the checker holds to: quorum and all
/// always; local unless the node that took it lost its disk afterwards.
fn held_to(op: &Op, e: &Evidence<'_>) -> bool {
    let (ack, served_by) = match (&op.kind, &op.outcome) {
        (
            OpKind::Put { ack, .. } | OpKind::Delete { ack, .. } | OpKind::CreateResource { ack, .. },
            Outcome::Written { served_by, .. },
        ) => (*ack, served_by),
        _ => return false,
    };
    ack.durable_across_nodes() || !e.wipes.iter().any(|(at, node)| node == served_by && *at >= op.invoked_ms)
}

/// Acknowledged writes of write-once keys and resources on every replica;
/// acknowledged deletes on none.
fn lost_and_resurrected(e: &Evidence<'_>, found: &mut Vec<Anomaly>) {
    // Keys some delete may have touched (a failed delete may still have applied).
    let mut deletes: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in e.ops {
        if let OpKind::Delete { key, .. } = &op.kind {
            deletes.entry(key).or_default().push(op);
        }
    }
    for op in e.ops.iter().filter(|op| held_to(op, e)) {
        let (key, expected) = match &op.kind {
            OpKind::Put { key, value, .. } if key.starts_with("settings/w-") => {
                (key.clone(), Some(value.as_str()))
            }
            OpKind::CreateResource { name, .. } => (format!("resources/{name}"), None),
            OpKind::Delete { key, .. } => {
                let back: Vec<&String> =
                    e.replicas.iter().filter(|(_, r)| r.contains_key(key)).map(|(n, _)| n).collect();
                if !back.is_empty() {
                    let detail = format!("{key} deleted (acknowledged) but present on {back:?}");
                    found.push(Anomaly { check: Check::ResurrectedDelete, detail, ops: vec![op.summary()] });
                }
                continue;
            }
            _ => continue,
        };
        if deletes.contains_key(key.as_str()) {
            continue;
        }
        let missing: Vec<&String> = e
            .replicas
            .iter()
            .filter(|(_, r)| r.get(&key).is_none_or(|(_, v)| expected.is_some_and(|x| x != v)))
            .map(|(n, _)| n)
            .collect();
        if !missing.is_empty() {
            let detail = format!("{key} acknowledged but missing (or different) on {missing:?}");
            found.push(Anomaly { check: Check::LostWrite, detail, ops: vec![op.summary()] });
        }
    }
}

/// Reads with a version token return the token's write or newer; tokens are
/// never given twice.
fn token_reads(e: &Evidence<'_>, found: &mut Vec<Anomaly>) {
    let mut by_token: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    let mut stamps: BTreeMap<&str, (u64, u32)> = BTreeMap::new();
    for op in e.ops {
        match &op.outcome {
            Outcome::Written { version, .. } => by_token.entry(version).or_default().push(op),
            Outcome::Read { version, stamp, .. } => {
                stamps.insert(version, *stamp);
            }
            _ => {}
        }
    }
    for (token, writes) in &by_token {
        if writes.len() > 1 {
            let detail = format!("version token {token} was given to {} acknowledged writes", writes.len());
            let ops = writes.iter().map(|w| w.summary()).collect();
            found.push(Anomaly { check: Check::DuplicateToken, detail, ops });
        }
    }
    for read in e.ops {
        let OpKind::Get { key, after: Some(token) } = &read.kind else { continue };
        if matches!(read.outcome, Outcome::Failed { .. }) {
            continue;
        }
        // A delete that failed (say, acknowledged by too few nodes in time) may
        // still have been applied: nothing found is then no proof of staleness.
        let maybe_deleted = e.ops.iter().any(|d| {
            matches!(&d.kind, OpKind::Delete { key: k, .. } if k == key)
                && d.invoked_ms < read.completed_ms
                && !matches!(d.outcome, Outcome::NotFound)
        });
        if maybe_deleted && read.outcome == Outcome::NotFound {
            continue;
        }
        let Some(write) = by_token.get(token.as_str()).and_then(|ws| {
            ws.iter().rev().find(|w| w.worker == read.worker && w.invoked_ms <= read.invoked_ms)
        }) else {
            continue;
        };
        if let Some(why) = stale(write, read, key, &stamps) {
            let detail = format!("read of {key} after {token}: {why}");
            found.push(Anomaly {
                check: Check::StaleTokenRead,
                detail,
                ops: vec![write.summary(), read.summary()],
            });
        }
    }
}

/// Why `read` (after `write`'s token) returned older state, if it did.
fn stale(write: &Op, read: &Op, key: &str, stamps: &BTreeMap<&str, (u64, u32)>) -> Option<String> {
    let Outcome::Written { version: token, .. } = &write.outcome else { return None };
    match (&write.kind, &read.outcome) {
        (OpKind::Delete { .. }, Outcome::Read { value, .. }) => {
            Some(format!("the deleted key held {value:?}"))
        }
        (OpKind::Put { .. }, Outcome::NotFound) => Some("nothing found".into()),
        (OpKind::Put { value: want, .. }, Outcome::Read { value, version, stamp }) => {
            if version == token {
                return (value != want).then(|| format!("{value:?} under the token's own version"));
            }
            if key.starts_with("settings/w-") {
                return Some(format!("{value:?} ({version}) instead of {want:?}"));
            }
            let newer = stamps.get(token.as_str()).is_none_or(|own| stamp >= own);
            (!newer)
                .then(|| format!("{value:?} ({version}, stamp {stamp:?}) is older than the token's write"))
        }
        _ => None,
    }
}

/// Every replica identical within the bound.
fn divergence(e: &Evidence<'_>, found: &mut Vec<Anomaly>) {
    if e.converged_after.is_some() {
        return;
    }
    let mut keys: BTreeMap<&str, ()> = BTreeMap::new();
    for (_, replica) in e.replicas {
        for key in replica.keys() {
            keys.entry(key).or_default();
        }
    }
    let differing: Vec<String> = keys
        .keys()
        .filter(|k| {
            let seen: Vec<Option<&(String, String)>> = e.replicas.iter().map(|(_, r)| r.get(**k)).collect();
            seen.windows(2).any(|w| w[0] != w[1])
        })
        .take(10)
        .map(|k| {
            let per: Vec<String> = e
                .replicas
                .iter()
                .map(|(n, r)| format!("{n}={}", r.get(*k).map_or("-", |(v, _)| v.as_str())))
                .collect();
            format!("{k} [{}]", per.join(" "))
        })
        .collect();
    let detail = format!(
        "replicas of {} nodes ({} answered) still differ {} sync intervals after heal: {}",
        e.nodes,
        e.replicas.len(),
        e.bound,
        differing.join("; ")
    );
    found.push(Anomaly { check: Check::Divergence, detail, ops: Vec::new() });
}

/// Idempotent user-service calls fail only while no node process is up.
fn idempotent_calls(e: &Evidence<'_>, found: &mut Vec<Anomaly>) {
    for op in e.ops {
        if !matches!(op.kind, OpKind::Call { idempotent: true })
            || !matches!(op.outcome, Outcome::Failed { .. })
        {
            continue;
        }
        let before =
            e.events.iter().rev().find(|ev| ev.at_ms <= op.invoked_ms).map_or(e.nodes, |ev| ev.nodes_up);
        let during = e.events.iter().filter(|ev| ev.at_ms > op.invoked_ms && ev.at_ms <= op.completed_ms);
        let least = during.map(|ev| ev.nodes_up).fold(before, usize::min);
        if least >= 1 {
            let detail =
                format!("an idempotent call through the balancer failed while {least}+ nodes were up");
            found.push(Anomaly { check: Check::FailedIdempotentCall, detail, ops: vec![op.summary()] });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::history::{Ack, FaultEvent, Op, OpKind, Outcome, Replica};
    use super::{Check, Evidence, check};

    fn op(id: u64, kind: OpKind, outcome: Outcome) -> Op {
        let invoked_ms = id * 10;
        Op {
            id,
            worker: 0,
            target: "balancer".into(),
            kind,
            invoked_ms,
            completed_ms: invoked_ms + 5,
            outcome,
        }
    }

    fn put(key: &str, value: &str, ack: Ack) -> OpKind {
        OpKind::Put { key: key.into(), value: value.into(), ack }
    }

    fn written(version: &str) -> Outcome {
        Outcome::Written { version: version.into(), acked: 2, members: 3, served_by: "node-1".into() }
    }

    fn replica(entries: &[(&str, &str, &str)]) -> Replica {
        entries.iter().map(|(k, v, val)| (k.to_string(), (v.to_string(), val.to_string()))).collect()
    }

    fn checks(ops: &[Op], events: &[FaultEvent], replicas: &[(String, Replica)]) -> Vec<Check> {
        let evidence = Evidence {
            ops,
            events,
            nodes: 3,
            replicas,
            converged_after: Some(0),
            bound: 10,
            wipes: &[],
            process_failures: &[],
        };
        check(&evidence).into_iter().map(|a| a.check).collect()
    }

    #[test]
    fn a_quorum_write_missing_from_a_replica_is_a_lost_write() {
        let ops = [op(1, put("settings/w-0-1", "v", Ack::Quorum), written("node-1:1"))];
        let full = replica(&[("settings/w-0-1", "node-1:1", "v")]);
        let replicas = [("node-1".into(), full.clone()), ("node-2".into(), Replica::new())];
        assert_eq!(checks(&ops, &[], &replicas), [Check::LostWrite]);
        let replicas = [("node-1".into(), full.clone()), ("node-2".into(), full)];
        assert!(checks(&ops, &[], &replicas).is_empty());
    }

    #[test]
    fn an_acknowledged_delete_that_comes_back_is_a_resurrection() {
        let ops = [
            op(1, put("settings/w-0-1", "v", Ack::All), written("node-1:1")),
            op(2, OpKind::Delete { key: "settings/w-0-1".into(), ack: Ack::Quorum }, written("node-1:2")),
        ];
        let back = replica(&[("settings/w-0-1", "node-1:1", "v")]);
        let replicas = [("node-1".into(), Replica::new()), ("node-2".into(), back)];
        assert_eq!(checks(&ops, &[], &replicas), [Check::ResurrectedDelete]);
    }

    #[test]
    fn a_token_read_that_finds_nothing_or_another_value_is_stale() {
        let get = || OpKind::Get { key: "settings/w-0-1".into(), after: Some("node-1:1".into()) };
        let read =
            |value: &str| Outcome::Read { version: "node-1:1".into(), value: value.into(), stamp: (1, 0) };
        let ops = [
            op(1, put("settings/w-0-1", "v", Ack::Local), written("node-1:1")),
            op(2, get(), Outcome::NotFound),
            op(3, get(), read("v")),
            op(4, get(), Outcome::Failed { code: "Unavailable".into(), message: "not caught up".into() }),
        ];
        let replicas = [("node-1".into(), replica(&[("settings/w-0-1", "node-1:1", "v")]))];
        assert_eq!(checks(&ops, &[], &replicas), [Check::StaleTokenRead]);
    }

    #[test]
    fn nothing_found_after_a_failed_delete_is_not_stale() {
        let key = "settings/w-0-1";
        let timed_out =
            Outcome::Failed { code: "DeadlineExceeded".into(), message: "2 of 3 acknowledged".into() };
        let ops = [
            op(1, put(key, "v", Ack::Local), written("node-1:1")),
            op(2, OpKind::Delete { key: key.into(), ack: Ack::All }, timed_out),
            op(3, OpKind::Get { key: key.into(), after: Some("node-1:1".into()) }, Outcome::NotFound),
        ];
        assert!(checks(&ops, &[], &[]).is_empty());
    }

    #[test]
    fn two_writes_with_one_token_are_flagged() {
        let ops = [
            op(1, put("settings/hot-1", "a", Ack::Local), written("node-1:7")),
            op(2, put("settings/hot-2", "b", Ack::Local), written("node-1:7")),
        ];
        assert_eq!(checks(&ops, &[], &[]), [Check::DuplicateToken]);
    }

    #[test]
    fn a_failed_idempotent_call_counts_only_while_a_node_was_up() {
        let failed = || Outcome::Failed { code: "Unavailable".into(), message: "no backend".into() };
        let ops = [op(1, OpKind::Call { idempotent: true }, failed())];
        assert_eq!(checks(&ops, &[], &[]), [Check::FailedIdempotentCall]);
        let down = FaultEvent { at_ms: 0, action: "inject", fault: "every node".into(), nodes_up: 0 };
        assert!(checks(&ops, &[down], &[]).is_empty());
        let not_idempotent = [op(1, OpKind::Call { idempotent: false }, failed())];
        assert!(checks(&not_idempotent, &[], &[]).is_empty());
    }
}
