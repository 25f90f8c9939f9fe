//! The Prometheus endpoint.

use spectrum_balancer::BalancerConfig;

use crate::support::*;

#[tokio::test]
async fn metrics_are_served_on_their_own_port_in_prometheus_text() {
    let nodes = start_nodes(2).await;
    let config = BalancerConfig { admin_listen: Some("127.0.0.1:0".parse().unwrap()), ..fast_config() };
    let balancer = balancer_with(config, &nodes, None).await;
    let metrics_addr = balancer.admin_addr().expect("an admin listener");
    assert_ne!(metrics_addr, balancer.local_addr());
    let mut client = Client::http1(balancer.local_addr()).await;
    for _ in 0..4 {
        assert_eq!(client.get("/work").await.status, 200);
    }

    let mut scraper = Client::http1(metrics_addr).await;
    let a = scraper.get("/metrics").await;
    assert_eq!(a.status, 200);
    assert!(a.header("content-type").starts_with("text/plain; version=0.0.4"), "{a:?}");
    let text = a.body;
    for line in [
        "# TYPE spectrum_balancer_requests_total counter",
        "spectrum_balancer_requests_total 4",
        "spectrum_balancer_retries_total 0",
        &format!("spectrum_balancer_backend_requests_total{{node=\"node-0\",addr=\"{}\"}} 2", nodes[0].addr),
        &format!("spectrum_balancer_backend_healthy{{node=\"node-1\",addr=\"{}\"}} 1", nodes[1].addr),
        &format!("spectrum_balancer_backend_in_flight{{node=\"node-1\",addr=\"{}\"}} 0", nodes[1].addr),
        "# TYPE spectrum_balancer_backend_latency_ewma_seconds gauge",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in:\n{text}");
    }
    assert_eq!(text, balancer.metrics_text(), "the handle renders the same text");
    assert_eq!(scraper.get("/other").await.status, 404);
    balancer.shutdown().await;
}

#[tokio::test]
async fn without_a_metrics_address_there_is_no_admin_listener() {
    let nodes = start_nodes(1).await;
    let balancer = balancer_for(&nodes, None).await;
    assert!(balancer.admin_addr().is_none());
    assert!(balancer.metrics_text().contains("spectrum_balancer_requests_total 0"));
    balancer.shutdown().await;
}

#[tokio::test]
async fn a_metrics_address_in_use_is_refused_naming_the_listener() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let config = BalancerConfig { admin_listen: Some(taken.local_addr().unwrap()), ..fast_config() };
    let err = spectrum_balancer::Balancer::builder(config).start().await.unwrap_err().to_string();
    let expected = format!("cannot listen on {} (admin_listen): ", taken.local_addr().unwrap());
    assert!(err.starts_with(&expected), "{err}");
}
