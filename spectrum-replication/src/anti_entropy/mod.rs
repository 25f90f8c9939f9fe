//! [`AntiEntropy`]: the push-on-write plus periodic digest-exchange
//! [`Replicator`], over gRPC.
//!
//! - Every local write is pushed at once to every peer, each push a task of its
//!   own that retries briefly, so [`AckLevel::Local`] returns at once while
//!   [`AckLevel::Quorum`] and [`AckLevel::All`] wait for enough answers.
//! - Every interval (default 1 s, ±20 % jitter) the replicator picks a random peer,
//!   sends it its digest, merges what the peer answers (repeating while the
//!   answer was cut short by the byte budget), then pushes the peer whatever the
//!   peer's digest shows it lacks. Both sides end the round with each other's
//!   records.
//! - Peers are the seed addresses plus every member recorded under
//!   [`MEMBERSHIP_PREFIX`] (a JSON [`Member`](spectrum_core::Member)), except this
//!   node and members that left.
//! - Tombstones are collected once every member has seen them: after each round,
//!   if the peer table holds a digest of every current peer (each exchange notes
//!   the digest the peer shows), the store collects with the
//!   [`tombstone_horizon`](crate::horizon::tombstone_horizon) of those digests and
//!   its own, each digest read as its member's through the origin the member's
//!   store writes under now (every message names it). A member that cannot be
//!   reached, a seed that never answers, or an origin whose writes are known here
//!   but whose node is neither such a member nor recorded as having left, holds
//!   collection back, and so do the writes of a retired origin (a store lost
//!   with its disk) until every member has seen the same of them. A peer whose
//!   digest is below the store's tombstone floor (it was not a member then, or
//!   lost its state) pulls a snapshot instead of a delta, so a deleted key never
//!   comes back.
//! - Every exchange carries the cluster id and the sender's HLC: a peer of another
//!   cluster, or one whose clock runs too far ahead, is refused and nothing it
//!   sent is merged.
//! - Jitter and peer choice come from the thread's random generator, or from a
//!   seeded one ([`AntiEntropyBuilder::rng_seed`]) so that a simulation replays
//!   the same rounds for the same seed.
//!
//! The decisions are pure functions with their own tests, and each step of a
//! round lives in a file of its own: `peers` (whom to talk to), `push`
//! (chunking and retrying a push), `pull` (one round: pull a delta or a
//! snapshot page by page, then push back) and `gc` (when tombstones may be
//! collected). The header checks are shared with the service (`handshake`).

mod gc;
mod peers;
mod pull;
mod push;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, RngCore, SeedableRng};
use spectrum_core::channels::ChannelCache;
use spectrum_core::{ClusterId, Hlc, NodeId, PeerAddr, TransportConfig};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tracing::{Instrument, debug, info, info_span, instrument, trace, warn};

use crate::credential::{AttachToken, MAX_TOKENS, PeerCredential};
use crate::error::{PeerFailure, ReplicationError};
use crate::handshake::{Contact, Handshake};
use crate::peers::{PeerTable, blank};
use crate::proto;
use crate::proto::replication_client::ReplicationClient;
use crate::record::{Record, VersionVector};
use crate::replicator::{AckLevel, AckReport, PeerStatus, Replicator};
use crate::service::ReplicationService;
use crate::store::ConfigStore;
use crate::wire::{InvalidMessage, PeerHeader};

/// Key prefix of the membership namespace (owned by core, where its codec lives).
pub use spectrum_core::MEMBERSHIP_PREFIX;

/// Default time between anti-entropy rounds.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);

/// A push to a failing peer is retried for at least this long, even when the
/// write's acknowledgement timeout is shorter (anti-entropy repairs the rest).
pub const MIN_PUSH_RETRY_WINDOW: Duration = Duration::from_secs(2);

/// Every how many rounds one member recorded as left is called on, in case it
/// is back (every round while no member is a peer): see `peers::left_addrs`.
const LEFT_RECHECK_EVERY: u64 = 5;

/// The longest such a call may take (a host that is down may not answer a
/// connection at all).
const LEFT_RECHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Builds an [`AntiEntropy`] replicator.
#[derive(Debug)]
pub struct AntiEntropyBuilder {
    store: Arc<dyn ConfigStore>,
    hlc: Arc<Hlc>,
    cluster: ClusterId,
    self_addr: PeerAddr,
    seeds: Vec<PeerAddr>,
    interval: Duration,
    transport: TransportConfig,
    channels: Option<Arc<ChannelCache>>,
    rng_seed: Option<u64>,
    credential: Option<PeerCredential>,
    previous: Vec<PeerCredential>,
}

impl AntiEntropyBuilder {
    /// Authenticates replication both ways with `credential` (see
    /// [`credential`](crate::credential)): every call this replicator makes
    /// carries its token, and [`AntiEntropy::service`] refuses calls without it.
    /// Every node of the cluster must be given the same credential.
    ///
    /// Without one, calls carry no token and the service answers anyone who can
    /// reach it: for tests and simulations only.
    pub fn credential(mut self, credential: PeerCredential) -> Self {
        self.credential = Some(credential);
        self
    }

    /// During a key rotation, also sends and accepts the credentials of previous
    /// cluster keys (at most three), so that nodes restarted with the new key and
    /// nodes still on the old one keep replicating. Drop them once every node has
    /// the new key.
    pub fn previous_credentials(mut self, previous: Vec<PeerCredential>) -> Self {
        self.previous = previous.into_iter().take(MAX_TOKENS - 1).collect();
        self
    }

    /// Addresses of nodes to sync with before membership is known.
    pub fn seeds(mut self, seeds: Vec<PeerAddr>) -> Self {
        self.seeds = seeds;
        self
    }

    /// Mean time between anti-entropy rounds (each wait is jittered by ±20 %).
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// How to talk to peers (timeouts, keepalive, message size limit, TLS).
    pub fn transport(mut self, transport: TransportConfig) -> Self {
        self.transport = transport;
        self
    }

    /// Calls peers on the channels of `channels` (shared with the rest of the
    /// node, so that a rotated client certificate reaches every caller at once:
    /// see [`ChannelCache::set_tls`]) instead of channels of its own made with
    /// [`transport`](Self::transport). The service side still follows
    /// [`transport`](Self::transport): give both the same TLS.
    pub fn channels(mut self, channels: Arc<ChannelCache>) -> Self {
        self.channels = Some(channels);
        self
    }

    /// Draws round jitter and peer choice from a generator seeded with `seed`
    /// instead of the thread's random generator, so that the same seed gives the
    /// same sequence of waits and peers: for deterministic simulations (with a
    /// simulated clock and network) and tests. Leave it unset in production, where
    /// nodes started together should not pick the same peers at the same times.
    pub fn rng_seed(mut self, seed: u64) -> Self {
        self.rng_seed = Some(seed);
        self
    }

    /// The replicator. Call [`AntiEntropy::start`] to run its periodic rounds.
    pub fn build(self) -> AntiEntropy {
        let self_addr = self.self_addr;
        let mut seeds = self.seeds;
        seeds.sort();
        seeds.dedup();
        seeds.retain(|s| *s != self_addr);
        let (stop, _) = watch::channel(false);
        let peers = PeerTable::new();
        peers.set_known(&seeds);
        let handshake = Handshake::new(self.cluster.clone(), self.store.origin().clone(), self.hlc.clone())
            .with_addr(self_addr.clone())
            .with_peer_table(peers.clone());
        let attach = AttachToken(
            self.credential.iter().chain(&self.previous).map(|c| c.token(&self.cluster).value()).collect(),
        );
        AntiEntropy {
            inner: Arc::new(Inner {
                credential: self.credential,
                previous: self.previous,
                attach,
                rounds: AtomicU64::new(0),
                store: self.store,
                hlc: self.hlc,
                cluster: self.cluster,
                self_addr,
                seeds,
                interval: self.interval,
                channels: self
                    .channels
                    .unwrap_or_else(|| Arc::new(ChannelCache::new(self.transport.clone()))),
                peer_tls: self.transport.tls.is_some(),
                rng: self.rng_seed.map(|seed| Mutex::new(StdRng::seed_from_u64(seed))),
                peers,
                handshake,
                known: Mutex::new(Vec::new()),
                stop,
                refusing: Mutex::new(BTreeSet::new()),
            }),
        }
    }
}

/// The anti-entropy [`Replicator`]: eager push on write plus periodic digest
/// exchange with a random peer. See the [module docs](crate::anti_entropy).
///
/// Clones share one replicator.
#[derive(Debug, Clone)]
pub struct AntiEntropy {
    inner: Arc<Inner>,
}

impl AntiEntropy {
    /// Starts building a replicator for `store`, stamping messages with `hlc`,
    /// for `cluster`, on a node reached at `self_addr`.
    pub fn builder(
        store: Arc<dyn ConfigStore>,
        hlc: Arc<Hlc>,
        cluster: ClusterId,
        self_addr: PeerAddr,
    ) -> AntiEntropyBuilder {
        AntiEntropyBuilder {
            store,
            hlc,
            cluster,
            self_addr,
            seeds: Vec::new(),
            interval: DEFAULT_INTERVAL,
            transport: TransportConfig::default(),
            channels: None,
            rng_seed: None,
            credential: None,
            previous: Vec::new(),
        }
    }

    /// The server side for this node, sharing this replicator's store, clock and
    /// peer table. Serve it with [`ReplicationService::into_server`]. When this
    /// replicator's transport has TLS, the service demands peer certificates
    /// ([`ReplicationService::require_peer_certificate`]).
    pub fn service(&self) -> ReplicationService {
        let i = &self.inner;
        let service = ReplicationService::new(i.store.clone(), i.cluster.clone(), i.hlc.clone())
            .with_addr(i.self_addr.clone())
            .with_peer_table(i.peers.clone())
            .require_peer_certificate(i.peer_tls);
        match &i.credential {
            Some(credential) => {
                i.previous.iter().fold(service.with_credential(credential), |s, c| s.also_accept(c))
            }
            None => service,
        }
    }

    /// The table of peers this replicator and its service have talked to.
    pub fn peer_table(&self) -> &PeerTable {
        &self.inner.peers
    }

    /// The peers writes go to now: seeds plus members, without this node.
    ///
    /// # Errors
    ///
    /// [`ReplicationError::Store`] when membership cannot be read.
    pub async fn peer_addrs(&self) -> Result<Vec<PeerAddr>, ReplicationError> {
        self.inner.peer_addrs().await
    }

    /// Exchanges state once with every peer it knows (seeds and members), all at
    /// once, each exchange bounded by `each`, and returns how many peers answered.
    ///
    /// A node calls this before its first write after a start, so that it serves
    /// the cluster's state, not an empty or stale copy, and its first stamps
    /// follow everything its peers hold. (Sequence numbers need no such care: a
    /// store created empty writes under a new [`Origin`](crate::Origin).)
    ///
    /// # Errors
    ///
    /// [`ReplicationError::Store`] when the local store fails (unreachable peers
    /// are not errors; they are not counted).
    pub async fn pull_from_all(&self, each: Duration) -> Result<usize, ReplicationError> {
        let addrs = self.inner.peer_addrs().await?;
        let pulls = addrs
            .iter()
            .map(|addr| async move { (addr, tokio::time::timeout(each, self.inner.sync_with(addr)).await) });
        let mut answered = 0;
        for (addr, outcome) in futures::future::join_all(pulls).await {
            match outcome {
                Ok(Ok(())) => answered += 1,
                Ok(Err(ReplicationError::Store(e))) => return Err(ReplicationError::Store(e)),
                Ok(Err(e)) => {
                    self.inner.note_failure(addr, &e);
                    debug!(peer = %addr, error = %e, "startup pull failed");
                }
                Err(_) => debug!(peer = %addr, "startup pull timed out"),
            }
        }
        Ok(answered)
    }

    /// The node answering at `addr`, as its handshake names it, asked with an
    /// empty push (nothing is sent or merged), within `timeout`. A starting
    /// node uses it to find out whether the address its membership record
    /// gives is still served by a running node with its own id.
    ///
    /// # Errors
    ///
    /// What the call came to when it did not answer (unreachable, refused,
    /// timed out, malformed).
    pub async fn identify(&self, addr: &PeerAddr, timeout: Duration) -> Result<NodeId, ReplicationError> {
        let inner = &self.inner;
        let call = async {
            let req = proto::PushRequest {
                header: Some(inner.handshake.header()),
                records: Vec::new(),
                covers: None,
                since: None,
            };
            let answer = inner.client(addr).push(req).await.map_err(|s| inner.failed_call(addr, &s))?;
            Ok(inner.check_answer(addr, answer.into_inner().header)?.node_id)
        };
        tokio::time::timeout(timeout, call).await.unwrap_or_else(|_| {
            Err(ReplicationError::Peer {
                peer: addr.clone(),
                failure: PeerFailure::Timeout { message: format!("no answer within {timeout:?}") },
            })
        })
    }

    /// Runs anti-entropy rounds in the background (the first at once) until the
    /// returned handle is stopped or dropped, or [`stop`](Self::stop) is called.
    /// A stopped replicator stays stopped: it no longer runs rounds or retries
    /// pushes (writes are still pushed once).
    pub fn start(&self) -> AntiEntropyHandle {
        let inner = self.inner.clone();
        let mut stop = inner.stop.subscribe();
        let span = info_span!("anti_entropy", node = %inner.store.node_id());
        let task = tokio::spawn(
            async move {
                if *stop.borrow_and_update() {
                    return;
                }
                loop {
                    tokio::select! {
                        biased;
                        _ = stop.changed() => break,
                        res = inner.sync_round() => {
                            if let Err(e) = res {
                                debug!(error = %e, "anti-entropy round failed");
                            }
                        }
                    }
                    let wait = inner.jittered_interval();
                    tokio::select! {
                        biased;
                        _ = stop.changed() => break,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
                debug!("anti-entropy stopped");
            }
            .instrument(span),
        );
        AntiEntropyHandle { inner: self.inner.clone(), task: Some(task) }
    }

    /// Stops the background rounds and push retries.
    pub fn stop(&self) {
        self.inner.stop.send_replace(true);
    }
}

/// Runs an [`AntiEntropy`]'s rounds; stops them when dropped.
#[derive(Debug)]
pub struct AntiEntropyHandle {
    inner: Arc<Inner>,
    task: Option<JoinHandle<()>>,
}

impl AntiEntropyHandle {
    /// Asks the rounds to stop (a round under way is abandoned).
    pub fn stop(&self) {
        self.inner.stop.send_replace(true);
    }

    /// Stops the rounds and waits until they have.
    pub async fn shutdown(mut self) {
        self.stop();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for AntiEntropyHandle {
    fn drop(&mut self) {
        self.inner.stop.send_replace(true);
    }
}

#[derive(Debug)]
struct Inner {
    store: Arc<dyn ConfigStore>,
    hlc: Arc<Hlc>,
    cluster: ClusterId,
    self_addr: PeerAddr,
    seeds: Vec<PeerAddr>,
    interval: Duration,
    /// Channels to peers (one per address; see [`ChannelCache`]).
    channels: Arc<ChannelCache>,
    /// Whether the service demands peer certificates (the transport has TLS).
    peer_tls: bool,
    /// The seeded generator, when [`AntiEntropyBuilder::rng_seed`] was set.
    rng: Option<Mutex<StdRng>>,
    peers: PeerTable,
    handshake: Handshake,
    /// The peer addresses found last time.
    known: Mutex<Vec<PeerAddr>>,
    stop: watch::Sender<bool>,
    /// Given to [`AntiEntropy::service`], which requires its token.
    credential: Option<PeerCredential>,
    /// Credentials of previous cluster keys, still sent and accepted (key rotation).
    previous: Vec<PeerCredential>,
    /// Adds the peer token to every call, when there is a credential.
    attach: AttachToken,
    /// Rounds run so far (see [`LEFT_RECHECK_EVERY`]).
    rounds: AtomicU64,
    /// The peers whose last exchange was refused for a reason that does not
    /// pass by itself (another cluster, a wrong key, a skewed clock, by either
    /// side): logged once when it starts and once when it ends, not every round.
    refusing: Mutex<BTreeSet<PeerAddr>>,
}

/// A call to `addr` that ended with `status`.
fn call_failed(addr: &PeerAddr, status: &tonic::Status) -> ReplicationError {
    ReplicationError::Peer { peer: addr.clone(), failure: PeerFailure::from_status(status) }
}

/// An answer from `addr` that failed validation.
fn malformed(addr: &PeerAddr, e: InvalidMessage) -> ReplicationError {
    ReplicationError::Peer { peer: addr.clone(), failure: e.into() }
}

impl Inner {
    /// The error of a call to `addr` that failed with `status`; a refusal for
    /// clock skew still measures the peer's clock (see [`Handshake::note_refusal`]).
    fn failed_call(&self, addr: &PeerAddr, status: &tonic::Status) -> ReplicationError {
        self.handshake.note_refusal(addr, status);
        call_failed(addr, status)
    }

    /// The peers writes go to now (see [`peers::select_peers`]).
    async fn peer_addrs(&self) -> Result<Vec<PeerAddr>, ReplicationError> {
        let membership = self.membership().await?;
        Ok(self.peers_of(&membership))
    }

    /// Runs `f` with the seeded generator, or else the thread's.
    fn with_rng<T>(&self, f: impl FnOnce(&mut dyn RngCore) -> T) -> T {
        match &self.rng {
            Some(rng) => f(&mut *rng.lock()),
            None => f(&mut rand::rng()),
        }
    }

    fn jittered_interval(&self) -> Duration {
        let factor: f64 = self.with_rng(|rng| rng.random_range(0.8..=1.2));
        Duration::try_from_secs_f64(self.interval.as_secs_f64() * factor)
            .unwrap_or(self.interval)
            .max(Duration::from_millis(1))
    }

    fn client(&self, addr: &PeerAddr) -> ReplicationClient<InterceptedService<Channel, AttachToken>> {
        let channel = self.channels.get(addr);
        let max = self.channels.max_message_bytes();
        ReplicationClient::with_interceptor(channel, self.attach.clone())
            .max_decoding_message_size(max)
            .max_encoding_message_size(max)
    }

    /// Admits the header of an answer from `addr` (see [`Handshake::admit`]).
    fn check_answer(
        &self,
        addr: &PeerAddr,
        header: Option<proto::Header>,
    ) -> Result<PeerHeader, ReplicationError> {
        let admitted =
            self.handshake.admit(header, Contact::Dialled(addr)).map_err(|r| r.into_error(addr))?;
        Ok(admitted.header)
    }

    fn note_failure(&self, addr: &PeerAddr, e: &ReplicationError) {
        let msg = e.to_string();
        self.peers.update(addr, |p| p.last_error = Some(msg));
        let refused = matches!(
            e,
            ReplicationError::Peer { .. }
                | ReplicationError::WrongCluster { .. }
                | ReplicationError::ClockSkew { .. }
        ) && !e.retryable();
        if refused && self.refusing.lock().insert(addr.clone()) {
            warn!(peer = %addr, error = %e, hint = e.mode_hint(), "replication with a peer is refused (by it, or by this node); nothing is exchanged with it until that is mended");
        }
    }

    async fn note_success(&self, addr: &PeerAddr, theirs: &VersionVector) {
        let lag = match self.store.digest().await {
            Ok(ours) => ours.lag_behind(theirs),
            Err(_) => 0,
        };
        self.peers.update(addr, |p| {
            p.lag = lag;
            p.last_error = None;
        });
        if self.refusing.lock().remove(addr) {
            info!(peer = %addr, "replication with a peer that was refused works again");
        }
    }

    #[instrument(skip_all, fields(node = %self.store.node_id()))]
    async fn sync_round(&self) -> Result<(), ReplicationError> {
        let membership = self.membership().await?;
        let peers = self.peers_of(&membership);
        let round = self.rounds.fetch_add(1, Ordering::Relaxed);
        // A member that left, every few rounds (every round when no member is
        // a peer): it may be back (see `peers::left_addrs`).
        let recheck = if peers.is_empty() || round % LEFT_RECHECK_EVERY == 0 {
            let left = self.left_of(&membership, &peers);
            self.with_rng(|rng| left.choose(rng).cloned())
        } else {
            None
        };
        let recheck = async {
            let Some(addr) = recheck else { return };
            // Quietly: a member that left is usually down, and is no peer
            // (its failures are not recorded in the peer table).
            match tokio::time::timeout(LEFT_RECHECK_TIMEOUT, self.sync_with(&addr)).await {
                Ok(Ok(())) => info!(peer = %addr, "a member recorded as left answered; it is a peer again"),
                Ok(Err(e)) => trace!(peer = %addr, error = %e, "a member that left did not answer"),
                Err(_) => trace!(peer = %addr, "a member that left did not answer in time"),
            }
        };
        let Some(addr) = self.with_rng(|rng| peers.choose(rng).cloned()) else {
            trace!("no peers to sync with");
            recheck.await;
            return Ok(());
        };
        let (res, ()) = tokio::join!(self.sync_with(&addr), recheck);
        if let Err(e) = &res {
            self.note_failure(&addr, e);
        }
        if let Err(e) = self.collect_tombstones().await {
            debug!(error = %e, "tombstone collection failed");
        }
        res
    }
}

#[async_trait]
impl Replicator for AntiEntropy {
    #[instrument(skip_all, fields(node = %self.inner.store.node_id(), records = records.len(), ack = ?ack))]
    async fn replicate(
        &self,
        records: Vec<Record>,
        ack: AckLevel,
        timeout: Duration,
    ) -> Result<AckReport, ReplicationError> {
        let membership = self.inner.membership().await?;
        let peers = self.inner.peers_of(&membership);
        let voters = peers::ack_voters(&peers, &membership, self.inner.store.node_id());
        let members = voters.len() + 1;
        let needed = match ack {
            AckLevel::Local => 1,
            AckLevel::Quorum => members / 2 + 1,
            AckLevel::All => members,
        };
        if records.is_empty() {
            return Ok(AckReport { acked: members, members });
        }
        let records = Arc::new(records);
        let retry_until = Instant::now() + timeout.max(MIN_PUSH_RETRY_WINDOW);
        let (tx, mut rx) = mpsc::channel(peers.len().max(1));
        for addr in peers.iter().cloned() {
            let (inner, records, tx) = (self.inner.clone(), records.clone(), tx.clone());
            tokio::spawn(
                async move {
                    let ok = inner.push_with_retry(&addr, &records, retry_until).await;
                    // Only a member's acknowledgement counts (see `ack_voters`).
                    let _ = tx.send((addr, ok)).await;
                }
                .in_current_span(),
            );
        }
        drop(tx);
        let mut acked = 1;
        let mut acked_by = BTreeSet::new();
        let until = Instant::now() + timeout;
        while acked < needed {
            match tokio::time::timeout_at(until, rx.recv()).await {
                Ok(Some((addr, true))) if voters.contains(&addr) => {
                    acked += 1;
                    acked_by.insert(addr);
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => {
                    let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
                    let missing: Vec<PeerAddr> =
                        voters.into_iter().filter(|a| !acked_by.contains(a)).collect();
                    warn!(
                        acked,
                        needed,
                        timeout_ms,
                        ?missing,
                        "write not acknowledged at the requested level"
                    );
                    return Err(ReplicationError::AckTimeout { acked, needed, members, missing, timeout_ms });
                }
            }
        }
        Ok(AckReport { acked, members })
    }

    async fn sync_round(&self) -> Result<(), ReplicationError> {
        self.inner.sync_round().await
    }

    fn peers(&self) -> Vec<PeerStatus> {
        let known = self.inner.known.lock().clone();
        let mut out = self.inner.peers.snapshot();
        for addr in known {
            if !out.iter().any(|p| p.addr == addr) {
                out.push(blank(addr));
            }
        }
        out.sort_by(|a, b| a.addr.cmp(&b.addr));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MemoryStore, WriteBatch};

    fn builder(seeds: &[&str]) -> AntiEntropyBuilder {
        let hlc = Arc::new(Hlc::system());
        let store = Arc::new(MemoryStore::new("n1".parse().unwrap(), hlc.clone()));
        AntiEntropy::builder(store, hlc, "c".parse().unwrap(), "127.0.0.1:7001".parse().unwrap())
            .seeds(seeds.iter().map(|s| s.parse().unwrap()).collect())
    }

    fn replicator(seeds: &[&str]) -> AntiEntropy {
        builder(seeds).build()
    }

    #[tokio::test]
    async fn peers_are_seeds_and_members_without_self_or_leavers() {
        let ae = replicator(&["127.0.0.1:7002", "http://127.0.0.1:7001/"]);
        let members = [
            (r#"{"id":"n1","addr":"http://127.0.0.1:7009","state":"active"}"#, "self by id"),
            (r#"{"id":"n3","addr":"http://127.0.0.1:7003","state":"joining"}"#, "kept"),
            (r#"{"id":"n4","addr":"http://127.0.0.1:7004","state":"left"}"#, "left"),
            (r#"{"id":"n5","addr":"http://127.0.0.1:7005","state":"sleeping"}"#, "bad state"),
            (r#"not json"#, "garbage"),
            (r#"{"id":"n6","addr":"nowhere","state":"active"}"#, "bad addr"),
        ];
        let mut batch = WriteBatch::new();
        for (i, (json, _)) in members.iter().enumerate() {
            batch = batch.put(format!("membership/m{i}"), json.to_string());
        }
        batch = batch.put("membership/gone", "x").delete("membership/gone");
        ae.inner.store.apply(batch).await.unwrap();
        let peers = ae.peer_addrs().await.unwrap();
        assert_eq!(peers, ["http://127.0.0.1:7002", "http://127.0.0.1:7003"]);
        let listed: Vec<PeerAddr> = ae.peers().into_iter().map(|p| p.addr).collect();
        assert_eq!(listed, peers);
    }

    #[tokio::test]
    async fn a_lasting_refusal_is_noted_once_until_an_exchange_succeeds_and_a_timeout_is_not_one() {
        let ae = replicator(&["127.0.0.1:7002"]);
        let peer: PeerAddr = "127.0.0.1:7002".parse().unwrap();
        let failed = |failure| ReplicationError::Peer { peer: peer.clone(), failure };
        let refusing = || ae.inner.refusing.lock().iter().cloned().collect::<Vec<_>>();
        ae.inner.note_failure(&peer, &failed(PeerFailure::Timeout { message: "5 s".into() }));
        assert!(refusing().is_empty(), "a timeout passes by itself");
        let unauthenticated =
            PeerFailure::Refused { code: tonic::Code::Unauthenticated, message: "bad key".into() };
        ae.inner.note_failure(&peer, &failed(unauthenticated));
        assert_eq!(refusing(), std::slice::from_ref(&peer));
        let other = ReplicationError::WrongCluster {
            peer: peer.clone(),
            ours: "c".parse().unwrap(),
            theirs: "d".into(),
        };
        ae.inner.note_failure(&peer, &other);
        assert_eq!(refusing(), std::slice::from_ref(&peer), "noted once");
        ae.inner.note_success(&peer, &VersionVector::default()).await;
        assert!(refusing().is_empty(), "the exchange works again");
    }

    #[tokio::test]
    async fn local_acks_need_no_peer_and_jitter_stays_within_a_fifth() {
        let ae = replicator(&[]);
        let recs = ae.inner.store.apply(WriteBatch::new().put("k", "v")).await.unwrap();
        let report = ae.replicate(recs, AckLevel::All, Duration::from_millis(10)).await.unwrap();
        assert_eq!(report, AckReport { acked: 1, members: 1 });
        for _ in 0..100 {
            let d = ae.inner.jittered_interval();
            assert!(d >= Duration::from_millis(800) && d <= Duration::from_millis(1200), "{d:?}");
        }
        ae.sync_round().await.unwrap();
    }

    #[test]
    fn a_seeded_replicator_repeats_its_waits_and_peer_choices() {
        let peers: Vec<PeerAddr> =
            (0..5).map(|i| format!("http://10.0.0.{i}:7000").parse().unwrap()).collect();
        let draws = |seed: u64| {
            let ae = builder(&[]).rng_seed(seed).build();
            (0..50)
                .map(|_| {
                    let wait = ae.inner.jittered_interval();
                    let peer = ae.inner.with_rng(|rng| peers.choose(rng).cloned());
                    (wait, peer)
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(draws(7), draws(7));
        assert_ne!(draws(7), draws(8));
        assert!(
            draws(7)
                .iter()
                .all(|(d, _)| *d >= Duration::from_millis(800) && *d <= Duration::from_millis(1200))
        );
    }
}
