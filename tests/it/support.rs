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
        .put(PutRequest { key: "resources/postal-db".into(), value: postal_definition(postal), ack: ACK_ALL })
        .await
        .unwrap();
    admin
        .put(PutRequest {
            key: "dataflows/normalize-address".into(),
            value: br#"{"steps":["trim","uppercase","expand_abbreviations","postal_lookup"],"resource":"postal-db"}"#
                .to_vec(),
            ack: ACK_ALL,
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
