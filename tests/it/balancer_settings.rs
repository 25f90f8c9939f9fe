//! The strategy and weights set in the database (`balancer/`), followed by the
//! cluster's balancer while it serves: switched several times under steady
//! traffic with no failed request, each switch visible in who serves requests.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use spectrum::Cluster;
use spectrum::balancer::StrategySource;
use spectrum::client::{AckLevel, AdminClient, AuditQuery, ReadAfter, Role, StrategyName, StrategySpec};
use spectrum::demo::DataflowClient;
use spectrum::demo::proto::RunRequest;
use spectrum::management::proto::{self, management_client::ManagementClient};
use tokio::task::JoinHandle;
use tonic::Code;
use tonic::transport::Channel;

use crate::support::{admin, configure_dataflow, start_cluster};

/// Longest a switch may take to reach the balancer: its discovery polls every
/// 500 ms, and the machine may be loaded.
const SWITCH_BOUND: Duration = Duration::from_secs(10);

fn run_request() -> RunRequest {
    RunRequest { dataflow: "normalize-address".into(), address: "12 Main St, Springfield".into() }
}

/// Waits until the balancer runs `name` from `source`.
async fn until_in_force(cluster: &Cluster, name: &str, source: StrategySource) {
    let deadline = tokio::time::Instant::now() + SWITCH_BOUND;
    loop {
        let s = cluster.balancer().strategy();
        if s.name == name && s.source == source {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{name} from {source} never in force: {s}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Who served `n` requests sent one after the other, with `tenant` as `x-tenant`.
async fn served(
    client: &mut DataflowClient<Channel>,
    n: usize,
    tenant: Option<&str>,
) -> BTreeMap<String, usize> {
    let mut served = BTreeMap::new();
    for _ in 0..n {
        let mut request = tonic::Request::new(run_request());
        if let Some(tenant) = tenant {
            request.metadata_mut().insert("x-tenant", tenant.parse().unwrap());
        }
        let out = client.run(request).await.expect("served").into_inner();
        *served.entry(out.served_by).or_insert(0) += 1;
    }
    served
}

/// Four clients sending requests until `stop`; each failure is counted (and printed).
fn steady_load(url: &str, stop: &Arc<AtomicBool>, failed: &Arc<AtomicUsize>) -> Vec<JoinHandle<usize>> {
    (0..4)
        .map(|i| {
            let (url, stop, failed) = (url.to_owned(), stop.clone(), failed.clone());
            tokio::spawn(async move {
                let mut client = DataflowClient::connect(url).await.unwrap();
                let mut ok = 0;
                while !stop.load(Ordering::Relaxed) {
                    let mut request = tonic::Request::new(run_request());
                    request.metadata_mut().insert("x-tenant", format!("tenant-{i}").parse().unwrap());
                    match client.run(request).await {
                        Ok(_) => ok += 1,
                        Err(status) => {
                            eprintln!("failed during a switch: {status}");
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                ok
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strategies_and_weights_set_in_the_database_switch_under_load_without_a_failed_request() {
    let cluster = start_cluster("it-live-strategy").await;
    let dir = tempfile::tempdir().unwrap();
    configure_dataflow(&mut admin(&cluster.balancer_url()).await, &dir.path().join("postal.db")).await;
    let admin = AdminClient::connect(&cluster.balancer_addr(), None).await.unwrap();
    let mut probe = DataflowClient::connect(cluster.balancer_url()).await.unwrap();
    let own = cluster.balancer().strategy();
    assert_eq!((own.name.as_str(), own.source), ("round_robin", StrategySource::Configured));

    let (stop, failed) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
    let load = steady_load(&cluster.balancer_url(), &stop, &failed);

    // Weighted round robin, node-1 and node-2 at weight 0: node-3 serves everything.
    for node in ["node-1", "node-2"] {
        admin.set_balancer_weight(node, 0, AckLevel::All).await.unwrap();
    }
    let weighted = StrategySpec::named(StrategyName::WeightedRoundRobin);
    admin.set_balancer_strategy(&weighted, AckLevel::All).await.unwrap();
    until_in_force(&cluster, "weighted_round_robin", StrategySource::Database).await;
    assert_eq!(served(&mut probe, 20, None).await, BTreeMap::from([("node-3".to_owned(), 20)]));

    // Consistent hashing on x-tenant: one tenant, one node.
    let hashed = StrategySpec::new(StrategyName::ConsistentHash, Some("x-tenant"), Some(1000.0)).unwrap();
    admin.set_balancer_strategy(&hashed, AckLevel::All).await.unwrap();
    until_in_force(&cluster, "consistent_hash", StrategySource::Database).await;
    let acme = served(&mut probe, 20, Some("acme")).await;
    assert_eq!(acme.len(), 1, "{acme:?}");

    // Weighted again with other weights: node-3 out, the others back.
    for node in ["node-1", "node-2"] {
        admin.clear_balancer_weight(node, AckLevel::All).await.unwrap();
    }
    admin.set_balancer_weight("node-3", 0, AckLevel::All).await.unwrap();
    admin.set_balancer_strategy(&weighted, AckLevel::All).await.unwrap();
    until_in_force(&cluster, "weighted_round_robin", StrategySource::Database).await;
    let spread = served(&mut probe, 30, None).await;
    assert!(spread.len() == 2 && !spread.contains_key("node-3"), "{spread:?}");

    // Cleared: the balancer's own round robin over every node.
    admin.clear_balancer_strategy(AckLevel::All).await.unwrap();
    admin.clear_balancer_weight("node-3", AckLevel::All).await.unwrap();
    until_in_force(&cluster, "round_robin", StrategySource::Configured).await;
    assert_eq!(served(&mut probe, 30, None).await.len(), 3);
    let shown = admin.balancer_settings(ReadAfter::Anything).await.unwrap();
    assert!(shown.strategy.is_none() && shown.weights.is_empty(), "{shown}");

    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    let mut ok = 0;
    for task in load {
        ok += task.await.unwrap();
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0, "{ok} requests served");
    assert!(ok > 40, "the load ran throughout: {ok}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn balancer_settings_need_the_admin_role_are_validated_naming_the_field_and_audited() {
    let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("warn").try_init();
    let cluster = Cluster::builder("it-live-strategy-roles".parse().unwrap())
        .size(1)
        .management_token("it-balancer-bootstrap".parse().unwrap())
        .start()
        .await
        .unwrap();
    let addr = cluster.balancer_addr();
    let admin = AdminClient::connect(&addr, Some("it-balancer-bootstrap".parse().unwrap())).await.unwrap();
    let viewer = admin.add_user("vera", Role::Viewer, AckLevel::All).await.unwrap().token;
    let vera = AdminClient::connect(&addr, Some(viewer.clone())).await.unwrap();

    let random = StrategySpec::named(StrategyName::Random);
    let denied = vera.set_balancer_strategy(&random, AckLevel::All).await.unwrap_err();
    assert_eq!(denied.code(), Some(Code::PermissionDenied), "{denied}");
    assert!(denied.to_string().contains("SetBalancerStrategy needs the admin role"), "{denied}");
    assert!(vera.balancer_settings(ReadAfter::Anything).await.is_ok(), "viewers read them");

    // What the typed client cannot send, a raw one can: refused naming the field.
    let mut raw = ManagementClient::new(Channel::from_shared(cluster.balancer_url()).unwrap().connect_lazy());
    for (name, factor, field) in
        [("random", Some(2.0), "strategy.load_factor"), ("fastest", None, "strategy.name")]
    {
        let mut request = tonic::Request::new(proto::SetBalancerStrategyRequest {
            strategy: Some(proto::BalancerStrategy {
                name: name.into(),
                hash_key: String::new(),
                has_load_factor: factor.is_some(),
                load_factor: factor.unwrap_or_default(),
            }),
            ack: 0,
        });
        request.metadata_mut().insert("authorization", "Bearer it-balancer-bootstrap".parse().unwrap());
        let status = raw.set_balancer_strategy(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains(field), "{}", status.message());
    }
    let put = admin.put("balancer/strategy", r#"{"strategy":{"name":"random"}}"#, AckLevel::All).await;
    assert_eq!(put.unwrap_err().code(), Some(Code::PermissionDenied), "no raw writes to balancer/");
    let unknown = admin.set_balancer_weight("node-9", 2, AckLevel::All).await.unwrap_err();
    assert_eq!(unknown.code(), Some(Code::NotFound), "{unknown}");
    assert!(admin.balancer_settings(ReadAfter::Anything).await.unwrap().strategy.is_none(), "nothing stored");

    let set = admin.set_balancer_strategy(&random, AckLevel::All).await.unwrap();
    let log = admin.audit(&AuditQuery { limit: Some(100), ..AuditQuery::default() }).await.unwrap();
    let entries: Vec<_> = log.0.iter().map(|e| &e.record).collect();
    assert!(
        entries.iter().any(|r| r.operation == "SetBalancerStrategy" && r.caller == "vera" && !r.ok),
        "the refused write is audited: {log}"
    );
    assert!(
        entries
            .iter()
            .any(|r| r.operation == "SetBalancerStrategy" && r.ok && r.target == "balancer/strategy"),
        "{log}"
    );
    assert!(
        entries.iter().any(|r| r.operation == "SetBalancerWeight" && r.target == "balancer/weight/node-9")
    );
    let shown = admin.balancer_settings(ReadAfter::from(&set.write)).await.unwrap();
    assert_eq!(shown.strategy.map(|s| s.spec), Some(random));
    cluster.shutdown().await;
}
