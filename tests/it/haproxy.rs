//! A real HAProxy (Debian's `haproxy` package) in front of three nodes, checking
//! each with `option httpchk GET /readyz` and forwarding gRPC over h2c: draining a
//! node through the management API takes it out of HAProxy's rotation while a
//! client sending requests through HAProxy sees no failure.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use spectrum::demo::{DataflowClient, proto::RunRequest};
use spectrum::management::proto::{NodeState, SetNodeStateRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{ACK_ALL, admin, configure_dataflow, start_cluster};

/// HAProxy's health check interval: short, so the test is quick.
const CHECK_INTERVAL_MS: u64 = 200;

/// A running `haproxy -db` on a generated configuration in its own temporary
/// directory; killed when dropped, so a failing test never leaves it behind.
struct Haproxy {
    child: Child,
    dir: tempfile::TempDir,
    url: String,
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Installs Debian's `haproxy` when it is missing and this test runs as root (as
/// CI does on a fresh machine); otherwise fails saying how to install it. Never
/// skips.
fn ensure_installed() {
    let present = || Command::new("haproxy").arg("-v").output().is_ok_and(|v| v.status.success());
    if present() {
        return;
    }
    let root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    if root {
        let quiet = |args: &[&str]| {
            Command::new("apt-get")
                .args(args)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .output()
                .is_ok_and(|o| o.status.success())
        };
        let _ = quiet(&["update"]) && quiet(&["install", "-y", "haproxy"]);
    }
    assert!(present(), "this test runs a real HAProxy: install it (Debian: `apt-get install -y haproxy`)");
}

impl Haproxy {
    /// Starts HAProxy on an ephemeral loopback port in front of `servers`
    /// (`(name, host:port)`), and waits until its stats socket answers.
    async fn start(servers: &[(String, String)]) -> Haproxy {
        ensure_installed();
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let socket = dir.path().join("admin.sock");
        let config = dir.path().join("haproxy.cfg");
        std::fs::write(&config, config_text(port, &socket, servers)).unwrap();
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("haproxy starts");
        let mut haproxy = Haproxy { child, dir, url: format!("http://127.0.0.1:{port}") };
        let deadline = Instant::now() + Duration::from_secs(10);
        while haproxy.stats().await.is_none() {
            if let Some(status) = haproxy.child.try_wait().unwrap() {
                let mut stderr = String::new();
                if let Some(mut pipe) = haproxy.child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
                }
                panic!("haproxy exited with {status}: {stderr}");
            }
            assert!(Instant::now() < deadline, "haproxy's stats socket never answered");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        haproxy
    }

    /// `show stat` from the admin socket: one map of column to value per row.
    async fn stats(&self) -> Option<Vec<BTreeMap<String, String>>> {
        let mut stream = tokio::net::UnixStream::connect(self.socket()).await.ok()?;
        stream.write_all(b"show stat\n").await.ok()?;
        let mut text = String::new();
        tokio::time::timeout(Duration::from_secs(2), stream.read_to_string(&mut text)).await.ok()?.ok()?;
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next()?.strip_prefix("# ")?.split(',').collect();
        Some(
            lines
                .filter(|l| !l.is_empty())
                .map(|l| {
                    header.iter().zip(l.split(',')).map(|(k, v)| ((*k).to_owned(), v.to_owned())).collect()
                })
                .collect(),
        )
    }

    /// Server `name`'s status in HAProxy's backend (`UP`, `DOWN`, …).
    async fn server_status(&self, name: &str) -> String {
        let rows = self.stats().await.unwrap_or_default();
        rows.iter()
            .find(|r| {
                r.get("pxname").map(String::as_str) == Some("nodes")
                    && r.get("svname").map(String::as_str) == Some(name)
            })
            .and_then(|r| r.get("status").cloned())
            .unwrap_or_default()
    }

    /// Waits (up to 10 s) until server `name` has `status`.
    async fn wait_for(&self, name: &str, status: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let now = self.server_status(name).await;
            if now.starts_with(status) {
                return;
            }
            assert!(Instant::now() < deadline, "haproxy never saw {name} {status}; it says {now:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("admin.sock")
    }
}

/// HAProxy in HTTP mode, h2c on both sides, checking each node's `/readyz`.
fn config_text(port: u16, socket: &Path, servers: &[(String, String)]) -> String {
    let mut text = format!(
        "global
  stats socket {socket} mode 600 level admin

defaults
  mode http
  timeout connect 1s
  timeout client 30s
  timeout server 30s
  retries 2
  option redispatch

frontend grpc
  bind 127.0.0.1:{port} proto h2
  default_backend nodes

backend nodes
  balance roundrobin
  option httpchk GET /readyz
  http-check expect status 200
  default-server inter {CHECK_INTERVAL_MS}ms fall 1 rise 2
",
        socket = socket.display()
    );
    for (name, addr) in servers {
        text.push_str(&format!("  server {name} {addr} proto h2 check\n"));
    }
    text
}

/// Requests sent through HAProxy, one after another, until told to stop: how many
/// each node served, and every failure.
#[derive(Default)]
struct Traffic {
    served: Mutex<BTreeMap<String, usize>>,
    failures: Mutex<Vec<String>>,
    stop: AtomicBool,
}

impl Traffic {
    fn served_by(&self, node: &str) -> usize {
        self.served.lock().get(node).copied().unwrap_or(0)
    }

    fn total(&self) -> usize {
        self.served.lock().values().sum()
    }

    async fn send(self: Arc<Self>, url: String) {
        let channel = tonic::transport::Endpoint::from_shared(url)
            .unwrap()
            .timeout(Duration::from_secs(5))
            .connect()
            .await
            .expect("connect through haproxy");
        let mut client = DataflowClient::new(channel);
        while !self.stop.load(Ordering::Acquire) {
            let request = RunRequest {
                dataflow: "normalize-address".into(),
                address: "12 Main St, Springfield".into(),
            };
            match client.run(request).await {
                Ok(reply) => *self.served.lock().entry(reply.into_inner().served_by).or_insert(0) += 1,
                Err(status) => self.failures.lock().push(status.to_string()),
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits (up to 10 s) until `count` more requests have been answered.
    async fn wait_for_more(&self, count: usize) {
        let target = self.total() + count;
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.total() < target {
            assert!(Instant::now() < deadline, "requests through haproxy stalled: {:?}", self.served.lock());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_checking_readyz_stops_sending_requests_to_a_drained_node_with_no_failed_request() {
    let cluster = start_cluster("it-haproxy").await;
    let dir = tempfile::tempdir().unwrap();
    let mut management = admin(&cluster.balancer_url()).await;
    configure_dataflow(&mut management, &dir.path().join("postal.db")).await;

    let servers: Vec<(String, String)> =
        cluster.nodes().map(|n| (n.id().to_string(), n.local_addr().to_string())).collect();
    let haproxy = Haproxy::start(&servers).await;
    for (name, _) in &servers {
        haproxy.wait_for(name, "UP").await;
    }

    let traffic = Arc::new(Traffic::default());
    let client = tokio::spawn(traffic.clone().send(haproxy.url.clone()));
    traffic.wait_for_more(30).await;
    assert!(traffic.served_by("node-3") > 0, "round robin reaches node-3: {:?}", traffic.served.lock());

    management
        .set_node_state(SetNodeStateRequest {
            node_id: "node-3".into(),
            state: NodeState::Draining as i32,
            ack: ACK_ALL,
        })
        .await
        .expect("drain accepted");
    haproxy.wait_for("node-3", "DOWN").await;
    // A request HAProxy had already sent to node-3 finishes; then nothing more.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = traffic.served_by("node-3");
    traffic.wait_for_more(60).await;
    assert_eq!(
        traffic.served_by("node-3"),
        before,
        "haproxy still sends node-3 requests: {:?}",
        traffic.served.lock()
    );
    assert!(traffic.served_by("node-1") > 0 && traffic.served_by("node-2") > 0);

    traffic.stop.store(true, Ordering::Release);
    client.await.unwrap();
    let failures = traffic.failures.lock().clone();
    assert!(failures.is_empty(), "requests failed through haproxy: {failures:?}");
    drop(haproxy);
    cluster.shutdown().await;
}
