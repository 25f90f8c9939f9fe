//! Live membership: draining, adding and removing backends while serving.

use spectrum_balancer::BalancerError;

use crate::support::*;

#[tokio::test]
async fn a_draining_node_gets_no_new_requests_until_undrained() {
    let nodes = start_nodes(3).await;
    let balancer = balancer_for(&nodes, None).await;
    let mut client = Client::http1(balancer.local_addr()).await;

    balancer.set_draining(&nodes[2].id, true).unwrap();
    assert!(balancer.stats()[2].draining);
    let mut answers = Vec::new();
    for _ in 0..20 {
        answers.push(client.get("/").await);
    }
    assert_eq!(served_by(&answers, "node-2"), 0);
    assert_eq!(served_by(&answers, "node-0"), 10);

    balancer.set_draining(&nodes[2].id, false).unwrap();
    let mut answers = Vec::new();
    for _ in 0..30 {
        answers.push(client.get("/").await);
    }
    assert_eq!(served_by(&answers, "node-2"), 10);
    balancer.shutdown().await;
}

#[tokio::test]
async fn a_request_in_flight_on_a_draining_node_finishes() {
    let nodes = start_nodes(2).await;
    let balancer = balancer_for(&nodes, None).await;
    let addr = balancer.local_addr();
    // Round robin from the start: the first request goes to node-0.
    let slow = tokio::spawn(async move { Client::h2c(addr).await.get("/slow").await });
    wait_until("the slow request is in flight", || balancer.stats()[0].in_flight == 1).await;
    balancer.set_draining(&nodes[0].id, true).unwrap();
    let mut client = Client::h2c(addr).await;
    for _ in 0..4 {
        assert_eq!(client.get("/").await.node(), "node-1");
    }
    let a = within(slow).await.unwrap();
    assert_eq!((a.status.as_u16(), a.body.as_str()), (200, "node-0 slow"));
    balancer.shutdown().await;
}

#[tokio::test]
async fn an_added_node_receives_traffic_and_figures_survive_the_change() {
    let nodes = start_nodes(3).await;
    let balancer = balancer_for(&nodes[..2], None).await;
    let mut client = Client::http1(balancer.local_addr()).await;
    for _ in 0..4 {
        client.get("/").await;
    }
    assert_eq!(balancer.stats()[0].requests, 2);

    balancer.set_backends(nodes.iter().map(TestNode::backend).collect()).unwrap();
    wait_until("node-2 healthy", || balancer.stats().get(2).is_some_and(|s| s.healthy)).await;
    let mut answers = Vec::new();
    for _ in 0..30 {
        answers.push(client.get("/").await);
    }
    assert_eq!(served_by(&answers, "node-2"), 10);
    assert_eq!(balancer.stats()[0].requests, 12, "load figures survive a membership change");

    balancer.set_backends(vec![nodes[2].backend()]).unwrap();
    let mut answers = Vec::new();
    for _ in 0..5 {
        answers.push(client.get("/").await);
    }
    assert_eq!(served_by(&answers, "node-2"), 5, "removed nodes get nothing");
    assert_eq!(balancer.stats().len(), 1);
    balancer.shutdown().await;
}

#[tokio::test]
async fn membership_changes_are_validated() {
    let nodes = start_nodes(1).await;
    let balancer = balancer_for(&nodes, None).await;
    let err = balancer.set_backends(vec![nodes[0].backend(), nodes[0].backend()]).unwrap_err();
    assert!(matches!(err, BalancerError::DuplicateBackend { .. }), "{err}");
    assert_eq!(balancer.stats().len(), 1, "the previous list stays in force");
    let unknown = "node-9".parse().unwrap();
    assert!(matches!(balancer.set_draining(&unknown, true), Err(BalancerError::UnknownBackend { .. })));
    balancer.shutdown().await;
}
