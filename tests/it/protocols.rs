//! Generic gRPC clients work with a cluster without our `.proto` files: standard
//! health checks through the balancer, and reflection on every node.

use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};

use tonic::transport::{Channel, Endpoint};

use crate::support::start_cluster;

async fn channel(url: &str) -> Channel {
    Endpoint::from_shared(url.to_owned()).unwrap().connect().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_through_the_balancer_report_serving() {
    let cluster = start_cluster("it-health").await;
    let mut health = HealthClient::new(channel(&cluster.balancer_url()).await);
    for _ in 0..6 {
        let status = health.check(HealthCheckRequest { service: String::new() }).await.unwrap().into_inner();
        assert_eq!(status.status(), ServingStatus::Serving);
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_lists_its_services_through_reflection() {
    let cluster = start_cluster("it-reflection").await;
    for node in cluster.nodes() {
        let mut client = ServerReflectionClient::new(channel(node.url()).await);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut answers =
            client.server_reflection_info(tokio_stream::once(request)).await.unwrap().into_inner();
        let answer = answers.message().await.unwrap().expect("one answer");
        let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
            panic!("{}: unexpected reflection answer {answer:?}", node.id());
        };
        let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
        for expected in
            ["spectrum.management.v1.Management", "spectrum.demo.v1.Dataflow", "grpc.health.v1.Health"]
        {
            assert!(names.contains(&expected), "{} does not list {expected}: {names:?}", node.id());
        }
        assert!(
            !names.iter().any(|n| n.starts_with("spectrum.replication.")),
            "{} lists an internal service: {names:?}",
            node.id()
        );
    }
    cluster.shutdown().await;
}
