//! Readiness as any balancer sees it: plain HTTP `/healthz` and `/readyz` on each
//! node's public port, and `grpc.health.v1`, agreeing with each other.

use std::time::Duration;

use spectrum::NodeBuilder;
use spectrum::management::proto::{NodeState, SetNodeStateRequest};
use tonic_health::pb::health_check_response::ServingStatus;

use crate::support::{ACK_ALL, admin, grpc_health, http_get, readyz_becomes, start_cluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_joined_node_answers_healthz_and_readyz_over_plain_http_on_its_grpc_port() {
    let cluster = start_cluster("it-readyz").await;
    for node in cluster.nodes() {
        let addr = node.local_addr().to_string();
        assert_eq!(http_get(&addr, "/healthz").await.unwrap(), (200, "ok\n".to_owned()));
        let (status, body) = http_get(&addr, "/readyz").await.unwrap();
        assert_eq!(status, 200, "{body}");
        let report: serde_json::Value = serde_json::from_str(&body).expect("JSON body");
        assert_eq!(report["ready"], true);
        assert_eq!(report["failing"], serde_json::json!([]));
        assert_eq!(grpc_health(node.url()).await, ServingStatus::Serving);
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_node_is_not_ready_over_http_and_grpc_until_it_is_undrained() {
    let cluster = start_cluster("it-readyz-drain").await;
    let mut through_balancer = admin(&cluster.balancer_url()).await;
    let set = |state: NodeState| SetNodeStateRequest {
        node_id: "node-3".into(),
        state: state as i32,
        ack: ACK_ALL,
    };
    through_balancer.set_node_state(set(NodeState::Draining)).await.expect("drain accepted");

    let node3 = cluster.node("node-3").unwrap();
    let addr = node3.local_addr().to_string();
    let body = readyz_becomes(&addr, 503).await;
    assert!(body.contains("\"failing\":[\"draining\"]"), "{body}");
    assert_eq!(grpc_health(node3.url()).await, ServingStatus::NotServing);
    assert_eq!(http_get(&addr, "/healthz").await.unwrap().0, 200, "alive while draining");
    for other in ["node-1", "node-2"] {
        let node = cluster.node(other).unwrap();
        assert_eq!(http_get(&node.local_addr().to_string(), "/readyz").await.unwrap().0, 200);
    }

    through_balancer.set_node_state(set(NodeState::Active)).await.expect("undrain accepted");
    readyz_becomes(&addr, 200).await;
    assert_eq!(grpc_health(node3.url()).await, ServingStatus::Serving);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_has_not_reached_any_peer_is_alive_but_not_ready() {
    // An empty store and a seed nobody answers at: the node waits to catch up.
    let node = NodeBuilder::new("lonely".parse().unwrap(), "it-readyz-join".parse().unwrap())
        .in_memory()
        .seeds(["127.0.0.1:9".parse().unwrap()])
        .start()
        .await
        .expect("starts, catching up in the background");
    let addr = node.local_addr().to_string();
    assert_eq!(http_get(&addr, "/healthz").await.unwrap().0, 200);
    let (status, body) = http_get(&addr, "/readyz").await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("not joined"), "{body}");
    assert_eq!(grpc_health(node.url()).await, ServingStatus::NotServing);
    node.shutdown_without_drain().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_node_reports_not_ready_while_it_drains() {
    let node = NodeBuilder::new("leaving".parse().unwrap(), "it-readyz-stop".parse().unwrap())
        .in_memory()
        .drain_grace(Duration::from_secs(2))
        .start()
        .await
        .unwrap();
    let addr = node.local_addr().to_string();
    let url = node.url().to_owned();
    assert_eq!(http_get(&addr, "/readyz").await.unwrap().0, 200);
    let stopping = tokio::spawn(node.shutdown());
    let body = readyz_becomes(&addr, 503).await;
    assert!(body.contains("draining"), "{body}");
    assert_eq!(grpc_health(&url).await, ServingStatus::NotServing);
    stopping.await.unwrap();
}

/// A node whose seeds refuse it (they belong to a cluster with another key)
/// says so in `/readyz`: what each answered, not "catching up", which retrying
/// never cures. In both replication modes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_seeds_refuse_it_says_what_they_answered() {
    use spectrum_replication::ReplicationMode;
    for mode in [ReplicationMode::LastWriterWins, ReplicationMode::Raft] {
        let cluster = spectrum::Cluster::builder("it-readyz-refused".parse().unwrap())
            .size(1)
            .configure_nodes(move |b| b.replication(mode))
            .start()
            .await
            .unwrap();
        let seed = cluster.nodes().next().unwrap().addr().clone();
        let stranger = NodeBuilder::new("stranger".parse().unwrap(), "it-readyz-refused".parse().unwrap())
            .in_memory()
            .replication(mode)
            .cluster_key(spectrum::resources::ClusterKey::generate())
            .seeds([seed.clone()])
            .start()
            .await
            .expect("starts, trying to join in the background");
        let addr = stranger.local_addr().to_string();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let body = loop {
            let (status, body) = http_get(&addr, "/readyz").await.unwrap();
            assert_eq!(status, 503, "{body}");
            if body.contains("peer_errors") {
                break body;
            }
            assert!(tokio::time::Instant::now() < deadline, "{mode:?}: never said why: {body}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        let errors = json["peer_errors"].as_array().unwrap();
        assert!(
            errors.iter().any(|e| e.as_str().is_some_and(|e| e.contains(&seed.to_string()))),
            "{mode:?}: {body}"
        );
        assert_eq!(
            json["failing"][0], "not joined: its peers refused it or could not be reached (see peer_errors)",
            "{body}"
        );
        stranger.shutdown_without_drain().await;
        cluster.shutdown().await;
    }
}
