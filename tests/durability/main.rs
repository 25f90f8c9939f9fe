//! Durability across `kill -9`, with real node processes (`spectrum node`) on
//! loopback: writes are under way on every node, one node is killed with SIGKILL
//! and restarted on the same data directory, and every acknowledged write, the
//! killed node's own included, is on every node once it has converged.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use spectrum::management::proto::{AckLevel, ListRequest, PutRequest, management_client::ManagementClient};
use tonic::transport::Channel;

/// A node process, killed with SIGKILL when dropped (even when the test panics).
struct NodeProcess {
    child: Child,
    url: String,
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port free on `host` now. Each test runs its nodes on a loopback address
/// of its own, so a port a stopped node will restart on cannot be taken by
/// another test's node in the meantime.
fn free_port(host: &str) -> u16 {
    TcpListener::bind((host, 0)).and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

fn write_config(dir: &Path, id: &str, host: &str, port: u16, peers: &[u16]) -> std::path::PathBuf {
    let seeds: Vec<String> = peers.iter().map(|p| format!("\"http://{host}:{p}\"")).collect();
    let text = format!(
        "id = \"{id}\"\ncluster = \"durability\"\nlisten = \"{host}:{port}\"\nseeds = [{}]\ndata_dir = \"{}\"\nsync_interval_ms = 200\n",
        seeds.join(", "),
        dir.join(id).display()
    );
    let path = dir.join(format!("{id}.toml"));
    std::fs::write(&path, text).expect("config written");
    path
}

/// Starts a node; its standard error goes to `<config>.stderr` (appended
/// across restarts), which a failed start shows.
fn start(config: &Path) -> NodeProcess {
    let log_path = config.with_extension("stderr");
    let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path).expect("stderr file");
    let mut child = Command::new(env!("CARGO_BIN_EXE_spectrum"))
        .args(["node", "--config"])
        .arg(config)
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("spectrum node starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("first line");
    let doc: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| {
        let _ = child.wait();
        let stderr = std::fs::read_to_string(&log_path).unwrap_or_default();
        panic!("{} printed {line:?} ({e}); its standard error:\n{stderr}", config.display())
    });
    NodeProcess { child, url: doc["addr"].as_str().expect("addr").to_owned() }
}

async fn client(url: &str) -> ManagementClient<Channel> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match ManagementClient::connect(url.to_owned()).await {
            Ok(c) => return c,
            Err(e) if Instant::now() > deadline => panic!("{url}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

async fn held(url: &str) -> BTreeMap<String, Vec<u8>> {
    let Ok(mut c) = ManagementClient::connect(url.to_owned()).await else { return BTreeMap::new() };
    match c.list(ListRequest { prefix: "settings/".into(), min_version: String::new(), read: None }).await {
        Ok(r) => r.into_inner().entries.into_iter().map(|e| (e.key, e.value)).collect(),
        Err(_) => BTreeMap::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_with_sigkill_restarts_with_every_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let host = "127.0.0.21";
    let ports = [free_port(host), free_port(host), free_port(host)];
    let configs: Vec<_> = (0..3)
        .map(|i| {
            let peers: Vec<u16> =
                ports.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, p)| *p).collect();
            write_config(dir.path(), &format!("node-{}", i + 1), host, ports[i], &peers)
        })
        .collect();
    let mut nodes: Vec<Option<NodeProcess>> = configs.iter().map(|c| Some(start(c))).collect();
    let urls: Vec<String> = nodes.iter().flatten().map(|n| n.url.clone()).collect();

    // Writes go to every node in turn, acknowledged by that node alone: each one
    // must survive, wherever it was accepted.
    let mut acked: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut clients = Vec::new();
    for u in &urls {
        clients.push(client(u).await);
    }
    // A node that started before its peers accepts writes once it has heard from one.
    for (i, c) in clients.iter_mut().enumerate() {
        let deadline = Instant::now() + Duration::from_secs(10);
        let key = format!("settings/ready-{i}");
        while c
            .put(PutRequest {
                key: key.clone(),
                value: b"1".to_vec(),
                ack: AckLevel::Local as i32,
                ..PutRequest::default()
            })
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "node-{} never accepted writes", i + 1);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        acked.insert(key, b"1".to_vec());
    }
    for i in 0..300usize {
        let target = i % 3;
        if i == 150 {
            // kill -9 node-3 in the middle of the stream.
            let mut killed = nodes[2].take().expect("node-3 running");
            killed.child.kill().expect("SIGKILL");
            killed.child.wait().unwrap();
        }
        if target == 2 && nodes[2].is_none() {
            continue;
        }
        let key = format!("settings/w{i:04}");
        let value = format!("value-{i}").into_bytes();
        let put = clients[target]
            .put(PutRequest {
                key: key.clone(),
                value: value.clone(),
                ack: AckLevel::Local as i32,
                ..PutRequest::default()
            })
            .await;
        if put.is_ok() {
            acked.insert(key, value);
        }
    }
    assert!(acked.len() >= 250, "writes to live nodes are acknowledged: {}", acked.len());

    nodes[2] = Some(start(&configs[2]));
    let deadline = Instant::now() + Duration::from_secs(30);
    for url in &urls {
        loop {
            let have = held(url).await;
            let missing: Vec<_> =
                acked.iter().filter(|(k, v)| have.get(*k) != Some(*v)).map(|(k, _)| k).collect();
            if missing.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{url} still lacks {} acknowledged writes, e.g. {:?}",
                missing.len(),
                &missing[..missing.len().min(5)]
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// How a whole cluster is stopped between two rounds.
#[derive(Debug, Clone, Copy)]
enum Stop {
    /// SIGTERM: each node drains and records that it left.
    Term,
    /// SIGKILL: nothing is recorded.
    Kill,
}

fn stop_all(nodes: &mut [Option<NodeProcess>], how: Stop) {
    for node in nodes.iter_mut().filter_map(Option::take) {
        let mut node = node;
        match how {
            Stop::Kill => {
                let _ = node.child.kill();
            }
            Stop::Term => {
                let pid = node.child.id().to_string();
                let _ = Command::new("kill").args(["-TERM", &pid]).status();
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while node.child.try_wait().ok().flatten().is_none() {
            assert!(Instant::now() < deadline, "a node did not stop on {how:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Waits (bounded) until the node at `url` holds every acknowledged write.
async fn holds_all(url: &str, acked: &BTreeMap<String, Vec<u8>>, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let have = held(url).await;
        let missing: Vec<_> =
            acked.iter().filter(|(k, v)| have.get(*k) != Some(*v)).map(|(k, _)| k).collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {url} lacks {} writes, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Writes one key through `url` at `ack`, retrying (bounded) while the node is
/// still starting.
async fn write(url: &str, key: &str, ack: AckLevel) -> Vec<u8> {
    let mut c = client(url).await;
    let value = format!("{key}-value").into_bytes();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let put = PutRequest {
            key: key.to_owned(),
            value: value.clone(),
            ack: ack as i32,
            ..PutRequest::default()
        };
        match c.put(put).await {
            Ok(_) => return value,
            Err(e) => assert!(Instant::now() < deadline, "{url} refused {key}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The seed product asks for the last node stopped to be started first. Here any
/// order works: the whole cluster is stopped (SIGTERM, then SIGKILL, alternately)
/// and started again in each of the six orders, each node serving every
/// acknowledged write as soon as it is up, before the next one starts; then two of
/// three come back and the third never does, and they still accept quorum writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_cluster_restarts_in_any_order_with_every_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let host = "127.0.0.22";
    let ports = [free_port(host), free_port(host), free_port(host)];
    let configs: Vec<_> = (0..3)
        .map(|i| {
            let peers: Vec<u16> =
                ports.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, p)| *p).collect();
            write_config(dir.path(), &format!("node-{}", i + 1), host, ports[i], &peers)
        })
        .collect();
    let mut nodes: Vec<Option<NodeProcess>> = configs.iter().map(|c| Some(start(c))).collect();
    let urls: Vec<String> = nodes.iter().flatten().map(|n| n.url.clone()).collect();
    let mut acked = BTreeMap::new();
    for (i, url) in urls.iter().enumerate() {
        let key = format!("settings/start-{i}");
        acked.insert(key.clone(), write(url, &key, AckLevel::All).await);
    }

    let orders = [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]];
    for (round, order) in orders.iter().enumerate() {
        let how = if round % 2 == 0 { Stop::Term } else { Stop::Kill };
        stop_all(&mut nodes, how);
        for (n, &i) in order.iter().enumerate() {
            nodes[i] = Some(start(&configs[i]));
            // Serving at once, with nothing lost, whoever is up so far.
            let what = format!("round {round} ({how:?}), node-{} started {}", i + 1, n + 1);
            holds_all(&urls[i], &acked, &what).await;
        }
        // Every node takes writes again, and a write acknowledged by all is everywhere.
        let key = format!("settings/round-{round}");
        acked.insert(key.clone(), write(&urls[order[0]], &key, AckLevel::All).await);
        for url in &urls {
            holds_all(url, &acked, &format!("after round {round}")).await;
        }
    }

    // Two of three come back; the third never does.
    stop_all(&mut nodes, Stop::Kill);
    for i in [2, 0] {
        nodes[i] = Some(start(&configs[i]));
        holds_all(&urls[i], &acked, "two of three").await;
    }
    let key = "settings/two-of-three".to_owned();
    acked.insert(key.clone(), write(&urls[0], &key, AckLevel::Quorum).await);
    holds_all(&urls[2], &acked, "two of three, after a quorum write").await;
}
