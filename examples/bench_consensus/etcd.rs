//! A three-member etcd cluster (Debian's `etcd-server`, installed when missing)
//! and a client of its gRPC API.
//!
//! **Why a hand-declared client.** The well-kept Rust client, `etcd-client`
//! (0.21, on tonic 0.14), compiles etcd's protos in its build script with
//! `tonic-prost-build`, which runs `protoc`: this project builds without it.
//! Compiling etcd's protos with protox would need them (and their gogoproto,
//! google.api and openapiv2 imports) in the root build script, for one example.
//! So the few messages used here are declared with prost's derive, field numbers
//! as in etcd's `api/etcdserverpb/rpc.proto`, and called with tonic's generic
//! unary client and prost codec: the same gRPC stack Spectrum's client uses. The
//! JSON gateway was not an option: it proxies to gRPC inside etcd, which would
//! charge etcd for a hop its real clients do not pay.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};

use crate::processes::{BoxError, Processes, free_addr, log_tail, member_ip};

/// `etcdserverpb.ResponseHeader`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ResponseHeader {
    #[prost(uint64, tag = "1")]
    pub(crate) cluster_id: u64,
    #[prost(uint64, tag = "2")]
    pub(crate) member_id: u64,
    #[prost(int64, tag = "3")]
    pub(crate) revision: i64,
}

/// `etcdserverpb.PutRequest` (without lease and flags).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct PutRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub(crate) key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub(crate) value: Vec<u8>,
}

/// `etcdserverpb.PutResponse` (the header only).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct PutResponse {
    #[prost(message, optional, tag = "1")]
    pub(crate) header: Option<ResponseHeader>,
}

/// `etcdserverpb.Compare` with target `MOD` (2) and result `EQUAL` (0).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Compare {
    #[prost(int32, tag = "1")]
    pub(crate) result: i32,
    #[prost(int32, tag = "2")]
    pub(crate) target: i32,
    #[prost(bytes = "vec", tag = "3")]
    pub(crate) key: Vec<u8>,
    /// `target_union.mod_revision`.
    #[prost(int64, optional, tag = "6")]
    pub(crate) mod_revision: Option<i64>,
}

/// `etcdserverpb.RequestOp`, its `request_put` case.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct RequestOp {
    #[prost(message, optional, tag = "2")]
    pub(crate) request_put: Option<PutRequest>,
}

/// `etcdserverpb.TxnRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct TxnRequest {
    #[prost(message, repeated, tag = "1")]
    pub(crate) compare: Vec<Compare>,
    #[prost(message, repeated, tag = "2")]
    pub(crate) success: Vec<RequestOp>,
    #[prost(message, repeated, tag = "3")]
    pub(crate) failure: Vec<RequestOp>,
}

/// `etcdserverpb.TxnResponse` (header and verdict).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct TxnResponse {
    #[prost(message, optional, tag = "1")]
    pub(crate) header: Option<ResponseHeader>,
    #[prost(bool, tag = "2")]
    pub(crate) succeeded: bool,
}

/// `etcdserverpb.StatusRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct StatusRequest {}

/// `etcdserverpb.StatusResponse` (what the benchmark reads).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct StatusResponse {
    #[prost(message, optional, tag = "1")]
    pub(crate) header: Option<ResponseHeader>,
    #[prost(string, tag = "2")]
    pub(crate) version: String,
    #[prost(uint64, tag = "4")]
    pub(crate) leader: u64,
}

/// A connection to one etcd member.
#[derive(Clone)]
pub(crate) struct EtcdClient {
    channel: Channel,
}

impl EtcdClient {
    async fn unary<Q, R>(&self, path: &'static str, request: Q) -> Result<R, BoxError>
    where
        Q: prost::Message + Send + Sync + 'static,
        R: prost::Message + Default + Send + Sync + 'static,
    {
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        grpc.ready().await?;
        let codec = tonic_prost::ProstCodec::<Q, R>::default();
        let response =
            grpc.unary(tonic::Request::new(request), PathAndQuery::from_static(path), codec).await?;
        Ok(response.into_inner())
    }

    /// `KV/Put`; the revision it made (the key's new mod revision).
    pub(crate) async fn put(&self, key: &[u8], value: &[u8]) -> Result<i64, BoxError> {
        let request = PutRequest { key: key.to_vec(), value: value.to_vec() };
        let response: PutResponse = self.unary("/etcdserverpb.KV/Put", request).await?;
        Ok(response.header.map_or(0, |h| h.revision))
    }

    /// `KV/Txn`: put `value` at `key` if its mod revision is still `revision`;
    /// the new revision when it was, `None` when it was not.
    pub(crate) async fn compare_and_set(
        &self,
        key: &[u8],
        revision: i64,
        value: &[u8],
    ) -> Result<Option<i64>, BoxError> {
        let request = TxnRequest {
            compare: vec![Compare { result: 0, target: 2, key: key.to_vec(), mod_revision: Some(revision) }],
            success: vec![RequestOp {
                request_put: Some(PutRequest { key: key.to_vec(), value: value.to_vec() }),
            }],
            failure: vec![],
        };
        let response: TxnResponse = self.unary("/etcdserverpb.KV/Txn", request).await?;
        Ok(response.succeeded.then(|| response.header.map_or(0, |h| h.revision)))
    }

    /// `Maintenance/Status`.
    pub(crate) async fn status(&self) -> Result<StatusResponse, BoxError> {
        self.unary("/etcdserverpb.Maintenance/Status", StatusRequest {}).await
    }
}

/// The etcd cluster: a client per member, and which one leads.
pub(crate) struct EtcdCluster {
    pub(crate) members: Vec<EtcdClient>,
    pub(crate) leader: usize,
    pub(crate) version: String,
}

/// Makes sure Debian's `etcd` is installed, installing `etcd-server` with apt-get
/// (and saying so) when it is not.
pub(crate) fn ensure_etcd() -> Result<(), BoxError> {
    let present = || Command::new("etcd").arg("--version").output().is_ok_and(|o| o.status.success());
    if present() {
        return Ok(());
    }
    println!("etcd is not installed: installing Debian's etcd-server (apt-get install -y etcd-server)");
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let _ = apt(&["update"]) && apt(&["install", "-y", "etcd-server"]);
    if present() {
        Ok(())
    } else {
        Err("etcd is the baseline and could not be installed: run `apt-get install -y etcd-server` as root"
            .into())
    }
}

/// Starts three etcd members on 127.0.0.1, .2 and .3, each with its data
/// directory under `dir` (etcd fsyncs its write-ahead log before it answers a
/// write); returns once a leader is elected and a write succeeds.
pub(crate) async fn start(dir: &Path, processes: &mut Processes) -> Result<EtcdCluster, BoxError> {
    let mut clients = Vec::new();
    let mut peers = Vec::new();
    for i in 0..3 {
        clients.push(free_addr(member_ip(i))?);
        peers.push(free_addr(member_ip(i))?);
    }
    let initial: Vec<String> = (0..3).map(|i| format!("etcd-{}=http://{}", i + 1, peers[i])).collect();
    for i in 0..3 {
        let name = format!("etcd-{}", i + 1);
        let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
        let child = Command::new("etcd")
            .arg(format!("--name={name}"))
            .arg(format!("--data-dir={}", dir.join(&name).display()))
            .arg(format!("--listen-client-urls=http://{}", clients[i]))
            .arg(format!("--advertise-client-urls=http://{}", clients[i]))
            .arg(format!("--listen-peer-urls=http://{}", peers[i]))
            .arg(format!("--initial-advertise-peer-urls=http://{}", peers[i]))
            .arg(format!("--initial-cluster={}", initial.join(",")))
            .arg("--initial-cluster-state=new")
            .arg("--initial-cluster-token=bench-consensus")
            .args(["--logger=zap", "--log-level=warn"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot run etcd: {e}"))?;
        processes.push(child);
    }
    let mut members = Vec::new();
    for addr in &clients {
        let channel = Endpoint::from_shared(format!("http://{addr}"))?.tcp_nodelay(true).connect_lazy();
        members.push(EtcdClient { channel });
    }
    wait_ready(dir, &members, processes).await
}

/// Waits until every member answers Status naming the same leader and a put
/// through each succeeds.
async fn wait_ready(
    dir: &Path,
    members: &[EtcdClient],
    processes: &mut Processes,
) -> Result<EtcdCluster, BoxError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    loop {
        processes.all_running().map_err(|e| format!("{e}: {}", log_tail(&dir.join("etcd-1.log"))))?;
        if Instant::now() > deadline {
            return Err(format!("etcd never became ready ({last}); logs in {}", dir.display()).into());
        }
        match ready_once(members).await {
            Ok(cluster) => return Ok(cluster),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn ready_once(members: &[EtcdClient]) -> Result<EtcdCluster, BoxError> {
    let mut leader = None;
    let mut version = String::new();
    for (i, member) in members.iter().enumerate() {
        let status = member.status().await?;
        if status.leader == 0 {
            return Err("no leader yet".into());
        }
        if status.header.as_ref().is_some_and(|h| h.member_id == status.leader) {
            leader = Some(i);
        }
        version = status.version;
        member.put(b"bench/ready", b"1").await?;
    }
    let leader = leader.ok_or("the leader is not one of the three members")?;
    Ok(EtcdCluster { members: members.to_vec(), leader, version })
}
