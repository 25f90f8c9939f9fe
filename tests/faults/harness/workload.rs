//! The workload: concurrent workers, each drawing operations from its own seeded
//! generator, through the balancer and straight to nodes, with the typed client
//! (`spectrum::client::AdminClient`) and the user service's client, every call
//! bounded by a timeout and recorded in the [`History`].
//!
//! Keys are of two families: `settings/w-<worker>-<n>` is written once by its
//! worker (then maybe deleted by it, and read back with the write's version
//! token), so that a lost write or a resurrected delete is certain; four
//! `settings/hot-<k>` keys are overwritten by every worker, so that concurrent
//! writers meet.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use spectrum::client::{AdminClient, ClientError, ReadAfter};
use spectrum::core::{PeerAddr, TransportConfig};
use spectrum::demo::{DataflowClient, proto::RunRequest};
use spectrum::replication::VersionToken;
use tonic::transport::Channel;

use super::history::{Ack, History, Op, OpKind, Outcome};
use super::process::{BALANCER_ADDR, DATAFLOW, TOKEN};

/// Longest a single call may take before it counts as failed.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Most operations one worker runs.
const MAX_OPS: u64 = 100_000;

/// The clients every worker shares (clones share connections).
#[derive(Debug, Clone)]
pub(crate) struct Clients {
    balancer: AdminClient,
    balancer_user: DataflowClient<Channel>,
    nodes: Vec<(String, AdminClient, DataflowClient<Channel>)>,
}

impl Clients {
    /// Lazily connected clients of the balancer and of each node (`(id, url)`).
    pub(crate) fn new(nodes: &[(String, String)]) -> Self {
        let balancer = lazy(&format!("http://{BALANCER_ADDR}"));
        let nodes = nodes
            .iter()
            .map(|(id, url)| {
                let channel = lazy(url);
                (id.clone(), admin(channel.clone()), DataflowClient::new(channel))
            })
            .collect();
        Self { balancer: admin(balancer.clone()), balancer_user: DataflowClient::new(balancer), nodes }
    }

    /// The management client of the balancer.
    pub(crate) fn balancer(&self) -> &AdminClient {
        &self.balancer
    }

    /// The management client of node `i`.
    pub(crate) fn node(&self, i: usize) -> &AdminClient {
        &self.nodes[i].1
    }
}

fn lazy(url: &str) -> Channel {
    let addr: PeerAddr = url.parse().expect("a node address");
    TransportConfig::default().endpoint(&addr).connect_lazy()
}

fn admin(channel: Channel) -> AdminClient {
    AdminClient::from_channel(channel, Some(TOKEN.parse().expect("a valid token")))
}

/// A worker's write-once key and the token of its latest write.
#[derive(Debug)]
struct OwnKey {
    key: String,
    token: VersionToken,
    deleted: bool,
}

/// One worker: its generator, its keys, the tokens of its hot writes.
struct Worker {
    id: u32,
    rng: StdRng,
    clients: Clients,
    history: Arc<History>,
    own: Vec<OwnKey>,
    hot: Vec<(String, VersionToken)>,
    written: u64,
}

/// Runs worker `id` until `stop` is set (at most [`MAX_OPS`] operations).
pub(crate) async fn worker(
    id: u32,
    seed: u64,
    clients: Clients,
    history: Arc<History>,
    stop: Arc<AtomicBool>,
) {
    let rng = StdRng::seed_from_u64(seed ^ (u64::from(id) << 32 | 0x5eed));
    let mut w = Worker { id, rng, clients, history, own: Vec::new(), hot: Vec::new(), written: 0 };
    for _ in 0..MAX_OPS {
        if stop.load(Ordering::Acquire) {
            return;
        }
        w.step().await;
        tokio::time::sleep(Duration::from_millis(w.rng.random_range(5..30))).await;
    }
}

impl Worker {
    /// Draws and runs one operation.
    async fn step(&mut self) {
        match self.rng.random_range(0..100) {
            0..30 => self.put_own().await,
            30..40 => self.put_hot().await,
            40..48 => self.delete_own().await,
            48..63 => self.read_own().await,
            63..68 => self.read_hot(false).await,
            68..73 => self.read_hot(true).await,
            73..77 => self.create_resource().await,
            77..92 => self.call(true).await,
            _ => self.call(false).await,
        }
    }

    fn ack(&mut self) -> Ack {
        [Ack::Local, Ack::Quorum, Ack::All][self.rng.random_range(0..3)]
    }

    /// The balancer (most of the time) or one node, by index.
    fn target(&mut self) -> Option<usize> {
        if self.rng.random_bool(0.7) {
            None
        } else {
            Some(self.rng.random_range(0..self.clients.nodes.len()))
        }
    }

    fn admin(&self, target: Option<usize>) -> (String, AdminClient) {
        match target {
            None => ("balancer".into(), self.clients.balancer.clone()),
            Some(i) => (self.clients.nodes[i].0.clone(), self.clients.nodes[i].1.clone()),
        }
    }

    async fn put_own(&mut self) {
        self.written += 1;
        let key = format!("settings/w-{}-{}", self.id, self.written);
        let value = format!("v-{}-{}", self.id, self.written);
        let (ack, target) = (self.ack(), self.target());
        let kind = OpKind::Put { key: key.clone(), value: value.clone(), ack };
        if let Some(token) = self.write(target, kind).await {
            self.own.push(OwnKey { key, token, deleted: false });
        }
    }

    async fn put_hot(&mut self) {
        self.written += 1;
        let key = format!("settings/hot-{}", self.rng.random_range(0..4));
        let value = format!("h-{}-{}", self.id, self.written);
        let (ack, target) = (self.ack(), self.target());
        if let Some(token) = self.write(target, OpKind::Put { key: key.clone(), value, ack }).await {
            self.hot.push((key, token));
        }
    }

    async fn delete_own(&mut self) {
        let live: Vec<usize> = (0..self.own.len()).filter(|&i| !self.own[i].deleted).collect();
        let Some(&i) = live.get(self.rng.random_range(0..live.len().max(1))) else { return };
        let (ack, target) = (self.ack(), self.target());
        let kind = OpKind::Delete { key: self.own[i].key.clone(), ack };
        if let Some(token) = self.write(target, kind).await {
            self.own[i].token = token;
            self.own[i].deleted = true;
        }
    }

    /// Runs a put or delete; the version token when it was acknowledged.
    async fn write(&mut self, target: Option<usize>, kind: OpKind) -> Option<VersionToken> {
        let (name, client) = self.admin(target);
        let invoked = self.history.now_ms();
        let answer = match &kind {
            OpKind::Put { key, value, ack } => bounded(client.put(key, value.as_bytes(), ack.level())).await,
            OpKind::Delete { key, ack } => bounded(client.delete(key, ack.level())).await,
            _ => unreachable!("write runs puts and deletes"),
        };
        let (outcome, token) = match answer {
            Ok(w) => (written(&w.write), Some(w.write.version)),
            Err(e) => (failure(&e), None),
        };
        self.record(name, kind, invoked, outcome);
        token
    }

    /// Reads one of this worker's keys after its latest write, through the balancer.
    async fn read_own(&mut self) {
        if self.own.is_empty() {
            return;
        }
        let i = self.rng.random_range(0..self.own.len());
        let (key, token) = (self.own[i].key.clone(), self.own[i].token.clone());
        self.read(key, Some(token)).await;
    }

    /// Reads a hot key, after this worker's latest write of it or not.
    async fn read_hot(&mut self, with_token: bool) {
        let pick = if with_token && !self.hot.is_empty() {
            Some(self.hot[self.rng.random_range(0..self.hot.len())].clone())
        } else {
            None
        };
        let (key, token) = match pick {
            Some((key, token)) => (key, Some(token)),
            None => (format!("settings/hot-{}", self.rng.random_range(0..4)), None),
        };
        self.read(key, token).await;
    }

    async fn read(&mut self, key: String, token: Option<VersionToken>) {
        let after = token.as_ref().map_or(ReadAfter::Anything, ReadAfter::from);
        let invoked = self.history.now_ms();
        let outcome = match bounded(self.clients.balancer.get(&key, after)).await {
            Ok(e) => Outcome::Read {
                version: e.version.to_string(),
                value: String::from_utf8_lossy(&e.value).into_owned(),
                stamp: (e.stamp_wall_ms, e.stamp_logical),
            },
            Err(e) => failure(&e),
        };
        let kind = OpKind::Get { key, after: token.map(|t| t.to_string()) };
        self.record("balancer".into(), kind, invoked, outcome);
    }

    async fn create_resource(&mut self) {
        self.written += 1;
        let name = format!("r-{}-{}", self.id, self.written);
        let definition = format!(
            r#"{{"name":"{name}","spec":{{"kind":"database","category":"postal","location":{{"kind":"local","path":"/tmp/{name}.txt"}}}}}}"#
        );
        let (ack, target) = (self.ack(), self.target());
        let (node, client) = self.admin(target);
        let invoked = self.history.now_ms();
        let outcome = match bounded(client.create_resource(definition, false, ack.level())).await {
            Ok(stored) => written(&stored.write),
            Err(e) => failure(&e),
        };
        self.record(node, OpKind::CreateResource { name, ack }, invoked, outcome);
    }

    /// Calls the user service: through the balancer (idempotent, retried there) or
    /// straight to one node (tried once).
    async fn call(&mut self, idempotent: bool) {
        let (target, mut client) = if idempotent {
            ("balancer".to_owned(), self.clients.balancer_user.clone())
        } else {
            let i = self.rng.random_range(0..self.clients.nodes.len());
            (self.clients.nodes[i].0.clone(), self.clients.nodes[i].2.clone())
        };
        let request = RunRequest { dataflow: DATAFLOW.into(), address: format!(" {} main st ", self.id) };
        let invoked = self.history.now_ms();
        let outcome = match tokio::time::timeout(CALL_TIMEOUT, client.run(request)).await {
            Ok(Ok(reply)) => Outcome::Served { by: reply.into_inner().served_by },
            Ok(Err(status)) => failure(&ClientError::from(status)),
            Err(_) => timed_out(),
        };
        self.record(target, OpKind::Call { idempotent }, invoked, outcome);
    }

    fn record(&self, target: String, kind: OpKind, invoked_ms: u64, outcome: Outcome) {
        let completed_ms = self.history.now_ms();
        let id = self.history.next_id();
        self.history.record(Op { id, worker: self.id, target, kind, invoked_ms, completed_ms, outcome });
    }
}

/// Runs a client call within [`CALL_TIMEOUT`].
async fn bounded<T>(call: impl Future<Output = Result<T, ClientError>>) -> Result<T, ClientError> {
    tokio::time::timeout(CALL_TIMEOUT, call).await.unwrap_or_else(|_| {
        Err(ClientError::Refused { code: tonic::Code::DeadlineExceeded, message: "client timeout".into() })
    })
}

fn written(w: &spectrum::client::WriteReceipt) -> Outcome {
    Outcome::Written {
        version: w.version.to_string(),
        acked: w.acked,
        members: w.members,
        served_by: w.served_by.to_string(),
    }
}

fn failure(e: &ClientError) -> Outcome {
    match e.code() {
        Some(tonic::Code::NotFound) => Outcome::NotFound,
        Some(code) => Outcome::Failed { code: format!("{code:?}"), message: e.to_string() },
        None => Outcome::Failed { code: "Connect".into(), message: e.to_string() },
    }
}

fn timed_out() -> Outcome {
    Outcome::Failed { code: "DeadlineExceeded".into(), message: "client timeout".into() }
}
