//! A table of attacks on a running cluster (development mode: cluster key, no TLS).
//!
//! Each row is something a stranger tries; each asserts the refusal (its gRPC
//! code and who answered) and that nothing changed: every node's store is read
//! before and after and must be the same, and a stranger's `Sync` learns nothing.
//!
//! The stranger speaks the replication protocol with its own copy of the
//! messages (below), as anyone with the published `.proto` could.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use http::uri::PathAndQuery;
use spectrum::balancer::{BalancerConfig, BearerToken};
use spectrum::replication::{Record, VersionVector};
use spectrum::{Cluster, NodeBuilder};
use tonic::transport::Endpoint;

use crate::support::start_cluster;

/// The stranger's copy of the replication messages (`spectrum.replication.v1`).
mod wire {
    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct Stamp {
        #[prost(uint64, tag = "1")]
        pub(crate) wall_ms: u64,
        #[prost(uint32, tag = "2")]
        pub(crate) logical: u32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct Record {
        #[prost(string, tag = "1")]
        pub(crate) key: String,
        #[prost(bytes = "vec", optional, tag = "2")]
        pub(crate) value: Option<Vec<u8>>,
        #[prost(message, optional, tag = "3")]
        pub(crate) stamp: Option<Stamp>,
        #[prost(string, tag = "4")]
        pub(crate) origin: String,
        #[prost(uint64, tag = "5")]
        pub(crate) seq: u64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct Header {
        #[prost(string, tag = "1")]
        pub(crate) cluster_id: String,
        #[prost(string, tag = "2")]
        pub(crate) node_id: String,
        #[prost(string, tag = "3")]
        pub(crate) addr: String,
        #[prost(message, optional, tag = "4")]
        pub(crate) hlc: Option<Stamp>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct PushRequest {
        #[prost(message, optional, tag = "1")]
        pub(crate) header: Option<Header>,
        #[prost(message, repeated, tag = "2")]
        pub(crate) records: Vec<Record>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct PushResponse {}

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct SyncRequest {
        #[prost(message, optional, tag = "1")]
        pub(crate) header: Option<Header>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct SyncResponse {
        #[prost(message, repeated, tag = "2")]
        pub(crate) records: Vec<Record>,
    }
}

/// Which replication method the stranger calls.
#[derive(Debug, Clone, Copy)]
enum Method {
    /// `Sync` with an empty digest: asks for every record.
    Sync,
    /// `Push` of `settings/greeting` and a `membership/` record from a made-up origin.
    Push,
}

/// Where the stranger sends its call.
#[derive(Debug, Clone, Copy)]
enum Target {
    /// The balancer's public address.
    Balancer,
    /// A node's own port, directly.
    Node,
}

/// What the stranger presents as a peer credential.
#[derive(Debug, Clone, Copy)]
enum PeerHeader {
    None,
    /// A made-up `x-spectrum-peer` value of the right shape.
    Wrong,
}

/// One attack and the refusal it must meet.
#[derive(Debug)]
enum Attack {
    Replication {
        method: Method,
        target: Target,
        credential: PeerHeader,
    },
    /// The balancer's own `Stats`, on its public port, without its token.
    StatsWithoutToken,
    /// The same with a token that is not the balancer's.
    StatsWithWrongToken,
}

/// How a refusal must look.
struct Refusal {
    code: tonic::Code,
    /// Answered by the balancer itself (never reached a node).
    by_balancer: bool,
    /// Words the message must hold.
    says: &'static str,
}

fn table() -> Vec<(Attack, Refusal)> {
    use Attack::*;
    let denied = |says| Refusal { code: tonic::Code::PermissionDenied, by_balancer: true, says };
    let unauthenticated = |says| Refusal { code: tonic::Code::Unauthenticated, by_balancer: false, says };
    vec![
        (
            Replication { method: Method::Sync, target: Target::Balancer, credential: PeerHeader::None },
            denied("internal to the cluster"),
        ),
        (
            Replication { method: Method::Push, target: Target::Balancer, credential: PeerHeader::None },
            denied("internal to the cluster"),
        ),
        (
            Replication { method: Method::Sync, target: Target::Balancer, credential: PeerHeader::Wrong },
            denied("not reachable through the balancer"),
        ),
        (
            Replication { method: Method::Sync, target: Target::Node, credential: PeerHeader::None },
            unauthenticated("peer credential"),
        ),
        (
            Replication { method: Method::Push, target: Target::Node, credential: PeerHeader::None },
            unauthenticated("peer credential"),
        ),
        (
            Replication { method: Method::Sync, target: Target::Node, credential: PeerHeader::Wrong },
            unauthenticated("peer credential"),
        ),
        (
            Replication { method: Method::Push, target: Target::Node, credential: PeerHeader::Wrong },
            unauthenticated("peer credential"),
        ),
        (StatsWithoutToken, Refusal { code: tonic::Code::Unauthenticated, by_balancer: true, says: "token" }),
        (
            StatsWithWrongToken,
            Refusal { code: tonic::Code::Unauthenticated, by_balancer: true, says: "token" },
        ),
    ]
}

fn now_ms() -> u64 {
    u64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis())
        .unwrap()
}

fn header(cluster: &Cluster) -> Option<wire::Header> {
    Some(wire::Header {
        cluster_id: cluster.id().to_string(),
        node_id: "stranger".into(),
        addr: String::new(),
        hlc: Some(wire::Stamp { wall_ms: now_ms(), logical: 0 }),
    })
}

fn stranger_records() -> Vec<wire::Record> {
    let record = |key: &str, value: &[u8], seq| wire::Record {
        key: key.into(),
        value: Some(value.to_vec()),
        stamp: Some(wire::Stamp { wall_ms: now_ms() + 1_000, logical: 0 }),
        origin: "stranger".into(),
        seq,
    };
    vec![
        record("settings/greeting", b"\"hello from a stranger\"", 1),
        record("membership/evil", br#"{"id":"evil","addr":"http://127.0.0.1:9","state":"active"}"#, 2),
    ]
}

/// One unary call to `path` at `url`, with `metadata`; the status, the records a
/// `Sync` answered, and whether a node (not the balancer) answered.
async fn call<Req, Resp>(
    url: &str,
    path: &str,
    message: Req,
    metadata: &[(&'static str, String)],
) -> (Result<Resp, tonic::Status>, bool)
where
    Req: prost::Message + Send + Sync + 'static,
    Resp: prost::Message + Default + Send + Sync + 'static,
{
    let channel = Endpoint::from_shared(url.to_owned()).unwrap().connect().await.unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let mut request = tonic::Request::new(message);
    for (name, value) in metadata {
        request.metadata_mut().insert(*name, value.parse().unwrap());
    }
    let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
    match grpc.unary(request, PathAndQuery::try_from(path).unwrap(), codec).await {
        Ok(resp) => (Ok(resp.into_inner()), true),
        Err(status) => {
            let local = status.metadata().get("x-spectrum-balancer").is_some_and(|v| v == "local");
            (Err(status), !local)
        }
    }
}

/// Every node's records and digest, by node id.
async fn state(cluster: &Cluster) -> HashMap<String, (Vec<Record>, VersionVector)> {
    let mut out = HashMap::new();
    for node in cluster.nodes() {
        let records = node.store().scan("").await.unwrap();
        let digest = node.store().digest().await.unwrap();
        out.insert(node.id().to_string(), (records, digest));
    }
    out
}

/// Waits until every node holds the same records (startup writes have spread).
async fn converged(cluster: &Cluster) -> HashMap<String, (Vec<Record>, VersionVector)> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = state(cluster).await;
        let mut digests = s.values().map(|(_, d)| d);
        let first = digests.next().unwrap();
        if digests.all(|d| d == first) {
            return s;
        }
        assert!(Instant::now() < deadline, "the cluster did not converge: {s:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs `attack`; returns the status it met, whether a node answered, and how many
/// records it obtained.
async fn run(cluster: &Cluster, attack: &Attack) -> (tonic::Status, bool, usize) {
    let node_url = cluster.nodes().next().unwrap().url().to_owned();
    match attack {
        Attack::Replication { method, target, credential } => {
            let url = match target {
                Target::Balancer => cluster.balancer_url(),
                Target::Node => node_url,
            };
            let metadata = match credential {
                PeerHeader::None => vec![],
                PeerHeader::Wrong => vec![("x-spectrum-peer", "ab".repeat(32))],
            };
            match method {
                Method::Sync => {
                    let req = wire::SyncRequest { header: header(cluster) };
                    let (res, by_node) = call::<_, wire::SyncResponse>(
                        &url,
                        "/spectrum.replication.v1.Replication/Sync",
                        req,
                        &metadata,
                    )
                    .await;
                    match res {
                        Ok(answer) => (tonic::Status::ok(""), by_node, answer.records.len()),
                        Err(status) => (status, by_node, 0),
                    }
                }
                Method::Push => {
                    let req = wire::PushRequest { header: header(cluster), records: stranger_records() };
                    let (res, by_node) = call::<_, wire::PushResponse>(
                        &url,
                        "/spectrum.replication.v1.Replication/Push",
                        req,
                        &metadata,
                    )
                    .await;
                    (res.err().unwrap_or_else(|| tonic::Status::ok("")), by_node, 0)
                }
            }
        }
        Attack::StatsWithoutToken | Attack::StatsWithWrongToken => {
            use spectrum::balancer::stats::proto::{StatsRequest, StatsResponse};
            let metadata = match attack {
                Attack::StatsWithWrongToken => vec![("authorization", format!("Bearer {TOKEN}-not"))],
                _ => vec![],
            };
            let (res, by_node) = call::<_, StatsResponse>(
                &cluster.balancer_url(),
                "/spectrum.balancer.v1.Balancer/Stats",
                StatsRequest {},
                &metadata,
            )
            .await;
            match res {
                Ok(stats) => (tonic::Status::ok(""), by_node, stats.backends.len()),
                Err(status) => (status, by_node, 0),
            }
        }
    }
}

/// The management token of the attacked cluster, which its balancer also requires
/// for `Stats`.
const TOKEN: &str = "it-security-t0ken";

/// Three nodes with a cluster key and a management token, and a balancer that
/// requires the token for `Stats`, as `spectrum balancer` with a `token` runs.
async fn start_secured_cluster(name: &str) -> Cluster {
    let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("warn").try_init();
    let balancer = BalancerConfig { stats_token: Some(BearerToken::new(TOKEN)), ..BalancerConfig::default() };
    Cluster::builder(name.parse().unwrap())
        .size(3)
        .configure_nodes(|b: NodeBuilder| b.management_token(TOKEN.parse().unwrap()))
        .balancer_config(balancer)
        .start()
        .await
        .expect("cluster starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_attack_in_the_table_is_refused_and_changes_nothing() {
    let cluster = start_secured_cluster("it-security").await;
    let before = converged(&cluster).await;
    for (attack, refusal) in table() {
        let (status, by_node, obtained) = run(&cluster, &attack).await;
        assert_eq!(status.code(), refusal.code, "{attack:?}: {status:?}");
        assert!(status.message().contains(refusal.says), "{attack:?}: {status:?}");
        if refusal.by_balancer {
            assert!(!by_node, "{attack:?} reached a node: {status:?}");
        }
        assert_eq!(obtained, 0, "{attack:?} obtained data");
        // Give a merged push time to spread, were there one.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let after = state(&cluster).await;
        assert_eq!(after, before, "{attack:?} changed a node's store");
        for (node, (records, _)) in &after {
            assert!(
                records.iter().all(|r| r.origin.node().as_str() != "stranger"),
                "{attack:?}: {node} holds a stranger's record"
            );
        }
    }
    let metrics = cluster.balancer().metrics_text();
    assert!(metrics.contains("spectrum_balancer_internal_refused_total 3"), "counted:\n{metrics}");
    // The balancer's token does open Stats.
    let mut stats = spectrum::balancer::stats::StatsClient::connect(cluster.balancer_url())
        .await
        .unwrap()
        .with_token(TOKEN)
        .unwrap();
    assert_eq!(stats.stats().await.expect("Stats with the token").backends.len(), 3);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_with_the_cluster_s_credential_is_served_where_strangers_are_refused() {
    // The control row: the same call with the cluster's own credential works,
    // so the refusals above are the credential's doing.
    use std::sync::Arc;

    use spectrum::core::Hlc;
    use spectrum::replication::{AntiEntropy, ConfigStore, MemoryStore, PeerCredential, Replicator};

    let cluster = start_cluster("it-security-control").await;
    let node = cluster.nodes().next().unwrap();
    let key = node.context().cluster_key.clone().expect("the in-process cluster has a key");
    let hlc = Arc::new(Hlc::system());
    let store: Arc<dyn ConfigStore> = Arc::new(MemoryStore::new("friend".parse().unwrap(), hlc.clone()));
    let friend =
        AntiEntropy::builder(store.clone(), hlc, cluster.id().clone(), "127.0.0.1:1".parse().unwrap())
            .seeds(vec![node.addr().clone()])
            .credential(PeerCredential::from_bytes(*key.derive("spectrum replication peer v1")))
            .build();
    friend.sync_round().await.expect("a peer with the credential is served");
    assert!(!store.scan("membership/").await.unwrap().is_empty(), "it read the cluster's records");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn look_alike_replication_paths_through_the_balancer_reach_nothing() {
    let cluster = start_secured_cluster("it-security-paths").await;
    let before = converged(&cluster).await;
    for path in [
        "/spectrum.replication.v1.Replication/Sync?x=1",
        "//spectrum.replication.v1.Replication/Sync",
        "/spectrum%2Ereplication.v1.Replication/Sync",
        "/spectrum.replication.v1.Replication%2FSync",
        "/Spectrum.Replication.v1.Replication/Sync",
    ] {
        let req = wire::SyncRequest { header: header(&cluster) };
        let (res, _) = call::<_, wire::SyncResponse>(&cluster.balancer_url(), path, req, &[]).await;
        let status = res.expect_err(path);
        // Refused by the balancer, or unknown to the node's router: never served.
        assert!(
            matches!(status.code(), tonic::Code::PermissionDenied | tonic::Code::Unimplemented),
            "{path}: {status:?}"
        );
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(state(&cluster).await, before);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_without_a_cluster_key_authenticate_peers_with_their_management_token() {
    use spectrum::Node;

    let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("warn").try_init();
    let cluster: spectrum::core::ClusterId = "it-security-token".parse().unwrap();
    let node = |id: &str| {
        Node::builder(id.parse().unwrap(), cluster.clone())
            .in_memory()
            .sync_interval(Duration::from_millis(100))
            .management_token(TOKEN.parse().unwrap())
    };
    let a = node("a").start().await.unwrap();
    let b = node("b").seeds([a.addr().clone()]).start().await.unwrap();
    // The two token holders replicate: each comes to hold the other's membership.
    let deadline = Instant::now() + Duration::from_secs(10);
    while a.store().get("membership/b").await.unwrap().is_none() {
        assert!(Instant::now() < deadline, "b's membership never reached a");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = a.store().scan("").await.unwrap();
    let header = Some(wire::Header {
        cluster_id: cluster.to_string(),
        node_id: "stranger".into(),
        addr: String::new(),
        hlc: Some(wire::Stamp { wall_ms: now_ms(), logical: 0 }),
    });
    let sync = "/spectrum.replication.v1.Replication/Sync";
    let (res, _) = call::<_, wire::SyncResponse>(a.url(), sync, wire::SyncRequest { header }, &[]).await;
    assert_eq!(res.unwrap_err().code(), tonic::Code::Unauthenticated);
    assert_eq!(a.store().scan("").await.unwrap(), before);
    b.shutdown().await;
    a.shutdown().await;
}
