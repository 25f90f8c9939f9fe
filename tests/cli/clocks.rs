//! A clock runs behind or ahead: node-3 runs under libfaketime (Debian's
//! `faketime`, installed here when missing), the two others and the balancer on
//! the real clock, each node on its own loopback address. The node off from its
//! peers is not ready (`/readyz` and gRPC health), refuses writes naming its
//! offset, never leaves the replicas holding different values, and serves again
//! once restarted on a right clock.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use crate::{
    ClusterSpec, Launch, ProcessCluster, STARTUP, eventually, expect_failure, grpc_health, http_get,
};

/// The node whose clock is off (node-3).
const SKEWED: usize = 2;

/// libfaketime's preload library, where Debian's `faketime` package puts it.
fn find_libfaketime() -> Option<PathBuf> {
    let mut dirs = vec![PathBuf::from("/usr/lib"), PathBuf::from("/usr/local/lib")];
    if let Ok(entries) = std::fs::read_dir("/usr/lib") {
        dirs.extend(entries.flatten().map(|e| e.path()));
    }
    dirs.into_iter().map(|d| d.join("faketime/libfaketime.so.1")).find(|p| p.is_file())
}

/// libfaketime, installed with apt-get when missing and this test runs as root
/// (as CI does on a fresh machine); otherwise the test fails saying how to
/// install it. Never skips. Installed once per test binary.
fn libfaketime() -> &'static PathBuf {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        if let Some(lib) = find_libfaketime() {
            return lib;
        }
        let root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"));
        if root {
            let apt = |args: &[&str]| {
                Command::new("apt-get")
                    .args(args)
                    .env("DEBIAN_FRONTEND", "noninteractive")
                    .output()
                    .is_ok_and(|o| o.status.success())
            };
            let _ = apt(&["update"]) && apt(&["install", "-y", "faketime"]);
        }
        find_libfaketime().expect(
            "this test runs a node under libfaketime: install it (Debian: `apt-get install -y faketime`)",
        )
    })
}

/// Runs a node with its wall clock moved by `offset` (libfaketime's relative
/// form: `-10m`, `+10m`). Monotonic time stays real: tokio's timers use it.
fn faketime(offset: &str) -> Launch {
    let env = [
        ("LD_PRELOAD", libfaketime().display().to_string()),
        ("FAKETIME", offset.to_owned()),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_owned()),
    ];
    Launch { wrapper: vec![], env: env.map(|(k, v)| (k.to_owned(), v)).to_vec() }
}

/// Waits until `/readyz` at `url` answers `status`; returns its body.
fn readyz_becomes(url: &str, status: u16) -> String {
    eventually(&format!("{url}/readyz answers {status}"), STARTUP, || match http_get(url, "/readyz")? {
        (got, body) if got == status => Ok(body),
        other => Err(format!("{other:?}")),
    })
}

/// Waits until gRPC health at `url` answers `status`.
fn health_becomes(url: &str, status: &str) {
    eventually(&format!("gRPC health at {url} answers {status}"), STARTUP, || match grpc_health(url)? {
        got if got == status => Ok(()),
        other => Err(other),
    });
}

/// The milliseconds a clock-fence message names ("… clock is 600001 ms …").
fn offset_named(line: &str) -> u64 {
    let after = line.split("clock is ").nth(1).unwrap_or_else(|| panic!("no offset in {line:?}"));
    after.split(" ms").next().and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("{line:?}"))
}

/// Runs `spectrum ARGS` at node `i` and expects it to fail with `needle`.
fn fails_at(cluster: &ProcessCluster, i: usize, args: &[&str], needle: &str) -> String {
    expect_failure(&cluster.run_at(&cluster.nodes[i].1, Some(&cluster.token), args), args, needle)
}

#[test]
fn a_node_ten_minutes_behind_is_not_serving_refuses_writes_naming_its_offset_and_serves_once_its_clock_is_right()
 {
    let spec = ClusterSpec::new("cli-clock-behind", 3, "clock-behind-token").own_addresses();
    let mut cluster = ProcessCluster::start_with(&spec);
    let skewed = cluster.nodes[SKEWED].1.clone();
    // Restarted on its data with a clock ten minutes slow (a fenced node does
    // not record itself in membership until its clock is right, so the
    // cluster starts on right clocks first).
    cluster.kill(SKEWED);
    cluster.restart(SKEWED, &faketime("-10m")).expect("node-3 restarts");

    // Its two peers agree with each other, so node-3 knows it is the outlier.
    let body = readyz_becomes(&skewed, 503);
    assert!(body.contains("clock off (see clock_error)"), "{body}");
    health_becomes(&skewed, "NOT_SERVING");
    readyz_becomes(&cluster.nodes[0].1, 200);
    let status = cluster.status_at(SKEWED).unwrap();
    let fenced = status["clock_fenced"].as_str().unwrap_or_else(|| panic!("not fenced: {status}"));
    assert!(fenced.contains("behind") && offset_named(fenced) > 590_000, "{fenced}");
    for peer in status["peers"].as_array().unwrap() {
        assert_eq!(peer["clock_skewed"], true, "{peer}");
        assert!(peer["clock_offset_ms"].as_i64().is_some_and(|ms| ms > 590_000), "{peer}");
    }

    // The order: red through node-1, then blue through node-3, both
    // acknowledged locally. Blue is refused, naming the offset.
    cluster
        .try_json_at(&cluster.nodes[0].1, &["config", "put", "settings/color", "red", "--ack", "local"])
        .unwrap();
    let args = ["config", "put", "settings/color", "blue", "--ack", "local"];
    let line = fails_at(&cluster, SKEWED, &args, "(FailedPrecondition)");
    assert!(line.contains("behind") && offset_named(&line) > 590_000, "{line}");
    // Every replica ends on red, node-3 included (it still takes its peers' data),
    // and the balancer, which sends nothing to node-3, answers red.
    cluster.all_hold(&[0, 1, 2], "settings/color", "red");
    cluster.balancer_finds("node-3", false);
    for _ in 0..10 {
        assert_eq!(cluster.json(&["config", "get", "settings/color"])["value"], "red");
    }

    // Restarted on the right clock, on its data: it serves and writes again, and
    // every replica agrees on blue.
    cluster.kill(SKEWED);
    cluster.restart(SKEWED, &Launch::default()).expect("node-3 restarts");
    readyz_becomes(&skewed, 200);
    health_becomes(&skewed, "SERVING");
    let written = cluster.try_json_at(&skewed, &["config", "put", "settings/color", "blue", "--ack", "all"]);
    let written = written.expect("node-3 writes once its clock is right");
    assert_eq!(written["acked"], 3, "{written}");
    cluster.all_hold(&[0, 1, 2], "settings/color", "blue");
}

#[test]
fn a_node_restarted_ten_minutes_ahead_refuses_writes_and_once_its_wall_clock_is_right_waits_out_its_hybrid_clock()
 {
    let spec = ClusterSpec::new("cli-clock-ahead", 3, "clock-ahead-token").own_addresses();
    let mut cluster = ProcessCluster::start_with(&spec);
    let skewed = cluster.nodes[SKEWED].1.clone();
    cluster.ok(&["config", "put", "settings/color", "green", "--ack", "all"]);

    // Restarted on its data with a clock ten minutes fast: refused at once (its
    // peers refused its first pull, and their refusals measured its clock).
    cluster.kill(SKEWED);
    cluster.restart(SKEWED, &faketime("+10m")).expect("node-3 restarts");
    let args = ["config", "put", "settings/color", "blue", "--ack", "local"];
    let line = fails_at(&cluster, SKEWED, &args, "(FailedPrecondition)");
    assert!(line.contains("ahead of") && offset_named(&line) > 590_000, "{line}");
    readyz_becomes(&skewed, 503);
    health_becomes(&skewed, "NOT_SERVING");
    // Once the balancer's health checks see it, writes through the balancer go to
    // the others.
    cluster.balancer_finds("node-3", false);
    cluster.ok(&["config", "put", "settings/color", "red"]);

    // Restarted on the right clock, the hybrid clock its store restores is
    // still ten minutes ahead of its wall clock: a write stamped so would
    // outlast the cluster's newer writes, so it refuses writes, saying for how
    // long, and its peers refuse its stamps; it still takes their data.
    cluster.kill(SKEWED);
    cluster.restart(SKEWED, &Launch::default()).expect("node-3 restarts");
    let line = fails_at(&cluster, SKEWED, &args, "(FailedPrecondition)");
    assert!(line.contains("hybrid clock is") && offset_named(&line) > 590_000, "{line}");
    let body = readyz_becomes(&skewed, 503);
    assert!(body.contains("hybrid clock is"), "{body}");
    cluster.ok(&["config", "put", "settings/mode", "fast", "--ack", "quorum"]);
    cluster.all_hold(&[0, 1, 2], "settings/mode", "fast");
    cluster.all_hold(&[0, 1, 2], "settings/color", "red");
    // The others' clocks did not follow: they serve and take writes.
    readyz_becomes(&cluster.nodes[0].1, 200);
}
