//! A balancer and three nodes in one process, on loopback, driven only through the
//! balancer's address.
//!
//! ```text
//! cargo run --example three_node_cluster            # the whole story, then exit 0
//! cargo run --example three_node_cluster -- --serve # keep serving until Ctrl-C / SIGTERM
//! ```
//!
//! With `--serve`, the first line on stdout is one JSON object naming the
//! balancer, the nodes and the Management Console (through the balancer):
//! `{"balancer":"http://127.0.0.1:PORT","nodes":[{"id":"node-1","addr":"http://127.0.0.1:PORT"},…],"console":"http://127.0.0.1:PORT/console"}`.
//! The cluster has no token (development mode): sign in to the console with an
//! empty token.

use std::collections::BTreeMap;
use std::error::Error;
use std::path::Path;
use std::time::{Duration, Instant};

use futures::StreamExt;

use spectrum::client::{AckLevel, AdminClient, ReadAfter};
use spectrum::demo::{DataflowClient, DataflowService, proto::RunRequest};
use spectrum::resources::{DataLocation, DatabaseCategory, DatabaseSpec, ResourceDefinition, ResourceSpec};
use spectrum::{Cluster, NodeBuilder};
use tonic::transport::Channel;

const REQUESTS: usize = 30;

const POSTAL_DB: &str = "\
# street|city|postcode
MAIN STREET|SPRINGFIELD|49001
ELM ROAD|SHELBYVILLE|49002
OAK AVENUE|CAPITAL CITY|49003
";

const ADDRESSES: &[&str] =
    &["12 Main St, Springfield", "7 elm rd., Shelbyville", "301 Oak Ave, Capital City"];

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let serve = std::env::args().skip(1).any(|a| a == "--serve");

    let cluster = Cluster::builder("example".parse()?)
        .size(3)
        .configure_nodes(|b: NodeBuilder| {
            b.add_service_with(DataflowService::server).dataflow_check(spectrum::demo::check_dataflow)
        })
        .start()
        .await?;

    if serve {
        let nodes: Vec<_> =
            cluster.nodes().map(|n| serde_json::json!({"id": n.id().as_str(), "addr": n.url()})).collect();
        let console = format!("{}{}", cluster.balancer_url(), spectrum::console::PATH);
        println!(
            "{}",
            serde_json::json!({"balancer": cluster.balancer_url(), "nodes": nodes, "console": console})
        );
        wait_for_signal().await?;
        cluster.shutdown().await;
        return Ok(());
    }

    let outcome = story(cluster).await;
    if let Err(e) = &outcome {
        eprintln!("example failed: {e}");
    }
    outcome
}

async fn story(mut cluster: Cluster) -> Result<(), Box<dyn Error>> {
    let balancer = cluster.balancer_url();
    println!("balancer at {balancer}");
    for node in cluster.nodes() {
        println!("  {} at {}", node.id(), node.url());
    }

    // 1. Configure the cluster through the balancer.
    let dir = tempfile::tempdir()?;
    let postal_path = dir.path().join("postal.db");
    std::fs::write(&postal_path, POSTAL_DB)?;
    let admin = AdminClient::connect(&cluster.balancer_addr(), None).await?;
    let entries = [
        ("license/main", br#"{"owner":"Example Corp","seats":3,"expires":"2027-12-31"}"#.to_vec()),
        (
            "dataflows/normalize-address",
            br#"{"steps":["trim","uppercase","expand_abbreviations","postal_lookup"],"resource":"postal-db"}"#
                .to_vec(),
        ),
        ("resources/postal-db", postal_resource(&postal_path)?),
    ];
    println!("\n1. writing through the balancer (acknowledged by all nodes)");
    let mut receipts = Vec::new();
    for (key, value) in &entries {
        let put = admin.put(key, value.clone(), AckLevel::All).await?.write;
        println!(
            "   {key:<28} version {:<10} via {} ({}/{} acked)",
            put.version.to_string(),
            put.served_by,
            put.acked,
            put.members
        );
        receipts.push(put);
    }

    // 2. Every node holds the same copies.
    println!("\n2. reading each node directly");
    for node in cluster.nodes() {
        let direct = AdminClient::connect(node.addr(), None).await?;
        for ((key, value), receipt) in entries.iter().zip(&receipts) {
            let got = direct.get(key, ReadAfter::from(receipt)).await?;
            if &got.value != value {
                return Err(format!("{} holds a different {key}", node.id()).into());
            }
        }
        println!("   {} holds all {} entries, identical", node.id(), entries.len());
    }

    // 3. Requests spread over the nodes.
    println!("\n3. {REQUESTS} dataflow requests through the balancer");
    let mut client = DataflowClient::connect(balancer.clone()).await?;
    let served = run_requests(&mut client, REQUESTS).await?;
    print_spread(&served);
    if served.len() != 3 {
        return Err(format!("expected all 3 nodes to serve, got {served:?}").into());
    }

    // 4. Stop a node: requests still succeed, on the other two; config still replicates.
    println!("\n4. stopping node-2");
    cluster.stop_node("node-2").await;
    let served = run_requests(&mut client, REQUESTS).await?;
    print_spread(&served);
    if served.contains_key("node-2") {
        return Err("node-2 served a request after it stopped".into());
    }
    let put = admin.put("settings/greeting", "hello, two nodes", AckLevel::All).await?;
    for node in cluster.nodes() {
        let direct = AdminClient::connect(node.addr(), None).await?;
        let got = direct.get("settings/greeting", ReadAfter::from(&put.write)).await?;
        println!("   {} has settings/greeting = {:?}", node.id(), got.to_string());
    }

    // 5. A watcher sees a dataflow change; every node reloads the dataflow.
    println!("\n5. changing the dataflow; a watcher through the balancer sees it, every node reloads it");
    reload(&cluster, &admin).await?;

    println!(
        "\nsummary: 3 nodes, {} config entries replicated to every node, {} requests served with 0 failures, \
         failover after node-2 stopped, a later change reached both remaining nodes, a watched dataflow \
         change reloaded on both",
        entries.len() + 1,
        2 * REQUESTS
    );
    cluster.shutdown().await;
    Ok(())
}

/// Changes the dataflow (no postcode lookup any more) while watching `dataflows/`
/// through the balancer, then runs it on each node until that node has reloaded it.
async fn reload(cluster: &Cluster, admin: &AdminClient) -> Result<(), Box<dyn Error>> {
    let mut changes = admin.watch("dataflows/", None);
    let watcher = tokio::spawn(async move { changes.next().await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let definition = br#"{"steps":["trim","uppercase","expand_abbreviations"]}"#.to_vec();
    let written = admin.create_dataflow("normalize-address", definition, true, AckLevel::All).await?.write;
    let event = watcher.await?.ok_or("the watch ended")??;
    println!(
        "   watcher: {} {} version {} (resume from {})",
        event.kind, event.key, written.version, event.position
    );
    for node in cluster.nodes() {
        let mut flows = DataflowClient::connect(node.url().to_owned()).await?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let request = RunRequest { dataflow: "normalize-address".into(), address: ADDRESSES[1].into() };
            let out = flows.run(request).await?.into_inner();
            if out.preloaded && out.dataflow_version == written.version.to_string() {
                let postcode = if out.postcode.is_empty() { "(no lookup)" } else { &out.postcode };
                println!(
                    "   {} reloaded it: {:<24} -> {:<24} {postcode}",
                    node.id(),
                    ADDRESSES[1],
                    out.normalized
                );
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("{} did not reload the dataflow", node.id()).into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(())
}

fn postal_resource(path: &Path) -> Result<Vec<u8>, Box<dyn Error>> {
    let def = ResourceDefinition::new(
        "postal-db".parse()?,
        ResourceSpec::Database(DatabaseSpec {
            category: DatabaseCategory::Postal,
            location: DataLocation::local(path),
        }),
    );
    let def = def.with_description("Postal database installed on every node");
    Ok(def.to_json_bytes()?)
}

async fn run_requests(
    client: &mut DataflowClient<Channel>,
    count: usize,
) -> Result<BTreeMap<String, usize>, Box<dyn Error>> {
    let mut served = BTreeMap::new();
    for i in 0..count {
        let address = ADDRESSES[i % ADDRESSES.len()];
        let out = client
            .run(RunRequest { dataflow: "normalize-address".into(), address: address.into() })
            .await
            .map_err(|s| format!("request {i} ({address}) failed: {s}"))?
            .into_inner();
        if i < ADDRESSES.len() {
            println!("   {address:<28} -> {:<28} {} (by {})", out.normalized, out.postcode, out.served_by);
        }
        *served.entry(out.served_by).or_insert(0) += 1;
    }
    Ok(served)
}

fn print_spread(served: &BTreeMap<String, usize>) {
    let line: Vec<String> = served.iter().map(|(n, c)| format!("{n}: {c}")).collect();
    println!("   served: {}", line.join(", "));
}

async fn wait_for_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}
