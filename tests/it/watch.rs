//! Watch: changes under a prefix as every node applies them, through the
//! balancer, resumed after a node restart, on another node, and across a
//! balancer restart; secrets never sent; only callers with a token.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use spectrum::balancer::{BackendConfig, Balancer, BalancerConfig, BalancerHandle};
use spectrum::client::{
    AckLevel, AdminClient, EventKind, Role, WatchEvent, WatchEvents, WatchOptions, WatchPosition,
};
use spectrum::demo::{DataflowClient, DataflowService, proto::RunRequest};
use spectrum::replication::ChangeLogLimits;
use spectrum::{Cluster, Node, NodeBuilder};
use tonic::Code;

const SECRET: &str = "watch-Pa55word-never-shown";

async fn cluster(
    name: &str,
    configure: impl Fn(NodeBuilder) -> NodeBuilder + Send + Sync + 'static,
) -> Cluster {
    let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("warn").try_init();
    Cluster::builder(name.parse().unwrap())
        .size(3)
        .configure_nodes(configure)
        .start()
        .await
        .expect("cluster starts")
}

async fn client(addr: &spectrum::core::PeerAddr) -> AdminClient {
    AdminClient::connect(addr, None).await.expect("connect")
}

/// The next `n` events of `stream` (progress events are not yielded), within 20 s.
async fn next_events(stream: &mut WatchEvents, n: usize) -> Vec<WatchEvent> {
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while out.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = tokio::time::timeout(left, stream.next())
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} events within 20 s: {out:?}", out.len()))
            .expect("the stream goes on")
            .unwrap_or_else(|e| panic!("the watch failed: {e}"));
        out.push(event);
    }
    out
}

fn keys(events: &[WatchEvent]) -> Vec<(EventKind, String)> {
    events.iter().map(|e| (e.kind, e.key.clone())).collect()
}

async fn put_all(admin: &AdminClient, keys: &[&str]) {
    for k in keys {
        admin.put(k, format!("value of {k}"), AckLevel::All).await.expect("put");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_through_the_balancer_sees_puts_and_deletes_in_order_with_secrets_redacted() {
    let cluster = cluster("it-watch-basic", |b| b).await;
    let admin = client(&cluster.balancer_addr()).await;
    let mut settings = admin.watch("settings/", None);
    let mut resources = admin.watch("resources/", None);
    let resource_event = tokio::spawn(async move { next_events(&mut resources, 1).await.remove(0) });
    // The watches start when first polled: take the first event only after writing.
    let first = tokio::spawn(async move {
        let got = next_events(&mut settings, 3).await;
        (settings, got)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    admin.put("settings/a", "1", AckLevel::All).await.unwrap();
    admin.put("license/ignored", "{}", AckLevel::All).await.unwrap_err();
    admin.put("settings/b", "2", AckLevel::All).await.unwrap();
    admin.delete("settings/a", AckLevel::All).await.unwrap();
    let (_settings, got) = first.await.unwrap();
    assert_eq!(
        keys(&got),
        [
            (EventKind::Put, "settings/a".into()),
            (EventKind::Put, "settings/b".into()),
            (EventKind::Delete, "settings/a".into())
        ]
    );
    assert_eq!(got[1].value, b"2");
    assert!(got.iter().all(|e| e.version.is_some()), "each with its version");

    let definition = serde_json::json!({"name": "orders", "spec": {"kind": "jdbc",
        "url": "jdbc:postgresql://127.0.0.1:5432/orders", "driver": "org.postgresql.Driver",
        "user": "app", "password": SECRET}});
    let stored = admin.create_resource(definition.to_string(), false, AckLevel::All).await.unwrap();
    let event = resource_event.await.unwrap();
    assert_eq!(event.key, "resources/orders");
    assert_eq!(event.version.as_ref(), Some(&stored.write.version));
    let text = String::from_utf8_lossy(&event.value);
    assert!(!text.contains(SECRET) && text.contains("***"), "the definition is redacted: {text}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_may_watch_and_a_caller_without_a_valid_token_is_refused() {
    let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("warn").try_init();
    let cluster = Cluster::builder("it-watch-auth".parse().unwrap())
        .size(3)
        .management_token("it-watch-bootstrap".parse().unwrap())
        .start()
        .await
        .unwrap();
    let addr = cluster.balancer_addr();
    let admin = AdminClient::connect(&addr, Some("it-watch-bootstrap".parse().unwrap())).await.unwrap();
    let vera = admin.add_user("vera", Role::Viewer, AckLevel::All).await.unwrap();
    let viewer = AdminClient::connect(&addr, Some(vera.token.clone())).await.unwrap();
    let mut watched = viewer.watch("settings/", None);
    let waiting = tokio::spawn(async move { next_events(&mut watched, 1).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    admin.put("settings/colour", "teal", AckLevel::All).await.unwrap();
    assert_eq!(waiting.await.unwrap()[0].key, "settings/colour", "a viewer may watch");

    let stranger = AdminClient::connect(&addr, Some("not-a-user-token".parse().unwrap())).await.unwrap();
    let refused = tokio::time::timeout(Duration::from_secs(10), stranger.watch("settings/", None).next())
        .await
        .expect("refused at once, not retried")
        .expect("an answer")
        .expect_err("refused");
    assert_eq!(refused.code(), Some(Code::Unauthenticated), "{refused}");
    let anonymous = AdminClient::connect(&addr, None).await.unwrap();
    let refused = anonymous.watch("", None).next().await.unwrap().unwrap_err();
    assert_eq!(refused.code(), Some(Code::Unauthenticated), "{refused}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_resumes_from_its_position_after_its_node_restarts_and_a_compacted_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("warn").try_init();
    let mut cluster = Cluster::builder("it-watch-restart".parse().unwrap())
        .size(3)
        .data_dir(dir.path())
        .configure_nodes(|b| b.change_log(ChangeLogLimits::default().max_entries(40)))
        .start()
        .await
        .unwrap();
    let node1 = cluster.node("node-1").unwrap().addr().clone();
    let other = client(cluster.node("node-2").unwrap().addr()).await;
    let mut watched = client(&node1).await.watch("settings/", None);
    let waiting = tokio::spawn(async move { next_events(&mut watched, 1).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    put_all(&other, &["settings/before"]).await;
    let seen = waiting.await.unwrap().remove(0);
    assert_eq!(seen.position.origin.node().as_str(), "node-1");

    let node1 = cluster.restart_node("node-1").await.expect("restarts on its data").addr().clone();
    put_all(&other, &["settings/x", "settings/y"]).await;
    other.delete("settings/before", AckLevel::All).await.unwrap();
    let node1_client = client(&node1).await;
    let mut resumed = node1_client.watch("settings/", Some(seen.position.clone()));
    let got = next_events(&mut resumed, 3).await;
    // In node-1's apply order, which after a restart may differ from the order
    // node-2 wrote in (a push may arrive before the pull that precedes it).
    let mut changed = keys(&got);
    changed.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(
        changed,
        [
            (EventKind::Delete, "settings/before".into()),
            (EventKind::Put, "settings/x".into()),
            (EventKind::Put, "settings/y".into())
        ],
        "every change made since, once, from the node's durable log: {got:?}"
    );
    drop(resumed);

    // Forty more changes push the position out of node-1's log.
    for i in 0..45 {
        other.put(&format!("settings/n{i}"), "v", AckLevel::All).await.unwrap();
    }
    let refused = node1_client.watch("settings/", Some(seen.position)).next().await.unwrap().unwrap_err();
    assert_eq!(refused.code(), Some(Code::OutOfRange), "{refused}");
    assert!(
        refused.to_string().contains("compacted") && refused.to_string().contains("reaches back to"),
        "{refused}"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_position_from_one_node_resumes_on_another_with_what_the_watcher_missed() {
    let cluster = cluster("it-watch-elsewhere", |b| b).await;
    let nodes: Vec<&Node> = cluster.nodes().collect();
    let (a, b) = (client(nodes[0].addr()).await, client(nodes[1].addr()).await);
    let mut on_a = a.watch("settings/", None);
    let waiting = tokio::spawn(async move { next_events(&mut on_a, 2).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    put_all(&a, &["settings/one", "settings/two"]).await;
    let seen = waiting.await.unwrap();
    let last = seen[1].position.clone();
    assert_eq!(last.origin.node(), nodes[0].id());

    // While away: one key changed twice, one deleted, one added.
    put_all(&a, &["settings/one", "settings/three"]).await;
    a.put("settings/one", "final", AckLevel::All).await.unwrap();
    a.delete("settings/two", AckLevel::All).await.unwrap();
    let mut on_b = b.watch("settings/", Some(last));
    let got = next_events(&mut on_b, 3).await;
    let mut by_key: BTreeMap<String, (EventKind, Vec<u8>)> = BTreeMap::new();
    for e in &got {
        assert!(by_key.insert(e.key.clone(), (e.kind, e.value.clone())).is_none(), "each key once: {got:?}");
    }
    assert_eq!(by_key["settings/one"], (EventKind::Put, b"final".to_vec()), "coalesced to the latest value");
    assert_eq!(by_key["settings/two"].0, EventKind::Delete);
    assert_eq!(by_key["settings/three"].0, EventKind::Put);
    assert_eq!(got[2].position.origin.node(), nodes[1].id(), "from then on, node b's positions");
    b.put("settings/live", "now", AckLevel::All).await.unwrap();
    assert_eq!(next_events(&mut on_b, 1).await[0].key, "settings/live", "and b's live changes");
    cluster.shutdown().await;
}

/// A balancer in front of `nodes`, on `listen` (port 0: any).
async fn balancer(nodes: &[&Node], listen: std::net::SocketAddr) -> BalancerHandle {
    let config = BalancerConfig { listen, ..BalancerConfig::default() };
    let backends = nodes.iter().map(|n| BackendConfig::new(n.id().clone(), n.local_addr())).collect();
    Balancer::builder(config).backends(backends).start().await.expect("balancer starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_through_the_balancer_resumes_across_a_balancer_restart_and_a_node_restart() {
    let dir = tempfile::tempdir().unwrap();
    let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("warn").try_init();
    let mut cluster = Cluster::builder("it-watch-failover".parse().unwrap())
        .size(3)
        .data_dir(dir.path())
        .start()
        .await
        .unwrap();
    let nodes: Vec<&Node> = cluster.nodes().collect();
    let lb = balancer(&nodes, "127.0.0.1:0".parse().unwrap()).await;
    let listen = lb.local_addr();
    let writer = client(nodes[2].addr()).await;
    let watcher = client(&format!("http://{listen}").parse().unwrap()).await;
    let options = WatchOptions::default().reconnect_for(Duration::from_secs(60));
    let mut stream = watcher.watch_with("settings/", None, options);
    let waiting = tokio::spawn(async move {
        let got = next_events(&mut stream, 1).await;
        (stream, got)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    put_all(&writer, &["settings/k0"]).await;
    let (mut stream, mut got) = waiting.await.unwrap();

    // The balancer goes away mid-watch; writes go on; a new one takes its port.
    lb.shutdown().await;
    put_all(&writer, &["settings/k1", "settings/k2"]).await;
    let nodes: Vec<&Node> = cluster.nodes().collect();
    let lb = balancer(&nodes, listen).await;
    got.extend(next_events(&mut stream, 2).await);

    // The node serving the watch restarts; writes go on through another node.
    let serving = got.last().unwrap().position.origin.node().to_string();
    let writer = client(cluster.nodes().find(|n| n.id().as_str() != serving).unwrap().addr()).await;
    cluster.restart_node(&serving).await.expect("restarts");
    put_all(&writer, &["settings/k3", "settings/k4"]).await;
    got.extend(next_events(&mut stream, 2).await);

    let seen: Vec<String> = got.iter().map(|e| e.key.clone()).collect();
    let expected: Vec<String> = (0..5).map(|i| format!("settings/k{i}")).collect();
    assert_eq!(seen, expected, "every change once, in order, across both restarts: {got:?}");
    assert!(got.iter().all(|e| e.value == format!("value of {}", e.key).into_bytes()));
    drop(stream);
    lb.shutdown().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_service_reloads_a_dataflow_when_its_definition_changes() {
    let cluster = cluster("it-watch-demo", |b| b.add_service_with(DataflowService::server)).await;
    let admin = client(&cluster.balancer_addr()).await;
    let flow = |steps: &str| format!(r#"{{"steps":[{steps}]}}"#).into_bytes();
    admin.create_dataflow("tidy", flow(r#""trim""#), false, AckLevel::All).await.unwrap();
    let changed =
        admin.create_dataflow("tidy", flow(r#""trim","uppercase""#), true, AckLevel::All).await.unwrap();
    for node in cluster.nodes() {
        let mut flows = DataflowClient::connect(node.addr().to_string()).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let request = RunRequest { dataflow: "tidy".into(), address: "  12 main st ".into() };
            let out = flows.run(request).await.unwrap().into_inner();
            if out.preloaded && out.dataflow_version == changed.write.version.to_string() {
                assert_eq!(out.normalized, "12 MAIN ST", "{}: the reloaded definition runs", node.id());
                break;
            }
            assert!(Instant::now() < deadline, "{} did not reload the dataflow: {out:?}", node.id());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_position_is_refused_naming_it_and_an_unknown_store_resumes_from_its_vector() {
    use spectrum::management::proto::{WatchRequest, management_client::ManagementClient};
    let cluster = cluster("it-watch-bad-position", |b| b).await;
    let mut raw = ManagementClient::connect(cluster.balancer_url()).await.unwrap();
    let request = WatchRequest { prefix: "settings/".into(), from: "n1@x/".into(), read: None };
    let refused = raw.watch(request).await.expect_err("refused");
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(refused.message().contains("from") && refused.message().contains("index"), "{refused:?}");

    // A position of a store no node has: resumed from its (empty) vector.
    let admin = client(&cluster.balancer_addr()).await;
    admin.put("settings/a", "1", AckLevel::All).await.unwrap();
    let mut resumed = admin.watch("settings/", Some("n1@3/".parse::<WatchPosition>().unwrap()));
    assert_eq!(next_events(&mut resumed, 1).await[0].key, "settings/a");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_api_streams_a_watch_as_newline_delimited_json() {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::TokioIo;

    let cluster = cluster("it-watch-http", |b| b).await;
    let admin = client(&cluster.balancer_addr()).await;
    let authority = cluster.balancer_url().strip_prefix("http://").unwrap().to_owned();
    let stream = tokio::net::TcpStream::connect(&authority).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let request = http::Request::get("/api/v1/watch?prefix=settings/")
        .header("host", &authority)
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let mut body = response.into_body();
    admin.put("settings/a", r#"{"n":1}"#, AckLevel::All).await.unwrap();
    admin.delete("settings/a", AckLevel::All).await.unwrap();
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut lines: Vec<serde_json::Value> = Vec::new();
    while lines.iter().filter(|l| l["kind"] != "progress").count() < 2 {
        let left = deadline.saturating_duration_since(Instant::now());
        let frame =
            tokio::time::timeout(left, body.frame()).await.expect("events within 20 s").unwrap().unwrap();
        if let Ok(data) = frame.into_data() {
            text.push_str(std::str::from_utf8(&data).unwrap());
        }
        while let Some((line, rest)) = text.split_once('\n') {
            lines.push(serde_json::from_str(line).unwrap());
            text = rest.to_owned();
        }
    }
    let changes: Vec<&serde_json::Value> = lines.iter().filter(|l| l["kind"] != "progress").collect();
    assert_eq!((changes[0]["kind"].as_str(), changes[0]["key"].as_str()), (Some("put"), Some("settings/a")));
    assert_eq!(changes[0]["value"]["n"], 1, "JSON values stay JSON");
    assert_eq!(changes[1]["kind"], "delete");
    let position: WatchPosition = changes[1]["position"].as_str().unwrap().parse().unwrap();
    assert!(changes[1]["version"].as_str().unwrap().contains(':'));

    // A malformed position is a 400 naming it, as JSON.
    let stream = tokio::net::TcpStream::connect(&authority).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let request = http::Request::get("/api/v1/watch?from=nonsense")
        .header("host", &authority)
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 400);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let error: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(error["error"]["message"].as_str().unwrap().contains("from"), "{error}");
    assert!(position.index > 0);
    cluster.shutdown().await;
}
