//! Internal services of the cluster (replication) are refused by the balancer
//! itself, never forwarded to a node.

use spectrum_balancer::BalancerConfig;

use crate::support::*;

#[tokio::test]
async fn a_replication_call_is_refused_by_the_balancer_with_permission_denied() {
    let nodes = start_nodes(2).await;
    let balancer = balancer_for(&nodes, None).await;
    let mut client = Client::h2c(balancer.local_addr()).await;
    let grpc = [("content-type", "application/grpc"), ("te", "trailers")];
    for path in ["/spectrum.replication.v1.Replication/Sync", "/spectrum.replication.v1.Replication/Push"] {
        let a = client.get_with(path, &grpc).await;
        assert_eq!(a.node(), "-", "no node saw {path}: {a:?}");
        assert_eq!(a.header("x-spectrum-balancer"), "local", "{a:?}");
        assert_eq!(a.header("grpc-status"), "7", "{a:?}");
        assert!(a.header("grpc-message").contains("internal to the cluster"), "{a:?}");
        // The balancer's own answer carries its date (RFC 9110 §6.6.1).
        assert!(httpdate::parse_http_date(a.header("date")).is_ok(), "{a:?}");
    }
    // Not gRPC: a plain 403.
    let mut http1 = Client::http1(balancer.local_addr()).await;
    let a = http1.get("/spectrum.replication.v1.Replication/Sync").await;
    assert_eq!((a.status.as_u16(), a.node()), (403, "-"), "{a:?}");
    assert!(a.body.contains("not reachable through the balancer"), "{a:?}");

    let stats = balancer.stats();
    assert!(stats.iter().all(|b| b.requests == 0), "nothing reached a node: {stats:?}");
    assert!(balancer.metrics_text().contains("spectrum_balancer_internal_refused_total 3"));
    // A look-alike public path is still forwarded.
    let a = client.get("/spectrum.replicationX/Sync").await;
    assert!(a.node().starts_with("node-"), "{a:?}");
    balancer.shutdown().await;
}

#[tokio::test]
async fn internal_prefixes_are_configurable() {
    let nodes = start_nodes(1).await;
    let config = BalancerConfig { internal_paths: vec!["/private/".into()], ..fast_config() };
    let balancer = balancer_with(config, &nodes, None).await;
    let mut client = Client::http1(balancer.local_addr()).await;
    assert_eq!(client.get("/private/x").await.status.as_u16(), 403);
    let a = client.get("/spectrum.replication.v1.Replication/Sync").await;
    assert_eq!(a.node(), "node-0", "the default list was replaced: {a:?}");
    balancer.shutdown().await;
}
