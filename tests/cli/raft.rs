//! Raft mode on real processes: three `spectrum node` processes with
//! `replication = "raft"`, each on its own loopback address, written to through
//! the balancer while a minority is killed with SIGKILL (one node, then
//! another after the first came back); every acknowledged write is found on
//! every node afterwards, read linearizably.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::{ClusterSpec, Launch, ProcessCluster, STARTUP, eventually, http_get, spectrum_command, stderr};

/// Most writes the writer attempts (it stops earlier when told).
const MAX_WRITES: usize = 2_000;

/// Writes `settings/w<n>` through `endpoint` until `stop`; the keys acknowledged.
fn writer(endpoint: String, token: String, stop: Arc<AtomicBool>) -> BTreeSet<String> {
    let mut acked = BTreeSet::new();
    for n in 0..MAX_WRITES {
        if stop.load(Ordering::Acquire) {
            break;
        }
        let key = format!("settings/w{n:04}");
        let out = spectrum_command()
            .args(["--endpoint", &endpoint, "--token", &token, "config", "put", &key, "v"])
            .output()
            .expect("spectrum runs");
        if out.status.success() {
            acked.insert(key);
        }
    }
    acked
}

/// The keys under `settings/w` node `i` holds, read linearizably.
fn held(cluster: &ProcessCluster, i: usize) -> Result<BTreeSet<String>, String> {
    let listed =
        cluster.try_json_at(&cluster.nodes[i].1, &["config", "list", "settings/w", "--consistent"])?;
    let entries = listed.as_array().ok_or_else(|| format!("not a list: {listed}"))?;
    Ok(entries.iter().filter_map(|e| e["key"].as_str().map(str::to_owned)).collect())
}

#[test]
fn every_acknowledged_write_survives_sigkill_of_a_minority_under_writes() {
    let spec = ClusterSpec::new("cli-raft", 3, "raft-token").raft();
    let mut cluster = ProcessCluster::start_with(&spec);
    let stop = Arc::new(AtomicBool::new(false));
    let handle = {
        let (endpoint, token, stop) = (cluster.balancer.clone(), cluster.token.clone(), stop.clone());
        std::thread::spawn(move || writer(endpoint, token, stop))
    };
    let pause = || std::thread::sleep(Duration::from_millis(1500));
    pause();
    cluster.kill(2);
    pause();
    cluster.restart(2, &Launch::default()).expect("node-3 restarts");
    pause();
    cluster.kill(0);
    pause();
    cluster.restart(0, &Launch::default()).expect("node-1 restarts");
    pause();
    stop.store(true, Ordering::Release);
    let acked = handle.join().expect("the writer finished");
    assert!(acked.len() > 10, "too few writes were acknowledged: {}", acked.len());
    for i in 0..3 {
        let holds =
            eventually(&format!("node-{} holds every acknowledged write", i + 1), 2 * STARTUP, || {
                let holds = held(&cluster, i)?;
                let missing: Vec<&String> = acked.difference(&holds).collect();
                if missing.is_empty() { Ok(holds) } else { Err(format!("missing {missing:?}")) }
            });
        assert!(holds.is_superset(&acked));
    }
    // The cluster reports Raft mode's refusals nowhere: a CAS works through the balancer.
    cluster.ok(&["config", "put", "settings/cas", "1", "--if-absent"]);
    let line = cluster.fails(&["config", "put", "settings/cas", "2", "--if-absent"], "already holds version");
    assert!(line.contains("nothing was written"), "{line}");
    // Run again under its idempotency key, a create is answered as the first
    // run was: created, not "condition failed".
    let create = ["--idempotency-key", "cas-key-1", "config", "put", "settings/cas-once", "1", "--if-absent"];
    let first = cluster.json(&create);
    assert_eq!(cluster.json(&create)["version"], first["version"], "the same version: {first}");
    cluster.fails(&["config", "put", "settings/cas-once", "1", "--if-absent"], "already holds version");
    cluster.fails(&["--idempotency-key", "a b", "config", "get", "settings/cas"], "invalid idempotency-key");
}

/// The voters node `i` reports (its `status`), or why it could not say.
fn voters_at(cluster: &ProcessCluster, i: usize) -> Result<Vec<String>, String> {
    let status = cluster.status_at(i)?;
    let voters = status["replication"]["raft"]["voters"].as_array().ok_or_else(|| status.to_string())?;
    Ok(voters.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
}

/// Waits until node `i` answers `/readyz` with 503 because the cluster
/// refuses it as removed; its body. On failure, the panic carries the node's log.
fn until_refused(cluster: &ProcessCluster, i: usize, who: &str) -> String {
    let url = &cluster.nodes[i].1;
    eventually(&format!("{who} says the cluster refuses it"), STARTUP, || {
        let (status, body) = http_get(url, "/readyz")?;
        if status == 503 && body.contains("was removed from the cluster") {
            Ok(body)
        } else {
            Err(format!("{status} {body}\n{who}'s log:\n{}", cluster.node_log(i)))
        }
    })
}

/// Waits until node `i` counts three voters and is ready.
fn until_voter_and_ready(cluster: &ProcessCluster, i: usize, who: &str) {
    eventually(&format!("{who} a voter again, and ready"), 2 * STARTUP, || {
        let voters = voters_at(cluster, i)?;
        let (status, body) = http_get(&cluster.nodes[i].1, "/readyz")?;
        if voters.len() == 3 && status == 200 {
            Ok(())
        } else {
            Err(format!("{voters:?}; {status} {body}\n{who}'s log:\n{}", cluster.node_log(i)))
        }
    });
}

#[test]
fn a_node_removed_while_down_is_refused_saying_why_and_rejoins_as_a_voter_once_undrained() {
    let spec = ClusterSpec::new("cli-raft-removed", 3, "raft-token").raft();
    let mut cluster = ProcessCluster::start_with(&spec);
    cluster.ok(&["config", "put", "settings/a", "1"]);
    cluster.kill(2);
    eventually("node-3 removed", STARTUP, || {
        let out = cluster.run(&["node", "remove", "node-3"]);
        if out.status.success() { Ok(()) } else { Err(stderr(&out)) }
    });
    cluster.ok(&["config", "put", "settings/b", "2"]);

    // Back on its old data, at its old address: its own log still has it a
    // voter, the others' newer configuration does not. It waits, not serving,
    // saying why, and does not write itself back.
    cluster.restart(2, &Launch::default()).expect("node-3 starts (and waits to be let back)");
    let url = cluster.nodes[2].1.clone();
    let body = until_refused(&cluster, 2, "node-3");
    assert!(body.contains("spectrum node undrain node-3"), "{body}");
    std::thread::sleep(Duration::from_secs(2));
    let status = cluster.status_at(0).unwrap();
    assert_eq!(crate::member(&status, "node-3")["state"], "removed", "{status}");
    assert_eq!(voters_at(&cluster, 0).unwrap(), ["node-1", "node-2"]);

    // Undrained: taken back as a voter, without a restart, and it serves.
    cluster.ok(&["node", "undrain", "node-3"]);
    until_voter_and_ready(&cluster, 2, "node-3");
    cluster.ok(&["config", "put", "settings/c", "3"]);
    let read = cluster.try_json_at(&url, &["config", "get", "settings/c", "--consistent"]).unwrap();
    assert_eq!(read["value"], 3, "{read}");
}

#[test]
fn the_leader_removed_while_up_then_restarted_is_refused_saying_why_and_rejoins_once_undrained() {
    let spec = ClusterSpec::new("cli-raft-removed-leader", 3, "raft-token").raft();
    let mut cluster = ProcessCluster::start_with(&spec);
    let leader = eventually("a leader", STARTUP, || {
        let status = cluster.status_at(0)?;
        status["replication"]["raft"]["leader"].as_str().map(str::to_owned).ok_or_else(|| status.to_string())
    });
    let i = cluster.nodes.iter().position(|n| n.0 == leader).expect("the leader is a node");
    let other = (i + 1) % 3;
    let out = cluster.run_at(&cluster.nodes[other].1, Some(&cluster.token), &["node", "remove", &leader]);
    assert!(out.status.success(), "{}", stderr(&out));

    // Stopped and started again on its data: its own log has its removal
    // (it committed it); it must ask a member, not its own Raft node.
    let pid = cluster.pid(i);
    assert!(std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap().success());
    cluster.exit_status(i);
    cluster.restart(i, &Launch::default()).expect("the removed leader starts (and waits)");
    until_refused(&cluster, i, "the removed leader");
    let out = cluster.run_at(&cluster.nodes[other].1, Some(&cluster.token), &["node", "undrain", &leader]);
    assert!(out.status.success(), "{}", stderr(&out));
    until_voter_and_ready(&cluster, i, "the old leader");
    cluster.ok(&["config", "put", "settings/d", "4"]);
}
