//! A balancing strategy written by a user, plugged into a running cluster.
//!
//! ```text
//! cargo run --example custom_strategy
//! ```
//!
//! `FastestUnderCap` sends each request to the node with the lowest latency
//! average, but never to one that already has `cap` requests in flight: a fast
//! node gets more work, yet cannot be buried under it. The example starts three
//! nodes and a balancer in this process, sends dataflow requests through the
//! balancer from several concurrent clients, prints how they spread, and exits.

use std::collections::BTreeMap;
use std::error::Error;
use std::sync::Arc;
use std::time::Duration;

use spectrum::client::{AckLevel, AdminClient};
use spectrum::demo::{DataflowClient, DataflowService, proto::RunRequest};
use spectrum::{Cluster, NodeBuilder};
use spectrum_balancer::strategy::{BalancingStrategy, RequestContext};
use spectrum_balancer::{Backend, BalancerConfig, PathMatcher};

/// The lowest latency average among the nodes with fewer than `cap` requests in
/// flight; when every node is at the cap, the least busy one.
#[derive(Debug)]
struct FastestUnderCap {
    cap: u64,
}

impl BalancingStrategy for FastestUnderCap {
    fn pick(&self, backends: &[Backend], _ctx: &RequestContext<'_>) -> Option<usize> {
        let under_cap = (0..backends.len()).filter(|&i| backends[i].load.in_flight() < self.cap);
        under_cap
            .min_by_key(|&i| (backends[i].load.latency_ewma_us(), backends[i].load.requests()))
            .or_else(|| (0..backends.len()).min_by_key(|&i| backends[i].load.in_flight()))
    }
}

const CLIENTS: usize = 8;
const REQUESTS_PER_CLIENT: usize = 50;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();

    let balancer_config = BalancerConfig {
        health_interval: Duration::from_millis(200),
        // Running a dataflow changes nothing: a failed call may be sent to another node.
        idempotent: vec![PathMatcher::grpc_service("spectrum.demo.v1.Dataflow")],
        ..BalancerConfig::default()
    };
    let cluster = Cluster::builder("custom-strategy".parse()?)
        .size(3)
        .configure_nodes(|b: NodeBuilder| b.add_service_with(DataflowService::server))
        .strategy(Arc::new(FastestUnderCap { cap: 2 }))
        .balancer_config(balancer_config)
        .start()
        .await?;
    let outcome = run(&cluster).await;
    cluster.shutdown().await;
    if let Err(e) = &outcome {
        eprintln!("example failed: {e}");
    }
    outcome
}

async fn run(cluster: &Cluster) -> Result<(), Box<dyn Error>> {
    let balancer = cluster.balancer_url();
    println!("balancer at {balancer}, strategy FastestUnderCap {{ cap: 2 }}");

    // A dataflow that needs no external resource, defined once through the balancer.
    let admin = AdminClient::connect(&cluster.balancer_addr(), None).await?;
    admin
        .put(
            "dataflows/tidy-address",
            br#"{"steps":["trim","uppercase","expand_abbreviations"]}"#,
            AckLevel::All,
        )
        .await?;

    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let mut client = DataflowClient::connect(balancer.clone()).await?;
        tasks.push(tokio::spawn(async move {
            let mut served: BTreeMap<String, usize> = BTreeMap::new();
            for i in 0..REQUESTS_PER_CLIENT {
                let address = format!("  {} main st,  springfield ", c * 1_000 + i);
                let out = client
                    .run(RunRequest { dataflow: "tidy-address".into(), address })
                    .await
                    .map_err(|s| format!("client {c} request {i} failed: {s}"))?
                    .into_inner();
                *served.entry(out.served_by).or_insert(0) += 1;
            }
            Ok::<_, String>(served)
        }));
    }
    let mut served: BTreeMap<String, usize> = BTreeMap::new();
    for task in tasks {
        for (node, n) in task.await?? {
            *served.entry(node).or_insert(0) += n;
        }
    }
    let total: usize = served.values().sum();
    println!(
        "\n{total} requests from {CLIENTS} concurrent clients in {:.0} ms, 0 failed",
        started.elapsed().as_secs_f64() * 1e3
    );
    println!("\n{:<8} {:>7} {:>7} {:>12}", "node", "served", "share", "latency avg");
    for stats in cluster.balancer().stats() {
        let n = served.get(stats.id.as_str()).copied().unwrap_or(0);
        println!(
            "{:<8} {:>7} {:>6.1}% {:>9} µs",
            stats.id.as_str(),
            n,
            100.0 * n as f64 / total.max(1) as f64,
            stats.latency_ewma_us
        );
    }
    println!(
        "\nthe fastest nodes take all they may; with {CLIENTS} clients and a cap of 2 in flight per node, \
         the rest spills to the slower ones"
    );
    if total != CLIENTS * REQUESTS_PER_CLIENT {
        return Err(format!("expected {} answers, got {total}", CLIENTS * REQUESTS_PER_CLIENT).into());
    }
    Ok(())
}
