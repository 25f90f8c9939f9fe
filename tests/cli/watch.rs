//! `spectrum config watch`: events as they come, as JSON lines or a table, a
//! clean exit on Ctrl-C, and a resume from the position it printed.

use std::io::{BufRead, BufReader, Read as _};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{ProcessCluster, expect_failure, spectrum_command};

/// A running `spectrum config watch`, its standard output read line by line.
struct Watcher {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Watcher {
    /// Runs `spectrum` with `args` against `endpoint` (the balancer, or a node).
    fn start(cluster: &ProcessCluster, endpoint: &str, args: &[&str]) -> Self {
        let mut child = spectrum_command()
            .args(["--endpoint", endpoint, "--token", &cluster.token])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spectrum runs");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    fn line(&mut self) -> String {
        match self.lines.recv_timeout(Duration::from_secs(20)) {
            Ok(line) => line,
            Err(e) => {
                let _ = self.child.kill();
                let mut stderr = String::new();
                if let Some(mut err) = self.child.stderr.take() {
                    let _ = err.read_to_string(&mut stderr);
                }
                panic!("no line within 20 s ({e}); the watcher said: {stderr}")
            }
        }
    }

    /// Sends SIGINT; returns whether it exited 0, and its standard error.
    fn interrupt(mut self) -> (bool, String) {
        let pid = self.child.id().to_string();
        let sent = std::process::Command::new("kill").args(["-INT", &pid]).status().unwrap();
        assert!(sent.success());
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "spectrum config watch did not exit on SIGINT");
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut stderr = String::new();
        self.child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
        (status.success(), stderr)
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn config_watch_prints_events_as_they_come_exits_cleanly_on_ctrl_c_and_resumes_from_its_position() {
    let cluster = ProcessCluster::start("cli-watch", 3, "watch-token");
    let mut watcher =
        Watcher::start(&cluster, &cluster.balancer, &["--json", "config", "watch", "settings/"]);
    std::thread::sleep(Duration::from_millis(1500));
    cluster.ok(&["config", "put", "settings/colour", "teal"]);
    cluster.ok(&["config", "delete", "settings/colour"]);
    let put: Value = serde_json::from_str(&watcher.line()).unwrap();
    assert_eq!(
        (put["kind"].as_str(), put["key"].as_str(), put["value"].as_str()),
        (Some("put"), Some("settings/colour"), Some("teal"))
    );
    let delete: Value = serde_json::from_str(&watcher.line()).unwrap();
    assert_eq!(delete["kind"], "delete");
    let (ok, stderr) = watcher.interrupt();
    assert!(ok, "exit 0 on SIGINT: {stderr}");
    assert!(stderr.contains("resume with --from"), "{stderr}");

    // While no one watches; then a table, resumed from the last position printed,
    // on the node that issued it: every change once, in order, from its log.
    // (Through the balancer, another node may answer: it resumes coalesced, and
    // refuses once it has collected the delete, which it may do within a sync
    // round, as the README says.)
    cluster.ok(&["config", "put", "settings/size", "large"]);
    let position = put["position"].as_str().unwrap();
    let issuer = position.split('~').next().unwrap();
    let node = &cluster.nodes.iter().find(|(id, _)| id == issuer).expect("the position names a node").1;
    let mut watcher = Watcher::start(&cluster, node, &["config", "watch", "settings/", "--from", position]);
    assert!(watcher.line().starts_with("KIND"), "a table header first");
    let row = watcher.line();
    assert!(row.starts_with("delete") && row.contains("settings/colour"), "{row}");
    let row = watcher.line();
    assert!(row.starts_with("put") && row.contains("settings/size") && row.ends_with("large"), "{row}");
    let (ok, _) = watcher.interrupt();
    assert!(ok);

    cluster.fails(&["config", "watch", "settings/", "--from", "nonsense"], "--from");

    // A watch refused at once prints its error and nothing on standard output
    // (it printed the table's header first).
    let args = ["config", "watch", "settings/"];
    let out = cluster.run_at(&cluster.balancer, Some("wrong-token"), &args);
    expect_failure(&out, &args, "Unauthenticated");
    assert!(out.stdout.is_empty(), "{:?}", String::from_utf8_lossy(&out.stdout));
}
