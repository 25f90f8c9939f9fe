//! The strategy and weights the cluster sets, followed while serving: switched
//! under steady traffic with no failed request, reported with where they came from.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use spectrum_balancer::strategy::{StrategyName, StrategySpec};
use spectrum_balancer::{
    Balancer, BalancerError, BalancerHandle, BalancingSettings, Discovery, StrategySource,
};
use spectrum_core::{Member, MemberState, NodeId};

use crate::support::*;

/// Membership that never changes, and settings a test changes as the database would.
#[derive(Debug)]
struct Database {
    members: Vec<Member>,
    settings: Mutex<BalancingSettings>,
}

#[async_trait]
impl Discovery for Database {
    async fn members(&self) -> Result<Vec<Member>, BalancerError> {
        Ok(self.members.clone())
    }
    async fn settings(&self) -> Result<Option<BalancingSettings>, BalancerError> {
        Ok(Some(self.settings.lock().clone()))
    }
}

fn weights(pairs: &[(&str, u32)]) -> BTreeMap<NodeId, u32> {
    pairs.iter().map(|(id, w)| (id.parse().unwrap(), *w)).collect()
}

/// Sets what the database says, then waits until the balancer shows `name` in force.
async fn set(db: &Database, balancer: &BalancerHandle, settings: BalancingSettings, name: &str) {
    *db.settings.lock() = settings;
    wait_until(&format!("{name} in force"), || {
        let s = balancer.strategy();
        s.name == name && s.source == StrategySource::Database
    })
    .await;
}

/// How many of `n` requests (sent one after the other, with `headers`) each node served.
async fn probe(balancer: &BalancerHandle, n: usize, headers: &[(&str, &str)]) -> BTreeMap<String, usize> {
    let mut client = Client::h2c(balancer.local_addr()).await;
    let mut served = BTreeMap::new();
    for _ in 0..n {
        let answer = client.get_with("/", headers).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        *served.entry(answer.node().to_owned()).or_insert(0) += 1;
    }
    served
}

/// Clients sending requests one after the other until `stop`; counts answers and failures.
fn steady_traffic(
    balancer: &BalancerHandle,
    stop: &Arc<AtomicBool>,
) -> (Vec<tokio::task::JoinHandle<()>>, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let (served, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let tasks = (0..4)
        .map(|i| {
            let (addr, stop, served, failed) =
                (balancer.local_addr(), stop.clone(), served.clone(), failed.clone());
            tokio::spawn(async move {
                let tenant = format!("tenant-{i}");
                let mut client = Client::h2c(addr).await;
                while !stop.load(Ordering::Relaxed) {
                    let answer = client.get_with("/", &[("x-tenant", &tenant)]).await;
                    let counter = if answer.status == 200 { &served } else { &failed };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    (tasks, served, failed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strategy_and_weights_switch_under_steady_traffic_without_a_failed_request() {
    let nodes = start_nodes(3).await;
    let members: Vec<Member> =
        nodes.iter().map(|n| Member::new(n.id.clone(), n.addr.into(), MemberState::Active)).collect();
    let db = Arc::new(Database { members, settings: Mutex::new(BalancingSettings::default()) });
    let balancer = Balancer::builder(fast_config())
        .backends(nodes.iter().map(TestNode::backend).collect())
        .discovery(db.clone(), Duration::from_millis(50))
        .start()
        .await
        .unwrap();
    wait_until("every node healthy", || balancer.stats().iter().all(|s| s.healthy)).await;
    let configured = balancer.strategy();
    assert_eq!((configured.name.as_str(), configured.source), ("round_robin", StrategySource::Configured));

    let stop = Arc::new(AtomicBool::new(false));
    let (tasks, served, failed) = steady_traffic(&balancer, &stop);
    let before: Vec<u64> = balancer.stats().iter().map(|s| s.requests).collect();

    // Weighted round robin with two nodes at weight 0: the third takes everything.
    let weighted = StrategySpec::named(StrategyName::WeightedRoundRobin);
    let zeroes = weights(&[("node-0", 0), ("node-1", 0)]);
    set(&db, &balancer, BalancingSettings::new(Some(weighted.clone()), zeroes), "weighted_round_robin").await;
    assert_eq!(probe(&balancer, 20, &[]).await, BTreeMap::from([("node-2".to_owned(), 20)]));
    assert_eq!(balancer.stats().iter().map(|s| s.weight).collect::<Vec<_>>(), [0, 0, 1]);

    // Consistent hashing on a header: one tenant, one node.
    let hashed = StrategySpec::new(StrategyName::ConsistentHash, Some("x-tenant"), Some(1000.0)).unwrap();
    set(&db, &balancer, BalancingSettings::new(Some(hashed), BTreeMap::new()), "consistent_hash").await;
    assert_eq!(balancer.strategy().hash_key.as_deref(), Some("x-tenant"));
    let one_tenant = probe(&balancer, 20, &[("x-tenant", "acme")]).await;
    assert_eq!(one_tenant.len(), 1, "{one_tenant:?}");

    // Weights change alone: the same strategy keeps running, the weights follow.
    set(
        &db,
        &balancer,
        BalancingSettings::new(Some(weighted), weights(&[("node-2", 0)])),
        "weighted_round_robin",
    )
    .await;
    wait_until("node-2 at weight 0", || balancer.stats()[2].weight == 0).await;
    let spread = probe(&balancer, 30, &[]).await;
    assert!(!spread.contains_key("node-2") && spread.len() == 2, "{spread:?}");

    // Cleared: the configured round robin and weights are back.
    *db.settings.lock() = BalancingSettings::default();
    wait_until("the configured strategy back", || balancer.strategy() == configured).await;
    assert_eq!(balancer.stats().iter().map(|s| s.weight).collect::<Vec<_>>(), [1, 1, 1]);
    assert_eq!(probe(&balancer, 30, &[]).await.len(), 3);

    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        within(task).await.expect("no client saw a transport error");
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0, "{} requests served", served.load(Ordering::Relaxed));
    assert!(served.load(Ordering::Relaxed) > 40, "traffic ran throughout");
    let after: Vec<u64> = balancer.stats().iter().map(|s| s.requests).collect();
    assert!(
        before.iter().zip(&after).all(|(b, a)| a > b),
        "load figures survive every switch: {before:?} {after:?}"
    );
    balancer.shutdown().await;
}

#[tokio::test]
async fn the_strategy_in_force_is_reported_by_stats_and_metrics() {
    let nodes = start_nodes(2).await;
    let spec = StrategySpec::new(StrategyName::ConsistentHash, Some("client_address"), None).unwrap();
    let balancer = Balancer::builder(fast_config())
        .backends(nodes.iter().map(TestNode::backend).collect())
        .strategy_spec(spec)
        .start()
        .await
        .unwrap();
    let stats = balancer.stats_service().stats();
    let strategy = stats.strategy.clone().expect("the strategy is reported");
    assert_eq!(
        strategy.to_string(),
        "consistent_hash (hash_key client_address) from the balancer's configuration"
    );
    assert!(stats.to_string().lines().nth(1).is_some_and(|l| l.starts_with("STRATEGY  consistent_hash")));
    let text = balancer.metrics_text();
    let line = r#"spectrum_balancer_strategy_info{strategy="consistent_hash",hash_key="client_address",source="configured"} 1"#;
    assert!(text.lines().any(|l| l == line), "{text}");

    balancer.apply_settings(&BalancingSettings::new(
        Some(StrategySpec::named(StrategyName::Random)),
        BTreeMap::new(),
    ));
    let json = serde_json::to_value(balancer.stats_service().stats()).unwrap();
    assert_eq!(json["strategy"], serde_json::json!({"name": "random", "source": "database"}));
    assert!(balancer.metrics_text().contains(r#"strategy="random",hash_key="",source="database""#));
    balancer.shutdown().await;
}

#[tokio::test]
async fn a_strategy_given_in_code_is_reported_by_its_type_name() {
    let nodes = start_nodes(1).await;
    let strategy: Arc<dyn spectrum_balancer::BalancingStrategy> =
        Arc::new(spectrum_balancer::LeastRequests::new());
    let balancer = balancer_for(&nodes, Some(strategy)).await;
    let s = balancer.strategy();
    assert_eq!((s.name.as_str(), s.source), ("LeastRequests", StrategySource::Configured));
    balancer.shutdown().await;
}

/// Breaks the strategy contract the way it is told to.
#[derive(Debug)]
enum Broken {
    OutOfRange,
    Panics,
}

impl spectrum_balancer::BalancingStrategy for Broken {
    fn pick(
        &self,
        backends: &[spectrum_balancer::Backend],
        _: &spectrum_balancer::RequestContext<'_>,
    ) -> Option<usize> {
        match self {
            Broken::OutOfRange => Some(backends.len() + 7),
            Broken::Panics => panic!("a bug in the strategy"),
        }
    }
}

/// A strategy that picks outside the list or panics is the strategy's fault:
/// each request is answered 500 / `INTERNAL` saying so (an embedding trial got
/// "no backend available" with every node healthy, and an opaque HTTP/2
/// protocol error), counted, and the balancer goes on serving.
#[tokio::test]
async fn a_strategy_that_breaks_its_contract_is_answered_internal_saying_what_it_did() {
    let nodes = start_nodes(2).await;
    for (broken, says) in [
        (Broken::OutOfRange, "it picked backend 9 of 2"),
        (Broken::Panics, "it panicked: a bug in the strategy"),
    ] {
        let balancer = balancer_for(&nodes, Some(Arc::new(broken))).await;
        let mut client = Client::h2c(balancer.local_addr()).await;
        for _ in 0..3 {
            let answer = client.get_with("/", &[]).await;
            assert_eq!(answer.status, 500, "{answer:?}");
            assert!(
                answer.body.contains("the balancer's strategy failed") && answer.body.contains(says),
                "{answer:?}"
            );
        }
        assert!(balancer.metrics_text().contains("spectrum_balancer_strategy_faults_total 3"));
        balancer.shutdown().await;
    }
}
