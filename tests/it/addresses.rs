//! Real addresses: nodes on distinct loopback addresses (nothing assumes one
//! address), a node listening on every interface that advertises the address
//! peers reach it at, and a seed given by host name.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use spectrum::balancer::{BackendConfig, Balancer, BalancerConfig};
use spectrum::client::{AckLevel, AdminClient, ReadAfter};
use spectrum::core::{PeerAddr, transport};
use spectrum::discovery::ManagementDiscovery;
use spectrum::{Node, NodeBuilder, NodeError};

use crate::support::http_get;

fn node(id: &str, cluster: &str) -> NodeBuilder {
    let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("warn").try_init();
    NodeBuilder::new(id.parse().unwrap(), cluster.parse().unwrap()).in_memory().drain_grace(Duration::ZERO)
}

/// The addresses every member is recorded under, as `node` sees them.
async fn member_addrs(node: &Node) -> BTreeSet<String> {
    let status = AdminClient::connect(node.addr(), None).await.unwrap().status().await.unwrap();
    status.members.iter().map(|m| m.member.addr.to_string()).collect()
}

/// Waits (up to 10 s) until `node` lists exactly `addrs` as members.
async fn wait_for_members(node: &Node, addrs: &BTreeSet<String>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen = member_addrs(node).await;
        if &seen == addrs {
            return;
        }
        assert!(Instant::now() < deadline, "{} sees members {seen:?}, expected {addrs:?}", node.id());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_on_distinct_loopback_addresses_replicate_and_a_balancer_reaches_each() {
    let mut listeners = Vec::new();
    for ip in ["127.0.0.2", "127.0.0.3", "127.0.0.4"] {
        listeners.push(transport::bind(SocketAddr::new(ip.parse().unwrap(), 0)).await.unwrap());
    }
    let addrs: Vec<PeerAddr> = listeners.iter().map(transport::Listener::addr).collect();
    let starts = listeners.into_iter().enumerate().map(|(i, listener)| {
        let seeds: Vec<PeerAddr> = addrs.iter().filter(|a| **a != addrs[i]).cloned().collect();
        node(&format!("node-{}", i + 2), "it-loopbacks").listener(listener).seeds(seeds).start()
    });
    let nodes: Vec<Node> = futures::future::try_join_all(starts).await.expect("nodes start");

    let expected: BTreeSet<String> = addrs.iter().map(ToString::to_string).collect();
    for n in &nodes {
        assert_eq!(n.addr().host(), n.local_addr().ip().to_string(), "published as bound");
        wait_for_members(n, &expected).await;
    }
    let put = AdminClient::connect(nodes[0].addr(), None)
        .await
        .unwrap()
        .put("settings/colour", "teal", AckLevel::All)
        .await
        .expect("acknowledged by every node");
    for n in &nodes {
        let got = AdminClient::connect(n.addr(), None)
            .await
            .unwrap()
            .get("settings/colour", ReadAfter::from(&put.write))
            .await
            .unwrap();
        assert_eq!(got.value, b"teal");
    }

    let balancer = Balancer::builder(BalancerConfig::default())
        .backends(vec![BackendConfig::new(nodes[0].id().clone(), nodes[0].local_addr())])
        .discovery(Arc::new(ManagementDiscovery::new(addrs.clone())), Duration::from_millis(200))
        .start()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let stats = balancer.stats();
        let healthy: BTreeSet<String> =
            stats.iter().filter(|b| b.healthy).map(|b| PeerAddr::from(b.addr).to_string()).collect();
        if healthy == expected {
            break;
        }
        assert!(Instant::now() < deadline, "the balancer sees {stats:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    balancer.shutdown().await;
    futures::future::join_all(nodes.into_iter().map(Node::shutdown_without_drain)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listening_on_every_interface_needs_an_advertise_address_naming_both_settings() {
    let err = node("wild", "it-unspecified").listen("0.0.0.0:0".parse().unwrap()).start().await.unwrap_err();
    assert!(matches!(err, NodeError::Config { field: "advertise", .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("`listen` is 0.0.0.0:0") && text.contains("set `advertise`"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_listening_on_every_interface_publishes_its_advertise_address() {
    let first = node("node-1", "it-advertise").listen("127.0.0.2:0".parse().unwrap()).start().await.unwrap();
    let listener = transport::bind("0.0.0.0:0".parse().unwrap()).await.unwrap();
    let advertise: PeerAddr = format!("127.0.0.5:{}", listener.local_addr.port()).parse().unwrap();
    let second = node("node-2", "it-advertise")
        .listener(listener)
        .advertise(advertise.clone())
        .seeds([first.addr().clone()])
        .start()
        .await
        .expect("0.0.0.0 with advertise starts");
    assert_eq!(second.addr(), &advertise);
    assert!(second.local_addr().ip().is_unspecified());

    let expected: BTreeSet<String> = [first.addr().to_string(), advertise.to_string()].into();
    wait_for_members(&first, &expected).await;
    wait_for_members(&second, &expected).await;
    // The first node replicates to the second at its advertised address.
    AdminClient::connect(first.addr(), None)
        .await
        .unwrap()
        .put("settings/colour", "amber", AckLevel::All)
        .await
        .expect("acknowledged by both nodes");
    assert_eq!(http_get(advertise.authority(), "/readyz").await.unwrap().0, 200);
    second.shutdown_without_drain().await;
    first.shutdown_without_drain().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_given_by_host_name_is_resolved_and_reached() {
    let first = node("node-1", "it-seed-name").start().await.unwrap();
    let by_name: PeerAddr = format!("localhost:{}", first.local_addr().port()).parse().unwrap();
    let second = node("node-2", "it-seed-name")
        .listen("127.0.0.3:0".parse().unwrap())
        .seeds([by_name])
        .start()
        .await
        .unwrap();
    // An empty store with a seed is ready only once the seed answered.
    assert_eq!(http_get(&second.local_addr().to_string(), "/readyz").await.unwrap().0, 200);
    let expected: BTreeSet<String> = [first.addr().to_string(), second.addr().to_string()].into();
    wait_for_members(&second, &expected).await;
    wait_for_members(&first, &expected).await;
    second.shutdown_without_drain().await;
    first.shutdown_without_drain().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_advertising_a_host_name_is_resolved_for_the_balancer() {
    // Listen where `localhost` resolves here, and advertise the name.
    let ip = spectrum::resolve::resolve(&"localhost:1".parse().unwrap()).await.unwrap().ip();
    let listener = transport::bind(SocketAddr::new(ip, 0)).await.unwrap();
    let named: PeerAddr = format!("localhost:{}", listener.local_addr.port()).parse().unwrap();
    let bound = listener.local_addr;
    let node =
        node("node-1", "it-named-member").listener(listener).advertise(named.clone()).start().await.unwrap();
    assert_eq!(member_addrs(&node).await, BTreeSet::from([named.to_string()]));

    // The balancer starts with no backend and learns the member from membership.
    let balancer = Balancer::builder(BalancerConfig::default())
        .discovery(Arc::new(ManagementDiscovery::new([named])), Duration::from_millis(200))
        .start()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !balancer.stats().iter().any(|b| b.healthy && b.addr == bound) {
        assert!(Instant::now() < deadline, "the balancer sees {:?}", balancer.stats());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    balancer.shutdown().await;
    node.shutdown_without_drain().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_that_names_the_node_itself_by_host_name_is_harmless() {
    // Operators often give every node the same seed list, itself included.
    let ip = spectrum::resolve::resolve(&"localhost:1".parse().unwrap()).await.unwrap().ip();
    let listener = transport::bind(SocketAddr::new(ip, 0)).await.unwrap();
    let itself: PeerAddr = format!("localhost:{}", listener.local_addr.port()).parse().unwrap();
    let first =
        node("node-1", "it-self-seed").listener(listener).seeds([itself.clone()]).start().await.unwrap();
    let second = node("node-2", "it-self-seed")
        .listen("127.0.0.3:0".parse().unwrap())
        .seeds([itself, first.addr().clone()])
        .start()
        .await
        .unwrap();
    let expected: BTreeSet<String> = [first.addr().to_string(), second.addr().to_string()].into();
    wait_for_members(&first, &expected).await;
    let put = tokio::time::timeout(
        Duration::from_secs(5),
        AdminClient::connect(first.addr(), None).await.unwrap().put("settings/x", "1", AckLevel::All),
    )
    .await
    .expect("answered in time");
    let put = put.expect("acknowledged by both members");
    assert_eq!(put.write.members, 2, "{put:?}");
    second.shutdown_without_drain().await;
    first.shutdown_without_drain().await;
}
