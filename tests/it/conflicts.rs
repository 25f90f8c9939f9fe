//! Conflicts on a running cluster: two nodes write one key without hearing of
//! each other's write (their pushes lost, as in a partition); once anti-entropy
//! has run, every node lists the same conflict (through gRPC, status, the
//! HTTP API), and a write that saw both clears it everywhere.

use std::time::Duration;

use spectrum::client::{AckLevel, AdminClient, ReadAfter};
use spectrum::model::Conflicts;
use spectrum_replication::WriteBatch;

use crate::support::{http_get, start_cluster};

/// Polls every client until each lists `want` conflicts (bounded: 30 s).
async fn every_node_lists(clients: &[AdminClient], want: usize) -> Vec<Conflicts> {
    let mut last = Vec::new();
    for _ in 0..300 {
        last.clear();
        for c in clients {
            last.push(c.conflicts("settings/", ReadAfter::Anything).await.expect("ListConflicts"));
        }
        if last.iter().all(|l| l.0.len() == want) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("not every node lists {want} conflicts: {last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_show_as_one_conflict_on_every_node_until_a_later_write_clears_it() {
    let cluster = start_cluster("it-conflicts").await;
    let nodes: Vec<_> = cluster.nodes().collect();
    let mut clients = Vec::new();
    for n in &nodes {
        clients.push(AdminClient::connect(n.addr(), None).await.expect("connect"));
    }
    // Two writes to one key, each applied by its node's store and never pushed:
    // neither node has seen the other's when it writes.
    let first =
        nodes[0].store().apply(WriteBatch::new().put("settings/mode", "fast")).await.unwrap().remove(0);
    let second =
        nodes[1].store().apply(WriteBatch::new().put("settings/mode", "safe")).await.unwrap().remove(0);
    let (winner, loser) = if second.wins_over(&first) { (&second, &first) } else { (&first, &second) };

    let listed = every_node_lists(&clients, 1).await;
    for l in &listed {
        let c = &l.0[0];
        assert_eq!(c.key, "settings/mode");
        assert_eq!((&c.winner.version, &c.loser.version), (&winner.token(), &loser.token()));
        assert_eq!((&c.winner.node, &c.loser.node), (winner.origin.node(), loser.origin.node()));
        assert_eq!(c.loser.stamp_wall_ms, loser.stamp.wall_ms);
        assert!(!c.loser.deleted && c.loser.replaces.is_none(), "a new key: it replaced nothing");
    }
    assert_eq!(listed[0], listed[1]);
    assert_eq!(listed[0], listed[2], "every node agrees");
    for c in &clients {
        assert_eq!(c.status().await.unwrap().conflicts, 1);
        let got = c.get("settings/mode", ReadAfter::Anything).await.unwrap();
        assert_eq!(got.version, winner.token(), "the last writer's value is what reads see");
    }
    let balancer = cluster.balancer_addr().to_string();
    let balancer = balancer.strip_prefix("http://").unwrap_or(&balancer).to_owned();
    let (status, body) = http_get(&balancer, "/api/v1/conflicts?prefix=settings/").await.unwrap();
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json[0]["key"], "settings/mode", "{json}");
    assert_eq!(json[0]["loser"]["version"], loser.token().to_string(), "{json}");

    // A write through a node that holds the conflict saw both: it clears it.
    let written = clients[2].put("settings/mode", "settled", AckLevel::All).await.unwrap();
    every_node_lists(&clients, 0).await;
    for c in &clients {
        assert_eq!(c.status().await.unwrap().conflicts, 0);
        let got = c.get("settings/mode", &written.write).await.unwrap();
        assert_eq!(got.value, b"settled");
    }
    let (status, body) = http_get(&balancer, "/api/v1/conflicts").await.unwrap();
    assert_eq!((status, body.trim()), (200, "[]"));
    cluster.shutdown().await;
}
