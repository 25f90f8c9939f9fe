//! Benchmark: replication of the configuration database on loopback.
//!
//! ```text
//! cargo run --release --example bench_replication
//! ```
//!
//! Prints these figures (targets from DESIGN.md):
//! 1. a write acknowledged by all three nodes: p50 and p99 latency (target p50 ≤ 2 ms);
//! 2. catch-up: how long a node that missed 100,000 writes takes to converge (≤ 2 s);
//! 3. idle cost, bytes per anti-entropy round with 3 and 20 nodes, at 1,000 and
//!    100,000 keys (it must grow with nodes, not with keys);
//! 4. in the same run as figure 1 (same nodes, durable stores): watch latency,
//!    from a write acknowledged by all three nodes to its event received by a
//!    watcher on each node (p50, p99), and the write latency while they watch;
//! 5. the events per second one watcher sustains (replaying 50,000 changes from
//!    a position, through gRPC).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::StreamExt;
use hyper_util::rt::TokioIo;
use spectrum::client::{AckLevel, AdminClient, WatchPosition};
use spectrum::core::transport::{self, Listener};
use spectrum::core::{ChannelConnector, ClusterId, Hlc, NodeId, PeerAddr, TransportConfig};
use spectrum::replication::{ConfigStore, MemoryStore, Origin, Record, RedbStore, VersionVector, WriteBatch};
use spectrum::{Node, NodeBuilder};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A TCP stream that counts every byte both ways.
struct Counted {
    inner: TcpStream,
    bytes: Arc<AtomicU64>,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        self.bytes.fetch_add((buf.filled().len() - before) as u64, Ordering::Relaxed);
        res
    }
}

impl AsyncWrite for Counted {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &res {
            self.bytes.fetch_add(*n as u64, Ordering::Relaxed);
        }
        res
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

fn counting_transport(bytes: Arc<AtomicU64>) -> TransportConfig {
    TransportConfig::default().with_connector(ChannelConnector::new(move |endpoint| {
        let bytes = bytes.clone();
        endpoint.connect_with_connector_lazy(tower::service_fn(move |uri: http::Uri| {
            let bytes = bytes.clone();
            async move {
                let authority = uri.authority().map(|a| a.as_str().to_owned()).unwrap_or_default();
                let inner = TcpStream::connect(authority).await?;
                inner.set_nodelay(true)?;
                Ok::<_, io::Error>(TokioIo::new(Counted { inner, bytes }))
            }
        }))
    }))
}

async fn listeners(n: usize) -> Result<Vec<Listener>, BoxError> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(transport::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?);
    }
    Ok(out)
}

fn node_id(i: usize) -> NodeId {
    NodeId::new(format!("node-{i}")).expect("valid id")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Starts `n` nodes seeded with each other, each over the store `make` builds.
async fn start_nodes(
    n: usize,
    transport: TransportConfig,
    interval: Duration,
    make: impl Fn(NodeId, Arc<Hlc>) -> Arc<dyn ConfigStore> + Clone + Send + 'static,
) -> Result<Vec<Node>, BoxError> {
    let ls = listeners(n).await?;
    let addrs: Vec<PeerAddr> = ls.iter().map(Listener::addr).collect();
    let cluster = ClusterId::new("bench")?;
    // Start every node at once: each pulls from the others as it starts.
    let starts = ls.into_iter().enumerate().map(|(i, l)| {
        let seeds: Vec<PeerAddr> =
            addrs.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, a)| a.clone()).collect();
        let make = make.clone();
        NodeBuilder::new(node_id(i + 1), cluster.clone())
            .listener(l)
            .seeds(seeds)
            .store_with(move |id, hlc| Ok(make(id, hlc)))
            .transport(transport.clone())
            .sync_interval(interval)
            .start()
    });
    let nodes = futures::future::try_join_all(starts).await?;
    Ok(nodes)
}

fn memory(id: NodeId, hlc: Arc<Hlc>) -> Arc<dyn ConfigStore> {
    Arc::new(MemoryStore::new(id, hlc))
}

async fn write_latency() -> Result<(), BoxError> {
    let dir = tempfile::tempdir()?;
    let root = dir.path().to_owned();
    let durable = move |id: NodeId, hlc: Arc<Hlc>| -> Arc<dyn ConfigStore> {
        let path = root.join(format!("{id}.redb"));
        Arc::new(RedbStore::open(path, id, hlc).expect("open the durable store"))
    };
    let nodes = start_nodes(3, TransportConfig::default(), Duration::from_secs(1), durable).await?;
    let client = AdminClient::connect(nodes[0].addr(), None).await?;
    let mut samples = Vec::new();
    for i in 0..1_200 {
        let start = Instant::now();
        client.put(&format!("settings/k{}", i % 100), vec![b'x'; 64], AckLevel::All).await?;
        if i >= 200 {
            samples.push(start.elapsed());
        }
    }
    samples.sort();
    println!(
        "1. write acknowledged by all 3 nodes, durable store (redb, fsync per commit), {} writes: p50 {:.3} ms, p99 {:.3} ms (target p50 <= 2 ms)",
        samples.len(),
        percentile(&samples, 0.5).as_secs_f64() * 1e3,
        percentile(&samples, 0.99).as_secs_f64() * 1e3
    );
    watch_latency(&nodes, &client).await?;
    watch_throughput(&nodes).await?;
    futures::future::join_all(nodes.into_iter().map(Node::shutdown_without_drain)).await;
    Ok(())
}

/// Per node, when each key's event reached a watcher there.
type Arrivals = Vec<tokio::task::JoinHandle<Result<Vec<(String, Instant)>, BoxError>>>;

/// One watcher per node on `prefix`, each collecting `count` events.
async fn watchers(nodes: &[Node], prefix: &str, count: usize) -> Result<Arrivals, BoxError> {
    let mut out = Vec::new();
    for node in nodes {
        let client = AdminClient::connect(node.addr(), None).await?;
        let prefix = prefix.to_owned();
        out.push(tokio::spawn(async move {
            let mut events = client.watch(&prefix, None);
            let mut got = Vec::with_capacity(count);
            while got.len() < count {
                let event = tokio::time::timeout(Duration::from_secs(30), events.next())
                    .await
                    .map_err(|_| "no watch event within 30 s")?
                    .ok_or("the watch ended")??;
                got.push((event.key, Instant::now()));
            }
            Ok(got)
        }));
    }
    // Let every watch start before the first write.
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(out)
}

async fn watch_latency(nodes: &[Node], client: &AdminClient) -> Result<(), BoxError> {
    const WRITES: usize = 1_000;
    let arrivals = watchers(nodes, "settings/watched/", WRITES).await?;
    let mut acked = std::collections::HashMap::new();
    let mut sent = std::collections::HashMap::new();
    let mut writes = Vec::new();
    for i in 0..WRITES {
        let key = format!("settings/watched/k{i:05}");
        let start = Instant::now();
        client.put(&key, vec![b'x'; 64], AckLevel::All).await?;
        let now = Instant::now();
        writes.push(now - start);
        sent.insert(key.clone(), start);
        acked.insert(key, now);
    }
    let (mut latencies, mut from_sent, mut early) = (Vec::new(), Vec::new(), 0usize);
    for arrival in arrivals {
        for (key, at) in arrival.await?? {
            let done = acked.get(&key).ok_or("an event for a key never written")?;
            early += usize::from(at < *done);
            latencies.push(at.saturating_duration_since(*done));
            from_sent.push(at.saturating_duration_since(sent[&key]));
        }
    }
    latencies.sort();
    from_sent.sort();
    writes.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "4. watch latency, write acknowledged by all 3 -> event received by a watcher on each of the 3 nodes, {} events: p50 {:.3} ms, p99 {:.3} ms (0 when the event came before the acknowledgement)",
        latencies.len(),
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.99))
    );
    println!(
        "   {early} of them arrived before the writer had the acknowledgement; from the write sent to the event received: p50 {:.3} ms, p99 {:.3} ms",
        ms(percentile(&from_sent, 0.5)),
        ms(percentile(&from_sent, 0.99))
    );
    println!(
        "   write latency meanwhile (3 watchers attached, same nodes), {WRITES} writes: p50 {:.3} ms, p99 {:.3} ms",
        ms(percentile(&writes, 0.5)),
        ms(percentile(&writes, 0.99))
    );
    Ok(())
}

async fn watch_throughput(nodes: &[Node]) -> Result<(), BoxError> {
    const CHANGES: usize = 50_000;
    let client = AdminClient::connect(nodes[1].addr(), None).await?;
    // A position on node-2 before the changes, from a marker write's event.
    let mut events = client.watch("settings/bulk/", None);
    let marker = tokio::spawn(async move { events.next().await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    client.put("settings/bulk/marker", "m", AckLevel::All).await?;
    let from: WatchPosition = marker.await?.ok_or("no marker event")??.position;
    for chunk in 0..CHANGES / 500 {
        let batch = (0..500).fold(WriteBatch::new(), |b, i| {
            b.put(format!("settings/bulk/{chunk:03}/{i:03}"), vec![b'v'; 64])
        });
        let records = nodes[0].store().apply(batch).await?;
        nodes[0]
            .replicator()
            .replicate(records, spectrum::replication::AckLevel::All, Duration::from_secs(10))
            .await?;
    }
    let start = Instant::now();
    let mut events = client.watch("settings/bulk/", Some(from));
    let mut received = 0usize;
    while received < CHANGES {
        tokio::time::timeout(Duration::from_secs(30), events.next())
            .await
            .map_err(|_| "no watch event within 30 s")?
            .ok_or("the watch ended")??;
        received += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "5. one watcher (gRPC, node-2, resuming from its durable log) took {CHANGES} changes in {secs:.3} s: {:.0} events/s",
        CHANGES as f64 / secs
    );
    Ok(())
}

async fn catch_up() -> Result<(), BoxError> {
    const WRITES: usize = 100_000;
    let nodes = start_nodes(3, TransportConfig::default(), Duration::from_secs(1), memory).await?;
    let mut nodes = nodes.into_iter();
    let (a, b, c) = (nodes.next().ok_or("node")?, nodes.next().ok_or("node")?, nodes.next().ok_or("node")?);
    let c_url = c.url().to_owned();
    c.shutdown_without_drain().await;
    for chunk in 0..WRITES / 1_000 {
        let mut batch = WriteBatch::new();
        for i in 0..1_000 {
            batch = batch.put(format!("settings/bulk/{chunk:03}/{i:04}"), vec![b'v'; 32]);
        }
        let records = a.store().apply(batch).await?;
        a.replicator()
            .replicate(records, spectrum::replication::AckLevel::Local, Duration::from_secs(5))
            .await?;
    }
    let target = a.store().digest().await?;
    // node-3 comes back empty (a new machine, or a lost disk) and must catch up.
    let addr: SocketAddr = c_url.trim_start_matches("http://").parse()?;
    let l = transport::bind(addr).await?;
    let start = Instant::now();
    let c = NodeBuilder::new(node_id(3), ClusterId::new("bench")?)
        .in_memory()
        .listener(l)
        .seeds([a.addr().clone(), b.addr().clone()])
        .start()
        .await?;
    loop {
        if c.store().digest().await?.dominates(&target) {
            break;
        }
        if start.elapsed() > Duration::from_secs(30) {
            return Err("node-3 did not catch up within 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!(
        "2. catch-up: an empty node converged on {WRITES} missed writes in {:.3} s (target <= 2 s)",
        start.elapsed().as_secs_f64()
    );
    futures::future::join_all([a, b, c].map(Node::shutdown_without_drain)).await;
    Ok(())
}

/// The same `keys` records, as if replicated long ago, for every node to start from.
fn preloaded(keys: usize) -> (Vec<Record>, VersionVector) {
    let origin: Origin = NodeId::new("origin").expect("valid id").into();
    let records: Vec<Record> = (0..keys)
        .map(|i| Record {
            key: format!("settings/preloaded/{i:06}"),
            value: Some(vec![b'v'; 32].into()),
            stamp: spectrum::core::Timestamp::new(1_000 + i as u64, 0),
            origin: origin.clone(),
            seq: i as u64 + 1,
            lineage: Default::default(),
        })
        .collect();
    let mut covers = VersionVector::default();
    covers.raise(&origin, keys as u64);
    (records, covers)
}

async fn idle_cost(n: usize, keys: usize) -> Result<f64, BoxError> {
    let (records, covers) = preloaded(keys);
    let bytes = Arc::new(AtomicU64::new(0));
    let interval = Duration::from_millis(250);
    let rt = tokio::runtime::Handle::current();
    let records = Arc::new(records);
    let nodes = start_nodes(n, counting_transport(bytes.clone()), interval, move |id, hlc| {
        let store = MemoryStore::new(id, hlc);
        tokio::task::block_in_place(|| rt.block_on(store.merge(records.to_vec(), &covers))).expect("preload");
        Arc::new(store) as Arc<dyn ConfigStore>
    })
    .await?;
    // Let membership records spread, then measure a quiet window.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let window = Duration::from_secs(3);
    let before = bytes.load(Ordering::Relaxed);
    tokio::time::sleep(window).await;
    let used = bytes.load(Ordering::Relaxed) - before;
    let rounds = n as f64 * window.as_secs_f64() / interval.as_secs_f64();
    futures::future::join_all(nodes.into_iter().map(Node::shutdown_without_drain)).await;
    Ok(used as f64 / rounds)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<(), BoxError> {
    let started = Instant::now();
    write_latency().await?;
    catch_up().await?;
    println!("3. idle cost, bytes per anti-entropy round (both directions, TCP payload):");
    println!("   {:>8} {:>14} {:>14}", "nodes", "1,000 keys", "100,000 keys");
    for n in [3usize, 20] {
        let small = idle_cost(n, 1_000).await?;
        let large = idle_cost(n, 100_000).await?;
        println!("   {n:>8} {small:>14.0} {large:>14.0}");
    }
    println!("(whole run {:.1} s)", started.elapsed().as_secs_f64());
    Ok(())
}
