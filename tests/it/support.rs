//! Shared helpers for the whole-cluster tests.

use std::collections::BTreeMap;
use std::path::Path;

use spectrum::demo::{DataflowClient, DataflowService, proto::RunRequest};
use spectrum::management::proto::{PutRequest, management_client::ManagementClient};
use spectrum::resources::{DataLocation, DatabaseCategory, DatabaseSpec, ResourceDefinition, ResourceSpec};
use spectrum::{Cluster, NodeBuilder};
use tonic::transport::Channel;

pub(crate) const ACK_ALL: i32 = 2;

pub(crate) const POSTAL_DB: &str = "MAIN STREET|SPRINGFIELD|49001\nELM ROAD|SHELBYVILLE|49002\n";

/// Three nodes in Raft mode with `settings`, their stores under `dir`.
pub(crate) async fn raft_cluster(
    name: &str,
    dir: &Path,
    settings: spectrum_replication::RaftSettings,
) -> Cluster {
    Cluster::builder(name.parse().unwrap())
        .data_dir(dir)
        .configure_nodes(move |b| {
            b.replication(spectrum_replication::ReplicationMode::Raft).raft_settings(settings.clone())
        })
        .start()
        .await
        .unwrap()
}

pub(crate) async fn start_cluster(name: &str) -> Cluster {
    let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("warn").try_init();
    Cluster::builder(name.parse().unwrap())
        .size(3)
        .configure_nodes(|b: NodeBuilder| b.add_service_with(DataflowService::server))
        .start()
        .await
        .expect("cluster starts")
}

pub(crate) async fn admin(url: &str) -> ManagementClient<Channel> {
    ManagementClient::connect(url.to_owned()).await.expect("connect")
}

pub(crate) fn postal_definition(path: &Path) -> Vec<u8> {
    ResourceDefinition::new(
        "postal-db".parse().unwrap(),
        ResourceSpec::Database(DatabaseSpec {
            category: DatabaseCategory::Postal,
            location: DataLocation::local(path),
        }),
    )
    .to_json_bytes()
    .unwrap()
}

/// Defines the postal resource and the dataflow through `admin`; returns the last version.
pub(crate) async fn configure_dataflow(admin: &mut ManagementClient<Channel>, postal: &Path) -> String {
    std::fs::write(postal, POSTAL_DB).unwrap();
    admin
        .put(PutRequest {
            key: "resources/postal-db".into(),
            value: postal_definition(postal),
            ack: ACK_ALL,
            ..PutRequest::default()
        })
        .await
        .unwrap();
    admin
        .put(PutRequest {
            key: "dataflows/normalize-address".into(),
            value: br#"{"steps":["trim","uppercase","expand_abbreviations","postal_lookup"],"resource":"postal-db"}"#
                .to_vec(),
            ack: ACK_ALL,
            ..PutRequest::default()
        })
        .await
        .unwrap()
        .into_inner()
        .version
}

/// Sends `count` dataflow requests; returns how many each node served. Panics on any failure.
pub(crate) async fn run_requests(
    client: &mut DataflowClient<Channel>,
    count: usize,
) -> BTreeMap<String, usize> {
    let mut served = BTreeMap::new();
    for i in 0..count {
        let out = client
            .run(RunRequest {
                dataflow: "normalize-address".into(),
                address: "12 Main St, Springfield".into(),
            })
            .await
            .unwrap_or_else(|s| panic!("request {i} failed: {s}"))
            .into_inner();
        assert_eq!(out.postcode, "49001");
        *served.entry(out.served_by).or_insert(0) += 1;
    }
    served
}

/// A plain HTTP/1.1 `GET` of `path` at `addr` (`host:port`) over a fresh TCP
/// connection: the status code and the body. What HAProxy's `httpchk` and a
/// Kubernetes probe send.
pub(crate) async fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(5), stream.read_to_end(&mut response))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no HTTP answer in 5 s"))??;
    let text = String::from_utf8_lossy(&response);
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("not HTTP: {text:?}")))?;
    let body = text.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
    Ok((status, body))
}

/// `grpc.health.v1` as the node at `url` reports it.
pub(crate) async fn grpc_health(url: &str) -> tonic_health::pb::health_check_response::ServingStatus {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned()).unwrap().connect().await.unwrap();
    HealthClient::new(channel)
        .check(HealthCheckRequest { service: String::new() })
        .await
        .expect("health answers")
        .into_inner()
        .status()
}

/// Polls `/readyz` on `addr` until it answers `status` (up to 10 s); returns the body.
pub(crate) async fn readyz_becomes(addr: &str, status: u16) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (got, body) = http_get(addr, "/readyz").await.expect("/readyz answers");
        if got == status {
            return body;
        }
        assert!(std::time::Instant::now() < deadline, "/readyz on {addr} still answers {got} {body}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
