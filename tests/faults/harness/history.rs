//! The recorded history of a run: every operation with its invocation and
//! completion time, target, result and answering node; every fault injected and
//! healed; the replicas' final contents. Written to a file (JSON lines) for
//! reading afterwards.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::Mutex;
use serde::Serialize;
use spectrum::client::AckLevel;

/// An acknowledgement level, as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Ack {
    /// The answering node only.
    Local,
    /// A majority of members.
    Quorum,
    /// Every member.
    All,
}

impl Ack {
    /// The client's level.
    pub(crate) fn level(self) -> AckLevel {
        match self {
            Ack::Local => AckLevel::Local,
            Ack::Quorum => AckLevel::Quorum,
            Ack::All => AckLevel::All,
        }
    }

    /// Whether an acknowledgement at this level promises the write survives any
    /// one node's loss.
    pub(crate) fn durable_across_nodes(self) -> bool {
        !matches!(self, Ack::Local)
    }
}

/// What an operation asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum OpKind {
    /// `config put`.
    Put { key: String, value: String, ack: Ack },
    /// `config delete`.
    Delete { key: String, ack: Ack },
    /// `config get`, with a version token to read after, or none.
    Get { key: String, after: Option<String> },
    /// `resources create` of a postal database.
    CreateResource { name: String, ack: Ack },
    /// A call of the user service (`spectrum.demo.v1.Dataflow/Run`): idempotent
    /// calls go through the balancer, which may retry them; the others straight to
    /// one node, tried once.
    Call { idempotent: bool },
}

/// How an operation ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub(crate) enum Outcome {
    /// A write acknowledged at its level.
    Written { version: String, acked: u32, members: u32, served_by: String },
    /// A read that found an entry.
    Read { version: String, value: String, stamp: (u64, u32) },
    /// A read (or delete) that found nothing.
    NotFound,
    /// A user-service call answered.
    Served { by: String },
    /// Refused or failed (a write may still have been applied).
    Failed { code: String, message: String },
}

/// One operation of the workload.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Op {
    /// Unique in the run, in invocation order per worker.
    pub(crate) id: u64,
    /// The worker that ran it.
    pub(crate) worker: u32,
    /// `balancer` or a node id.
    pub(crate) target: String,
    /// What it asked.
    #[serde(flatten)]
    pub(crate) kind: OpKind,
    /// Milliseconds since the run started.
    pub(crate) invoked_ms: u64,
    /// Milliseconds since the run started.
    pub(crate) completed_ms: u64,
    /// How it ended.
    pub(crate) outcome: Outcome,
}

impl Op {
    /// One line naming the operation, for anomaly reports.
    pub(crate) fn summary(&self) -> String {
        let body = serde_json::to_string(&self.kind).unwrap_or_default();
        let outcome = serde_json::to_string(&self.outcome).unwrap_or_default();
        format!(
            "op {} (worker {}, via {}, {}..{} ms) {body} -> {outcome}",
            self.id, self.worker, self.target, self.invoked_ms, self.completed_ms
        )
    }
}

/// A fault injected or healed.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct FaultEvent {
    /// Milliseconds since the run started.
    pub(crate) at_ms: u64,
    /// `inject` or `heal`.
    pub(crate) action: &'static str,
    /// The fault, as text.
    pub(crate) fault: String,
    /// Node processes running and not paused after it.
    pub(crate) nodes_up: usize,
}

/// One replica's entries at the end: key → (version, value).
pub(crate) type Replica = BTreeMap<String, (String, String)>;

/// The history of one run, shared by the workload's workers and the nemesis.
#[derive(Debug)]
pub(crate) struct History {
    start: Instant,
    next_id: AtomicU64,
    ops: Mutex<Vec<Op>>,
    events: Mutex<Vec<FaultEvent>>,
}

impl History {
    /// An empty history starting now.
    pub(crate) fn new() -> Self {
        Self {
            start: Instant::now(),
            next_id: AtomicU64::new(0),
            ops: Mutex::default(),
            events: Mutex::default(),
        }
    }

    /// Milliseconds since the run started.
    pub(crate) fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// A fresh operation id.
    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Records a completed operation.
    pub(crate) fn record(&self, op: Op) {
        self.ops.lock().push(op);
    }

    /// Records a fault event.
    pub(crate) fn event(&self, action: &'static str, fault: String, nodes_up: usize) {
        let at_ms = self.now_ms();
        self.events.lock().push(FaultEvent { at_ms, action, fault, nodes_up });
    }

    /// Every operation, by id.
    pub(crate) fn ops(&self) -> Vec<Op> {
        let mut ops = self.ops.lock().clone();
        ops.sort_by_key(|o| o.id);
        ops
    }

    /// Every fault event, in time order.
    pub(crate) fn events(&self) -> Vec<FaultEvent> {
        self.events.lock().clone()
    }

    /// Writes the whole history to `path`, one JSON object a line: the run's
    /// header, fault events, operations, then each replica's final entries.
    pub(crate) fn write(&self, path: &Path, header: &serde_json::Value, replicas: &[(String, Replica)]) {
        let mut out = std::io::BufWriter::new(std::fs::File::create(path).expect("history file"));
        let mut line = |v: serde_json::Value| {
            let _ = writeln!(out, "{v}");
        };
        line(header.clone());
        for e in self.events() {
            line(serde_json::json!({ "event": e }));
        }
        for op in self.ops() {
            line(serde_json::json!({ "operation": op }));
        }
        for (node, entries) in replicas {
            line(serde_json::json!({ "replica": node, "entries": entries }));
        }
    }
}
