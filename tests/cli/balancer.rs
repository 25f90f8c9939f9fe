//! The strategy and weights every balancer follows, set with `spectrum balancer …`
//! and seen in `spectrum status` through a running `spectrum balancer`.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{ProcessCluster, expect_failure, spectrum_command};

/// Runs `status --json` through the balancer until `done` holds for its
/// `"balancer"` part (it polls the database every 200 ms), and returns that part.
fn balancer_until(cluster: &ProcessCluster, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = cluster.json(&["status"]);
        if done(&status["balancer"]) {
            return status["balancer"].clone();
        }
        assert!(Instant::now() < deadline, "the balancer never showed {what}: {status}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_strategy_set_with_the_command_overrides_the_file_until_cleared_and_status_says_which() {
    let cluster = ProcessCluster::start("cli-balancer", 2, "balancer-token");
    let show = cluster.ok(&["balancer", "show"]);
    assert!(show.starts_with("STRATEGY  none set"), "{show}");
    let own = balancer_until(&cluster, "its file's strategy", |b| b["strategy"]["source"] == "configured");
    assert_eq!(own["strategy"]["name"], "round_robin");

    let set = cluster.ok(&[
        "balancer",
        "set-strategy",
        "consistent_hash",
        "--hash-key",
        "X-Tenant",
        "--load-factor",
        "1.5",
        "--ack",
        "all",
    ]);
    assert!(
        set.starts_with("balancer strategy set to consistent_hash (hash_key x-tenant, load_factor 1.5)"),
        "{set}"
    );
    let weight = cluster.json(&["balancer", "set-weight", "node-1", "0", "--ack", "all"]);
    assert_eq!((weight["node"].as_str(), weight["weight"].as_u64()), (Some("node-1"), Some(0)));
    let live = balancer_until(&cluster, "the database's strategy and weight", |b| {
        b["strategy"]["source"] == "database"
            && b["nodes"]
                .as_array()
                .is_some_and(|n| n.iter().any(|n| n["id"] == "node-1" && n["weight"] == 0))
    });
    assert_eq!(live["strategy"]["hash_key"], "x-tenant");
    assert_eq!(live["strategy"]["load_factor"], 1.5);
    let table = cluster.ok(&["status"]);
    assert!(
        table.contains("STRATEGY  consistent_hash (hash_key x-tenant, load_factor 1.5) from the database"),
        "{table}"
    );
    let shown = cluster.json(&["balancer", "show"]);
    assert_eq!(shown["strategy"]["name"], "consistent_hash");
    assert_eq!(shown["weights"][0]["node"], "node-1");

    // Refusals: one line naming what is wrong, and nothing changes.
    cluster.fails(&["balancer", "set-strategy", "fastest"], "fastest");
    cluster.fails(&["balancer", "set-strategy", "random", "--load-factor", "2"], "load_factor");
    cluster.fails(&["balancer", "set-weight", "node-9", "1"], "no member node-9");
    cluster.fails(&["config", "put", "balancer/strategy", "{}"], "balancer operations");
    let args = ["balancer"];
    let out = spectrum_command().args(args).output().unwrap();
    expect_failure(&out, &args, "needs --config FILE");

    // Cleared: back to the file's strategy and weights.
    cluster.ok(&["balancer", "clear-strategy", "--ack", "all"]);
    cluster.ok(&["balancer", "clear-weight", "node-1", "--ack", "all"]);
    let back = balancer_until(&cluster, "its file's strategy again", |b| {
        b["strategy"]["source"] == "configured"
            && b["nodes"].as_array().is_some_and(|n| n.iter().all(|n| n["weight"] == 1))
    });
    assert_eq!(back["strategy"]["name"], "round_robin");
    cluster.fails(&["balancer", "clear-strategy"], "no balancer strategy is set");
}
