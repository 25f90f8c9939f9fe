//! Bad input to the management API gets a clear error and changes nothing.

use spectrum::management::proto::{DeleteRequest, GetRequest, ListRequest, PutRequest};
use tonic::Code;

use crate::support::{admin, start_cluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_writes_are_refused_with_a_reason_and_store_nothing() {
    let cluster = start_cluster("it-bad-input").await;
    let mut client = admin(&cluster.balancer_url()).await;
    let cases: Vec<(&str, Vec<u8>, Code, &str)> = vec![
        ("", b"x".to_vec(), Code::InvalidArgument, "must not be empty"),
        ("colour", b"x".to_vec(), Code::InvalidArgument, "unknown config key"),
        ("settings/", b"x".to_vec(), Code::InvalidArgument, "no entry"),
        ("membership/node-9", b"{}".to_vec(), Code::PermissionDenied, "maintained by the nodes"),
        ("dataflows/x", b"not json".to_vec(), Code::InvalidArgument, "JSON object"),
        (
            "resources/x",
            br#"{"name":"x","spec":{"kind":"teleporter"}}"#.to_vec(),
            Code::InvalidArgument,
            "invalid value",
        ),
        ("settings/huge", vec![b'x'; 2 * 1024 * 1024], Code::InvalidArgument, "at most"),
    ];
    for (key, value, code, needle) in cases {
        let err = client
            .put(PutRequest { key: key.into(), value, ack: 0, ..PutRequest::default() })
            .await
            .unwrap_err();
        assert_eq!(err.code(), code, "{key:?}: {err}");
        assert!(err.message().contains(needle), "{key:?}: {:?} lacks {needle:?}", err.message());
    }
    for node in cluster.nodes() {
        let listed = admin(node.url())
            .await
            .list(ListRequest { prefix: String::new(), min_version: String::new(), read: None })
            .await
            .unwrap()
            .into_inner();
        assert!(
            listed.entries.iter().all(|e| e.key.starts_with("membership/") || e.key.starts_with("audit/")),
            "only membership and the audit of the refusals are stored: {:?}",
            listed.entries.iter().map(|e| &e.key).collect::<Vec<_>>()
        );
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_keys_and_bad_tokens_get_clear_errors() {
    let cluster = start_cluster("it-missing").await;
    let mut client = admin(&cluster.balancer_url()).await;
    let err = client
        .get(GetRequest { key: "settings/nope".into(), min_version: String::new(), read: None })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = client.delete(DeleteRequest { key: "settings/nope".into(), ack: 0 }).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = client
        .get(GetRequest { key: "settings/x".into(), min_version: "garbage".into(), read: None })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = client
        .get(GetRequest { key: "settings/x".into(), min_version: "node-1:999999".into(), read: None })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "a version never reached times out clearly: {err}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_through_the_balancer_removes_the_key_everywhere() {
    let cluster = start_cluster("it-delete").await;
    let mut client = admin(&cluster.balancer_url()).await;
    client
        .put(PutRequest { key: "settings/tmp".into(), value: b"1".to_vec(), ack: 2, ..PutRequest::default() })
        .await
        .unwrap();
    let del = client.delete(DeleteRequest { key: "settings/tmp".into(), ack: 2 }).await.unwrap().into_inner();
    for node in cluster.nodes() {
        let err = admin(node.url())
            .await
            .get(GetRequest { key: "settings/tmp".into(), min_version: del.version.clone(), read: None })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{}: {err}", node.id());
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_lists_every_member() {
    let cluster = start_cluster("it-status").await;
    let status = admin(&cluster.balancer_url())
        .await
        .status(spectrum::management::proto::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.cluster_id, "it-status");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut status = status;
    while status.members.len() < 3 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        status = admin(&cluster.balancer_url())
            .await
            .status(spectrum::management::proto::StatusRequest {})
            .await
            .unwrap()
            .into_inner();
    }
    let mut ids: Vec<_> = status.members.iter().map(|m| m.id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["node-1", "node-2", "node-3"]);
    assert!(status.members.iter().all(|m| m.state == "active"));
    cluster.shutdown().await;
}
