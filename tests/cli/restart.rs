//! A whole last-writer-wins cluster stopped with SIGTERM and started again:
//! each node recorded that it left, and each copy says the others left too.

use std::process::Command;

use crate::{Launch, ProcessCluster, STARTUP, eventually};

/// Stopped together, every node's copy says every other node left; started
/// again, each called on no one (a member that left was no peer) and stayed a
/// cluster of one for good, acknowledging writes alone. Now a node calls on
/// members that left now and then, finds them back, and the three are one
/// cluster again.
#[test]
fn a_whole_cluster_stopped_with_sigterm_and_started_again_is_one_cluster_again() {
    let mut cluster = ProcessCluster::start("cli-full-restart", 3, "full-restart-token");
    cluster.ok(&["config", "put", "settings/before-stop", "kept", "--ack", "all"]);
    let pids: Vec<String> = (0..3).map(|i| cluster.pid(i).to_string()).collect();
    for pid in &pids {
        assert!(Command::new("kill").args(["-TERM", pid]).status().unwrap().success());
    }
    for i in 0..3 {
        assert!(cluster.exit_status(i).success(), "{}", cluster.node_log(i));
    }
    for i in 0..3 {
        cluster.restart(i, &Launch::default()).expect("the node starts again");
    }
    cluster.wait_until_ready(3).expect("every node sees all three active again");
    let written = cluster.json(&["config", "put", "settings/after-start", "together", "--ack", "all"]);
    assert_eq!(written["acked"], 3, "{written}");
    for i in 0..3 {
        eventually(&format!("node {i} holds both writes"), STARTUP, || {
            match (cluster.value_at(i, "settings/before-stop")?, cluster.value_at(i, "settings/after-start")?)
            {
                (Some(a), Some(b)) if a == "kept" && b == "together" => Ok(()),
                other => Err(format!("{other:?}")),
            }
        });
    }
}
