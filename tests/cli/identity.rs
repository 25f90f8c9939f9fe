//! A second process started with a running node's id.

use std::path::PathBuf;

use crate::{ClusterSpec, ProcessCluster, STARTUP, eventually, free_ports, http_get, member, spawn};

/// node-1's file, on a new port and an empty data directory.
fn copy_of_node_1(cluster: &ProcessCluster) -> (PathBuf, u16) {
    let port = free_ports(1)[0];
    let (listen, data_dir) = (format!("\"127.0.0.1:{port}\""), toml_path(&cluster.path("copy-of-node-1")));
    let copy = cluster.node_file_with(0, &[("listen", Some(&listen)), ("data_dir", Some(&data_dir))]);
    let copy_file = cluster.path("copy-of-node-1.toml");
    std::fs::write(&copy_file, copy).unwrap();
    (copy_file, port)
}

/// `path` as a TOML string.
fn toml_path(path: &std::path::Path) -> String {
    format!("{:?}", path.display().to_string())
}

/// node-1 kept its place: its address in membership, and writes are
/// acknowledged by the three nodes.
fn node_1_kept_its_place(cluster: &ProcessCluster) {
    let status = cluster.status_at(1).unwrap();
    let recorded = member(&status, "node-1");
    assert_eq!(
        (&recorded["addr"], &recorded["state"]),
        (&cluster.nodes[0].1.as_str().into(), &"active".into())
    );
    let written = cluster.json(&["config", "put", "settings/after", "2", "--ack", "all"]);
    assert_eq!(written["members"], 3, "{written}");
}

#[test]
fn a_second_node_with_a_running_nodes_id_does_not_start_and_takes_nothing_over() {
    let mut cluster = ProcessCluster::start("cli-identity", 3, "identity-token");
    cluster.ok(&["config", "put", "settings/before", "1"]);
    let (copy, _) = copy_of_node_1(&cluster);
    let log = cluster.path("copy-of-node-1.out");
    let refused = spawn(&mut cluster.processes, &["node", "--config"], &copy, &log)
        .expect_err("a second node-1 started");
    let running = format!("node id node-1 is in use by a running node at {}", cluster.nodes[0].1);
    assert!(refused.contains(&running), "{refused}");
    node_1_kept_its_place(&cluster);
}

#[test]
fn raft_mode_refuses_a_second_node_with_a_running_members_id_saying_why_and_takes_a_new_one_through_a_follower()
 {
    let spec = ClusterSpec::new("cli-identity-raft", 3, "identity-token").raft();
    let mut cluster = ProcessCluster::start_with(&spec);
    cluster.ok(&["config", "put", "settings/before", "1"]);
    let (copy, port) = copy_of_node_1(&cluster);
    let log = cluster.path("copy-of-node-1.out");
    // It waits, not ready, saying why: the group refuses it.
    spawn(&mut cluster.processes, &["node", "--config"], &copy, &log).expect("the copy starts (and waits)");
    let copy_url = format!("http://127.0.0.1:{port}");
    let running = format!("is in use by a running node at {}", cluster.nodes[0].1);
    eventually("the copy says the group refuses it", STARTUP, || {
        let (status, body) = http_get(&copy_url, "/readyz")?;
        if status == 503 && body.contains(&running) {
            Ok(())
        } else {
            Err(format!("{status} {body}\n{}", std::fs::read_to_string(&log).unwrap_or_default()))
        }
    });
    node_1_kept_its_place(&cluster);

    // A new node seeded with a follower only joins: the follower names the
    // leader, which takes a join only from the joining node itself.
    let status = cluster.status_at(0).unwrap();
    let leader = status["replication"]["raft"]["leader"].as_str().expect("a leader").to_owned();
    let follower = cluster.nodes.iter().find(|n| n.0 != leader).unwrap().1.clone();
    let port = free_ports(1)[0];
    let (listen, seeds) = (format!("\"127.0.0.1:{port}\""), format!("[\"{follower}\"]"));
    let data_dir = toml_path(&cluster.path("node-4"));
    let node_4 = cluster.node_file_with(
        0,
        &[
            ("id", Some("\"node-4\"")),
            ("listen", Some(&listen)),
            ("seeds", Some(&seeds)),
            ("data_dir", Some(&data_dir)),
        ],
    );
    let node_4_file = cluster.path("node-4.toml");
    std::fs::write(&node_4_file, node_4).unwrap();
    let log = cluster.path("node-4.out");
    spawn(&mut cluster.processes, &["node", "--config"], &node_4_file, &log).expect("node-4 starts");
    let url = format!("http://127.0.0.1:{port}");
    eventually("node-4 a voter, and ready", 2 * STARTUP, || {
        let (status, body) = http_get(&url, "/readyz")?;
        let voters = cluster.status_at(1)?["replication"]["raft"]["voters"].as_array().map_or(0, Vec::len);
        if status == 200 && voters == 4 {
            Ok(())
        } else {
            Err(format!(
                "{voters} voters; {status} {body}\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            ))
        }
    });

    // The copy never asks again: node-1 stopped, it does not take its seat.
    let pid = cluster.pid(0);
    assert!(std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap().success());
    cluster.exit_status(0);
    std::thread::sleep(std::time::Duration::from_secs(4));
    let (status, body) = http_get(&copy_url, "/readyz").unwrap();
    assert!(status == 503 && body.contains(&running), "{status} {body}");
    let status = cluster.status_at(1).unwrap();
    assert_eq!(member(&status, "node-1")["addr"], cluster.nodes[0].1.as_str(), "{status}");
}
