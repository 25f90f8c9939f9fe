//! Rotating the cluster key with the `spectrum` command and the node file.

use serde_json::Value;

use crate::{Launch, ProcessCluster, STARTUP, eventually, expect_failure, jdbc_definition};

/// A cluster key other than the harness's (64 hex digits).
const NEW_KEY: &str = "5ec0ffee5ec0ffee5ec0ffee5ec0ffee5ec0ffee5ec0ffee5ec0ffee5ec0ffee";
/// A key that sealed nothing in this cluster.
const STRANGER_KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// Restarts node-1 with `cluster_key = key` and `previous_cluster_keys =
/// previous` (or none), and waits until it answers `key rotate`'s read
/// (`resources list`).
fn restart_with_keys(cluster: &mut ProcessCluster, key: &str, previous: Option<&str>) {
    cluster.kill(0);
    let key = format!("\"{key}\"");
    let previous = previous.map(|old| format!("[\"{old}\"]"));
    let rewritten = cluster
        .node_file_with(0, &[("cluster_key", Some(&key)), ("previous_cluster_keys", previous.as_deref())]);
    std::fs::write(&cluster.files[0], rewritten).unwrap();
    cluster.restart(0, &Launch::default()).expect("node-1 starts with its new keys");
    let node = cluster.nodes[0].1.clone();
    eventually("node-1 serves again", STARTUP, || {
        let out = cluster.run_at(&node, Some(&cluster.token), &["resources", "list"]);
        if out.status.success() { Ok(()) } else { Err(crate::stderr(&out)) }
    });
}

#[test]
fn a_cluster_key_is_rotated_with_the_old_one_in_previous_cluster_keys_then_key_rotate() {
    let mut cluster = ProcessCluster::start("cli-keys", 1, "keys-token");
    let orders = cluster.path("orders.json");
    std::fs::write(&orders, jdbc_definition("orders")).unwrap();
    cluster.ok(&["resources", "create", orders.to_str().unwrap()]);
    let old_key = cluster.node_file_value(0, "cluster_key").unwrap().trim_matches('"').to_owned();
    let node = cluster.nodes[0].1.clone();
    let at_node = |cluster: &ProcessCluster, args: &[&str]| cluster.run_at(&node, Some(&cluster.token), args);

    // The new key, the old one kept: the secret still opens, and `key rotate`
    // reseals it with the new key.
    restart_with_keys(&mut cluster, NEW_KEY, Some(&old_key));
    let out = at_node(&cluster, &["--json", "key", "rotate"]);
    assert!(out.status.success(), "{}", crate::stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["resealed"], serde_json::json!(["orders"]), "{report}");
    let again: Value =
        serde_json::from_slice(&at_node(&cluster, &["--json", "key", "rotate"]).stdout).unwrap();
    assert_eq!((again["resealed"].as_array().map(Vec::len), &again["current"]), (Some(0), &Value::from(1)));

    // The old key gone: the secret opens with the new one alone.
    restart_with_keys(&mut cluster, NEW_KEY, None);
    let check = at_node(&cluster, &["resources", "check", "orders"]);
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(!text.contains("unreadable"), "{text}");

    // A key that sealed nothing here: `key rotate` says so and fails.
    restart_with_keys(&mut cluster, STRANGER_KEY, None);
    let args = ["key", "rotate"];
    let refused = expect_failure(&at_node(&cluster, &args), &args, "no key of the answering node opens");
    assert!(refused.contains("previous_cluster_keys"), "{refused}");

    // A malformed previous key is refused naming which, without its value.
    cluster.kill(0);
    let malformed = format!("[\"{old_key}\", \"not-a-key\"]");
    let rewritten = cluster.node_file_with(0, &[("previous_cluster_keys", Some(&malformed))]);
    std::fs::write(&cluster.files[0], rewritten).unwrap();
    let refused =
        cluster.restart(0, &Launch::default()).expect_err("a node with a malformed previous key started");
    assert!(refused.contains("previous_cluster_keys[1]") && !refused.contains("not-a-key"), "{refused}");
}
