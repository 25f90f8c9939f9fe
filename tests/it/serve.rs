//! `cargo run --example three_node_cluster -- --serve`: tools outside the repository
//! read its first stdout line and drive the cluster with their own gRPC clients.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use spectrum::management::proto::StatusRequest;

use crate::support::admin;

/// The example binary `cargo test` built beside this test binary.
fn example_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let path = exe.parent()?.parent()?.join("examples").join("three_node_cluster");
    path.exists().then_some(path)
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_mode_prints_the_addresses_first_and_stops_on_sigterm() {
    let Some(binary) = example_binary() else {
        panic!("the three_node_cluster example was not built beside the tests; run `cargo test --workspace`");
    };
    let mut child = KillOnDrop(
        Command::new(binary)
            .arg("--serve")
            .env("RUST_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("example starts"),
    );
    let stdout = child.0.stdout.take().expect("piped stdout");
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    });
    let line = tokio::time::timeout(Duration::from_secs(30), line)
        .await
        .expect("first line in time")
        .unwrap()
        .unwrap();
    let doc: serde_json::Value = serde_json::from_str(&line).expect("the first line is one JSON object");
    let balancer = doc["balancer"].as_str().expect("balancer address");
    assert!(balancer.starts_with("http://127.0.0.1:"), "{balancer}");
    let nodes = doc["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 3);
    for node in nodes {
        assert!(node["id"].as_str().is_some_and(|id| id.starts_with("node-")));
        assert!(node["addr"].as_str().is_some_and(|a| a.starts_with("http://127.0.0.1:")));
    }

    assert_eq!(doc["console"].as_str(), Some(format!("{balancer}/console").as_str()));
    let page = super::http_api::call(balancer, "GET", "/console", None, b"").await;
    assert_eq!(page.status, 200, "the console through the balancer");

    let status =
        admin(balancer).await.status(StatusRequest {}).await.expect("management through the balancer");
    assert_eq!(status.into_inner().cluster_id, "example");

    let pid = child.0.id().to_string();
    let sent = Command::new("kill").args(["-TERM", &pid]).status().expect("kill runs");
    assert!(sent.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(code) = child.0.try_wait().unwrap() {
            assert!(code.success(), "exits 0 on SIGTERM, got {code}");
            break;
        }
        assert!(Instant::now() < deadline, "did not stop within 20 s of SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
