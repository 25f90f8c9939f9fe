//! The balancer's figures as JSON at `/api/v1/balancer/stats`, answered by the
//! balancer itself on its public port to the callers the nodes' API admits (the
//! console's live chart reads it), and never by a node.

use serde_json::Value;
use spectrum::Cluster;

use crate::http_api::call;

const BOOTSTRAP: &str = "it-balancer-stats-bootstrap";
const PATH: &str = "/api/v1/balancer/stats";

async fn secured(name: &str) -> Cluster {
    let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("warn").try_init();
    Cluster::builder(name.parse().unwrap())
        .size(3)
        .management_token(BOOTSTRAP.parse().unwrap())
        .start()
        .await
        .expect("cluster starts")
}

fn total(figures: &Value, field: &str) -> u64 {
    figures["backends"].as_array().unwrap().iter().map(|b| b[field].as_u64().unwrap()).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_balancer_answers_its_figures_to_any_role_the_api_admits_and_refuses_strangers() {
    let cluster = secured("it-balancer-stats").await;
    let base = cluster.balancer_url();
    let added = call(
        &base,
        "POST",
        "/api/v1/users?ack=all",
        Some(BOOTSTRAP),
        br#"{"name":"watcher","role":"viewer"}"#,
    )
    .await;
    assert_eq!(added.status, 201, "{:?}", added.body);
    let viewer = added.json()["token"].as_str().unwrap().to_owned();
    for _ in 0..6 {
        assert_eq!(call(&base, "GET", "/api/v1/status", Some(&viewer), b"").await.status, 200);
    }

    // Strangers get the API's own refusal, passed on from a node.
    for token in [None, Some("not-a-token")] {
        let refused = call(&base, "GET", PATH, token, b"").await;
        assert_eq!(refused.status, 401, "{token:?}: {:?}", refused.body);
        assert_eq!(refused.json()["error"]["code"], "unauthenticated", "{token:?}");
    }

    let answer = call(&base, "GET", PATH, Some(&viewer), b"").await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(answer.headers["content-type"], "application/json");
    assert_eq!(answer.headers["x-spectrum-balancer"], "local", "answered by the balancer itself");
    assert!(answer.headers.get("spectrum-served-by").is_none(), "no node answered");
    let figures = answer.json();
    assert_eq!(figures["balancer"], true);
    assert_eq!(figures["strategy"]["name"], "round_robin");
    let mut ids: Vec<&str> =
        figures["backends"].as_array().unwrap().iter().map(|b| b["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    let mut members: Vec<String> = cluster.nodes().map(|n| n.id().to_string()).collect();
    members.sort_unstable();
    assert_eq!(ids, members);
    for b in figures["backends"].as_array().unwrap() {
        assert_eq!(b["health"], "healthy", "{b}");
        assert!(b["address"].as_str().unwrap().starts_with("127.0.0.1:"), "{b}");
        for field in ["requests_total", "failures_total", "in_flight", "latency_ewma_us"] {
            assert!(b[field].is_u64(), "{field} in {b}");
        }
    }
    assert!(total(&figures, "requests_total") >= 7, "{figures}");
    assert!(figures["requests_total"].as_u64().unwrap() >= 7, "{figures}");
    assert!(figures["sampled_at_unix_ms"].as_u64().unwrap() > 0);

    // Read-only; and the counters only grow.
    assert_eq!(call(&base, "POST", PATH, Some(&viewer), b"{}").await.status, 405);
    let later = call(&base, "GET", PATH, Some(BOOTSTRAP), b"").await;
    assert_eq!(later.status, 200, "the bootstrap token too");
    assert!(total(&later.json(), "requests_total") >= total(&figures, "requests_total"));

    // A node never serves the path: that is how the console knows there is no balancer.
    let node = cluster.nodes().next().unwrap();
    let direct = call(node.url(), "GET", PATH, Some(&viewer), b"").await;
    assert_eq!(direct.status, 404, "{:?}", direct.body);
    cluster.shutdown().await;
}
