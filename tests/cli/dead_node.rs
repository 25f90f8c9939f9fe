//! A node dies (`kill -9`): three node processes, each on its own loopback
//! address, and a balancer, driven with the `spectrum` command. Quorum writes go
//! on and `--ack all` says who is missing; status shows the dead node suspect,
//! then down, as the balancer does; and an operator removes it for good, after
//! which it holds nothing back and is refused when it returns, until let back.

use serde_json::Value;

use crate::{ClusterSpec, Launch, ProcessCluster, STARTUP, eventually, member};

/// The node that dies (node-3).
const DEAD: usize = 2;

fn liveness(status: &Value, id: &str) -> String {
    member(status, id)["liveness"].as_str().unwrap_or_default().to_owned()
}

/// The balancer's entry for node `id` in `spectrum status --json` through it.
fn backend<'a>(status: &'a Value, id: &str) -> Option<&'a Value> {
    status["balancer"]["nodes"].as_array()?.iter().find(|n| n["id"] == id)
}

fn tombstones(status: &Value) -> u64 {
    status["tombstones"].as_u64().unwrap_or_else(|| panic!("no tombstone count: {status}"))
}

#[test]
fn a_killed_node_fails_only_ack_all_writes_naming_itself_and_status_and_the_balancer_show_it_down() {
    let spec = ClusterSpec::new("cli-dead-node", 3, "dead-token").own_addresses();
    let mut cluster = ProcessCluster::start_with(&spec);
    let dead_url = cluster.nodes[DEAD].1.clone();
    assert!(dead_url.starts_with("http://127.0.0.4:"), "{dead_url}");
    cluster.ok(&["config", "put", "settings/a", "1", "--ack", "all"]);
    cluster.kill(DEAD);

    // The default acknowledgement is a quorum: two of three still make one.
    let written = cluster.json(&["config", "put", "settings/b", "2"]);
    assert_eq!(written["members"], 3, "{written}");
    assert!(written["acked"].as_u64().is_some_and(|n| n >= 2), "{written}");

    // `--ack all` cannot be met: the write is applied, and the error says how many
    // acknowledged and which member did not, with how alive it looks.
    let line = cluster.fails(&["config", "put", "settings/c", "3", "--ack", "all"], "is applied");
    assert!(line.contains("acknowledged by 2 of 3 required nodes (3 members)"), "{line}");
    let named = format!("node-3 at {dead_url}: ");
    let said = line.split(&named).nth(1).unwrap_or_else(|| panic!("{line:?} does not name {named:?}"));
    assert!(["alive", "suspect", "down"].iter().any(|l| said.starts_with(l)), "{line}");
    cluster.all_hold(&[0, 1], "settings/c", "3");

    // Each live node's failure detector finds node-3 suspect, then down, never
    // alive again once suspected (both watched at once, each from its own status).
    let mut seen: [Vec<String>; 2] = Default::default();
    eventually("node-1 and node-2 find node-3 down", 3 * STARTUP, || {
        for (i, seen) in seen.iter_mut().enumerate() {
            let now = liveness(&cluster.status_at(i)?, "node-3");
            if seen.last() != Some(&now) {
                seen.push(now);
            }
        }
        if seen.iter().all(|s| s.last().is_some_and(|l| l == "down")) {
            Ok(())
        } else {
            Err(format!("{seen:?}"))
        }
    });
    for (i, seen) in seen.iter().enumerate() {
        let from_suspect: Vec<&str> =
            seen.iter().map(String::as_str).skip_while(|l| *l != "suspect").collect();
        assert_eq!(from_suspect, ["suspect", "down"], "node-{}: {seen:?}", i + 1);
    }

    // Through the balancer, whichever node answers: node-3 down as members go, and
    // down in the balancer's own figures; the live ones alive and healthy.
    let status = cluster.json(&["status"]);
    assert_eq!(liveness(&status, "node-3"), "down", "{status}");
    assert_eq!(member(&status, "node-3")["state"], "active", "dead is not removed: {status}");
    let dead = backend(&status, "node-3").unwrap_or_else(|| panic!("the balancer lists node-3: {status}"));
    assert_eq!((dead["health"].as_str(), dead["healthy"].as_bool()), (Some("down"), Some(false)), "{status}");
    for id in ["node-1", "node-2"] {
        assert_eq!(liveness(&status, id), "alive", "{status}");
        let live = backend(&status, id).unwrap_or_else(|| panic!("the balancer lists {id}: {status}"));
        assert_eq!(live["healthy"], true, "{status}");
    }
    let table = cluster.ok(&["status"]);
    let rows: Vec<&str> = table.lines().filter(|l| l.starts_with("node-3 ")).collect();
    assert!(rows.iter().any(|r| r.contains(&dead_url) && r.ends_with(" down")), "member row: {table}");
    assert!(rows.iter().any(|r| r.contains(" down ")), "balancer row: {table}");
}

#[test]
fn a_removed_node_holds_back_no_write_or_tombstone_and_is_refused_until_an_operator_lets_it_back() {
    let spec = ClusterSpec::new("cli-removed-node", 3, "removed-token").own_addresses();
    let mut cluster = ProcessCluster::start_with(&spec);
    cluster.ok(&["config", "put", "settings/a", "1", "--ack", "all"]);
    cluster.kill(DEAD);

    // A delete while node-3 is dead leaves a tombstone that cannot be collected:
    // node-3 has not seen it. By the time node-1 finds node-3 down, many rounds
    // that would have collected it have passed.
    cluster.json(&["config", "delete", "settings/a"]);
    eventually("node-1 finds node-3 down", 3 * STARTUP, || {
        let status = cluster.status_at(0)?;
        if liveness(&status, "node-3") == "down" { Ok(()) } else { Err(status.to_string()) }
    });
    for i in [0, 1] {
        let status = cluster.status_at(i).unwrap();
        assert!(tombstones(&status) >= 1, "node-{} still holds the tombstone: {status}", i + 1);
    }
    cluster.fails(&["config", "put", "settings/b", "2", "--ack", "all"], "node-3 at ");

    // Removed: `all` means the two left, and the tombstone is collected on both.
    let removed = cluster.json(&["node", "remove", "node-3"]);
    assert_eq!(
        (&removed["node"], &removed["state"]),
        (&Value::from("node-3"), &Value::from("removed")),
        "{removed}"
    );
    let written = cluster.json(&["config", "put", "settings/b", "2", "--ack", "all"]);
    assert_eq!((&written["acked"], &written["members"]), (&Value::from(2), &Value::from(2)), "{written}");
    eventually("the balancer forgets node-3", STARTUP, || {
        let status = cluster.json(&["status"]);
        if backend(&status, "node-3").is_none() { Ok(()) } else { Err(status.to_string()) }
    });
    for i in [0, 1] {
        eventually(&format!("node-{} collects every tombstone", i + 1), STARTUP, || {
            let status = cluster.status_at(i)?;
            if tombstones(&status) == 0 { Ok(()) } else { Err(status.to_string()) }
        });
        let status = cluster.status_at(i).unwrap();
        assert_eq!(member(&status, "node-3")["state"], "removed");
        // Not called on, so no PEER row that would only age.
        let peers = status["peers"].as_array().unwrap();
        assert!(peers.iter().all(|p| p["id"] != "node-3"), "{status}");
    }

    // It comes back on its own data: refused, saying so, and it counts for nothing.
    let refused = cluster.restart(DEAD, &Launch::default());
    assert!(refused.is_err(), "a removed node started");
    let exit = cluster.exit_status(DEAD);
    assert!(!exit.success(), "{exit}");
    let log = cluster.node_log(DEAD);
    assert!(log.contains("this node was removed from the cluster; refusing to join"), "{log}");
    let last = log.lines().last().unwrap_or_default();
    assert!(last.starts_with("error: ") && last.contains("removed"), "one line says why: {last:?}");
    let written = cluster.json(&["config", "put", "settings/c", "3", "--ack", "all"]);
    assert_eq!(written["members"], 2, "{written}");

    // An operator lets it back: it starts, rejoins and counts again.
    let back = cluster.ok(&["node", "undrain", "node-3"]);
    assert!(back.contains("node node-3 is now active"), "{back}");
    cluster.restart(DEAD, &Launch::default()).expect("node-3 starts once let back");
    eventually("node-1 finds node-3 active and alive", STARTUP, || {
        let status = cluster.status_at(0)?;
        let node3 = member(&status, "node-3");
        if node3["state"] == "active" && node3["liveness"] == "alive" {
            Ok(())
        } else {
            Err(status.to_string())
        }
    });
    let written = cluster.json(&["config", "put", "settings/d", "4", "--ack", "all"]);
    assert_eq!((&written["acked"], &written["members"]), (&Value::from(3), &Value::from(3)), "{written}");
    cluster.all_hold(&[0, 1, 2], "settings/c", "3");
}
