//! [`ReplicationService`]: the server side of the replication protocol.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use prost::Message as _;
use spectrum_core::transport::DEFAULT_MAX_MESSAGE_BYTES;
use spectrum_core::{ClusterId, Hlc, PeerAddr};
use tonic::body::Body;
use tonic::codegen::{Service, http};
use tonic::server::NamedService;
use tonic::{Request, Response, Status};
use tracing::{debug, instrument, trace, warn};

use crate::credential::PeerCredential;
use crate::error::StoreError;
use crate::gate::PeerGate;
use crate::handshake::Handshake;
use crate::peers::PeerTable;
use crate::proto;
use crate::proto::replication_server::{Replication, ReplicationServer};
use crate::record::{Record, validate_key};
use crate::store::ConfigStore;
use crate::wire::{records_from_wire, records_to_wire, vv_from_wire};

/// Largest delta a sync answer carries, whatever the peer asks for: 4 MiB.
pub const MAX_SYNC_BUDGET_BYTES: usize = 4 * 1024 * 1024;

/// Serves the replication protocol over a node's store: `Push` merges records a
/// peer sends; `Sync` answers a peer's digest with what it lacks and our digest,
/// or, when the peer is behind this store's tombstone horizon (see
/// [`ConfigStore::collect_tombstones`]) or when the delta would not fit the
/// message limit (its first group of records travels whole, see
/// [`ConfigStore::delta`], and may be larger than any message), with a snapshot
/// read page by page, which vouches for nothing until its last page: no answer
/// of more than one record exceeds the limit.
/// Every digest a peer shows is noted in the [`PeerTable`].
///
/// Every request passes the peer gate shared by every internal service
/// (credential, certificate, metadata bounds, then the header; see `gate.rs`)
/// before anything is merged: a sender of another
/// cluster is refused (`failed_precondition`, "wrong cluster: …"), a sender whose
/// clock is further ahead than the HLC's maximum offset is refused
/// (`failed_precondition` with the clock skew) and flagged in the [`PeerTable`]
/// unless this node's own clock is the outlier ([`ClockCheck`](crate::ClockCheck)),
/// and a malformed message is `invalid_argument`. Every answer echoes when its
/// request was sent and received, so the caller measures clock offsets over the
/// round trip.
///
/// With a [`PeerCredential`] ([`with_credential`](Self::with_credential)), every
/// call must first carry the peer token (see [`credential`](crate::credential)):
/// a call without it, or with another, is answered `unauthenticated` and nothing
/// is read or merged. Without one, every caller is served: for tests and
/// simulations only.
///
/// With [`require_peer_certificate`](Self::require_peer_certificate) (a replicator
/// whose transport has TLS sets it), a call whose TLS client certificate does not
/// name the node id its header claims is `unauthenticated` before anything is read.
#[derive(Debug, Clone)]
pub struct ReplicationService {
    store: Arc<dyn ConfigStore>,
    cluster: ClusterId,
    handshake: Handshake,
    max_budget: usize,
    /// The largest message this service sends.
    max_message_bytes: usize,
    /// Admits every call before anything of it is read (credential,
    /// certificate, metadata; the header then goes through `handshake`).
    gate: PeerGate,
}

impl ReplicationService {
    /// A service over `store`, for `cluster`, observing senders' stamps with `hlc`
    /// (the same clock the store stamps with).
    pub fn new(store: Arc<dyn ConfigStore>, cluster: ClusterId, hlc: Arc<Hlc>) -> Self {
        let handshake = Handshake::new(cluster.clone(), store.origin().clone(), hlc);
        Self {
            store,
            cluster,
            handshake,
            max_budget: budget_for(DEFAULT_MAX_MESSAGE_BYTES),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            gate: PeerGate::new("replication"),
        }
    }

    /// Requires every call to carry the peer token of `credential` for this
    /// service's cluster; others are answered `unauthenticated`.
    pub fn with_credential(mut self, credential: &PeerCredential) -> Self {
        self.gate = self.gate.with_tokens(vec![credential.token(&self.cluster)]);
        self
    }

    /// Also admits calls carrying the token of `credential` (a previous cluster
    /// key's, during a rotation). Without [`with_credential`](Self::with_credential)
    /// first, it is the only one admitted.
    pub fn also_accept(mut self, credential: &PeerCredential) -> Self {
        self.gate = self.gate.also_accept(credential.token(&self.cluster));
        self
    }

    /// Demands of every call a TLS client certificate (verified against the
    /// cluster CA by the server's handshake) that names the node id of the call's
    /// header ([`spectrum_core::tls::certificate_names_node`]); otherwise the call
    /// is `unauthenticated` and nothing is read or merged. Serve the service over
    /// TLS with client certificates (see [`spectrum_core::tls`]).
    pub fn require_peer_certificate(mut self, require: bool) -> Self {
        self.gate = self.gate.require_peer_certificate(require);
        self
    }

    /// Sets the address this node is reached at, sent in every answer's header.
    pub fn with_addr(mut self, addr: PeerAddr) -> Self {
        self.handshake = self.handshake.with_addr(addr);
        self
    }

    /// Records peers in `peers` (share it with the replicator so both sides of
    /// the conversation show up in one status).
    pub fn with_peer_table(mut self, peers: PeerTable) -> Self {
        self.handshake = self.handshake.with_peer_table(peers);
        self
    }

    /// The table inbound peers are recorded in.
    pub fn peer_table(&self) -> &PeerTable {
        self.handshake.peers()
    }

    /// The gRPC service to add to a tonic server or router (`add_service`),
    /// accepting and sending messages of up to `max_message_bytes` (sync answers
    /// are sized to fit). Its type is opaque: the wire protocol is private to
    /// this crate.
    pub fn into_server(
        mut self,
        max_message_bytes: usize,
    ) -> impl Service<
        http::Request<Body>,
        Response = http::Response<Body>,
        Error = Infallible,
        Future = impl Future<Output = Result<http::Response<Body>, Infallible>> + Send + 'static,
    > + NamedService
    + Clone
    + Send
    + Sync
    + 'static {
        self.max_budget = budget_for(max_message_bytes);
        self.max_message_bytes = max_message_bytes;
        ReplicationServer::new(self)
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes)
    }
}

/// Sync answers hold at most half the message limit of record bytes (the wire
/// form of a record is larger than its estimate) and never more than
/// [`MAX_SYNC_BUDGET_BYTES`].
pub(crate) fn budget_for(max_message_bytes: usize) -> usize {
    (max_message_bytes / 2).clamp(1, MAX_SYNC_BUDGET_BYTES)
}

/// The status answering a store failure.
pub(crate) fn store_status(e: StoreError) -> Status {
    match e {
        StoreError::InvalidRecord { .. }
        | StoreError::InvalidKey { .. }
        | StoreError::ValueTooLarge { .. }
        | StoreError::EmptyBatch
        | StoreError::InvalidToken { .. } => Status::invalid_argument(e.to_string()),
        StoreError::BehindHorizon { .. }
        | StoreError::FeedCompacted { .. }
        | StoreError::FeedAhead { .. } => Status::failed_precondition(e.to_string()),
        // This node cannot write now (a full disk, an I/O error): the peer should
        // try again later or elsewhere; nothing is wrong with its request.
        StoreError::Storage { .. } | StoreError::InUse { .. } => Status::unavailable(e.to_string()),
        other => Status::internal(other.to_string()),
    }
}

#[async_trait]
impl Replication for ReplicationService {
    #[instrument(skip_all, fields(node = %self.store.node_id()))]
    async fn push(
        &self,
        request: Request<proto::PushRequest>,
    ) -> Result<Response<proto::PushResponse>, Status> {
        let admitted = self.gate.admit(&self.handshake, &request, "Push")?;
        let req = request.into_inner();
        let peer = &admitted.header;
        let records = records_from_wire(req.records)?;
        let mut covers = vv_from_wire(req.covers, "covers")?;
        if !covers.entries.is_empty() {
            // Honour `covers` only where this store still holds what the sender
            // assumed: a store that lost state since must not skip what it lacks.
            let since = vv_from_wire(req.since, "since")?;
            let ours = self.store.digest().await.map_err(store_status)?;
            covers.entries.retain(|origin, _| since.get(origin) <= ours.get(origin));
        }
        let count = records.len();
        let report = self.store.merge(records, &covers).await.map_err(|e| {
            warn!(peer = %peer.node_id, error = %e, "refused pushed records");
            store_status(e)
        })?;
        trace!(peer = %peer.node_id, records = count, applied = report.applied, "merged push");
        let digest = self.store.digest().await.map_err(store_status)?;
        Ok(Response::new(proto::PushResponse {
            header: Some(self.handshake.answer(&admitted)),
            digest: Some((&digest).into()),
        }))
    }

    #[instrument(skip_all, fields(node = %self.store.node_id()))]
    async fn sync(
        &self,
        request: Request<proto::SyncRequest>,
    ) -> Result<Response<proto::SyncResponse>, Status> {
        let admitted = self.gate.admit(&self.handshake, &request, "Sync")?;
        let req = request.into_inner();
        let peer = &admitted.header;
        let theirs = vv_from_wire(req.digest, "digest")?;
        if let Some(after) = &req.snapshot_after
            && !after.is_empty()
        {
            validate_key(after)
                .map_err(|e| Status::invalid_argument(format!("invalid snapshot_after: {e}")))?;
        }
        if let Some(addr) = &admitted.recorded_as {
            self.peer_table().note_digest(addr, &peer.origin, &theirs);
        }
        let asked = usize::try_from(req.budget_bytes).unwrap_or(usize::MAX);
        let budget = if asked == 0 { self.max_budget } else { asked.min(self.max_budget) };
        let answer = match req.snapshot_after {
            Some(after) => self.snapshot_page(&after, budget).await?,
            None => match self.store.delta(&theirs, budget).await {
                Ok(delta) => proto::SyncResponse {
                    records: records_to_wire(&delta.records),
                    covers: Some((&delta.covers).into()),
                    complete: delta.complete,
                    ..proto::SyncResponse::default()
                },
                Err(StoreError::BehindHorizon { origin, seen, floor }) => {
                    debug!(peer = %peer.node_id, %origin, seen, floor, "peer is behind the tombstone horizon; sending a snapshot");
                    self.snapshot_page("", budget).await?
                }
                Err(e) => return Err(store_status(e)),
            },
        };
        let ours = self.store.digest().await.map_err(store_status)?;
        // Under the address the handshake recorded (never this node's own).
        if let Some(addr) = &admitted.recorded_as {
            let lag = ours.lag_behind(&theirs);
            self.peer_table().update(addr, |p| p.lag = lag);
        }
        let mut response = proto::SyncResponse {
            header: Some(self.handshake.answer(&admitted)),
            digest: Some((&ours).into()),
            ..answer
        };
        if !response.snapshot && response.records.len() > 1 && response.encoded_len() > self.max_message_bytes
        {
            // A group that travels whole outgrew the message: a snapshot carries
            // it instead, page by page, vouching for nothing until its last page.
            debug!(peer = %peer.node_id, records = response.records.len(), "delta over the message limit; sending a snapshot");
            let page = self.snapshot_page("", budget).await?;
            response = proto::SyncResponse { header: response.header, digest: response.digest, ..page };
        }
        debug!(
            peer = %peer.node_id,
            records = response.records.len(),
            complete = response.complete,
            snapshot = response.snapshot,
            "answered sync"
        );
        Ok(Response::new(response))
    }
}

impl ReplicationService {
    /// One page of a snapshot: the records with keys after `after` (all of them
    /// for ""), in key order, within `budget` bytes (at least one record), with
    /// the conflict losers of those keys.
    async fn snapshot_page(&self, after: &str, budget: usize) -> Result<proto::SyncResponse, Status> {
        let snap = self.store.snapshot().await.map_err(store_status)?;
        let start = snap.records.partition_point(|r| r.key.as_str() <= after);
        let mut used = 0usize;
        let mut end = start;
        for r in &snap.records[start..] {
            let len = r.encoded_len();
            if end > start && used.saturating_add(len) > budget {
                break;
            }
            used = used.saturating_add(len);
            end += 1;
        }
        let complete = end == snap.records.len();
        let last = snap.records[start..end].last().map(|r| r.key.as_str());
        let conflicts: Vec<Record> = snap
            .conflicts
            .into_iter()
            .filter(|c| c.key.as_str() > after && (complete || last.is_some_and(|l| c.key.as_str() <= l)))
            .collect();
        Ok(proto::SyncResponse {
            records: records_to_wire(&snap.records[start..end]),
            conflicts: records_to_wire(&conflicts),
            complete,
            snapshot: true,
            snapshot_digest: Some((&snap.digest).into()),
            gc_floor: Some((&snap.gc_floor).into()),
            ..proto::SyncResponse::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use spectrum_core::transport::bind;
    use spectrum_core::{Clock, SystemClock, TransportConfig};

    use super::*;
    use crate::proto::replication_client::ReplicationClient;
    use crate::{MemoryStore, VersionVector};

    const CLUSTER: &str = "test-cluster";

    /// A service over a fresh store of node `a`.
    fn service() -> (ReplicationService, Arc<dyn ConfigStore>) {
        let hlc = Arc::new(Hlc::system());
        let store: Arc<dyn ConfigStore> = Arc::new(MemoryStore::new("a".parse().unwrap(), hlc.clone()));
        (ReplicationService::new(store.clone(), CLUSTER.parse().unwrap(), hlc), store)
    }

    fn now_ms() -> u64 {
        SystemClock.now_ms()
    }

    fn header(cluster: &str, node: &str) -> Option<proto::Header> {
        Some(proto::Header {
            cluster_id: cluster.into(),
            node_id: node.into(),
            addr: String::new(),
            hlc: Some(proto::Stamp { wall_ms: now_ms(), logical: 0 }),
            ..proto::Header::default()
        })
    }

    fn wire_record(key: &str, origin: &str, seq: u64) -> proto::Record {
        proto::Record {
            key: key.into(),
            value: Some(b"v".to_vec()),
            stamp: Some(proto::Stamp { wall_ms: now_ms(), logical: 0 }),
            origin: origin.into(),
            seq,
            ..proto::Record::default()
        }
    }

    fn push(header: Option<proto::Header>, records: Vec<proto::Record>) -> Request<proto::PushRequest> {
        Request::new(proto::PushRequest { header, records, covers: None, since: None })
    }

    async fn assert_empty(store: &Arc<dyn ConfigStore>) {
        assert!(store.scan("").await.unwrap().is_empty(), "nothing was merged");
        assert_eq!(store.digest().await.unwrap(), VersionVector::default());
    }

    #[tokio::test]
    async fn a_sync_from_this_node_s_own_address_does_not_make_it_its_own_peer() {
        let (service, _store) = service();
        let own: PeerAddr = "127.0.0.1:7001".parse().unwrap();
        let service = service.with_addr(own.clone());
        let mut h = header(CLUSTER, "a");
        if let Some(h) = h.as_mut() {
            h.addr = "http://127.0.0.1:7001/".into();
        }
        let request = Request::new(proto::SyncRequest { header: h, ..proto::SyncRequest::default() });
        service.sync(request).await.unwrap();
        assert!(service.peer_table().get(&own).is_none(), "{:?}", service.peer_table().snapshot());
        assert!(service.peer_table().snapshot().is_empty());
    }

    #[tokio::test]
    async fn a_push_from_another_cluster_is_refused_and_changes_nothing() {
        let (svc, store) = service();
        let records = vec![wire_record("foreign", "intruder", 1)];
        let status = svc.push(push(header("other-cluster", "intruder"), records)).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        assert!(status.message().starts_with("wrong cluster:"), "{}", status.message());
        assert_empty(&store).await;
    }

    #[tokio::test]
    async fn a_service_requiring_peer_certificates_refuses_a_call_without_one_and_reads_nothing() {
        let (svc, store) = service();
        let svc = svc.require_peer_certificate(true);
        let status = svc.push(push(header(CLUSTER, "b"), vec![wire_record("settings/x", "b", 1)])).await;
        assert_eq!(status.unwrap_err().code(), tonic::Code::Unauthenticated);
        let sync = Request::new(proto::SyncRequest { header: header(CLUSTER, "b"), ..Default::default() });
        assert_eq!(svc.sync(sync).await.unwrap_err().code(), tonic::Code::Unauthenticated);
        assert_empty(&store).await;
    }

    #[tokio::test]
    async fn malformed_messages_are_invalid_argument_and_merge_nothing() {
        let (svc, store) = service();
        let good = wire_record("good", "b", 1);
        let cases = [
            ("empty key", proto::Record { key: String::new(), ..wire_record("x", "b", 2) }, "records[1].key"),
            ("seq 0", wire_record("x", "b", 0), "records[1].seq"),
            ("bad origin", wire_record("x", "not a node!", 2), "records[1].origin"),
            ("no stamp", proto::Record { stamp: None, ..wire_record("x", "b", 2) }, "records[1].stamp"),
            (
                "oversized value",
                proto::Record { value: Some(vec![0; 1024 * 1024 + 1]), ..wire_record("x", "b", 2) },
                "bytes",
            ),
        ];
        for (what, bad, expect) in cases {
            let status = svc.push(push(header(CLUSTER, "b"), vec![good.clone(), bad])).await.unwrap_err();
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{what}: {status:?}");
            assert!(status.message().contains(expect), "{what}: {}", status.message());
        }
        let status = svc.push(push(None, vec![good.clone()])).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().contains("header"), "{}", status.message());
        let bad_addr = header(CLUSTER, "b").map(|h| proto::Header { addr: "no such address".into(), ..h });
        let status = svc.push(push(bad_addr, vec![good])).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().contains("header.addr"), "{}", status.message());
        assert_empty(&store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_message_over_the_size_limit_is_refused_by_the_server() {
        let (svc, store) = service();
        let transport = TransportConfig {
            connect_timeout: Duration::from_millis(500),
            request_timeout: Some(Duration::from_secs(2)),
            ..TransportConfig::default()
        };
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.addr();
        let server = transport
            .server()
            .unwrap()
            .add_service(svc.into_server(transport.max_message_bytes))
            .serve_with_incoming(listener.incoming);
        let server = tokio::spawn(server);
        let channel = transport.endpoint(&addr).connect().await.unwrap();
        let mut client = ReplicationClient::new(channel).max_encoding_message_size(usize::MAX);
        let huge = proto::Record { value: Some(vec![0; 5 * 1024 * 1024]), ..wire_record("huge", "b", 2) };
        let status = client.push(push(header(CLUSTER, "b"), vec![huge])).await.unwrap_err();
        assert_ne!(status.code(), tonic::Code::Ok);
        assert_empty(&store).await;
        server.abort();
    }

    #[tokio::test]
    async fn a_push_vouches_only_for_what_the_receiver_still_holds() {
        let (svc, store) = service();
        let vv =
            |seq: u64| Some(proto::VersionVector { entries: [("b".to_owned(), seq)].into_iter().collect() });
        let late = |since| {
            Request::new(proto::PushRequest {
                header: header(CLUSTER, "b"),
                records: vec![wire_record("late", "b", 5)],
                covers: vv(5),
                since,
            })
        };
        // The sender computed its delta when `a` held b:1..4; `a` has since lost them.
        svc.push(late(vv(4))).await.unwrap();
        assert_eq!(store.digest().await.unwrap().get(&"b".parse().unwrap()), 0, "b:1..4 are still owed");
        // Computed from what `a` holds now, the same delta is honoured.
        svc.push(late(None)).await.unwrap();
        assert_eq!(store.digest().await.unwrap().get(&"b".parse().unwrap()), 5);
    }

    #[tokio::test]
    async fn with_a_credential_calls_without_the_token_are_unauthenticated_and_change_nothing() {
        let (svc, store) = service();
        let credential = PeerCredential::from_bytes([9; 32]);
        let svc = svc.with_credential(&credential);
        let good = credential.token(&CLUSTER.parse().unwrap());
        let wrong = PeerCredential::from_bytes([8; 32]).token(&CLUSTER.parse().unwrap());
        for token in [None, Some(&wrong)] {
            let mut req = push(header(CLUSTER, "intruder"), vec![wire_record("settings/x", "intruder", 1)]);
            let mut sync = Request::new(proto::SyncRequest {
                header: header(CLUSTER, "intruder"),
                ..proto::SyncRequest::default()
            });
            if let Some(t) = token {
                req.metadata_mut().insert(crate::credential::PEER_HEADER, t.value());
                sync.metadata_mut().insert(crate::credential::PEER_HEADER, t.value());
            }
            assert_eq!(svc.push(req).await.unwrap_err().code(), tonic::Code::Unauthenticated);
            assert_eq!(svc.sync(sync).await.unwrap_err().code(), tonic::Code::Unauthenticated);
        }
        assert_empty(&store).await;
        assert!(svc.peer_table().snapshot().is_empty(), "no caller was recorded");
        let mut req = push(header(CLUSTER, "b"), vec![wire_record("settings/x", "b", 1)]);
        req.metadata_mut().insert(crate::credential::PEER_HEADER, good.value());
        svc.push(req).await.unwrap();
        assert_eq!(store.scan("").await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn during_a_key_rotation_either_key_s_token_is_admitted_and_no_other() {
        let (svc, store) = service();
        let (new, old, other) = (
            PeerCredential::from_bytes([1; 32]),
            PeerCredential::from_bytes([2; 32]),
            PeerCredential::from_bytes([3; 32]),
        );
        let svc = svc.with_credential(&new).also_accept(&old);
        let cluster: ClusterId = CLUSTER.parse().unwrap();
        for (tokens, admitted) in [
            (vec![&new], true),
            (vec![&old], true),
            (vec![&other, &old], true),
            (vec![&other], false),
            (vec![], false),
        ] {
            let mut req = push(header(CLUSTER, "b"), vec![wire_record("settings/x", "b", 1)]);
            for c in &tokens {
                req.metadata_mut().append(crate::credential::PEER_HEADER, c.token(&cluster).value());
            }
            let answer = svc.push(req).await;
            assert_eq!(answer.is_ok(), admitted, "{} tokens: {answer:?}", tokens.len());
        }
        assert_eq!(store.scan("").await.unwrap().len(), 1);
    }

    /// A copy where node `0w` wrote `keys` keys of 1 KiB and node `a` then
    /// overwrote each of them: `0w`'s range is one gap (walked first: its name
    /// sorts first), and every record of `a` superseded part of it, so the first
    /// group of a delta to an empty peer is the whole store.
    async fn overwritten_store(keys: u64) -> (ReplicationService, Arc<dyn ConfigStore>) {
        let (svc, store) = service();
        let value = vec![b'w'; 1024];
        let written: Vec<proto::Record> = (1..=keys)
            .map(|i| proto::Record {
                value: Some(value.clone()),
                ..wire_record(&format!("settings/k{i}"), "0w", i)
            })
            .collect();
        store.merge(records_from_wire(written).unwrap(), &VersionVector::default()).await.unwrap();
        let mut batch = crate::WriteBatch::new();
        for i in 1..=keys {
            batch = batch.put(format!("settings/k{i}"), vec![b'a'; 1024]);
        }
        store.apply(batch).await.unwrap();
        (svc, store)
    }

    /// A transport whose messages are at most `limit` bytes, with short timeouts.
    fn limited_transport(limit: usize) -> TransportConfig {
        TransportConfig {
            max_message_bytes: limit,
            connect_timeout: Duration::from_millis(500),
            request_timeout: Some(Duration::from_secs(5)),
            ..TransportConfig::default()
        }
    }

    /// Serves `svc` on a loopback port over `transport`; its address and server task.
    async fn serve(
        svc: ReplicationService,
        transport: &TransportConfig,
        limit: usize,
    ) -> (PeerAddr, tokio::task::JoinHandle<Result<(), tonic::transport::Error>>) {
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.addr();
        let server = transport
            .server()
            .unwrap()
            .add_service(svc.into_server(limit))
            .serve_with_incoming(listener.incoming);
        (addr, tokio::spawn(server))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_group_larger_than_the_message_limit_reaches_a_peer_that_pulls_it() {
        const LIMIT: usize = 64 * 1024;
        let (svc, store) = overwritten_store(200).await;
        let whole = store.delta(&VersionVector::default(), 1).await.unwrap();
        let group: usize = whole.records.iter().map(Record::encoded_len).sum();
        assert!(group > 2 * LIMIT, "the first group ({group} bytes) is larger than a message");
        let transport = limited_transport(LIMIT);
        let (addr, server) = serve(svc, &transport, LIMIT).await;
        let hlc = Arc::new(Hlc::system());
        let puller: Arc<dyn ConfigStore> = Arc::new(MemoryStore::new("c".parse().unwrap(), hlc.clone()));
        let listening: PeerAddr = "127.0.0.1:1".parse().unwrap();
        let ae = crate::AntiEntropy::builder(puller.clone(), hlc, CLUSTER.parse().unwrap(), listening)
            .seeds(vec![addr])
            .transport(transport)
            .build();
        assert_eq!(ae.pull_from_all(Duration::from_secs(10)).await.unwrap(), 1, "the peer answered");
        assert_eq!(puller.digest().await.unwrap(), store.digest().await.unwrap());
        assert_eq!(puller.scan("").await.unwrap(), store.scan("").await.unwrap());
        ae.stop();
        server.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_group_larger_than_the_message_limit_reaches_a_peer_it_is_pushed_to() {
        const LIMIT: usize = 64 * 1024;
        let (_svc, store) = overwritten_store(200).await;
        let transport = limited_transport(LIMIT);
        // The receiver serves an empty store; the holder pulls from it, then pushes.
        let hlc = Arc::new(Hlc::system());
        let receiver: Arc<dyn ConfigStore> = Arc::new(MemoryStore::new("c".parse().unwrap(), hlc.clone()));
        let svc = ReplicationService::new(receiver.clone(), CLUSTER.parse().unwrap(), hlc.clone());
        let (addr, server) = serve(svc, &transport, LIMIT).await;
        let listening: PeerAddr = "127.0.0.1:1".parse().unwrap();
        let ae = crate::AntiEntropy::builder(store.clone(), hlc, CLUSTER.parse().unwrap(), listening)
            .seeds(vec![addr])
            .transport(transport)
            .build();
        assert_eq!(ae.pull_from_all(Duration::from_secs(10)).await.unwrap(), 1, "the peer answered");
        assert_eq!(receiver.digest().await.unwrap(), store.digest().await.unwrap());
        assert_eq!(receiver.scan("").await.unwrap(), store.scan("").await.unwrap());
        ae.stop();
        server.abort();
    }

    #[test]
    fn sync_budgets_fit_the_message_limit() {
        assert_eq!(budget_for(4 * 1024 * 1024), 2 * 1024 * 1024);
        assert_eq!(budget_for(usize::MAX), MAX_SYNC_BUDGET_BYTES);
        assert_eq!(budget_for(0), 1);
    }
}
