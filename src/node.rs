//! [`Node`] and [`NodeBuilder`]: one member of a cluster, assembled.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use spectrum_core::channels::ChannelCache;
use spectrum_core::tls::{ClientAuth, ReloadableServerTls, TlsConfig};
use spectrum_core::transport::{self, Listener};
use spectrum_core::{
    Clock, ClusterId, Hlc, Member, MemberState, NodeId, PeerAddr, SystemClock, TransportConfig,
};
use spectrum_replication::{
    AckLevel, AntiEntropy, ChangeLogLimits, ClockCheck, Condition, ConfigStore, MemoryStore, Outcome,
    PeerCredential, RaftReplicator, RaftSettings, RedbStore, ReplicationMode, Replicator, StoreError,
    Transaction, WriteBatch, horizon::FirstWrite,
};
use spectrum_resources::{ClusterKey, CompositeResolver, ResourceResolver};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::service::{Routes, RoutesBuilder};
use tracing::{debug, error, info, warn};

use crate::admin::Admin;
use crate::auth::{BearerAuth, Token, UserIndex};
pub use crate::context::NodeContext;
use crate::error::NodeError;
use crate::kill::Killable;
use crate::management::ManagementService;
use crate::readiness::{self, Readiness, WatchedStore};
use crate::{console, http_api};

/// The encoded descriptors of every public Spectrum protocol (management, demo; not
/// replication, which is internal), served by gRPC reflection.
pub(crate) const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/spectrum_descriptor.bin"));

/// Adds one application service to a node's routes when it starts. Held in a
/// mutex only to make the builder `Sync`, so that `start`'s future, which holds
/// `&self` across awaits, is `Send` without asking embedders' closures to be
/// `Sync`: each is taken out once, by value.
type ServiceFactory = parking_lot::Mutex<Box<dyn FnOnce(&NodeContext, &mut RoutesBuilder) + Send>>;

/// Builds a node's store from its id and its clock (the store must stamp with the
/// node's own HLC, the one replication observes peers with).
/// In a mutex for the same reason as [`ServiceFactory`].
type StoreFactory =
    parking_lot::Mutex<Box<dyn FnOnce(NodeId, Arc<Hlc>) -> Result<Arc<dyn ConfigStore>, StoreError> + Send>>;

/// Where a node keeps its copy of the configuration database.
enum StoreChoice {
    /// [`RedbStore`] in this directory (file `config.redb`).
    Durable(PathBuf),
    /// [`MemoryStore`]: lost on restart.
    Memory,
    /// Built by the application.
    Custom(StoreFactory),
}

impl fmt::Debug for StoreChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreChoice::Durable(dir) => write!(f, "Durable({})", dir.display()),
            StoreChoice::Memory => f.write_str("Memory"),
            StoreChoice::Custom(_) => f.write_str("Custom"),
        }
    }
}

/// How long a starting node waits for its store file to be released.
const STORE_IN_USE_WAIT: Duration = Duration::from_secs(10);

/// How long a stopping node keeps serving after it marked itself draining.
pub const DEFAULT_DRAIN_GRACE: Duration = Duration::from_secs(2);

/// How long a node with an empty store waits between attempts to reach a peer.
const STARTUP_PULL_RETRY: Duration = Duration::from_millis(500);
/// How often a node whose clock is fenced looks again before it records
/// itself in membership.
const CLOCK_FENCE_RECHECK: Duration = Duration::from_millis(500);
/// How often a Raft node still joining looks whether the group refuses it
/// (readiness then says why).
const JOIN_REFUSAL_POLL: Duration = Duration::from_secs(1);
/// How long a starting node waits for one peer's answer before trying the next.
const STARTUP_PULL_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a starting node waits for the node at its recorded address to say
/// who it is (see `Joiner::refuse_if_id_in_use`).
const ID_PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a Raft node just taken into the group waits, per attempt, to
/// hold everything the group committed before it reads its own record.
const CATCH_UP_WAIT: Duration = Duration::from_secs(5);
/// Longest a membership record waits for consensus (Raft mode).
const MEMBERSHIP_COMMIT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a stopping node tries to record itself `draining` before it
/// drains and stops anyway.
const DRAINING_RECORD_TIMEOUT: Duration = Duration::from_secs(2);

/// The file name of the durable store inside a node's data directory.
pub const STORE_FILE: &str = "config.redb";

/// Builds a [`Node`]: identity, listening address, peers, store, and the
/// application's own gRPC services.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use spectrum::NodeBuilder;
///
/// let node = NodeBuilder::new("node-1".parse()?, "prod".parse()?)
///     .listen("127.0.0.1:7001".parse()?)
///     .seeds(["http://127.0.0.1:7002".parse()?, "http://127.0.0.1:7003".parse()?])
///     .start()
///     .await?;
/// println!("serving at {}", node.url());
/// node.shutdown().await;
/// # Ok(()) }
/// ```
pub struct NodeBuilder {
    id: NodeId,
    cluster: ClusterId,
    listen: SocketAddr,
    listener: Option<Listener>,
    advertise: Option<PeerAddr>,
    seeds: Vec<PeerAddr>,
    store: StoreChoice,
    change_log: Option<ChangeLogLimits>,
    clock: Arc<dyn Clock>,
    max_clock_offset: Duration,
    transport: TransportConfig,
    tls: Option<TlsConfig>,
    sync_interval: Duration,
    write_timeout: Duration,
    drain_grace: Duration,
    leave_on_terminate: bool,
    resolver: Arc<dyn ResourceResolver>,
    token: Option<Token>,
    cluster_key: Option<Arc<ClusterKey>>,
    previous_keys: Vec<Arc<ClusterKey>>,
    services: Vec<ServiceFactory>,
    replication: ReplicationMode,
    raft_settings: RaftSettings,
    raft_tombstone_keep: Option<u64>,
    dataflow_check: Option<crate::admin::DataflowCheck>,
}

impl fmt::Debug for NodeBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeBuilder")
            .field("id", &self.id)
            .field("cluster", &self.cluster)
            .field("listen", &self.listen)
            .field("advertise", &self.advertise)
            .field("seeds", &self.seeds)
            .field("store", &self.store)
            .field("services", &self.services.len())
            .field("replication", &self.replication)
            .finish_non_exhaustive()
    }
}

impl NodeBuilder {
    /// A builder for node `id` of cluster `cluster`, listening on
    /// `127.0.0.1:0` (an ephemeral loopback port) unless told otherwise, and
    /// keeping its configuration database durably in
    /// `spectrum-data/<cluster>/<id>/` unless told otherwise
    /// ([`data_dir`](Self::data_dir), [`in_memory`](Self::in_memory)).
    pub fn new(id: NodeId, cluster: ClusterId) -> Self {
        let default_dir = PathBuf::from("spectrum-data").join(cluster.as_str()).join(id.as_str());
        Self {
            id,
            cluster,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            listener: None,
            advertise: None,
            seeds: Vec::new(),
            store: StoreChoice::Durable(default_dir),
            change_log: None,
            clock: Arc::new(SystemClock),
            max_clock_offset: spectrum_core::hlc::DEFAULT_MAX_OFFSET,
            transport: TransportConfig::default(),
            tls: None,
            sync_interval: Duration::from_secs(1),
            write_timeout: Duration::from_secs(5),
            drain_grace: DEFAULT_DRAIN_GRACE,
            leave_on_terminate: false,
            resolver: Arc::new(CompositeResolver::standard()),
            token: None,
            cluster_key: None,
            previous_keys: Vec::new(),
            services: Vec::new(),
            replication: ReplicationMode::LastWriterWins,
            raft_settings: RaftSettings::default(),
            raft_tombstone_keep: None,
            dataflow_check: None,
        }
    }

    /// How the cluster replicates (default [`ReplicationMode::LastWriterWins`]):
    /// [`ReplicationMode::Raft`] sends every write through consensus (a
    /// majority must be up to write) and enables compare-and-set, transactions
    /// and consistent reads. Chosen when the cluster is created: every node
    /// must be given the same mode.
    pub fn replication(mut self, mode: ReplicationMode) -> Self {
        self.replication = mode;
        self
    }

    /// Whether [`Node::shutdown`] in Raft mode also takes this node out of the
    /// voters ([`RaftReplicator::leave`]); default `false`, as Consul's
    /// `leave_on_terminate` for servers. Kept a voter, a stopped node is a
    /// failure the group tolerates, and a cluster whose nodes are all stopped,
    /// one after another, starts again in any order. Leaving on every stop
    /// would shrink the group to the last node stopped, which would then have
    /// to start first. Set it for a node stopped to be retired; `spectrum node
    /// remove ID` retires a node without stopping it. No effect in
    /// last-writer-wins mode, where every stop records the node as left.
    pub fn leave_on_terminate(mut self, leave: bool) -> Self {
        self.leave_on_terminate = leave;
        self
    }

    /// Raft mode's timing and log compaction (default [`RaftSettings::default`]).
    pub fn raft_settings(mut self, settings: RaftSettings) -> Self {
        self.raft_settings = settings;
        self
    }

    /// Raft mode: keeps a delete's tombstone until its log entry is `entries`
    /// behind the applied index (default
    /// [`DEFAULT_TOMBSTONE_KEEP`](spectrum_replication::raft::DEFAULT_TOMBSTONE_KEEP));
    /// see [`RaftReplicatorBuilder::tombstone_keep`](spectrum_replication::RaftReplicatorBuilder::tombstone_keep).
    pub fn raft_tombstone_keep(mut self, entries: u64) -> Self {
        self.raft_tombstone_keep = Some(entries);
        self
    }

    /// The address to listen on. An unspecified address (`0.0.0.0`, `[::]`)
    /// listens on every interface and needs [`advertise`](Self::advertise).
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// The address other members and balancers reach this node at, published in
    /// membership and to peers (default: the listen address). Set it when the node
    /// listens on `0.0.0.0` or behind an address translation; a host name
    /// (`node-1.spectrum.svc:7001`) is resolved by whoever connects.
    pub fn advertise(mut self, addr: PeerAddr) -> Self {
        self.advertise = Some(addr);
        self
    }

    /// Serve on an already bound listener (so its address can be shared with peers
    /// before the node starts).
    pub fn listener(mut self, listener: Listener) -> Self {
        self.listener = Some(listener);
        self
    }

    /// Addresses of other members to contact first.
    pub fn seeds(mut self, seeds: impl IntoIterator<Item = PeerAddr>) -> Self {
        self.seeds = seeds.into_iter().collect();
        self
    }

    /// Keeps the configuration database durably in `dir` (created if missing): a
    /// [`RedbStore`] where every acknowledged write is on disk and survives
    /// `kill -9`. This is the default, in `spectrum-data/<cluster>/<id>/`.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.store = StoreChoice::Durable(dir.into());
        self
    }

    /// Keeps the configuration database in memory only ([`MemoryStore`]): for
    /// tests and demos; a restarted node starts empty and pulls from its peers.
    pub fn in_memory(mut self) -> Self {
        self.store = StoreChoice::Memory;
        self
    }

    /// Uses a store the application builds from the node's id and HLC (a store
    /// must stamp with the node's own clock).
    pub fn store_with<F>(mut self, make: F) -> Self
    where
        F: FnOnce(NodeId, Arc<Hlc>) -> Result<Arc<dyn ConfigStore>, StoreError> + Send + 'static,
    {
        self.store = StoreChoice::Custom(parking_lot::Mutex::new(Box::new(make)));
        self
    }

    /// The physical clock under the node's HLC (default: the system clock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// What the store's change log keeps, by count and by age: how far back a
    /// watcher can resume (default: [`ChangeLogLimits::default`] for the durable
    /// store, 4096 changes for the in-memory one). Ignored for a store from
    /// [`store_with`](Self::store_with), which sets its own.
    pub fn change_log(mut self, limits: ChangeLogLimits) -> Self {
        self.change_log = Some(limits);
        self
    }

    /// The largest clock offset tolerated from a peer (default 500 ms).
    pub fn max_clock_offset(mut self, offset: Duration) -> Self {
        self.max_clock_offset = offset;
        self
    }

    /// Transport settings for the node's server and its channels to peers.
    pub fn transport(mut self, transport: TransportConfig) -> Self {
        self.transport = transport;
        self
    }

    /// Serves and calls over TLS with the cluster's certificates (see
    /// [`spectrum_core::tls`]): the node's port serves TLS only; replication,
    /// resource checks and discovery reads to peers go over mutual TLS (peers reach
    /// the same `host:port` as `https://`). Clients may connect with the CA
    /// alone; replication calls must present a certificate naming the node id they
    /// claim. Applies to the [`transport`](Self::transport) set before or after.
    /// The certificate served can be replaced while the node runs
    /// ([`Node::set_tls`], [`Node::reload_tls`]).
    pub fn tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The anti-entropy interval (default 1 s, jittered).
    pub fn sync_interval(mut self, interval: Duration) -> Self {
        self.sync_interval = interval;
        self
    }

    /// How long a management write waits for its acknowledgement level (default 5 s).
    pub fn write_timeout(mut self, timeout: Duration) -> Self {
        self.write_timeout = timeout;
        self
    }

    /// How long [`Node::shutdown`] keeps serving after marking the node draining,
    /// so balancers stop sending it requests before it stops (default 2 s: two
    /// membership polls of a `spectrum balancer`). Zero stops at once.
    pub fn drain_grace(mut self, grace: Duration) -> Self {
        self.drain_grace = grace;
        self
    }

    /// The resource resolver (default: [`CompositeResolver::standard`]).
    pub fn resolver(mut self, resolver: Arc<dyn ResourceResolver>) -> Self {
        self.resolver = resolver;
        self
    }

    /// Requires every management call to carry `authorization: Bearer <token>`.
    /// Give every node of a cluster the same token: it is accepted by every node,
    /// whichever path a request takes. It must not be a user's token (`spt_…`):
    /// [`start`](Self::start) refuses one, since revoking that user would leave
    /// it admitted as the bootstrap admin.
    pub fn management_token(mut self, token: Token) -> Self {
        self.token = Some(token);
        self
    }

    /// The cluster key that seals resource secrets at rest. Give every node of a
    /// cluster the same key; a node without it lists secrets redacted, cannot use
    /// them, and refuses to store new ones.
    pub fn cluster_key(mut self, key: ClusterKey) -> Self {
        self.cluster_key = Some(Arc::new(key));
        self
    }

    /// Previous cluster keys, during a key rotation: secrets sealed with them still
    /// open, and peers still on one of them still replicate with this node (see
    /// the README's key rotation steps). Remove them once every secret is resealed
    /// (`spectrum key rotate`) and every node has the new key.
    pub fn previous_cluster_keys(mut self, keys: impl IntoIterator<Item = ClusterKey>) -> Self {
        self.previous_keys = keys.into_iter().map(Arc::new).collect();
        self
    }

    /// Refuses dataflow definitions that `check` refuses (whether created,
    /// written raw or imported), answering `INVALID_ARGUMENT` with its reason;
    /// without one, any JSON object is stored as a dataflow. Give the schema of
    /// the service that runs them: the demo's is
    /// [`demo::check_dataflow`](crate::demo::check_dataflow), which the
    /// `spectrum` command's nodes use.
    pub fn dataflow_check(
        mut self,
        check: impl Fn(&serde_json::Value) -> Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        self.dataflow_check = Some(Arc::new(check));
        self
    }

    /// Adds one of the application's tonic services.
    pub fn add_service<S>(self, service: S) -> Self
    where
        S: tower::Service<http::Request<tonic::body::Body>, Error = std::convert::Infallible>
            + tonic::server::NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Response: axum::response::IntoResponse,
        S::Future: Send + 'static,
    {
        self.add_service_with(move |_| service)
    }

    /// Adds one of the application's tonic services, built from the node's
    /// [`NodeContext`] when the node starts (for services that read the
    /// configuration database or resolve resources).
    pub fn add_service_with<S, F>(mut self, make: F) -> Self
    where
        F: FnOnce(&NodeContext) -> S + Send + 'static,
        S: tower::Service<http::Request<tonic::body::Body>, Error = std::convert::Infallible>
            + tonic::server::NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Response: axum::response::IntoResponse,
        S::Future: Send + 'static,
    {
        self.services.push(parking_lot::Mutex::new(Box::new(move |ctx, routes| {
            routes.add_service(make(ctx));
        })));
        self
    }

    /// The credential this node's replication calls carry (see
    /// [`peer_credential`]), with those of its previous cluster keys, still
    /// sent and accepted while keys rotate; `None` without one.
    fn peer_credentials(&self) -> Option<(PeerCredential, Vec<PeerCredential>)> {
        let tls = self.transport.tls.is_some();
        let credential = peer_credential(&self.id, self.cluster_key.as_deref(), self.token.as_ref(), tls)?;
        let previous = self
            .previous_keys
            .iter()
            .map(|k| PeerCredential::from_bytes(*k.derive(PEER_CREDENTIAL_PURPOSE)))
            .collect();
        Some((credential, previous))
    }

    /// The replicator of this node: seeded, authenticated with the peer credential
    /// when the node has a cluster key or token.
    fn anti_entropy(
        &self,
        store: &Arc<dyn ConfigStore>,
        hlc: &Arc<Hlc>,
        addr: &PeerAddr,
        channels: &Arc<ChannelCache>,
    ) -> AntiEntropy {
        let mut builder =
            AntiEntropy::builder(store.clone(), hlc.clone(), self.cluster.clone(), addr.clone())
                .seeds(self.seeds.clone())
                .interval(self.sync_interval)
                .transport(self.transport.clone())
                .channels(channels.clone());
        if let Some((credential, previous)) = self.peer_credentials() {
            builder = builder.credential(credential).previous_credentials(previous);
        }
        builder.build()
    }

    /// The replicator of this node's mode: anti-entropy (built in both modes:
    /// a last-writer-wins node runs it) and, in Raft mode, the Raft node.
    async fn replicators(
        &self,
        store: &Arc<dyn ConfigStore>,
        hlc: &Arc<Hlc>,
        addr: &PeerAddr,
        channels: &Arc<ChannelCache>,
        raft_dir: Option<PathBuf>,
    ) -> Result<Replication, NodeError> {
        let anti_entropy = self.anti_entropy(store, hlc, addr, channels);
        let raft = match self.replication {
            ReplicationMode::Raft => Some(self.raft(store, hlc, addr, channels, raft_dir).await?),
            _ => None,
        };
        let replicator: Arc<dyn Replicator> = match &raft {
            Some(raft) => Arc::new(raft.clone()),
            None => Arc::new(anti_entropy.clone()),
        };
        Ok(Replication { anti_entropy, raft, replicator })
    }

    /// The Raft replicator of this node (Raft mode): log in `dir` (in memory
    /// without one), authenticated like anti-entropy.
    async fn raft(
        &self,
        store: &Arc<dyn ConfigStore>,
        hlc: &Arc<Hlc>,
        addr: &PeerAddr,
        channels: &Arc<ChannelCache>,
        dir: Option<PathBuf>,
    ) -> Result<RaftReplicator, NodeError> {
        let mut builder =
            RaftReplicator::builder(store.clone(), hlc.clone(), self.cluster.clone(), addr.clone())
                .seeds(self.seeds.clone())
                .transport(self.transport.clone())
                .channels(channels.clone())
                .settings(self.raft_settings.clone());
        if let Some(keep) = self.raft_tombstone_keep {
            builder = builder.tombstone_keep(keep);
        }
        if let Some(dir) = dir {
            builder = builder.data_dir(dir);
        }
        if let Some((credential, previous)) = self.peer_credentials() {
            builder = builder.credential(credential).previous_credentials(previous);
        }
        Ok(builder.build().await?)
    }

    /// Every service of the node's port: health, reflection, management (gRPC,
    /// and HTTP/JSON beside it, one check of callers for both), replication, the
    /// user's services, and plain HTTP `/healthz`, `/readyz` and the console.
    async fn routes(
        &mut self,
        ctx: &NodeContext,
        admin: Admin,
        anti_entropy: &AntiEntropy,
        raft: Option<&RaftReplicator>,
        readiness: &Arc<Readiness>,
        health_service: tonic_health::pb::health_server::HealthServer<
            impl tonic_health::pb::health_server::Health,
        >,
    ) -> Result<Routes, NodeError> {
        let max = self.transport.max_message_bytes;
        let auth = BearerAuth::with_users(self.token.clone(), UserIndex::follow(&ctx.store).await?);
        let http_api = http_api::routes(admin.clone(), auth.clone(), max);
        let mut routes = RoutesBuilder::default();
        routes.add_service(health_service).add_service(reflection()?).add_service(
            tonic::service::interceptor::InterceptedService::new(
                crate::management::idempotency::Idempotent(ManagementService::new(admin).into_server(max)),
                auth,
            ),
        );
        // Raft mode takes writes only through its log: no anti-entropy pushes.
        match raft {
            Some(raft) => routes.add_service(raft.service().into_server(max)),
            None => routes.add_service(anti_entropy.service().into_server(max)),
        };
        for make in std::mem::take(&mut self.services) {
            make.into_inner()(ctx, &mut routes);
        }
        let plain = readiness::routes(readiness.clone()).merge(http_api).merge(console::routes());
        Ok(Routes::from(routes.routes().into_axum_router().merge(plain).fallback(no_such_path)))
    }

    /// Binds (unless a listener was given), starts serving, records this node in
    /// membership under its advertise address and starts anti-entropy.
    ///
    /// The listen address serves the gRPC services over h2c and, over plain HTTP/1.1
    /// or h2c, `GET /healthz` and `GET /readyz` (see [`crate::readiness`]), the
    /// HTTP/JSON management API at `/api/v1/` ([`crate::http_api`]) and the browser
    /// console at `/console` ([`crate::console`]); with
    /// [`tls`](Self::tls), the same over TLS only (ALPN `h2` and `http/1.1`).
    ///
    /// # Errors
    ///
    /// [`NodeError::Config`] naming `advertise` when the node listens on an
    /// unspecified address (`0.0.0.0`, `[::]`) and no advertise address is set,
    /// or naming `token` when the management token is a user's token (`spt_…`);
    /// [`NodeError`] when the address cannot be bound or membership cannot be written.
    pub async fn start(mut self) -> Result<Node, NodeError> {
        if self.token.as_ref().is_some_and(|t| t.expose().starts_with(crate::auth::USER_TOKEN_PREFIX)) {
            return Err(NodeError::Config {
                field: "token",
                reason: format!(
                    "the bootstrap token is a user's token ({}…): a user's token can be revoked, the \
                     bootstrap token cannot; give the node a token of its own",
                    crate::auth::USER_TOKEN_PREFIX
                ),
            });
        }
        if let Some(tls) = self.tls.take() {
            self.transport.tls = Some(tls.client_auth(ClientAuth::Optional));
        }
        let listen = self.listener.as_ref().map_or(self.listen, |l| l.local_addr);
        let advertise = advertised(listen, self.advertise.take())?;
        let listener = match self.listener.take() {
            Some(l) => l,
            None => transport::bind(self.listen).await?,
        };
        let addr = advertise.unwrap_or_else(|| listener.addr());
        let hlc = Arc::new(Hlc::with_max_offset(self.clock.clone(), self.max_clock_offset));
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        let ready = Arc::new(AtomicBool::new(false));
        let readiness = Arc::new(Readiness::new(ready.clone(), health_reporter.clone()));
        // Not serving until this node has joined (see `Joiner::finish`); the reporter
        // starts out SERVING.
        readiness.publish().await;
        let raft_dir = match &self.store {
            StoreChoice::Durable(dir) => Some(dir.clone()),
            StoreChoice::Memory | StoreChoice::Custom(_) => None,
        };
        let store = std::mem::replace(&mut self.store, StoreChoice::Memory)
            .open(&self.id, &hlc, self.change_log)
            .await?;
        let store: Arc<dyn ConfigStore> = Arc::new(WatchedStore::new(store, readiness.clone()));
        // One channel per peer for everything this node sends them (replication,
        // resource checks), so a rotated client certificate reaches all of it.
        let channels = Arc::new(ChannelCache::new(self.transport.clone()));
        let Replication { anti_entropy, raft, replicator } =
            self.replicators(&store, &hlc, &addr, &channels, raft_dir).await?;
        // Last-writer-wins only: in Raft mode the log orders writes, not stamps.
        let ordering_hlc = (self.replication == ReplicationMode::LastWriterWins).then_some(&hlc);
        follow_clock(&readiness, &replicator, ordering_hlc, self.max_clock_offset);
        if let Some(raft) = &raft {
            // Weak, as the clock's source: the readiness must not keep the Raft
            // node alive after the node stops.
            readiness.set_consensus_source(Arc::new(raft.stopped_on_error_probe()));
        }
        follow_peer_errors(&readiness, &replicator, raft.as_ref());
        let ctx = NodeContext {
            id: self.id.clone(),
            cluster: self.cluster.clone(),
            store: store.clone(),
            resolver: self.resolver.clone(),
            cluster_key: self.cluster_key.clone(),
            previous_keys: self.previous_keys.clone(),
        };

        let admin = Admin::new(ctx.clone(), replicator.clone(), addr.clone(), self.write_timeout)
            .dataflow_check(self.dataflow_check.clone())
            .channels(channels.clone())
            .ready_flag(ready.clone());
        let admin = guarded(admin, &readiness);
        let watches = admin.clone();
        let routes =
            self.routes(&ctx, admin, &anti_entropy, raft.as_ref(), &readiness, health_service).await?;
        let served = Served::start(&self.transport, routes, listener.incoming, &channels)?;

        // A store incarnation that has not written yet waits out the clock
        // uncertainty before its first write (see `horizon::FirstWrite`). Not
        // in Raft mode: there the state machine stamps every record, after the
        // last one it applied, under the group's origin, and this store's own
        // origin never writes, so this node's clock orders nothing.
        let first_write = (raft.is_none() && store.digest().await?.get(store.origin()) == 0)
            .then(|| FirstWrite::from_now(&hlc));
        let joiner = Joiner {
            first_write,
            hlc: hlc.clone(),
            id: self.id.clone(),
            addr: addr.clone(),
            store: store.clone(),
            replicator: replicator.clone(),
            anti_entropy: anti_entropy.clone(),
            readiness: readiness.clone(),
            ready: ready.clone(),
        };
        let (join_task, sync_task) = match &raft {
            Some(raft) => (Some(joiner.join_raft(raft.clone())), None),
            None => (joiner.join().await?, Some(anti_entropy.start())),
        };
        let readiness_task = readiness::watch_membership(self.id.clone(), store.clone(), readiness.clone());
        info!(node = %self.id, cluster = %self.cluster, %addr, listen = %listener.local_addr, "node started");

        Ok(Node {
            ctx,
            addr,
            local_addr: listener.local_addr,
            replicator,
            readiness,
            readiness_task,
            stop: served.stop,
            kill: served.kill,
            server_task: served.task,
            sync_task,
            raft,
            join_task,
            drain_grace: self.drain_grace,
            leave_on_terminate: self.leave_on_terminate,
            tls: served.tls.map(parking_lot::Mutex::new),
            watches,
        })
    }
}

/// `admin`, refusing writes while `readiness` says the clock is fenced, reads
/// while the store cannot write, and both while the node is out of the cluster.
fn guarded(admin: Admin, readiness: &Arc<Readiness>) -> Admin {
    let clock = readiness.clone();
    let store = readiness.clone();
    let membership = readiness.clone();
    admin
        .clock_fence(Arc::new(move || clock.clock_fence()))
        .store_fault(Arc::new(move || store.store_error()))
        .out_of_cluster(Arc::new(move || membership.out_of_cluster()))
}

/// A node's replicators (see [`NodeBuilder::replication`]).
struct Replication {
    anti_entropy: AntiEntropy,
    raft: Option<RaftReplicator>,
    /// The one writes go through: the Raft node in Raft mode, else anti-entropy.
    replicator: Arc<dyn Replicator>,
}

/// Makes `readiness` say, while this node has not joined, what its peers
/// answered with instead: the seeds' answers to a Raft node's probes, or the
/// last errors of the peers a last-writer-wins node pulls from.
fn follow_peer_errors(
    readiness: &Readiness,
    replicator: &Arc<dyn Replicator>,
    raft: Option<&RaftReplicator>,
) {
    // Weak, as the clock's source.
    let answered = Arc::downgrade(replicator);
    let probes = raft.map(|raft| raft.probe_errors_probe());
    readiness.set_peer_errors_source(Arc::new(move || {
        if let Some(probes) = &probes {
            return probes();
        }
        let peers = answered.upgrade().map(|r| r.peers()).unwrap_or_default();
        peers.into_iter().filter_map(|p| Some(format!("{}: {}", p.addr, p.last_error?))).collect()
    }));
}

/// Makes `readiness` follow this node's clock against its peers' (as
/// `replicator` measures them), fenced beyond `max_offset`, and its hybrid
/// clock `hlc`, when its stamps order writes, against its wall clock (see
/// [`ClockCheck::with_hlc_lead`]).
fn follow_clock(
    readiness: &Readiness,
    replicator: &Arc<dyn Replicator>,
    hlc: Option<&Arc<Hlc>>,
    max_offset: Duration,
) {
    // Weak: the store (inside the replicator) holds the readiness, which must not
    // keep the store (and its file) alive after the node stops.
    let measured = Arc::downgrade(replicator);
    let hlc = hlc.map(Arc::downgrade);
    let last: parking_lot::Mutex<Option<(std::time::Instant, ClockCheck)>> = parking_lot::Mutex::new(None);
    readiness.set_clock_source(Arc::new(move || {
        let now = std::time::Instant::now();
        let mut last = last.lock();
        if let Some((at, check)) = &*last
            && now.saturating_duration_since(*at) < CLOCK_CHECK_REUSE
        {
            return check.clone();
        }
        let peers = measured.upgrade().map(|r| r.peers()).unwrap_or_default();
        let lead_ms = hlc
            .as_ref()
            .and_then(std::sync::Weak::upgrade)
            .map_or(0, |hlc| hlc.last().wall_ms.saturating_sub(hlc.physical_now_ms()));
        let check = ClockCheck::of(&peers, max_offset, now).with_hlc_lead(lead_ms);
        *last = Some((now, check.clone()));
        check
    }));
}

/// How long a node reuses its clock check. Every write asks for it, and making
/// one copies the peer table (in Raft mode, the group's metrics too): 1.5 % of
/// the nodes' CPU at 2,900 puts/s. The offsets it reads are measured as
/// messages arrive and judged against a bound of hundreds of ms, so a check
/// 50 ms old says what a fresh one would.
const CLOCK_CHECK_REUSE: Duration = Duration::from_millis(50);

/// The address a node listening on `listen` publishes: `advertise` when given;
/// else `None` (the bound address), unless `listen` is unspecified, which no peer
/// can reach.
fn advertised(listen: SocketAddr, advertise: Option<PeerAddr>) -> Result<Option<PeerAddr>, NodeError> {
    if advertise.is_none() && listen.ip().is_unspecified() {
        return Err(NodeError::Config {
            field: "advertise",
            reason: format!(
                "`listen` is {listen}, an unspecified address that peers and balancers cannot reach: \
                 set `advertise` to the address they reach this node at (an IP or a host name, with the port)"
            ),
        });
    }
    Ok(advertise)
}

impl StoreChoice {
    /// Opens the chosen store for node `id`, stamping with `hlc`.
    async fn open(
        self,
        id: &NodeId,
        hlc: &Arc<Hlc>,
        log: Option<ChangeLogLimits>,
    ) -> Result<Arc<dyn ConfigStore>, NodeError> {
        Ok(match self {
            StoreChoice::Durable(dir) => {
                std::fs::create_dir_all(&dir)
                    .map_err(|source| NodeError::DataDir { path: dir.clone(), source })?;
                let store = open_durable(dir.join(STORE_FILE), id.clone(), hlc.clone()).await?;
                Arc::new(match log {
                    Some(limits) => store.with_change_log(limits),
                    None => store,
                })
            }
            StoreChoice::Memory => {
                let store = MemoryStore::new(id.clone(), hlc.clone());
                Arc::new(match log {
                    Some(limits) => store.with_change_log(limits),
                    None => store,
                })
            }
            StoreChoice::Custom(make) => make.into_inner()(id.clone(), hlc.clone())?,
        })
    }
}

/// The purpose [`ClusterKey::derive`] is given for the replication peer credential.
const PEER_CREDENTIAL_PURPOSE: &str = "spectrum replication peer v1";

/// The credential replication calls between nodes carry and require: derived
/// from the cluster key when the node has one, else from the management token,
/// else none. Without one, and without TLS (`tls`: peers must then present a
/// certificate of the cluster's CA naming the node they claim), anyone who
/// reaches the port can read and write the configuration database, which is
/// said loudly. Every node of a cluster must be given the same key (or,
/// without keys, the same token).
fn peer_credential(
    id: &NodeId,
    key: Option<&ClusterKey>,
    token: Option<&Token>,
    tls: bool,
) -> Option<PeerCredential> {
    match (key, token) {
        (None, None) if tls => {
            info!(node = %id, "no cluster key and no management token: replication peers authenticate by their certificates alone (TLS)");
            None
        }
        (Some(key), _) => Some(PeerCredential::from_bytes(*key.derive(PEER_CREDENTIAL_PURPOSE))),
        (None, Some(token)) => {
            info!(node = %id, "no cluster key: replication peers authenticate with a credential derived from the management token");
            Some(PeerCredential::from_shared_secret(token.expose().as_bytes()))
        }
        (None, None) => {
            warn!(node = %id, "no cluster key and no management token: replication is OPEN to anyone who can reach this node's port (they can read every record and write any); give every node the same cluster key");
            None
        }
    }
}

/// gRPC reflection over the public Spectrum protocols and `grpc.health.v1`
/// (replication is internal, and left out).
fn reflection() -> Result<
    tonic_reflection::server::v1::ServerReflectionServer<impl tonic_reflection::server::v1::ServerReflection>,
    NodeError,
> {
    Ok(tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?)
}

/// Serves `routes` on `incoming` (h2c, and HTTP/1.1 for plain HTTP clients) until
/// the returned sender sends `true`.
fn serve(
    transport: &TransportConfig,
    routes: Routes,
    incoming: tonic::transport::server::TcpIncoming,
    tls: Option<ReloadableServerTls>,
    kill: &CancellationToken,
) -> Result<(watch::Sender<bool>, JoinHandle<()>), NodeError> {
    use tokio_stream::StreamExt as _;

    let (stop_tx, mut stop_rx) = watch::channel(false);
    // TLS, when set, is done by `tls` (whose certificate can be replaced), not by tonic.
    let plain = TransportConfig { tls: None, ..transport.clone() };
    let server = plain.server()?.accept_http1(true).add_routes(routes.prepare());
    let kill = kill.clone();
    let task = tokio::spawn(async move {
        let stopped = async move {
            let _ = stop_rx.wait_for(|s| *s).await;
        };
        // Every connection is cut when `kill` is cancelled (see `crate::kill`).
        let served = match tls {
            None => {
                let incoming = incoming.map(move |c| c.map(|s| Killable::new(s, &kill)));
                server.serve_with_incoming_shutdown(incoming, stopped).await
            }
            Some(tls) => {
                let incoming = tls.incoming(incoming).map(move |c| c.map(|s| Killable::new(s, &kill)));
                server.serve_with_incoming_shutdown(incoming, stopped).await
            }
        };
        if let Err(e) = served {
            warn!(error = %e, "node server ended with an error");
        }
    });
    Ok((stop_tx, task))
}

/// The node's server, running.
struct Served {
    /// What it serves over TLS, when it does.
    tls: Option<ServerTls>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    /// Cuts every open connection ([`Node::kill`]).
    kill: CancellationToken,
}

impl Served {
    /// Serves `routes` on `incoming`: over TLS (its certificate reloadable) when
    /// `transport` has TLS, presenting the same certificate to peers through
    /// `channels`.
    fn start(
        transport: &TransportConfig,
        routes: Routes,
        incoming: tonic::transport::server::TcpIncoming,
        channels: &Arc<ChannelCache>,
    ) -> Result<Self, NodeError> {
        let tls = match &transport.tls {
            Some(tls) => Some(ServerTls {
                files: tls.clone(),
                listener: ReloadableServerTls::new(tls)?,
                channels: channels.clone(),
            }),
            None => None,
        };
        let kill = CancellationToken::new();
        let (stop, task) =
            serve(transport, routes, incoming, tls.as_ref().map(|t| t.listener.clone()), &kill)?;
        Ok(Self { tls, stop, task, kill })
    }
}

/// What a starting node does before it takes part: pull, then record itself.
///
/// It pulls the cluster's state from every reachable peer before this node's first
/// write (its membership record), so its first stamps follow everything its peers
/// hold. A node with an empty store and peers to ask writes nothing (and refuses
/// management writes, and reports not ready) until one of them has answered; it
/// keeps trying in the background, so a cluster starts in any order.
///
/// This guard is no longer what keeps sequence numbers unique (a store created
/// empty writes under an origin of its own, see
/// [`Origin`](spectrum_replication::Origin)); it keeps a node that knows nothing
/// yet, such as one restarted on an empty disk, from serving an empty database:
/// reads that miss every key, token checks that find no user, writes decided on
/// a copy that has not seen the cluster's.
///
/// A store that has not written yet (new, or on a replaced disk) also makes its
/// first write only once [`FirstWrite`] is due, about twice the maximum clock
/// offset after the node started: a peer may have collected a tombstone on the
/// strength of the digest of a store this node lost, and the new store's writes
/// must be stamped above it (see [`spectrum_replication::horizon`]).
struct Joiner {
    /// When this node's store may make its first write, if it has not made one.
    first_write: Option<FirstWrite>,
    hlc: Arc<Hlc>,
    id: NodeId,
    addr: PeerAddr,
    store: Arc<dyn ConfigStore>,
    replicator: Arc<dyn Replicator>,
    anti_entropy: AntiEntropy,
    readiness: Arc<Readiness>,
    ready: Arc<AtomicBool>,
}

impl Joiner {
    /// Joins now, or, when this node has an empty store and no peer answered yet,
    /// in a background task (returned) that retries until one does.
    async fn join(self) -> Result<Option<JoinHandle<()>>, NodeError> {
        let fresh = self.store.digest().await?.entries.is_empty();
        let has_peers = !self.anti_entropy.peer_addrs().await?.is_empty();
        // Always pull first: even a node with data learns what it missed.
        let answered = self.pull().await;
        let caught_up = !(fresh && has_peers) || answered > 0;
        if self.readiness.clock_fence().is_some() {
            // Its peers' answers showed its clock off: it records itself once
            // the clock is right (see `finish`), not before it starts; a node
            // removed meanwhile is refused now, as it would be then.
            let own = own_record(&*self.store, &self.id).await?;
            if own.member.is_some_and(|m| m.state == MemberState::Removed) {
                error!(node = %self.id, version = %own.version, "this node was removed from the cluster; refusing to join");
                return Err(NodeError::Removed { id: self.id.clone(), version: own.version });
            }
            if caught_up {
                // Its copy is the cluster's (or all it has): it serves reads
                // meanwhile, and takes its peers' data; writes wait for the clock.
                self.ready.store(true, Ordering::Release);
                self.readiness.publish().await;
            }
            return Ok(Some(tokio::spawn(async move {
                while !caught_up && self.pull().await == 0 {
                    tokio::time::sleep(STARTUP_PULL_RETRY).await;
                }
                if let Err(e) = self.finish().await {
                    // Removed meanwhile, or another process has its id: it
                    // serves nothing (it was serving reads while it waited).
                    self.ready.store(false, Ordering::Release);
                    self.readiness.publish().await;
                    error!(node = %self.id, error = %e, "not joining");
                }
            })));
        }
        if caught_up {
            self.finish().await?;
            return Ok(None);
        }
        info!(node = %self.id, "empty store and no peer reachable yet: catching up before the first write");
        Ok(Some(tokio::spawn(async move {
            while self.pull().await == 0 {
                tokio::time::sleep(STARTUP_PULL_RETRY).await;
            }
            if let Err(e) = self.finish().await {
                warn!(node = %self.id, error = %e, "could not record membership");
            }
        })))
    }

    /// Raft mode: joins (or founds) the Raft group in the background, then
    /// records this node in membership through the log, retrying until a
    /// majority takes it.
    fn join_raft(self, raft: RaftReplicator) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut joining = raft.start();
            loop {
                tokio::select! {
                    joined = &mut joining => {
                        let joined = joined.unwrap_or(false);
                        // A node refused for good (another has its id) keeps saying why.
                        let refused = if joined { None } else { raft.join_refused() };
                        if self.readiness.set_join_refused(refused) {
                            self.readiness.publish().await;
                        }
                        if !joined {
                            return;
                        }
                        break;
                    }
                    () = tokio::time::sleep(JOIN_REFUSAL_POLL) => {
                        if self.readiness.set_join_refused(raft.join_refused()) {
                            self.readiness.publish().await;
                        }
                    }
                }
            }
            // Taken in, its copy may still lag what the group committed (an
            // operator's undrain among it): it reads its own record only
            // once it holds everything committed before (a read index).
            let mut attempts: u32 = 0;
            loop {
                let finished = match self.replicator.linearizable_barrier(CATCH_UP_WAIT).await {
                    Ok(()) => self.finish().await,
                    Err(e) => Err(NodeError::from(e)),
                };
                match finished {
                    Ok(()) => return,
                    Err(e @ NodeError::Removed { .. }) => {
                        error!(node = %self.id, error = %e, "not joining");
                        return;
                    }
                    Err(e @ NodeError::MembershipChanged { .. }) => {
                        // Said after a minute, then once a minute: a node
                        // catching up fails this a few times first.
                        if attempts % 120 == 119 {
                            warn!(node = %self.id, error = %e, "not active yet");
                        }
                    }
                    Err(e) => debug!(node = %self.id, error = %e, "membership not committed yet; retrying"),
                }
                attempts += 1;
                tokio::time::sleep(STARTUP_PULL_RETRY).await;
            }
        })
    }

    /// One exchange with every reachable peer; how many answered.
    async fn pull(&self) -> usize {
        match self.anti_entropy.pull_from_all(STARTUP_PULL_TIMEOUT).await {
            Ok(answered) => {
                debug!(node = %self.id, answered, "pulled the cluster's state");
                answered
            }
            Err(e) => {
                warn!(node = %self.id, error = %e, "could not pull the cluster's state");
                0
            }
        }
    }

    /// Records this node in membership (a node an operator drained stays
    /// drained across a restart; one drained by its own stop is active again),
    /// reports SERVING and accepts management writes.
    ///
    /// In Raft mode the record is written only if the cluster still holds the
    /// record this node holds: a node removed while it was down, whose store
    /// never heard of it, must not write itself back into membership. Such a
    /// write fails its condition, and is tried again once this node has caught
    /// up (a member does; a removed node never does, and waits, saying so).
    ///
    /// A node whose clock is off from its peers' (fenced) waits until it is
    /// right: its record would carry its clock's stamp, and one stamped ahead
    /// would outlast, by last-writer-wins, an operator's removal made later.
    async fn finish(&self) -> Result<(), NodeError> {
        let mut told = false;
        while let Some(reason) = self.readiness.clock_fence() {
            if !told {
                warn!(node = %self.id, %reason, "clock fenced: recording this node in membership once it is right");
                told = true;
            }
            tokio::time::sleep(CLOCK_FENCE_RECHECK).await;
        }
        if told {
            info!(node = %self.id, "clock right again: recording this node in membership");
            // What the cluster wrote meanwhile (an operator's removal) first:
            // from a peer that answers (peers take it again now, see
            // `Handshake::admit`).
            let has_peers = !self.anti_entropy.peer_addrs().await?.is_empty();
            while self.replicator.mode() == ReplicationMode::LastWriterWins
                && has_peers
                && self.pull().await == 0
            {
                tokio::time::sleep(STARTUP_PULL_RETRY).await;
            }
        }
        let OwnRecord { member: held, condition, version } = own_record(&*self.store, &self.id).await?;
        if held.as_ref().is_some_and(|m| m.state == MemberState::Removed) {
            error!(node = %self.id, %version, "this node was removed from the cluster; refusing to join");
            return Err(NodeError::Removed { id: self.id.clone(), version });
        }
        if let Some(elsewhere) = held.as_ref().filter(|m| m.addr != self.addr && !m.state.is_gone()) {
            self.refuse_if_id_in_use(&elsewhere.addr).await?;
        }
        let drained = held.is_some_and(|m| m.drained_by_operator());
        let state = if drained { MemberState::Draining } else { MemberState::Active };
        let me = Member::new(self.id.clone(), self.addr.clone(), state);
        if let Some(first) = self.first_write.filter(|f| !f.due(&self.hlc)) {
            info!(node = %self.id, not_before_ms = first.not_before_ms(), "new store: waiting out the clock uncertainty before the first write");
            first.wait(&self.hlc).await;
        }
        record_membership(&*self.store, &*self.replicator, &me, AckLevel::Local, Some(condition)).await?;
        self.readiness.set_member_state(state);
        self.ready.store(true, Ordering::Release);
        self.readiness.publish().await;
        Ok(())
    }

    /// Refuses to go on when a running node with this node's id answers at
    /// `addr`, the address its membership record gives (last-writer-wins
    /// mode; in Raft mode the leader checks, see `RaftReplicator`). A node that
    /// moved answers there no more, or another node does: then it goes on.
    async fn refuse_if_id_in_use(&self, addr: &PeerAddr) -> Result<(), NodeError> {
        if self.replicator.mode() != ReplicationMode::LastWriterWins {
            return Ok(());
        }
        match self.anti_entropy.identify(addr, ID_PROBE_TIMEOUT).await {
            Ok(there) if there == self.id => {
                error!(node = %self.id, %addr, "a running node at this id's recorded address has this id; not starting");
                Err(NodeError::IdInUse { id: self.id.clone(), addr: addr.to_string() })
            }
            Ok(other) => {
                info!(node = %self.id, %addr, %other, "this node's recorded address is another node's now; moving");
                Ok(())
            }
            Err(e) => {
                info!(node = %self.id, %addr, error = %e, "this node's recorded address does not answer; moving");
                Ok(())
            }
        }
    }
}

/// Opens the durable store, waiting (up to [`STORE_IN_USE_WAIT`]) while the file
/// is still held by a previous incarnation of this node winding down in the same
/// process.
async fn open_durable(path: PathBuf, id: NodeId, hlc: Arc<Hlc>) -> Result<RedbStore, NodeError> {
    let deadline = tokio::time::Instant::now() + STORE_IN_USE_WAIT;
    loop {
        let (path2, id2, hlc2) = (path.clone(), id.clone(), hlc.clone());
        let opened = tokio::task::spawn_blocking(move || RedbStore::open(path2, id2, hlc2))
            .await
            .map_err(|source| NodeError::StoreTask { node: id.clone(), source })?;
        match opened {
            Err(StoreError::InUse { .. }) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return Ok(other?),
        }
    }
}

/// A node's own membership record as its store holds it.
struct OwnRecord {
    /// The member it records, when there is a readable one.
    member: Option<Member>,
    /// That the cluster still holds this record (or, with none, holds none):
    /// the condition of a Raft-mode write over it.
    condition: Condition,
    /// Its version token, as text (empty with none).
    version: String,
}

/// `id`'s own membership record in `store` (see [`OwnRecord`]).
async fn own_record(store: &dyn ConfigStore, id: &NodeId) -> Result<OwnRecord, StoreError> {
    let key = Member::key_of(id);
    let record = store.get(&key).await?;
    let version = record.as_ref().map(|r| r.token().to_string()).unwrap_or_default();
    let condition = match &record {
        Some(r) if r.value.is_some() => Condition::Version { key, version: r.token() },
        _ => Condition::Absent { key },
    };
    let member = record.and_then(|r| r.value).and_then(|v| Member::from_record_value(&v).ok());
    Ok(OwnRecord { member, condition, version })
}

/// Records `member`; in Raft mode through the log, only if `condition` holds
/// (last-writer-wins mode ignores it).
async fn record_membership(
    store: &dyn ConfigStore,
    replicator: &dyn Replicator,
    member: &Member,
    ack: AckLevel,
    condition: Option<Condition>,
) -> Result<(), NodeError> {
    let batch = WriteBatch::new().put(member.record_key(), member.to_record_value());
    if replicator.mode() == ReplicationMode::Raft {
        let mut txn = Transaction::new(batch);
        txn.conditions.extend(condition);
        let committed = replicator.commit(txn, MEMBERSHIP_COMMIT_TIMEOUT).await?;
        if let Outcome::ConditionFailed(failed) = committed.outcome {
            return Err(NodeError::MembershipChanged { id: member.id.clone(), reason: failed.to_string() });
        }
        return Ok(());
    }
    let records = store.apply(batch).await?;
    if let Err(e) = replicator.replicate(records, ack, Duration::from_secs(1)).await {
        debug!(error = %e, state = %member.state, "membership record will reach peers by anti-entropy");
    }
    Ok(())
}

/// A running node. Stop it with [`Node::shutdown`], which drains it and
/// records it as left so balancers stop sending it requests at once.
/// Dropping it instead stops it much as a crash would (see [`Node::kill`]):
/// its server and replication end within moments, while membership still
/// lists it active until the failure detector and the balancers' health
/// checks find it gone.
pub struct Node {
    ctx: NodeContext,
    addr: PeerAddr,
    local_addr: SocketAddr,
    replicator: Arc<dyn Replicator>,
    readiness: Arc<Readiness>,
    /// Follows this node's own membership record (an operator's drain).
    readiness_task: JoinHandle<()>,
    stop: watch::Sender<bool>,
    /// Cuts every open connection ([`Node::kill`]).
    kill: CancellationToken,
    server_task: JoinHandle<()>,
    /// Anti-entropy rounds (last-writer-wins mode).
    sync_task: Option<spectrum_replication::AntiEntropyHandle>,
    /// The Raft node (Raft mode).
    raft: Option<RaftReplicator>,
    /// Catching up in the background (an empty store whose peers were unreachable).
    join_task: Option<JoinHandle<()>>,
    drain_grace: Duration,
    /// Whether [`Node::shutdown`] leaves the Raft voters ([`NodeBuilder::leave_on_terminate`]).
    leave_on_terminate: bool,
    /// The TLS the node's port serves, when it has any.
    tls: Option<parking_lot::Mutex<ServerTls>>,
    /// Its management operations, to end the watches it serves when it stops.
    watches: Admin,
}

/// What a TLS node's port serves, what it was read from, and the channels that
/// present the same certificate to peers.
struct ServerTls {
    files: TlsConfig,
    listener: ReloadableServerTls,
    channels: Arc<ChannelCache>,
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node").field("id", &self.ctx.id).field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl Node {
    /// A builder for node `id` of cluster `cluster`.
    pub fn builder(id: NodeId, cluster: ClusterId) -> NodeBuilder {
        NodeBuilder::new(id, cluster)
    }

    /// This node's id.
    pub fn id(&self) -> &NodeId {
        &self.ctx.id
    }

    /// The address the node advertises, as `http://HOST:PORT` (the listen address
    /// unless [`NodeBuilder::advertise`] was set).
    pub fn url(&self) -> &str {
        self.addr.as_str()
    }

    /// The address other members and the balancer reach this node at: the
    /// advertise address, published in membership.
    pub fn addr(&self) -> &PeerAddr {
        &self.addr
    }

    /// The bound socket address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves `tls` (its certificate, and its CA for client certificates) on this
    /// node's port to every connection accepted from now on, and presents it to
    /// peers on every connection this node opens from now on; open connections
    /// keep theirs. For certificate rotation without a restart (see also
    /// [`reload_tls`](Self::reload_tls)).
    ///
    /// # Errors
    ///
    /// [`NodeError::Config`] when the node does not serve TLS;
    /// [`NodeError::Core`] when `tls` cannot be served (the old one stays).
    pub fn set_tls(&self, tls: TlsConfig) -> Result<(), NodeError> {
        let served = self.tls.as_ref().ok_or_else(|| NodeError::Config {
            field: "tls",
            reason: "this node was started without TLS".into(),
        })?;
        let tls = tls.client_auth(ClientAuth::Optional);
        let mut served = served.lock();
        served.listener.replace(&tls)?;
        served.channels.set_tls(tls.clone());
        served.files = tls;
        Ok(())
    }

    /// Reads the node's certificate files again (those of
    /// [`TlsConfig::from_files`]) and serves them as [`set_tls`](Self::set_tls)
    /// does: what `spectrum node` does on SIGHUP and when the files change.
    /// Returns `false` when the node's TLS did not come from files.
    ///
    /// # Errors
    ///
    /// As [`set_tls`](Self::set_tls), and [`NodeError::Core`] naming a file that
    /// cannot be read or parsed (the old certificate stays).
    pub fn reload_tls(&self) -> Result<bool, NodeError> {
        let files = self.tls.as_ref().map(|t| t.lock().files.clone());
        match files.as_ref().and_then(TlsConfig::reload) {
            Some(tls) => self.set_tls(tls?).map(|()| true),
            None => Ok(false),
        }
    }

    /// The newest modification time of the node's certificate files, when its TLS
    /// came from files: poll it and call [`reload_tls`](Self::reload_tls) on change.
    pub fn tls_files_modified(&self) -> Option<std::time::SystemTime> {
        self.tls.as_ref()?.lock().files.files_modified()
    }

    /// This node's copy of the configuration database.
    pub fn store(&self) -> &Arc<dyn ConfigStore> {
        &self.ctx.store
    }

    /// The node's replicator.
    pub fn replicator(&self) -> &Arc<dyn Replicator> {
        &self.replicator
    }

    /// Whether this node should be sent requests, as `grpc.health.v1` and
    /// `GET /readyz` report it.
    pub fn readiness(&self) -> &Arc<Readiness> {
        &self.readiness
    }

    /// What services on this node see.
    pub fn context(&self) -> &NodeContext {
        &self.ctx
    }

    /// Leaves the cluster cleanly and stops: reports NOT_SERVING to health checks,
    /// records itself as `draining` and keeps serving for the drain grace (so
    /// balancers stop sending it requests first), records itself as `left` (so
    /// peers stop counting it for acknowledgements; it becomes `active` again when
    /// it restarts; a Raft voter that stays one stays `draining`), stops anti-entropy, and stops the server once in-flight
    /// requests finish. In Raft mode the node stays a voter unless built with
    /// [`leave_on_terminate`](NodeBuilder::leave_on_terminate): then it also
    /// leaves the Raft group ([`RaftReplicator::leave`]), the remaining voters
    /// decide writes by a majority of their own, and it asks to join again when
    /// it restarts.
    pub async fn shutdown(self) {
        let grace = self.drain_grace;
        let leave = self.leave_on_terminate;
        self.stop_serving(grace, leave).await;
    }

    /// Like [`shutdown`](Self::shutdown), without the drain grace: for when nothing
    /// routes requests to this node any more (its balancer already stopped), as
    /// when a whole cluster stops. In Raft mode the node stays a voter: nodes
    /// of a cluster stopped together leaving one by one would shrink the group
    /// to its last node, which would then have to start first; kept as it is,
    /// any majority of it starts again, in any order.
    pub async fn shutdown_without_drain(self) {
        self.stop_serving(Duration::ZERO, false).await;
    }

    /// Stops at once, as a crashed process would: no drain, no `left` record, open
    /// connections cut. Its peers see it only as unreachable (for fault drills and
    /// tests of a dead member).
    pub async fn kill(mut self) {
        if let Some(task) = &self.join_task {
            task.abort();
        }
        self.server_task.abort();
        self.kill.cancel();
        self.watches.stop_watches();
        self.readiness_task.abort();
        self.stop_replicating().await;
        warn!(node = %self.ctx.id, "node killed");
    }

    /// Whether this node's own membership record says it is removed or left
    /// (it then records nothing of its stop).
    async fn recorded_as_gone(&self) -> bool {
        own_record(&*self.ctx.store, &self.ctx.id)
            .await
            .is_ok_and(|own| own.member.is_some_and(|m| m.state.is_gone()))
    }

    /// Stops anti-entropy rounds, or the Raft node (releasing its log file).
    async fn stop_replicating(&mut self) {
        if let Some(task) = self.sync_task.take() {
            task.shutdown().await;
        }
        if let Some(raft) = &self.raft {
            raft.shutdown().await;
        }
    }

    /// The Raft node, in Raft mode.
    pub fn raft(&self) -> Option<&RaftReplicator> {
        self.raft.as_ref()
    }

    async fn stop_serving(mut self, drain_grace: Duration, leave_consensus: bool) {
        if let Some(task) = &self.join_task {
            task.abort();
        }
        self.readiness.set_stopping();
        self.readiness.publish().await;
        self.watches.stop_watches();
        // Last-writer-wins: a fenced clock's stamps would order these records
        // wrongly against the cluster's (one ahead would outlast an operator's
        // later removal), so a fenced node records nothing of its stop; its
        // peers' failure detector and the health checks find it gone.
        let fenced = self.raft.is_none() && self.readiness.clock_fence().is_some();
        if fenced {
            warn!(node = %self.ctx.id, "clock fenced: stopping without recording draining or left");
        }
        if !fenced && drain_grace > Duration::ZERO && self.join_task.as_ref().is_none_or(|t| t.is_finished())
        {
            // Drain first: balancers following membership (or health) stop sending new
            // requests, while this node still serves whatever reaches it meanwhile.
            // Recorded as the stop's own drain, undone when the node starts again;
            // an operator's drain already recorded is left as it is, to outlast
            // the restart.
            // A removed node writes nothing (it must not write itself back), and
            // in Raft mode the record is written only over the one this node
            // holds: a removal it has not applied yet wins.
            let (held, condition) = match own_record(&*self.ctx.store, &self.ctx.id).await {
                Ok(own) => (own.member, Some(own.condition)),
                Err(_) => (None, None),
            };
            if !held.as_ref().is_some_and(|m| m.drained_by_operator() || m.state.is_gone()) {
                let draining = Member::stopping(self.ctx.id.clone(), self.addr.clone());
                // Bounded: in Raft mode without a majority (the last node of a
                // cluster stopped node by node) the record cannot commit, and the
                // health checks' NOT_SERVING already turns balancers away.
                let record = record_membership(
                    &*self.ctx.store,
                    &*self.replicator,
                    &draining,
                    AckLevel::All,
                    condition,
                );
                match tokio::time::timeout(DRAINING_RECORD_TIMEOUT, record).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => warn!(node = %self.ctx.id, error = %e, "could not record draining"),
                    Err(_) => warn!(node = %self.ctx.id, "draining not recorded in time; stopping anyway"),
                }
            }
            tokio::time::sleep(drain_grace).await;
        }
        // A Raft voter that stays one is stopped, not gone: it stays `draining`
        // (nothing routes to it) until it starts again.
        if !fenced && (self.raft.is_none() || leave_consensus) && !self.recorded_as_gone().await {
            let left = Member::new(self.ctx.id.clone(), self.addr.clone(), MemberState::Left);
            if let Err(e) =
                record_membership(&*self.ctx.store, &*self.replicator, &left, AckLevel::All, None).await
            {
                warn!(node = %self.ctx.id, error = %e, "could not record leaving the cluster");
            }
        }
        if let Some(raft) = self.raft.as_ref().filter(|_| leave_consensus) {
            // Raft mode: out of the voters too, so the rest keep a majority of their own.
            if let Err(e) = raft.leave(MEMBERSHIP_COMMIT_TIMEOUT).await {
                warn!(node = %self.ctx.id, error = %e, "left the cluster but is still a raft voter");
            }
        }
        self.readiness_task.abort();
        self.stop_replicating().await;
        let _ = self.stop.send(true);
        let mut server_task = self.server_task;
        if tokio::time::timeout(Duration::from_secs(5), &mut server_task).await.is_err() {
            warn!(node = %self.ctx.id, "connections still open 5 s after stopping; closing them");
            server_task.abort();
        }
        info!(node = %self.ctx.id, "node stopped");
    }
}

/// The answer to a path no service of the node serves: gRPC `UNIMPLEMENTED`
/// (trailers-only, as tonic's router answers) to a gRPC call, and `404 Not
/// Found` to anything else, where a plain HTTP client would otherwise read
/// `200 OK` and a gRPC status it does not look for.
async fn no_such_path(request: axum::extract::Request) -> axum::response::Response {
    use axum::response::IntoResponse;
    let grpc = request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if grpc {
        let status = tonic::Status::unimplemented(format!("no such method: {}", request.uri().path()));
        let (parts, ()) = status.into_http::<()>().into_parts();
        return axum::response::Response::from_parts(parts, axum::body::Body::empty());
    }
    (
        http::StatusCode::NOT_FOUND,
        [(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "404 not found: no such path on this node (its HTTP API is under /api/v1/)\n",
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Embedders start nodes and clusters from spawned tasks (a supervisor, a
    /// server's handler): the futures must be `Send` (a new-user trial found
    /// neither was). Checked at compile time; never run.
    #[allow(dead_code, clippy::diverging_sub_expression)]
    fn starting_a_node_or_a_cluster_can_be_spawned() {
        fn spawnable<F: std::future::Future + Send + 'static>(_: F) {}
        let id: NodeId = "n1".parse().unwrap();
        spawnable(NodeBuilder::new(id, "c".parse().unwrap()).in_memory().start());
        spawnable(crate::Cluster::builder("c".parse().unwrap()).size(1).start());
    }

    #[test]
    fn an_unspecified_listen_address_needs_an_advertise_address() {
        for listen in ["0.0.0.0:7001", "[::]:7001"] {
            let err = advertised(listen.parse().unwrap(), None).unwrap_err().to_string();
            assert!(err.contains("advertise") && err.contains("listen") && err.contains(listen), "{err}");
        }
        let named: PeerAddr = "node-1.example:7001".parse().unwrap();
        assert_eq!(advertised("0.0.0.0:7001".parse().unwrap(), Some(named.clone())).unwrap(), Some(named));
        assert_eq!(advertised("127.0.0.2:7001".parse().unwrap(), None).unwrap(), None, "the bound address");
    }
}
