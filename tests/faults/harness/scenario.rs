//! One scenario: a cluster started in the namespace, a workload under a seeded
//! schedule of faults, the final heal and settle, the checker, the history file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use spectrum::client::{AckLevel, ReadAfter};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::checker::{self, Anomaly, Evidence};
use super::history::{History, Replica};
use super::nemesis::{self, Fault, FaultKind, Step};
use super::network::{self, node_ip};
use super::process::{Cluster, DATAFLOW, NODE_PORT, SYNC_INTERVAL};
use super::workload::{self, Clients};

/// Replicas must be identical within this many sync intervals once every node
/// is back and ready.
pub(crate) const CONVERGENCE_BOUND: u32 = 50;
/// Largest cluster a run starts.
pub(crate) const MAX_NODES: usize = 5;

/// What a scenario runs; the seed and these settings replay it.
#[derive(Debug, Clone)]
pub(crate) struct Scenario {
    /// Draws the fault schedule and every worker's operations.
    pub(crate) seed: u64,
    /// Nodes (3 to [`MAX_NODES`]).
    pub(crate) nodes: usize,
    /// The kinds of fault drawn from.
    pub(crate) kinds: Vec<FaultKind>,
    /// How long the workload (and the schedule) runs.
    pub(crate) span: Duration,
    /// Concurrent workers.
    pub(crate) workers: u32,
}

impl Scenario {
    /// The command that replays this scenario.
    pub(crate) fn replay(&self) -> String {
        let kinds: Vec<&str> = self.kinds.iter().map(|k| k.name()).collect();
        format!(
            "cargo run --release --example faults -- --seed {} --nodes {} --kinds {} --seconds {} --workers {}",
            self.seed,
            self.nodes,
            kinds.join(","),
            self.span.as_secs(),
            self.workers
        )
    }
}

/// What a scenario found.
#[derive(Debug)]
pub(crate) struct Report {
    /// The scenario.
    pub(crate) scenario: Scenario,
    /// Operations run, and how many succeeded.
    pub(crate) ops: usize,
    /// Operations that succeeded (found nothing counts as success).
    pub(crate) ops_ok: usize,
    /// Faults injected, by kind.
    pub(crate) faults: BTreeMap<FaultKind, usize>,
    /// Sync intervals until the replicas were identical, counted once every node
    /// was back and ready.
    pub(crate) converged_after: Option<u32>,
    /// From the final heal until the replicas were identical (restarts and
    /// readiness included).
    pub(crate) settled_in: Duration,
    /// What the checker found.
    pub(crate) anomalies: Vec<Anomaly>,
    /// Where the history and logs were written.
    pub(crate) out: PathBuf,
    /// How long the scenario took.
    pub(crate) took: Duration,
}

impl Report {
    /// The report as text: the seed, figures, and every anomaly with its operations.
    pub(crate) fn text(&self) -> String {
        let s = &self.scenario;
        let mut text = format!(
            "seed {} ({} nodes): {} operations ({} ok), faults {:?}, replicas identical {:.1} s after the last heal ({} sync intervals once all were ready), {} anomalies, {:.1} s; history {}\n",
            s.seed,
            s.nodes,
            self.ops,
            self.ops_ok,
            self.faults.iter().map(|(k, n)| format!("{}={n}", k.name())).collect::<Vec<_>>(),
            self.settled_in.as_secs_f64(),
            self.converged_after.map_or("-".into(), |n| n.to_string()),
            self.anomalies.len(),
            self.took.as_secs_f64(),
            self.out.join("history.jsonl").display(),
        );
        for a in &self.anomalies {
            text.push_str(&format!("  ANOMALY (seed {}) {a}", s.seed));
        }
        if !self.anomalies.is_empty() {
            text.push_str(&format!("  replay: {}\n", s.replay()));
        }
        text
    }
}

/// Runs `scenario` with the `spectrum` binary `bin`, writing its history and logs
/// under `out/seed-<seed>/`. Must run inside the private namespace.
pub(crate) fn run(scenario: &Scenario, bin: &Path, out: &Path) -> Report {
    assert!((3..=MAX_NODES).contains(&scenario.nodes), "3 to {MAX_NODES} nodes");
    prepare_namespace();
    let began = Instant::now();
    let mut rng = StdRng::seed_from_u64(scenario.seed);
    let tmpfs_node =
        scenario.kinds.contains(&FaultKind::DiskFull).then(|| rng.random_range(0..scenario.nodes));
    let steps = nemesis::schedule(&mut rng, scenario.nodes, &scenario.kinds, scenario.span, tmpfs_node);
    println!(
        "fault scenario: seed {} ({} nodes, {} faults); replay: {}",
        scenario.seed,
        scenario.nodes,
        steps.iter().map(|s| s.faults.len()).sum::<usize>(),
        scenario.replay()
    );

    let dir = tempfile::Builder::new().prefix("spectrum-faults-").tempdir().expect("run dir");
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    let mut cluster = Cluster::start(bin, dir.path(), scenario.nodes, tmpfs_node);
    let ids: Vec<(String, String)> = cluster.nodes.iter().map(|n| (n.id.clone(), n.url())).collect();
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let clients = runtime.block_on(async { Clients::new(&ids) });
    if let Err(e) = runtime.block_on(until_ready(&clients, scenario.nodes, Duration::from_secs(30))) {
        panic!("fault suite: the cluster did not start: {e}");
    }
    runtime.block_on(setup(&clients));

    let history = Arc::new(History::new());
    run_faults_under_load(scenario, &steps, &mut cluster, &clients, &runtime, &history);
    let healed = Instant::now();
    heal_all(&mut cluster, &history);
    if let Err(e) = runtime.block_on(until_ready(&clients, scenario.nodes, Duration::from_secs(40))) {
        cluster.failures.push(format!("after the final heal: {e}"));
    }
    let (converged_after, replicas) = runtime.block_on(converge(&clients, &ids));
    let settled_in = healed.elapsed();
    cluster.check_exits();

    let ops = history.ops();
    let anomalies = judge(scenario, &steps, &history, &replicas, converged_after, &cluster);
    let out = out.join(format!("seed-{}", scenario.seed));
    save(&out, scenario, &steps, &history, &replicas, &anomalies, &cluster);
    let mut faults = BTreeMap::new();
    for fault in steps.iter().flat_map(|s| &s.faults) {
        *faults.entry(fault.kind()).or_insert(0) += 1;
    }
    let ops_ok = ops.iter().filter(|o| !matches!(o.outcome, super::history::Outcome::Failed { .. })).count();
    drop(cluster);
    Report {
        scenario: scenario.clone(),
        ops: ops.len(),
        ops_ok,
        faults,
        converged_after,
        settled_in,
        anomalies,
        out,
        took: began.elapsed(),
    }
}

/// Runs the checker over the history and the replicas' final contents.
fn judge(
    scenario: &Scenario,
    steps: &[Step],
    history: &History,
    replicas: &[(String, Replica)],
    converged_after: Option<u32>,
    cluster: &Cluster,
) -> Vec<Anomaly> {
    let mut process_failures = cluster.failures.clone();
    process_failures.extend(cluster.panics());
    let ops = history.ops();
    let events = history.events();
    let wipes = wipes(steps, &events, cluster);
    checker::check(&Evidence {
        ops: &ops,
        events: &events,
        nodes: scenario.nodes,
        replicas,
        converged_after,
        bound: CONVERGENCE_BOUND,
        wipes: &wipes,
        process_failures: &process_failures,
    })
}

/// Brings loopback up and creates the iptables chain and marks, once per process.
pub(crate) fn prepare_namespace() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        super::sandbox::prepare_inside();
        network::prepare(MAX_NODES);
    });
    network::heal();
}

/// Runs the workload for the scenario's span while the nemesis runs `steps`.
fn run_faults_under_load(
    scenario: &Scenario,
    steps: &[Step],
    cluster: &mut Cluster,
    clients: &Clients,
    runtime: &tokio::runtime::Runtime,
    history: &Arc<History>,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    std::thread::scope(|scope| {
        let nemesis = scope.spawn(|| nemesis::run(cluster, steps, start, history));
        runtime.block_on(async {
            let workers: Vec<_> = (0..scenario.workers)
                .map(|w| {
                    let (clients, history, stop) = (clients.clone(), history.clone(), stop.clone());
                    tokio::spawn(workload::worker(w, scenario.seed, clients, history, stop))
                })
                .collect();
            tokio::time::sleep(scenario.span).await;
            stop.store(true, Ordering::Release);
            for w in workers {
                let _ = tokio::time::timeout(Duration::from_secs(15), w).await;
            }
        });
        if let Err(panic) = nemesis.join() {
            std::panic::resume_unwind(panic);
        }
    });
}

/// Heals everything (the schedule heals its faults; this makes sure): no cut, no
/// pause, every node running with the right clock and room on its disk.
pub(crate) fn heal_all(cluster: &mut Cluster, history: &History) {
    network::heal();
    for i in 0..cluster.nodes.len() {
        cluster.pause(i, false);
        cluster.set_clock(i, 0);
        if !cluster.nodes[i].running() {
            cluster.start_node(i);
        }
    }
    if let Some(i) = cluster.tmpfs_node {
        cluster.free_disk(i);
    }
    history.event("heal", "final heal: everything".into(), nemesis::up(cluster));
}

/// Waits (bounded) until every node answers `/readyz` with 200 and sees every node
/// as an active member, and the balancer answers; says which did not.
pub(crate) async fn until_ready(clients: &Clients, nodes: usize, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    for i in 0..nodes {
        while !(readyz(i).await && all_active(clients, i, nodes).await) {
            if Instant::now() > deadline {
                return Err(format!(
                    "node-{} not ready (or not seeing every member active) within {limit:?}",
                    i + 1
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    while clients.balancer().status().await.is_err() {
        if Instant::now() > deadline {
            return Err(format!("the balancer did not answer within {limit:?}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

async fn all_active(clients: &Clients, i: usize, nodes: usize) -> bool {
    let status = tokio::time::timeout(Duration::from_secs(2), clients.node(i).status()).await;
    let Ok(Ok(status)) = status else { return false };
    let active =
        status.members.iter().filter(|m| m.member.state == spectrum::client::MemberState::Active).count();
    active == nodes
}

/// Whether node `i` answers `GET /readyz` with 200 (plain HTTP/1.1).
async fn readyz(i: usize) -> bool {
    let ask = async {
        let mut stream = tokio::net::TcpStream::connect((node_ip(i), NODE_PORT)).await.ok()?;
        stream.write_all(b"GET /readyz HTTP/1.1\r\nHost: node\r\nConnection: close\r\n\r\n").await.ok()?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await.ok()?;
        Some(head.ends_with(b"200"))
    };
    matches!(tokio::time::timeout(Duration::from_secs(2), ask).await, Ok(Some(true)))
}

/// The dataflow every user-service call runs, acknowledged by every node.
async fn setup(clients: &Clients) {
    let definition = br#"{"steps": ["trim", "uppercase"]}"#;
    for _ in 0..50 {
        if clients
            .balancer()
            .create_dataflow(DATAFLOW, definition.to_vec(), true, AckLevel::All)
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("fault suite: the dataflow could not be stored");
}

/// Polls every replica each sync interval until all are identical (at most
/// [`CONVERGENCE_BOUND`] intervals); returns the intervals it took and the last
/// contents read.
pub(crate) async fn converge(
    clients: &Clients,
    ids: &[(String, String)],
) -> (Option<u32>, Vec<(String, Replica)>) {
    let mut replicas = Vec::new();
    for round in 0..=CONVERGENCE_BOUND {
        replicas = dump(clients, ids).await;
        let complete = replicas.len() == ids.len();
        if complete && replicas.windows(2).all(|w| w[0].1 == w[1].1) {
            return (Some(round), replicas);
        }
        tokio::time::sleep(SYNC_INTERVAL).await;
    }
    (None, replicas)
}

/// Every node's whole configuration database.
async fn dump(clients: &Clients, ids: &[(String, String)]) -> Vec<(String, Replica)> {
    let mut replicas = Vec::new();
    for (i, (id, _)) in ids.iter().enumerate() {
        let list =
            tokio::time::timeout(Duration::from_secs(5), clients.node(i).list("", ReadAfter::Anything));
        if let Ok(Ok(entries)) = list.await {
            let replica = entries
                .0
                .into_iter()
                .map(|e| (e.key, (e.version.to_string(), String::from_utf8_lossy(&e.value).into_owned())))
                .collect();
            replicas.push((id.clone(), replica));
        }
    }
    replicas
}

/// When each node lost its disk (the injections of the schedule's empty-disk
/// faults, from the nemesis events).
fn wipes(steps: &[Step], events: &[super::history::FaultEvent], cluster: &Cluster) -> Vec<(u64, String)> {
    let wiped: BTreeMap<String, String> = steps
        .iter()
        .flat_map(|s| &s.faults)
        .filter_map(|f| match f {
            Fault::EmptyDisk { node } => Some((f.to_string(), cluster.nodes[*node].id.clone())),
            _ => None,
        })
        .collect();
    events
        .iter()
        .filter(|e| e.action == "inject")
        .filter_map(|e| wiped.get(&e.fault).map(|id| (e.at_ms, id.clone())))
        .collect()
}

/// Writes the history and anomalies, and copies the logs, under `out`.
fn save(
    out: &Path,
    scenario: &Scenario,
    steps: &[Step],
    history: &History,
    replicas: &[(String, Replica)],
    anomalies: &[Anomaly],
    cluster: &Cluster,
) {
    std::fs::create_dir_all(out).expect("output dir");
    let header = serde_json::json!({
        "seed": scenario.seed,
        "nodes": scenario.nodes,
        "kinds": scenario.kinds,
        "span_ms": scenario.span.as_millis() as u64,
        "workers": scenario.workers,
        "replay": scenario.replay(),
        "schedule": steps,
        "anomalies": anomalies,
    });
    history.write(&out.join("history.jsonl"), &header, replicas);
    for log in cluster.logs() {
        if let Some(name) = log.file_name() {
            let _ = std::fs::copy(&log, out.join(name));
        }
    }
}
