//! Raft mode under the nemesis: `spectrum node` processes with `replication =
//! "raft"`, the same seeded fault schedule (partitions, `kill -9` and
//! restarts, pauses), and workers that are sequential clients of a few
//! compare-and-set registers: puts, deletes, compare-and-sets (`--if-version`
//! with the version they last saw, or `--if-absent`) and consistent reads,
//! through the balancer or straight to a node. Every operation is recorded
//! with its invocation and completion on the test's clock into a
//! [`linearizability`] history; an operation that failed for any reason other
//! than its condition, or timed out, is of unknown outcome (it may have been
//! committed). Once the cluster is healed, a consistent read of every register
//! is recorded last, the replicas must converge to identical copies that agree
//! with those reads, and the whole history must be linearizable: no
//! acknowledged write lost, no stale read, no compare-and-set decided against a
//! value the register did not hold.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use spectrum::client::{AdminClient, ClientError, PutCondition};
use spectrum::replication::{AckLevel, ReplicationMode, VersionToken};
use spectrum_replication::linearizability::{self, Command, Recorder, Response};

use super::history::History;
use super::nemesis::{self, FaultKind};
use super::process::Cluster;
use super::scenario::{self, MAX_NODES, Scenario};
use super::workload::Clients;

/// The registers every worker shares.
const KEYS: usize = 3;
/// Longest a single call may take before its outcome counts as unknown.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Most operations one worker runs.
const MAX_OPS: u64 = 100_000;

/// The key of register `k`.
fn key(k: usize) -> String {
    format!("settings/reg-{k}")
}

/// What a Raft scenario found.
#[derive(Debug)]
pub(crate) struct RaftReport {
    /// The scenario.
    pub(crate) scenario: Scenario,
    /// Writes and compare-and-sets acknowledged, compare-and-sets refused by
    /// their condition, writes of unknown outcome, consistent reads answered.
    pub(crate) acknowledged: usize,
    pub(crate) refused: usize,
    pub(crate) unknown: usize,
    pub(crate) reads: usize,
    /// Faults injected, by kind.
    pub(crate) faults: BTreeMap<FaultKind, usize>,
    /// The linearizability checker's report.
    pub(crate) check: linearizability::Report,
    /// Everything else that went wrong (replicas that differ, final reads that
    /// disagree with them, processes that exited or panicked).
    pub(crate) anomalies: Vec<String>,
    /// In-process restarts of nodes whose consensus stopped (on a full disk).
    pub(crate) restarts: usize,
    /// From the final heal until the replicas were identical.
    pub(crate) settled_in: Duration,
    /// Where the history and logs were written.
    pub(crate) out: PathBuf,
    /// How long the scenario took.
    pub(crate) took: Duration,
}

impl RaftReport {
    /// Whether the run found nothing wrong.
    pub(crate) fn clean(&self) -> bool {
        self.check.is_linearizable() && self.anomalies.is_empty()
    }

    /// The report as text: figures, the checker's verdict, every anomaly.
    pub(crate) fn text(&self) -> String {
        let s = &self.scenario;
        let mut text = format!(
            "raft seed {} ({} nodes): {} writes acknowledged, {} compare-and-sets refused, {} of unknown \
             outcome, {} consistent reads; faults {:?}; {} restarts after consensus stopped; replicas \
             identical {:.1} s after the last heal; {:.1} s; history {}\n  {}\n",
            s.seed,
            s.nodes,
            self.acknowledged,
            self.refused,
            self.unknown,
            self.reads,
            self.faults.iter().map(|(k, n)| format!("{}={n}", k.name())).collect::<Vec<_>>(),
            self.restarts,
            self.settled_in.as_secs_f64(),
            self.took.as_secs_f64(),
            self.out.join("linearizability.jsonl").display(),
            self.check,
        );
        for a in &self.anomalies {
            text.push_str(&format!("  ANOMALY (raft seed {}) {a}\n", s.seed));
        }
        text
    }
}

/// Runs `scenario` in Raft mode with the `spectrum` binary `bin`, writing its
/// history (JSON lines, [`linearizability::History::to_json_lines`]) and logs
/// under `out/raft-seed-<seed>/`. Must run inside the private namespace.
pub(crate) fn run(scenario: &Scenario, bin: &Path, out: &Path) -> RaftReport {
    assert!((3..=MAX_NODES).contains(&scenario.nodes), "3 to {MAX_NODES} nodes");
    assert!(
        !scenario.kinds.contains(&FaultKind::EmptyDisk),
        "a Raft member restarted on an empty disk forgets its vote and log, which Raft forbids"
    );
    scenario::prepare_namespace();
    let began = Instant::now();
    let mut rng = StdRng::seed_from_u64(scenario.seed);
    // A full disk stops the node's Raft (openraft treats a failed append as
    // fatal); `spectrum node` restarts it in-process once the disk has room.
    let tmpfs_node =
        scenario.kinds.contains(&FaultKind::DiskFull).then(|| rng.random_range(0..scenario.nodes));
    let steps = nemesis::schedule(&mut rng, scenario.nodes, &scenario.kinds, scenario.span, tmpfs_node);
    println!(
        "raft fault scenario: seed {} ({} nodes, {} faults)",
        scenario.seed,
        scenario.nodes,
        steps.iter().map(|s| s.faults.len()).sum::<usize>()
    );
    let dir = tempfile::Builder::new().prefix("spectrum-faults-raft-").tempdir().expect("run dir");
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    let mut cluster =
        Cluster::start_in_mode(bin, dir.path(), scenario.nodes, tmpfs_node, ReplicationMode::Raft);
    let ids: Vec<(String, String)> = cluster.nodes.iter().map(|n| (n.id.clone(), n.url())).collect();
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let clients = runtime.block_on(async { Clients::new(&ids) });
    if let Err(e) = runtime.block_on(scenario::until_ready(&clients, scenario.nodes, Duration::from_secs(40)))
    {
        panic!("fault suite: the Raft cluster did not start: {e}");
    }
    let history = History::new();
    let recorder = Arc::new(Recorder::new());
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    std::thread::scope(|scope| {
        let nemesis = scope.spawn(|| nemesis::run(&mut cluster, &steps, start, &history));
        runtime.block_on(async {
            let workers: Vec<_> = (0..scenario.workers)
                .map(|w| {
                    let worker = RaftWorker::new(w, scenario.seed, clients.clone(), recorder.clone());
                    tokio::spawn(worker.run(ids.len(), stop.clone()))
                })
                .collect();
            tokio::time::sleep(scenario.span).await;
            stop.store(true, Ordering::Release);
            for w in workers {
                let _ = tokio::time::timeout(CALL_TIMEOUT * 3, w).await;
            }
        });
        if let Err(panic) = nemesis.join() {
            std::panic::resume_unwind(panic);
        }
    });
    let healed = Instant::now();
    scenario::heal_all(&mut cluster, &history);
    let mut anomalies = Vec::new();
    if let Err(e) = runtime.block_on(scenario::until_ready(&clients, scenario.nodes, Duration::from_secs(40)))
    {
        anomalies.push(format!("after the final heal: {e}"));
    }
    let finals = runtime.block_on(final_reads(&clients, &recorder));
    let (converged, replicas) = runtime.block_on(scenario::converge(&clients, &ids));
    let settled_in = healed.elapsed();
    if converged.is_none() {
        anomalies.push(format!("replicas still differ after the final heal: {replicas:?}"));
    }
    for (k, read) in finals.iter().enumerate() {
        for (node, replica) in &replicas {
            let held = replica.get(&key(k)).map(|(_, value)| value.clone());
            if read.as_ref() != Some(&held) {
                anomalies.push(format!(
                    "{node} holds {held:?} at {} but the final consistent read saw {read:?}",
                    key(k)
                ));
            }
        }
    }
    cluster.check_exits();
    anomalies.extend(cluster.failures.iter().cloned());
    anomalies.extend(cluster.panics());
    let restarts = cluster
        .logs()
        .iter()
        .map(|log| {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            text.lines().filter(|l| l.contains("node restarted after its consensus stopped")).count()
        })
        .sum();
    let recorded = recorder.history().expect("the workload records well-formed operations");
    let check = linearizability::check(&recorded);
    let out = out.join(format!("raft-seed-{}", scenario.seed));
    save(&out, &recorded, &cluster);
    let mut faults = BTreeMap::new();
    for fault in steps.iter().flat_map(|s| &s.faults) {
        *faults.entry(fault.kind()).or_insert(0) += 1;
    }
    drop(cluster);
    let ops = recorded.operations();
    let count = |f: &dyn Fn(&linearizability::Operation) -> bool| ops.iter().filter(|op| f(op)).count();
    let response = |op: &linearizability::Operation| op.completion.as_ref().map(|c| c.response.clone());
    RaftReport {
        scenario: scenario.clone(),
        acknowledged: count(&|op| op.command != Command::Read && response(op) == Some(Response::Ok)),
        refused: count(&|op| response(op) == Some(Response::Failed)),
        unknown: count(&|op| op.command != Command::Read && op.completion.is_none()),
        reads: count(&|op| op.command == Command::Read && op.completion.is_some()),
        faults,
        check,
        anomalies,
        restarts,
        settled_in,
        out,
        took: began.elapsed(),
    }
}

/// A consistent read of every register through the balancer, recorded, after
/// the heal (retried while the cluster settles); what each read saw, or
/// `None` when no read of it succeeded.
async fn final_reads(clients: &Clients, recorder: &Recorder) -> Vec<Option<Option<String>>> {
    let mut finals = Vec::new();
    for k in 0..KEYS {
        let mut seen = None;
        for _ in 0..20 {
            let call = recorder.invoke(u64::MAX, key(k), Command::Read);
            if let Some(read) = consistent_read(clients.balancer(), &key(k)).await {
                recorder.complete(call, Response::Read(read.as_ref().map(|(v, _)| v.clone())));
                seen = Some(read.map(|(v, _)| v));
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        finals.push(seen);
    }
    finals
}

/// A consistent read: `Some(None)` when the key is absent, `None` when the
/// read failed.
async fn consistent_read(client: &AdminClient, key: &str) -> Option<Option<(String, VersionToken)>> {
    match tokio::time::timeout(CALL_TIMEOUT, client.get_consistent(key)).await {
        Ok(Ok(entry)) => Some(Some((String::from_utf8_lossy(&entry.value).into_owned(), entry.version))),
        Ok(Err(e)) if e.code() == Some(tonic::Code::NotFound) => Some(None),
        _ => None,
    }
}

/// Whether `e` says a compare-and-set's condition did not hold (nothing was
/// written), rather than any other refusal.
fn condition_failed(e: &ClientError) -> bool {
    e.code() == Some(tonic::Code::FailedPrecondition) && e.to_string().contains("; nothing was written")
}

/// One sequential client.
struct RaftWorker {
    id: u32,
    rng: StdRng,
    clients: Clients,
    recorder: Arc<Recorder>,
    /// What it last saw at each register: a value and its version, or absent.
    seen: Vec<Option<(String, VersionToken)>>,
    written: u64,
}

impl RaftWorker {
    fn new(id: u32, seed: u64, clients: Clients, recorder: Arc<Recorder>) -> Self {
        let rng = StdRng::seed_from_u64(seed ^ (u64::from(id) << 32 | 0x4a11));
        Self { id, rng, clients, recorder, seen: vec![None; KEYS], written: 0 }
    }

    /// Runs operations until `stop` is set (at most [`MAX_OPS`]), against the
    /// balancer (70 %) or one of `nodes` nodes.
    async fn run(mut self, nodes: usize, stop: Arc<AtomicBool>) {
        for _ in 0..MAX_OPS {
            if stop.load(Ordering::Acquire) {
                return;
            }
            let client = if self.rng.random_bool(0.7) {
                self.clients.balancer().clone()
            } else {
                self.clients.node(self.rng.random_range(0..nodes)).clone()
            };
            self.step(&client).await;
            tokio::time::sleep(Duration::from_millis(self.rng.random_range(5..30))).await;
        }
    }

    /// Draws and runs one operation.
    async fn step(&mut self, client: &AdminClient) {
        let k = self.rng.random_range(0..KEYS);
        let name = key(k);
        let process = u64::from(self.id);
        self.written += 1;
        let value = format!("w{}-{}", self.id, self.written);
        match self.rng.random_range(0..100) {
            0..25 => {
                let call = self.recorder.invoke(process, key(k), Command::Read);
                if let Some(read) = consistent_read(client, &key(k)).await {
                    self.recorder.complete(call, Response::Read(read.as_ref().map(|(v, _)| v.clone())));
                    self.seen[k] = read;
                }
            }
            25..47 => {
                let call = self.recorder.invoke(process, key(k), Command::Write { value: value.clone() });
                let put =
                    tokio::time::timeout(CALL_TIMEOUT, client.put(&name, value.as_bytes(), AckLevel::Quorum));
                if let Ok(Ok(written)) = put.await {
                    self.recorder.complete(call, Response::Ok);
                    self.seen[k] = Some((value, written.write.version));
                }
            }
            47..57 => {
                let call = self.recorder.invoke(process, key(k), Command::Delete);
                let delete = tokio::time::timeout(CALL_TIMEOUT, client.delete(&name, AckLevel::Quorum));
                if let Ok(Ok(_)) = delete.await {
                    self.recorder.complete(call, Response::Ok);
                    self.seen[k] = None;
                }
            }
            _ => self.compare_and_set(client, k, value).await,
        }
    }

    /// Puts `value` at register `k` if it holds what this worker last saw
    /// there (perhaps stale by now), or (one time in five) if it is absent.
    async fn compare_and_set(&mut self, client: &AdminClient, k: usize, value: String) {
        let expected = if self.rng.random_ratio(1, 5) { None } else { self.seen[k].clone() };
        let condition = match &expected {
            Some((_, version)) => PutCondition::Version(version.clone()),
            None => PutCondition::Absent,
        };
        let command = Command::CompareAndSet { expected: expected.map(|(v, _)| v), new: value.clone() };
        let call = self.recorder.invoke(u64::from(self.id), key(k), command);
        match tokio::time::timeout(CALL_TIMEOUT, client.put_if(&key(k), value.as_bytes(), condition)).await {
            Ok(Ok(written)) => {
                self.recorder.complete(call, Response::Ok);
                self.seen[k] = Some((value, written.write.version));
            }
            Ok(Err(e)) if condition_failed(&e) => self.recorder.complete(call, Response::Failed),
            // Anything else (unreachable, no leader, timed out) may have been committed.
            _ => {}
        }
    }
}

/// Writes the history (JSON lines) and copies the logs under `out`.
fn save(out: &Path, history: &linearizability::History, cluster: &Cluster) {
    std::fs::create_dir_all(out).expect("output dir");
    let file = std::fs::File::create(out.join("linearizability.jsonl")).expect("history file");
    history.to_json_lines(std::io::BufWriter::new(file)).expect("history written");
    for log in cluster.logs() {
        if let Some(name) = log.file_name() {
            let _ = std::fs::copy(&log, out.join(name));
        }
    }
}
