//! Sessions: a read carrying a session waits until the answering node holds every
//! write of it, and is refused, naming what is missing, when it does not in time.

use std::time::{Duration, Instant};

use spectrum::client::{AckLevel, AdminClient, ClientError, ReadAfter, Session};
use spectrum::demo::DataflowService;
use spectrum::replication::{VersionToken, WriteBatch};
use spectrum::{Cluster, Node, NodeBuilder};
use tonic::Code;

/// Anti-entropy only every few seconds: a write made straight into one node's
/// store (no push) reaches the others at the next sync, not before.
const SLOW_SYNC: Duration = Duration::from_secs(3);

async fn slow_sync_cluster(name: &str) -> Cluster {
    let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("warn").try_init();
    Cluster::builder(name.parse().unwrap())
        .size(3)
        .configure_nodes(|b: NodeBuilder| {
            b.sync_interval(SLOW_SYNC).add_service_with(DataflowService::server)
        })
        .start()
        .await
        .expect("cluster starts")
}

async fn client(node: &Node) -> AdminClient {
    AdminClient::connect(node.addr(), None).await.expect("connect")
}

/// Writes `key` = `value` into `node`'s store only, as a write accepted there and
/// not yet replicated.
async fn write_unreplicated(node: &Node, key: &str, value: &str) -> VersionToken {
    let stored = node.store().apply(WriteBatch::new().put(key, value.as_bytes().to_vec())).await.unwrap();
    stored.last().expect("one record").token()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_with_a_session_waits_until_the_node_holds_the_write_then_answers_it() {
    let cluster = slow_sync_cluster("it-session-wait").await;
    let nodes: Vec<&Node> = cluster.nodes().collect();
    let (a, b) = (nodes[0], nodes[1]);
    let on_a = client(a).await.with_session(Session::default());
    on_a.put("settings/colour", "red", AckLevel::All).await.unwrap();
    let token = write_unreplicated(a, "settings/colour", "blue").await;

    let mut session = on_a.session().unwrap();
    session.merge_token(&token);
    assert!(!b.store().digest().await.unwrap().covers(&token), "b must not hold the write yet");
    let on_b = client(b).await.with_session(session.clone()).with_read_wait(Duration::from_secs(15));
    let started = Instant::now();
    let entry = on_b.get("settings/colour", ReadAfter::Anything).await.unwrap();
    assert_eq!(entry.value, b"blue", "answered only once b held the session's last write");
    assert!(b.store().digest().await.unwrap().covers(&token));
    assert!(started.elapsed() < Duration::from_secs(15));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_with_a_session_the_node_lacks_is_refused_naming_what_is_missing() {
    let cluster = slow_sync_cluster("it-session-refused").await;
    let nodes: Vec<&Node> = cluster.nodes().collect();
    let (a, b) = (nodes[0], nodes[1]);
    let token = write_unreplicated(a, "settings/colour", "blue").await;
    let session = Session::from(&token);
    let on_b = client(b).await.with_session(session).with_read_wait(Duration::from_millis(1));
    let err = on_b.list("settings/", ReadAfter::Anything).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::Unavailable), "{err}");
    let message = err.to_string();
    assert!(message.contains(&format!("{} up to {}", token.origin, token.seq)), "{message}");
    assert!(message.contains("behind") && message.contains(&b.id().to_string()), "{message}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_sessions_are_refused_as_invalid_arguments() {
    let cluster = slow_sync_cluster("it-session-malformed").await;
    let node = cluster.nodes().next().unwrap();
    let mut raw =
        spectrum::management::proto::management_client::ManagementClient::connect(node.url().to_owned())
            .await
            .unwrap();
    for bad in ["n1:4,,n2:1", "n1", "n1:1,n1:2", &"x:1,".repeat(100)] {
        let request = spectrum::management::proto::GetRequest {
            key: "settings/colour".into(),
            min_version: String::new(),
            read: Some(spectrum::management::proto::ReadOptions {
                session: bad.to_owned(),
                ..Default::default()
            }),
        };
        let err = raw.get(request).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{bad}: {err}");
        assert!(err.message().contains("read.session"), "{bad}: {}", err.message());
    }
    let err: ClientError = client(node)
        .await
        .with_session("zz:1".parse().unwrap())
        .with_read_wait(Duration::from_millis(5))
        .get("settings/colour", ReadAfter::Anything)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(Code::Unavailable), "a well-formed session never written: {err}");
    cluster.shutdown().await;
}
