//! Process control: the run's `spectrum node` processes and its `spectrum
//! balancer`, each started from its own file, as its own uid, on its own loopback
//! address, with libfaketime preloaded (its clock offset is a file the nemesis
//! rewrites). Every process is killed and reaped when the [`Cluster`] is dropped,
//! also when a run panics.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use spectrum::replication::ReplicationMode;

use super::network::{BALANCER_UID, node_ip, node_uid};
use super::sandbox::{LIBFAKETIME, run};

/// The port every node listens on (each on its own address).
pub(crate) const NODE_PORT: u16 = 7000;
/// The balancer's address.
pub(crate) const BALANCER_ADDR: &str = "127.0.0.1:7100";
/// The management token of the run's nodes.
pub(crate) const TOKEN: &str = "faults-token-0123456789";
/// The dataflow every user-service call runs.
pub(crate) const DATAFLOW: &str = "faults-flow";
/// Anti-entropy interval of the run's nodes.
pub(crate) const SYNC_INTERVAL: Duration = Duration::from_millis(200);
/// Longest wait for a process's first line.
const STARTUP: Duration = Duration::from_secs(20);
/// Size of the tmpfs under the node whose disk fills.
const TMPFS_MB: u64 = 16;

/// One node: its files, and its process while it runs.
#[derive(Debug)]
pub(crate) struct NodeSlot {
    /// 0-based.
    pub(crate) index: usize,
    /// `node-1`, …
    pub(crate) id: String,
    data_dir: PathBuf,
    config: PathBuf,
    clock_file: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    paused: bool,
    starts: u32,
}

impl NodeSlot {
    /// `http://127.0.0.x:7000`.
    pub(crate) fn url(&self) -> String {
        format!("http://{}:{NODE_PORT}", node_ip(self.index))
    }

    /// Whether its process runs (paused or not).
    pub(crate) fn running(&self) -> bool {
        self.child.is_some()
    }

    /// Whether it runs and is not paused.
    pub(crate) fn up(&self) -> bool {
        self.child.is_some() && !self.paused
    }
}

/// The run's processes.
#[derive(Debug)]
pub(crate) struct Cluster {
    bin: PathBuf,
    /// The node slots, in index order.
    pub(crate) nodes: Vec<NodeSlot>,
    balancer: Option<Child>,
    /// The node whose data directory is a small tmpfs.
    pub(crate) tmpfs_node: Option<usize>,
    /// Processes that exited without the nemesis stopping them (and, noted by the
    /// scenario, nodes not ready again after the final heal).
    pub(crate) failures: Vec<String>,
}

impl Cluster {
    /// Writes the files of `size` nodes and a balancer under `dir`, mounts a tmpfs
    /// under `tmpfs_node`'s data directory, and starts every process.
    pub(crate) fn start(bin: &Path, dir: &Path, size: usize, tmpfs_node: Option<usize>) -> Self {
        Self::start_in_mode(bin, dir, size, tmpfs_node, ReplicationMode::LastWriterWins)
    }

    /// As [`start`](Self::start), the nodes replicating in `mode` (their files'
    /// `replication` setting).
    pub(crate) fn start_in_mode(
        bin: &Path,
        dir: &Path,
        size: usize,
        tmpfs_node: Option<usize>,
        mode: ReplicationMode,
    ) -> Self {
        let key = spectrum::resources::ClusterKey::generate().to_hex();
        let nodes = (0..size).map(|i| node_files(dir, i, size, &key, mode)).collect();
        let mut cluster =
            Self { bin: bin.to_owned(), nodes, balancer: None, tmpfs_node, failures: Vec::new() };
        if let Some(i) = tmpfs_node {
            let uid = node_uid(i);
            let options = format!("size={TMPFS_MB}m,uid={uid},gid={uid},mode=0755");
            let target = cluster.nodes[i].data_dir.display().to_string();
            run("mount", &["-t", "tmpfs", "-o", &options, "tmpfs", &target]);
        }
        for i in 0..size {
            cluster.start_node(i);
        }
        let balancer = balancer_file(dir, size);
        let (child, _) =
            spawn(&mut self_command(bin, "balancer", &balancer), BALANCER_UID, &dir.join("balancer.log"));
        cluster.balancer = Some(child);
        cluster
    }

    /// Starts node `i` (again) on its data directory; waits for its first line.
    pub(crate) fn start_node(&mut self, i: usize) {
        let slot = &mut self.nodes[i];
        assert!(slot.child.is_none(), "{} is already running", slot.id);
        slot.starts += 1;
        let mut log = OpenOptions::new().create(true).append(true).open(&slot.log).expect("node log");
        let _ = writeln!(log, "=== faults: {} start #{} ===", slot.id, slot.starts);
        let mut cmd = self_command(&self.bin, "node", &slot.config);
        cmd.env("LD_PRELOAD", LIBFAKETIME)
            .env("FAKETIME_TIMESTAMP_FILE", &slot.clock_file)
            .env("FAKETIME_CACHE_DURATION", "1")
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
            .env("NO_FAKE_STAT", "1");
        let (child, line) = spawn(&mut cmd, node_uid(i), &slot.log);
        assert!(line.contains("\"addr\""), "{} printed {line:?}", slot.id);
        slot.child = Some(child);
        slot.paused = false;
    }

    /// `kill -9` node `i` and reaps it.
    pub(crate) fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.nodes[i].paused = false;
    }

    /// SIGTERM node `i` (it drains and records that it left); waits for it. A
    /// failed exit is recorded as unexpected.
    pub(crate) fn terminate(&mut self, i: usize) {
        let Some(mut child) = self.nodes[i].child.take() else { return };
        signal(&child, "TERM");
        let deadline = Instant::now() + Duration::from_secs(15);
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                _ if Instant::now() > deadline => break None,
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        match status {
            Some(s) if s.success() => {}
            Some(s) => self.failures.push(format!("{} exited with {s} after SIGTERM", self.nodes[i].id)),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                self.failures.push(format!("{} did not stop within 15 s of SIGTERM", self.nodes[i].id));
            }
        }
    }

    /// SIGSTOP (`true`) or SIGCONT (`false`) node `i`.
    pub(crate) fn pause(&mut self, i: usize, paused: bool) {
        let slot = &mut self.nodes[i];
        if let Some(child) = &slot.child {
            signal(child, if paused { "STOP" } else { "CONT" });
            slot.paused = paused;
        }
    }

    /// Sets node `i`'s clock offset (libfaketime reads the file within a second).
    pub(crate) fn set_clock(&self, i: usize, offset_ms: i64) {
        std::fs::write(&self.nodes[i].clock_file, clock_offset(offset_ms)).expect("clock file written");
    }

    /// Empties node `i`'s data directory (the node must be down).
    pub(crate) fn wipe(&self, i: usize) {
        assert!(!self.nodes[i].running(), "wipe a stopped node only");
        for entry in std::fs::read_dir(&self.nodes[i].data_dir).expect("data dir").flatten() {
            let path = entry.path();
            if path.file_name().is_some_and(|n| n == FILLER) {
                continue;
            }
            let _ = if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
        }
    }

    /// Fills node `i`'s tmpfs to the last byte.
    pub(crate) fn fill_disk(&self, i: usize) {
        assert_eq!(self.tmpfs_node, Some(i), "only the tmpfs node's disk can fill");
        let mut file = File::create(self.nodes[i].data_dir.join(FILLER)).expect("filler file");
        for chunk in [1 << 20, 4096, 1] {
            let block = vec![0u8; chunk];
            let most = (TMPFS_MB << 20) / chunk as u64 + 1;
            for _ in 0..most {
                if file.write_all(&block).and_then(|()| file.flush()).is_err() {
                    break;
                }
            }
        }
    }

    /// Frees node `i`'s tmpfs again.
    pub(crate) fn free_disk(&self, i: usize) {
        let _ = std::fs::remove_file(self.nodes[i].data_dir.join(FILLER));
    }

    /// Notes every process that exited without being stopped by the nemesis.
    pub(crate) fn check_exits(&mut self) {
        for slot in &mut self.nodes {
            if let Some(Ok(Some(status))) = slot.child.as_mut().map(Child::try_wait) {
                self.failures.push(format!("{} exited by itself with {status}", slot.id));
                slot.child = None;
            }
        }
        if let Some(Ok(Some(status))) = self.balancer.as_mut().map(Child::try_wait) {
            self.failures.push(format!("the balancer exited by itself with {status}"));
            self.balancer = None;
        }
    }

    /// Lines of every log that tell of a panic.
    pub(crate) fn panics(&self) -> Vec<String> {
        let mut logs: Vec<PathBuf> = self.nodes.iter().map(|n| n.log.clone()).collect();
        if let Some(dir) = logs.first().and_then(|l| l.parent()) {
            logs.push(dir.join("balancer.log"));
        }
        logs.iter()
            .flat_map(|log| {
                let text = std::fs::read_to_string(log).unwrap_or_default();
                let name = log.file_name().unwrap_or_default().to_string_lossy().into_owned();
                text.lines()
                    .filter(|l| l.contains("panicked"))
                    .map(|l| format!("{name}: {l}"))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// The log files (copied next to the history).
    pub(crate) fn logs(&self) -> Vec<PathBuf> {
        let mut logs: Vec<PathBuf> = self.nodes.iter().map(|n| n.log.clone()).collect();
        if let Some(dir) = logs.first().and_then(|l| l.parent()) {
            logs.push(dir.join("balancer.log"));
        }
        logs
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for slot in &mut self.nodes {
            if let Some(mut child) = slot.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if let Some(mut child) = self.balancer.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(i) = self.tmpfs_node {
            let _ = Command::new("umount").arg(&self.nodes[i].data_dir).status();
        }
    }
}

/// The file that fills a tmpfs.
const FILLER: &str = ".faults-filler";

/// libfaketime's offset syntax: signed seconds with a fraction.
fn clock_offset(offset_ms: i64) -> String {
    let sign = if offset_ms < 0 { '-' } else { '+' };
    let ms = offset_ms.unsigned_abs();
    format!("{sign}{}.{:03}\n", ms / 1000, ms % 1000)
}

fn signal(child: &Child, name: &str) {
    run("kill", &[&format!("-{name}"), &child.id().to_string()]);
}

fn self_command(bin: &Path, what: &str, config: &Path) -> Command {
    let mut cmd = Command::new(bin);
    cmd.arg(what).arg("--config").arg(config);
    for var in
        ["SPECTRUM_TOKEN", "SPECTRUM_CLUSTER_KEY", "SPECTRUM_LISTEN", "SPECTRUM_ADVERTISE", "LD_PRELOAD"]
    {
        cmd.env_remove(var);
    }
    cmd.env("RUST_LOG", "info");
    cmd
}

/// Starts `cmd` as `uid`, logging to `log`; returns it with its first line.
fn spawn(cmd: &mut Command, uid: u32, log: &Path) -> (Child, String) {
    let log = OpenOptions::new().create(true).append(true).open(log).expect("log file");
    let mut child = cmd
        .uid(uid)
        .gid(uid)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("spectrum starts");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        let _ = tx.send(line);
        // Keeps the pipe drained for the process's life (bounded by its end).
        let mut rest = String::new();
        while reader.read_line(&mut rest).is_ok_and(|n| n > 0) {
            rest.clear();
        }
    });
    match rx.recv_timeout(STARTUP) {
        Ok(line) if !line.is_empty() => (child, line),
        _ => {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "fault suite: {:?} printed nothing within {STARTUP:?}",
                cmd.get_args().collect::<Vec<_>>()
            );
        }
    }
}

/// Writes node `i`'s file (and clock file, data directory) under `dir`.
fn node_files(dir: &Path, i: usize, size: usize, key: &str, mode: ReplicationMode) -> NodeSlot {
    let id = format!("node-{}", i + 1);
    let data_dir = dir.join(&id);
    std::fs::create_dir_all(&data_dir).expect("data dir");
    std::os::unix::fs::chown(&data_dir, Some(node_uid(i)), Some(node_uid(i))).expect("chown data dir");
    let seeds: Vec<String> =
        (0..size).filter(|&j| j != i).map(|j| format!("\"http://{}:{NODE_PORT}\"", node_ip(j))).collect();
    let text = format!(
        "id = \"{id}\"\ncluster = \"faults\"\nlisten = \"{}:{NODE_PORT}\"\nseeds = [{}]\ndata_dir = {:?}\n\
         token = \"{TOKEN}\"\ncluster_key = \"{key}\"\nsync_interval_ms = {}\nreplication = \"{mode}\"\n",
        node_ip(i),
        seeds.join(", "),
        data_dir.display().to_string(),
        SYNC_INTERVAL.as_millis()
    );
    let config = dir.join(format!("{id}.toml"));
    std::fs::write(&config, text).expect("node file");
    let clock_file = dir.join(format!("{id}.clock"));
    std::fs::write(&clock_file, clock_offset(0)).expect("clock file");
    let log = dir.join(format!("{id}.log"));
    NodeSlot { index: i, id, data_dir, config, clock_file, log, child: None, paused: false, starts: 0 }
}

/// Writes the balancer's file: every node, health checks every 200 ms, the user
/// service's `Run` retried as idempotent, requests bounded to 4 s.
fn balancer_file(dir: &Path, size: usize) -> PathBuf {
    let mut idempotent: Vec<String> =
        spectrum::config::DEFAULT_IDEMPOTENT.iter().map(|p| format!("{p:?}")).collect();
    idempotent.push("\"/spectrum.demo.v1.Dataflow/Run\"".into());
    let mut text = format!(
        "listen = \"{BALANCER_ADDR}\"\nhealth_interval_ms = 200\ntoken = \"{TOKEN}\"\n\
         [retry]\nidempotent = [{}]\n[timeouts]\nrequest_ms = 4000\n",
        idempotent.join(", ")
    );
    for i in 0..size {
        text.push_str(&format!(
            "[[nodes]]\nid = \"node-{}\"\naddr = \"{}:{NODE_PORT}\"\n",
            i + 1,
            node_ip(i)
        ));
    }
    let path = dir.join("balancer.toml");
    std::fs::write(&path, text).expect("balancer file");
    path
}
