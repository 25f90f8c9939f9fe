//! [`PeerGate`]: the one admission check every internal (node-to-node) gRPC
//! service runs before it acts on anything of a call (a stream of calls, before
//! it reads the first: its metadata and credential, then with that call its
//! certificate and header, and every later call's header).
//!
//! The replication service ([`ReplicationService`](crate::ReplicationService))
//! and Raft mode's service ([`RaftService`](crate::RaftService)) admit their
//! callers here, so a rule cannot differ between them. In order, a call is
//! refused when:
//!
//! 1. its metadata is larger than [`MAX_PEER_METADATA_BYTES`]
//!    (`resource_exhausted`), or it carries more than [`MAX_TOKENS`] peer
//!    credential entries ([`PEER_HEADER`]), or an entry that is not a token's
//!    form, 64 lower-case hex digits (`unauthenticated`);
//! 2. the service has a [`PeerCredential`](crate::PeerCredential) and no entry is
//!    its token (or a previous key's, during a rotation) (`unauthenticated`);
//! 3. the service requires peer certificates (its node serves TLS) and the call's
//!    TLS client certificate, already verified against the cluster CA by the TLS
//!    handshake, does not name the node id the call's header claims
//!    ([`certificate_names_node`]) (`unauthenticated`);
//! 4. its header is missing or malformed (`invalid_argument`), names another
//!    cluster, or carries a clock too far ahead (`failed_precondition`): the
//!    [handshake](crate::handshake) both sides share.
//!
//! A refused call is logged (`warn`, with the service, method, claimed node and
//! remote address) and changes nothing: no record is read or merged, the HLC
//! does not observe its stamp, and only a caller of this cluster whose clock is
//! off is recorded in the peer table (flagged, see the handshake).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use spectrum_core::tls::certificate_names_node;
use tonic::metadata::MetadataMap;
use tonic::{Request, Status};
use tracing::warn;

use crate::credential::{MAX_TOKENS, PEER_HEADER, PeerToken};
use crate::handshake::{Admitted, Contact, Handshake};
use crate::log_limit::{LogLimiter, REPEAT_EVERY};
use crate::proto;

/// Most bytes of metadata (names and values of every entry) an internal call may
/// carry: 8 KiB. A peer sends a few hundred (its tokens and tonic's own
/// entries); the HTTP/2 server's header list limit applies on top.
pub(crate) const MAX_PEER_METADATA_BYTES: usize = 8 * 1024;

/// Length of a peer token on the wire: 64 hex digits of an HMAC-SHA256.
const TOKEN_HEX_LEN: usize = 64;

/// A request message that starts with a replication [`proto::Header`].
pub(crate) trait HeaderedCall {
    /// The header the caller sent, if any.
    fn header(&self) -> Option<&proto::Header>;
}

impl HeaderedCall for proto::PushRequest {
    fn header(&self) -> Option<&proto::Header> {
        self.header.as_ref()
    }
}

impl HeaderedCall for proto::SyncRequest {
    fn header(&self) -> Option<&proto::Header> {
        self.header.as_ref()
    }
}

impl HeaderedCall for proto::RaftCall {
    fn header(&self) -> Option<&proto::Header> {
        self.header.as_ref()
    }
}

/// The admission rules of one internal service (see the [module docs](self)).
#[derive(Debug, Clone)]
pub(crate) struct PeerGate {
    /// The service's name in refusals and logs ("replication", "raft").
    service: &'static str,
    /// The tokens a call may carry (one is enough); none: no credential needed.
    tokens: Arc<Vec<PeerToken>>,
    /// Whether calls must present a node certificate naming their claimed node.
    require_peer_certificate: bool,
    /// Holds back repeats of a refused caller's warning.
    logged: Arc<LogLimiter>,
}

/// Why the gate refused a call before its header was looked at.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum GateRefusal {
    /// The call's metadata is larger than the gate takes.
    #[error("the call carries {bytes} bytes of metadata, more than the {max} an internal call may")]
    MetadataTooLarge { bytes: usize, max: usize },
    /// More peer credential entries than a key rotation needs.
    #[error("the call carries {count} {PEER_HEADER} entries; at most {max} are accepted")]
    TooManyCredentials { count: usize, max: usize },
    /// A peer credential entry that is not a token's form.
    #[error("the {PEER_HEADER} entry #{index} is not a peer credential token (64 lower-case hex digits)")]
    MalformedCredential { index: usize },
    /// No peer credential entry, where the service needs one.
    #[error("{service} calls need this cluster's peer credential ({PEER_HEADER})")]
    MissingCredential { service: &'static str },
    /// Peer credential entries, none of them this cluster's.
    #[error("no {PEER_HEADER} entry of the call is this cluster's peer credential")]
    WrongCredential,
    /// No TLS client certificate, where the service needs one.
    #[error("{service} calls need a node certificate of this cluster (TLS client certificate)")]
    MissingCertificate { service: &'static str },
    /// A certificate that does not name the node the header claims.
    #[error("the client certificate does not name node {claimed:?}, which the call claims to be")]
    CertificateForAnotherNode { claimed: String },
}

impl GateRefusal {
    /// The status a refused call is answered with.
    pub(crate) fn into_status(self) -> Status {
        match self {
            GateRefusal::MetadataTooLarge { .. } => Status::resource_exhausted(self.to_string()),
            _ => Status::unauthenticated(self.to_string()),
        }
    }
}

impl PeerGate {
    /// The gate of `service`, admitting every caller with a well-formed header
    /// of this cluster until tokens or certificates are required.
    pub(crate) fn new(service: &'static str) -> Self {
        Self { service, tokens: Arc::default(), require_peer_certificate: false, logged: Arc::default() }
    }

    /// Admits only calls carrying one of `tokens` (none: no credential needed).
    pub(crate) fn with_tokens(mut self, tokens: impl Into<Arc<Vec<PeerToken>>>) -> Self {
        self.tokens = tokens.into();
        self
    }

    /// Also admits calls carrying `token` (a previous key's, during a rotation).
    pub(crate) fn also_accept(mut self, token: PeerToken) -> Self {
        Arc::make_mut(&mut self.tokens).push(token);
        self
    }

    /// Requires (or not) a TLS client certificate naming the calling node.
    pub(crate) fn require_peer_certificate(mut self, require: bool) -> Self {
        self.require_peer_certificate = require;
        self
    }

    /// Admits `request` to `method`: the checks of the [module docs](self), then
    /// `handshake`'s check of its header, which observes the caller's stamp and
    /// records it. Nothing of the call may be read before this passes.
    pub(crate) fn admit<T: HeaderedCall>(
        &self,
        handshake: &Handshake,
        request: &Request<T>,
        method: &str,
    ) -> Result<Admitted, Status> {
        self.admit_stream(handshake, request, request.get_ref(), method)
    }

    /// The checks a stream of calls to `method` passes before its first call
    /// is read: the metadata's size and the credential (the certificate and
    /// the header wait for the first call, which names the calling node).
    pub(crate) fn admit_opening<T>(&self, request: &Request<T>, method: &str) -> Result<(), Status> {
        self.check_credential(request.metadata()).map_err(|refusal| {
            self.warn_refused(method, "", request.remote_addr(), &refusal);
            refusal.into_status()
        })
    }

    /// Admits `request` to `method` on `first`, its message or a stream's first
    /// call: the checks of the [module docs](self) against the request's
    /// metadata and certificate and `first`'s header. Each later call of a
    /// stream goes through [`admit_next`](Self::admit_next).
    pub(crate) fn admit_stream<T>(
        &self,
        handshake: &Handshake,
        request: &Request<T>,
        first: &impl HeaderedCall,
        method: &str,
    ) -> Result<Admitted, Status> {
        let header = first.header();
        let claimed = header.map_or("", |h| h.node_id.as_str());
        // Parsed only when required: whether the client certificate names the claimed node.
        let certificate = self
            .require_peer_certificate
            .then(|| request.peer_certs().map(|chain| certificate_names_node(&chain, claimed)))
            .flatten();
        if let Err(refusal) = self.check(request.metadata(), certificate, claimed) {
            self.warn_refused(method, claimed, request.remote_addr(), &refusal);
            return Err(refusal.into_status());
        }
        handshake.admit(header.cloned(), Contact::Inbound).map_err(|r| r.into_status())
    }

    /// Logs a refused call: once per caller (its address's IP, the node it
    /// claims) and reason per [`REPEAT_EVERY`],
    /// with how many were held back since, so a caller that keeps calling
    /// does not flood the log.
    fn warn_refused(&self, method: &str, claimed: &str, remote: Option<SocketAddr>, refusal: &GateRefusal) {
        let key = format!("{}|{claimed}|{:?}|{refusal}", self.service, remote.map(|r| r.ip()));
        if let Some(held_back) = self.logged.admit(&key, Instant::now()) {
            warn!(
                service = self.service,
                method,
                claimed_node = claimed,
                remote = ?remote,
                reason = %refusal,
                held_back, repeats_logged_every_s = REPEAT_EVERY.as_secs(),
                "refused an internal call"
            );
        }
    }

    /// Admits a later call of a stream that `opened` admitted: its header must
    /// claim the node the first call claimed (the credential and certificate
    /// were checked for that node; `permission_denied` otherwise, the outer
    /// error: the stream must end) and passes the handshake's check like any
    /// call's (the inner error: this call is refused).
    pub(crate) fn admit_next(
        &self,
        handshake: &Handshake,
        opened: &Admitted,
        call: &impl HeaderedCall,
        method: &str,
    ) -> Result<Result<Admitted, Status>, Status> {
        let header = call.header();
        let claimed = header.map_or("", |h| h.node_id.as_str());
        if claimed != opened.header.node_id.as_str() {
            warn!(
                service = self.service,
                method,
                claimed_node = claimed,
                stream_of = %opened.header.node_id,
                "refused a call claiming another node than its stream"
            );
            return Err(Status::permission_denied(format!(
                "a call of node {}'s stream claims to come from node {claimed:?}",
                opened.header.node_id
            )));
        }
        Ok(handshake.admit(header.cloned(), Contact::Inbound).map_err(|r| r.into_status()))
    }

    /// The checks before the header: metadata, credential, certificate
    /// (`certificate`: none presented, or whether it names the `claimed` node).
    fn check(
        &self,
        metadata: &MetadataMap,
        certificate: Option<bool>,
        claimed: &str,
    ) -> Result<(), GateRefusal> {
        self.check_credential(metadata)?;
        if self.require_peer_certificate {
            let Some(names_claimed) = certificate else {
                return Err(GateRefusal::MissingCertificate { service: self.service });
            };
            if !names_claimed {
                return Err(GateRefusal::CertificateForAnotherNode { claimed: claimed.to_owned() });
            }
        }
        Ok(())
    }

    /// The checks of the metadata alone: its size and the credential.
    fn check_credential(&self, metadata: &MetadataMap) -> Result<(), GateRefusal> {
        let bytes = metadata_bytes(metadata);
        if bytes > MAX_PEER_METADATA_BYTES {
            return Err(GateRefusal::MetadataTooLarge { bytes, max: MAX_PEER_METADATA_BYTES });
        }
        let entries = metadata.get_all(PEER_HEADER);
        let count = entries.iter().count();
        if count > MAX_TOKENS {
            return Err(GateRefusal::TooManyCredentials { count, max: MAX_TOKENS });
        }
        if let Some(index) = entries.iter().position(|v| !is_token_form(v.as_encoded_bytes())) {
            return Err(GateRefusal::MalformedCredential { index });
        }
        if !self.tokens.is_empty() {
            if count == 0 {
                return Err(GateRefusal::MissingCredential { service: self.service });
            }
            if !self.tokens.iter().any(|t| t.admits(metadata)) {
                return Err(GateRefusal::WrongCredential);
            }
        }
        Ok(())
    }
}

/// The bytes of every metadata entry's name and value.
fn metadata_bytes(metadata: &MetadataMap) -> usize {
    metadata
        .as_ref()
        .iter()
        .map(|(name, value)| name.as_str().len().saturating_add(value.len()))
        .fold(0usize, usize::saturating_add)
}

/// Whether `value` has a peer token's form: 64 lower-case hex digits.
fn is_token_form(value: &[u8]) -> bool {
    value.len() == TOKEN_HEX_LEN && value.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use spectrum_core::{ClusterId, Hlc, ManualClock};
    use tonic::Code;
    use tonic::metadata::{AsciiMetadataValue, MetadataValue};

    use super::*;
    use crate::proto::raft_server::Raft as _;
    use crate::proto::replication_server::Replication as _;
    use crate::raft::{RaftReplicator, RaftService};
    use crate::{ConfigStore, MemoryStore, PeerCredential, ReplicationService};

    const CLUSTER: &str = "gate-cluster";
    /// The services' (manual) physical clock.
    const NOW_MS: u64 = 1_700_000_000_000;
    /// The HLC stamp hostile callers send: an admitted call moves the clock to
    /// it (ahead, within the twice the maximum offset a hybrid clock may lead).
    const STAMP_AHEAD_MS: u64 = NOW_MS + 800;

    fn cluster() -> ClusterId {
        CLUSTER.parse().unwrap()
    }

    fn credential() -> PeerCredential {
        PeerCredential::from_bytes([9; 32])
    }

    fn token(credential: &PeerCredential) -> AsciiMetadataValue {
        credential.token(&cluster()).value()
    }

    /// A header of node `b` of `cluster`, sent at `sent_ms`, from an address an
    /// admitted call is recorded under.
    fn header(cluster: &str, sent_ms: u64) -> Option<proto::Header> {
        Some(proto::Header {
            cluster_id: cluster.into(),
            node_id: "b".into(),
            addr: "127.0.0.1:7999".into(),
            hlc: Some(proto::Stamp { wall_ms: STAMP_AHEAD_MS, logical: 0 }),
            sent_ms,
            ..proto::Header::default()
        })
    }

    /// Metadata of these entries (appended in order, so repeated names repeat).
    fn metadata(entries: Vec<(&'static str, AsciiMetadataValue)>) -> MetadataMap {
        let mut md = MetadataMap::new();
        for (name, value) in entries {
            md.append(name, value);
        }
        md
    }

    /// Both internal services of node `a`, each over its own store and clock.
    struct Services {
        replication: ReplicationService,
        replication_store: Arc<dyn ConfigStore>,
        replication_hlc: Arc<Hlc>,
        raft: RaftService,
        raft_replicator: RaftReplicator,
        raft_store: Arc<dyn ConfigStore>,
        raft_hlc: Arc<Hlc>,
        _dir: tempfile::TempDir,
    }

    fn manual_hlc() -> Arc<Hlc> {
        Arc::new(Hlc::new(Arc::new(ManualClock::new(NOW_MS))))
    }

    async fn services() -> Services {
        let replication_hlc = manual_hlc();
        let replication_store: Arc<dyn ConfigStore> =
            Arc::new(MemoryStore::new("a".parse().unwrap(), replication_hlc.clone()));
        let replication =
            ReplicationService::new(replication_store.clone(), cluster(), replication_hlc.clone())
                .with_credential(&credential());
        let raft_hlc = manual_hlc();
        let raft_store: Arc<dyn ConfigStore> =
            Arc::new(MemoryStore::new("a".parse().unwrap(), raft_hlc.clone()));
        let dir = tempfile::tempdir().unwrap();
        let raft_replicator = RaftReplicator::builder(
            raft_store.clone(),
            raft_hlc.clone(),
            cluster(),
            "127.0.0.1:7001".parse().unwrap(),
        )
        .data_dir(dir.path())
        .credential(credential())
        .build()
        .await
        .unwrap();
        let raft = raft_replicator.service();
        Services {
            replication,
            replication_store,
            replication_hlc,
            raft,
            raft_replicator,
            raft_store,
            raft_hlc,
            _dir: dir,
        }
    }

    /// The internal calls the table runs, on both services.
    #[derive(Debug, Clone, Copy)]
    enum Target {
        Push,
        Sync,
        Vote,
        Probe,
    }

    const TARGETS: [Target; 4] = [Target::Push, Target::Sync, Target::Vote, Target::Probe];

    fn request<T>(message: T, md: &MetadataMap) -> Request<T> {
        let mut request = Request::new(message);
        *request.metadata_mut() = md.clone();
        request
    }

    async fn call(
        s: &Services,
        target: Target,
        md: &MetadataMap,
        h: Option<proto::Header>,
    ) -> Result<(), Status> {
        let record = proto::Record {
            key: "settings/intruder".into(),
            value: Some(b"v".to_vec()),
            stamp: Some(proto::Stamp { wall_ms: NOW_MS, logical: 0 }),
            origin: "b".into(),
            seq: 1,
            ..proto::Record::default()
        };
        // A vote for node `b` in term 99: admitted, it would move the node's term.
        let vote = br#"{"vote":{"leader_id":{"term":99,"node_id":7},"committed":false},"last_log_id":null}"#;
        let raft_call =
            |json: &[u8]| proto::RaftCall { header: h.clone(), json: json.to_vec(), ..Default::default() };
        match target {
            Target::Push => {
                let push = proto::PushRequest {
                    header: h.clone(),
                    records: vec![record],
                    covers: None,
                    since: None,
                };
                s.replication.push(request(push, md)).await.map(drop)
            }
            Target::Sync => {
                let sync = proto::SyncRequest { header: h.clone(), ..Default::default() };
                s.replication.sync(request(sync, md)).await.map(drop)
            }
            Target::Vote => s.raft.vote(request(raft_call(vote), md)).await.map(drop),
            Target::Probe => s.raft.probe(request(raft_call(b""), md)).await.map(drop),
        }
    }

    /// A hostile caller: what it sends, and the refusal it must get.
    struct Hostile {
        name: &'static str,
        metadata: MetadataMap,
        header: Option<proto::Header>,
        code: Code,
        message: &'static str,
    }

    fn hostile_callers() -> Vec<Hostile> {
        let good = || ("x-spectrum-peer", token(&credential()));
        let wrong = ("x-spectrum-peer", token(&PeerCredential::from_bytes([8; 32])));
        let other_cluster = ("x-spectrum-peer", credential().token(&"other".parse().unwrap()).value());
        let ours = || header(CLUSTER, NOW_MS);
        let padding = MetadataValue::try_from("p".repeat(MAX_PEER_METADATA_BYTES)).unwrap();
        vec![
            Hostile {
                name: "no credential",
                metadata: metadata(vec![]),
                header: ours(),
                code: Code::Unauthenticated,
                message: "calls need this cluster's peer credential",
            },
            Hostile {
                name: "another credential",
                metadata: metadata(vec![wrong.clone()]),
                header: ours(),
                code: Code::Unauthenticated,
                message: "is this cluster's peer credential",
            },
            Hostile {
                name: "our credential's token for another cluster",
                metadata: metadata(vec![other_cluster]),
                header: ours(),
                code: Code::Unauthenticated,
                message: "is this cluster's peer credential",
            },
            Hostile {
                name: "a malformed credential beside the right one",
                metadata: metadata(vec![
                    good(),
                    ("x-spectrum-peer", AsciiMetadataValue::from_static("0xdeadbeef")),
                ]),
                header: ours(),
                code: Code::Unauthenticated,
                message: "entry #1 is not a peer credential token",
            },
            Hostile {
                name: "the right credential hidden among repeated entries",
                metadata: metadata(vec![wrong.clone(), wrong.clone(), wrong.clone(), wrong.clone(), good()]),
                header: ours(),
                code: Code::Unauthenticated,
                message: "carries 5 x-spectrum-peer entries; at most 4",
            },
            Hostile {
                name: "oversized metadata",
                metadata: metadata(vec![good(), ("x-padding", padding)]),
                header: ours(),
                code: Code::ResourceExhausted,
                message: "bytes of metadata",
            },
            Hostile {
                name: "another cluster's id",
                metadata: metadata(vec![good()]),
                header: header("other-cluster", NOW_MS),
                code: Code::FailedPrecondition,
                message: "wrong cluster: node b belongs to cluster \"other-cluster\"",
            },
            Hostile {
                name: "a clock a minute ahead",
                metadata: metadata(vec![good()]),
                // Sent from no address: a refused skewed caller is otherwise flagged in the peer table.
                header: header(CLUSTER, NOW_MS + 60_000).map(|h| proto::Header { addr: String::new(), ..h }),
                code: Code::FailedPrecondition,
                message: "refused writes from node b",
            },
            Hostile {
                name: "no header",
                metadata: metadata(vec![good()]),
                header: None,
                code: Code::InvalidArgument,
                message: "header",
            },
            Hostile {
                name: "a malformed header",
                metadata: metadata(vec![good()]),
                header: ours().map(|h| proto::Header { node_id: "not a node!".into(), ..h }),
                code: Code::InvalidArgument,
                message: "header.node_id",
            },
        ]
    }

    /// A Vote that names another incarnation of this node's Raft file than
    /// its own is refused: the caller's group counts on a vote this node
    /// forgot (it lost its Raft state). One naming its own, or none (a caller
    /// from before incarnations), is answered.
    #[tokio::test]
    async fn a_vote_naming_another_incarnation_of_this_node_is_refused() {
        let s = services().await;
        let good = metadata(vec![("x-spectrum-peer", token(&credential()))]);
        let vote = br#"{"vote":{"leader_id":{"term":99,"node_id":7},"committed":false},"last_log_id":null}"#;
        let call = |incarnation: u64| proto::RaftCall {
            header: header(CLUSTER, NOW_MS),
            json: vote.to_vec(),
            target_incarnation: incarnation,
            ..Default::default()
        };
        let own = s.raft_replicator.incarnation();
        let refused = s.raft.vote(request(call(own ^ 1), &good)).await.unwrap_err();
        assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
        assert!(refused.message().contains("lost its Raft state"), "{refused:?}");
        s.raft.vote(request(call(own), &good)).await.unwrap();
        s.raft.vote(request(call(0), &good)).await.unwrap();
        s.raft_replicator.shutdown().await;
    }

    /// A node whose Raft file holds no group, before its seeds said whether
    /// the group has it as a voter, denies a vote (as Raft does: an answer,
    /// not a failure, which openraft logs as an ERROR at every first start),
    /// and still refuses entries.
    #[tokio::test]
    async fn a_node_not_yet_checked_denies_votes_and_refuses_entries() {
        let hlc = manual_hlc();
        let store: Arc<dyn ConfigStore> = Arc::new(MemoryStore::new("a".parse().unwrap(), hlc.clone()));
        let dir = tempfile::tempdir().unwrap();
        let replicator = RaftReplicator::builder(store, hlc, cluster(), "127.0.0.1:7001".parse().unwrap())
            .data_dir(dir.path())
            .credential(credential())
            .seeds(vec!["127.0.0.1:9".parse().unwrap()])
            .build()
            .await
            .unwrap();
        let raft = replicator.service();
        let good = metadata(vec![("x-spectrum-peer", token(&credential()))]);
        let call = |json: &[u8]| proto::RaftCall {
            header: header(CLUSTER, NOW_MS),
            json: json.to_vec(),
            target_incarnation: replicator.incarnation(),
            ..Default::default()
        };
        let vote = br#"{"vote":{"leader_id":{"term":3,"node_id":7},"committed":false},"last_log_id":null}"#;
        let answer = raft.vote(request(call(vote), &good)).await.unwrap().into_inner();
        let answer: serde_json::Value = serde_json::from_slice(&answer.json).unwrap();
        assert_eq!(answer["Ok"]["vote_granted"], false, "{answer}");
        let entries = br#"{"vote":{"leader_id":{"term":3,"node_id":7},"committed":true},"prev_log_id":null,"entries":[],"leader_commit":null}"#;
        let refused = raft.append_entries(request(call(entries), &good)).await.unwrap_err();
        assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
        assert!(
            refused.message().contains("does not yet know whether the group has it as a voter"),
            "{refused:?}"
        );
        replicator.shutdown().await;
    }

    #[tokio::test]
    async fn every_internal_service_refuses_each_hostile_caller_alike_and_changes_nothing() {
        let s = services().await;
        for hostile in hostile_callers() {
            for target in TARGETS {
                let status = call(&s, target, &hostile.metadata, hostile.header.clone())
                    .await
                    .expect_err(&format!("{} was admitted to {target:?}", hostile.name));
                assert_eq!(status.code(), hostile.code, "{} to {target:?}: {status:?}", hostile.name);
                assert!(
                    status.message().contains(hostile.message),
                    "{} to {target:?}: {:?} lacks {:?}",
                    hostile.name,
                    status.message(),
                    hostile.message
                );
            }
        }
        for (store, hlc) in [(&s.replication_store, &s.replication_hlc), (&s.raft_store, &s.raft_hlc)] {
            assert!(store.scan("").await.unwrap().is_empty(), "nothing was merged");
            assert!(hlc.now().wall_ms < STAMP_AHEAD_MS, "no refused caller's stamp was observed");
        }
        assert!(s.replication.peer_table().snapshot().is_empty(), "no refused caller was recorded");
        assert!(s.raft_replicator.peer_table().snapshot().is_empty(), "no refused caller was recorded");
        assert_eq!(s.raft_replicator.voters(), Vec::<String>::new(), "the raft group is untouched");
        // The same calls from a caller with the credential and a good header are
        // admitted by both (so every refusal above was the gate's).
        let good = metadata(vec![("x-spectrum-peer", token(&credential()))]);
        for target in [Target::Push, Target::Sync, Target::Probe] {
            call(&s, target, &good, header(CLUSTER, NOW_MS)).await.unwrap();
        }
        assert_eq!(s.replication_store.scan("").await.unwrap().len(), 1);
        assert!(s.raft_hlc.now().wall_ms >= STAMP_AHEAD_MS, "an admitted call is observed");
        s.raft_replicator.shutdown().await;
    }

    /// `s`'s Raft service on a loopback port, and a client of it.
    async fn serve_raft(
        s: &Services,
    ) -> (crate::proto::raft_client::RaftClient<tonic::transport::Channel>, tokio::task::JoinHandle<()>) {
        let listener = spectrum_core::transport::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let transport = spectrum_core::TransportConfig::default();
        let channel = transport.channel(&listener.addr());
        let server = transport.server().unwrap().add_service(s.raft.clone().into_server(1 << 20));
        let server = tokio::spawn(async move {
            let _ = server.serve_with_incoming(listener.incoming).await;
        });
        (crate::proto::raft_client::RaftClient::new(channel), server)
    }

    /// Each hostile caller opening an AppendStream (a ForwardStream when
    /// `forward`) is refused at its first call, as that call alone would be,
    /// and leaves no trace.
    async fn refuse_hostile_streams(
        s: &Services,
        client: &mut crate::proto::raft_client::RaftClient<tonic::transport::Channel>,
        forward: bool,
    ) {
        for hostile in hostile_callers() {
            let md = &hostile.metadata;
            let opened = if forward {
                let calls = futures::stream::iter(vec![proposal(hostile.header.clone(), 0)]);
                client.forward_stream(request(calls, md)).await.map(drop)
            } else {
                let calls = futures::stream::iter(vec![heartbeat(hostile.header.clone())]);
                client.append_stream(request(calls, md)).await.map(drop)
            };
            let status = opened.expect_err(&format!("a stream with {} was admitted", hostile.name));
            assert_eq!(status.code(), hostile.code, "{}: {status:?}", hostile.name);
            assert!(status.message().contains(hostile.message), "{}: {status:?}", hostile.name);
        }
        assert!(s.raft_hlc.now().wall_ms < STAMP_AHEAD_MS, "no refused stream's stamp was observed");
        assert!(s.raft_replicator.peer_table().snapshot().is_empty(), "no refused stream was recorded");
    }

    /// An AppendEntries call from node `b` as leader of term 1, with nothing to append.
    fn heartbeat(header: Option<proto::Header>) -> proto::RaftCall {
        let json = br#"{"vote":{"leader_id":{"term":1,"node_id":7},"committed":true},"prev_log_id":null,"entries":[],"leader_commit":null}"#;
        proto::RaftCall { header, json: json.to_vec(), ..proto::RaftCall::default() }
    }

    #[tokio::test]
    async fn an_append_stream_is_admitted_on_its_first_call_and_every_call_must_claim_its_node() {
        let s = services().await;
        let (mut client, server) = serve_raft(&s).await;

        refuse_hostile_streams(&s, &mut client, false).await;

        // Admitted, each call is answered in order, until one claims another node.
        let good = metadata(vec![("x-spectrum-peer", token(&credential()))]);
        let impostor = header(CLUSTER, NOW_MS).map(|h| proto::Header { node_id: "c".into(), ..h });
        let calls = vec![
            heartbeat(header(CLUSTER, NOW_MS)),
            heartbeat(header(CLUSTER, NOW_MS)),
            heartbeat(impostor),
            heartbeat(header(CLUSTER, NOW_MS)),
        ];
        let mut answers =
            client.append_stream(request(futures::stream::iter(calls), &good)).await.unwrap().into_inner();
        for n in 0..2 {
            let answer = answers.message().await.unwrap().unwrap_or_else(|| panic!("no answer to call {n}"));
            assert_eq!(answer.header.unwrap().node_id, "a");
            assert!(!answer.json.is_empty());
        }
        let status = answers.message().await.expect_err("a call claiming another node was answered");
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        assert!(status.message().contains("claims to come from node \"c\""), "{status:?}");
        assert!(matches!(answers.message().await, Ok(None) | Err(_)), "the stream ended with the refusal");
        server.abort();
        s.raft_replicator.shutdown().await;
    }

    /// A Forward call from node `b`: proposal number `sequence`, one put.
    fn proposal(header: Option<proto::Header>, sequence: u64) -> proto::RaftCall {
        let proposal = proto::RaftProposal {
            stamp: Some(proto::Stamp { wall_ms: NOW_MS, logical: 0 }),
            writes: vec![proto::RaftWrite {
                key: format!("settings/{sequence}"),
                value: Some(b"v".to_vec()),
            }],
            id: vec![sequence as u8; 16],
            ..proto::RaftProposal::default()
        };
        proto::RaftCall { header, proposal: Some(proposal), sequence, ..proto::RaftCall::default() }
    }

    #[tokio::test]
    async fn a_forward_stream_is_admitted_on_its_first_call_and_answers_each_call_by_its_number() {
        let s = services().await;
        let (mut client, server) = serve_raft(&s).await;

        refuse_hostile_streams(&s, &mut client, true).await;

        // Admitted, every call is answered with its number (this node leads
        // no group, so each answer is a refusal to take the write).
        let good = metadata(vec![("x-spectrum-peer", token(&credential()))]);
        let calls = (0..3).map(|n| proposal(header(CLUSTER, NOW_MS), 10 + n)).collect::<Vec<_>>();
        let mut answers =
            client.forward_stream(request(futures::stream::iter(calls), &good)).await.unwrap().into_inner();
        let mut numbers = Vec::new();
        while let Some(answer) = answers.message().await.unwrap() {
            assert_eq!(answer.header.as_ref().unwrap().node_id, "a");
            assert!(String::from_utf8_lossy(&answer.json).contains("ForwardToLeader"), "{answer:?}");
            numbers.push(answer.sequence);
        }
        numbers.sort();
        assert_eq!(numbers, vec![10, 11, 12]);

        // A later call refused for its header or its proposal is answered with
        // its refusal; the others on the stream are decided.
        let skewed = header(CLUSTER, NOW_MS + 60_000).map(|h| proto::Header { addr: String::new(), ..h });
        let mut malformed = proposal(header(CLUSTER, NOW_MS), 3);
        malformed.proposal.as_mut().unwrap().stamp = None;
        let calls = vec![
            proposal(header(CLUSTER, NOW_MS), 1),
            proposal(skewed, 2),
            malformed,
            proposal(header(CLUSTER, NOW_MS), 4),
        ];
        let mut answers =
            client.forward_stream(request(futures::stream::iter(calls), &good)).await.unwrap().into_inner();
        let mut refusals = std::collections::BTreeMap::new();
        while let Some(answer) = answers.message().await.unwrap() {
            refusals.insert(answer.sequence, (Code::from_i32(answer.refusal_code), answer.refusal));
        }
        assert_eq!(refusals.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3, 4], "{refusals:?}");
        assert_eq!(refusals[&1].0, Code::Ok, "{refusals:?}");
        assert_eq!(refusals[&2].0, Code::FailedPrecondition, "{refusals:?}");
        assert!(refusals[&2].1.contains("refused writes from node b"), "{refusals:?}");
        assert_eq!(refusals[&3].0, Code::InvalidArgument, "{refusals:?}");
        assert!(refusals[&3].1.contains("proposal.stamp"), "{refusals:?}");
        assert_eq!(refusals[&4].0, Code::Ok, "{refusals:?}");

        // A later call claiming another node ends the stream.
        let impostor = header(CLUSTER, NOW_MS).map(|h| proto::Header { node_id: "c".into(), ..h });
        let calls = vec![proposal(header(CLUSTER, NOW_MS), 0), proposal(impostor, 1)];
        let mut answers =
            client.forward_stream(request(futures::stream::iter(calls), &good)).await.unwrap().into_inner();
        let status = loop {
            match answers.message().await {
                Ok(Some(answer)) => assert_eq!(answer.sequence, 0, "the impostor's call was answered"),
                Ok(None) => panic!("the stream ended without refusing the impostor's call"),
                Err(status) => break status,
            }
        };
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        assert!(status.message().contains("claims to come from node \"c\""), "{status:?}");
        assert!(s.raft_store.scan("").await.unwrap().is_empty(), "nothing was written");
        server.abort();
        s.raft_replicator.shutdown().await;
    }

    #[tokio::test]
    async fn a_stream_that_sends_no_first_call_is_refused_within_five_seconds() {
        let s = services().await;
        let (mut append, server) = serve_raft(&s).await;
        let mut forward = append.clone();
        let good = metadata(vec![("x-spectrum-peer", token(&credential()))]);
        let silent = || futures::stream::pending::<proto::RaftCall>();
        let started = std::time::Instant::now();
        let (append, forward) = tokio::time::timeout(std::time::Duration::from_secs(20), async {
            tokio::join!(
                append.append_stream(request(silent(), &good)),
                forward.forward_stream(request(silent(), &good))
            )
        })
        .await
        .expect("a silent stream was held open");
        for (name, opened) in [("AppendStream", append.map(drop)), ("ForwardStream", forward.map(drop))] {
            let status = opened.expect_err(&format!("a silent {name} was admitted"));
            assert_eq!(status.code(), Code::DeadlineExceeded, "{name}: {status:?}");
            assert!(status.message().contains("sent no call in time"), "{name}: {status:?}");
        }
        assert!(started.elapsed() >= std::time::Duration::from_secs(4), "refused before the bound");
        server.abort();
        s.raft_replicator.shutdown().await;
    }

    #[test]
    fn only_a_peer_token_s_form_passes_as_a_credential_entry() {
        let token = token(&credential());
        assert!(is_token_form(token.as_encoded_bytes()));
        for bad in ["", "abc", &"A".repeat(64), &"g".repeat(64), &"a".repeat(65)] {
            assert!(!is_token_form(bad.as_bytes()), "{bad:?}");
        }
    }
}

#[cfg(test)]
mod tls_tests {
    use std::time::Duration;

    use rcgen::{
        BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    use spectrum_core::tls::{ClientAuth, TlsConfig, node_dns_name};
    use spectrum_core::transport::bind;
    use spectrum_core::{Clock, Hlc, PeerAddr, SystemClock, TransportConfig};
    use tonic::Code;
    use tonic::transport::Channel;

    use super::*;
    use crate::proto::raft_client::RaftClient;
    use crate::proto::replication_client::ReplicationClient;
    use crate::raft::RaftReplicator;
    use crate::{ConfigStore, MemoryStore, ReplicationService};

    const CLUSTER: &str = "gate-tls";

    /// A certificate authority made for the test.
    struct Ca {
        pem: String,
        issuer: Issuer<'static, KeyPair>,
    }

    impl Ca {
        fn new() -> Self {
            let mut params = CertificateParams::default();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            let key = KeyPair::generate().unwrap();
            let pem = params.self_signed(&key).unwrap().pem();
            Self { pem, issuer: Issuer::new(params, key) }
        }

        /// TLS material of node `id` (named as the node and as 127.0.0.1),
        /// trusting `trusted`'s CA.
        fn node(&self, id: &str, trusted: &Ca) -> TlsConfig {
            let names = vec![node_dns_name(&id.parse().unwrap()), "127.0.0.1".to_owned()];
            let mut params = CertificateParams::new(names).unwrap();
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.extended_key_usages =
                vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
            let key = KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, &self.issuer).unwrap();
            TlsConfig::from_pem(trusted.pem.clone(), cert.pem(), key.serialize_pem()).unwrap()
        }
    }

    /// Which internal service node `a` serves.
    #[derive(Debug, Clone, Copy)]
    enum Kind {
        Replication,
        Raft,
    }

    /// Node `a` serving `kind` over TLS (`server`), requiring peer certificates.
    struct Served {
        addr: PeerAddr,
        store: Arc<dyn ConfigStore>,
        server: tokio::task::JoinHandle<()>,
        raft: Option<RaftReplicator>,
        _dir: tempfile::TempDir,
    }

    async fn serve(kind: Kind, server: TlsConfig) -> Served {
        let hlc = Arc::new(Hlc::system());
        let store: Arc<dyn ConfigStore> = Arc::new(MemoryStore::new("a".parse().unwrap(), hlc.clone()));
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.addr();
        let transport = TransportConfig::default().with_tls(server);
        let dir = tempfile::tempdir().unwrap();
        let mut router = transport.server().unwrap();
        let (router, raft) = match kind {
            Kind::Replication => {
                let svc = ReplicationService::new(store.clone(), CLUSTER.parse().unwrap(), hlc)
                    .require_peer_certificate(true);
                (router.add_service(svc.into_server(4 << 20)), None)
            }
            Kind::Raft => {
                let raft =
                    RaftReplicator::builder(store.clone(), hlc, CLUSTER.parse().unwrap(), addr.clone())
                        .data_dir(dir.path())
                        .transport(transport.clone())
                        .build()
                        .await
                        .unwrap();
                (router.add_service(raft.service().into_server(4 << 20)), Some(raft))
            }
        };
        let serving = router.serve_with_incoming(listener.incoming);
        let server = tokio::spawn(async move {
            let _ = serving.await;
        });
        Served { addr, store, server, raft, _dir: dir }
    }

    /// A call to `served` over TLS as `client`, its header claiming node `claimed`.
    async fn call(kind: Kind, served: &Served, client: TlsConfig, claimed: &str) -> Result<(), Status> {
        let transport = TransportConfig {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Some(Duration::from_secs(5)),
            ..TransportConfig::default()
        }
        .with_tls(client);
        let channel: Channel = match transport.endpoint(&served.addr).connect().await {
            Ok(channel) => channel,
            Err(e) => return Err(Status::unavailable(format!("TLS connection refused: {e}"))),
        };
        let header = Some(proto::Header {
            cluster_id: CLUSTER.into(),
            node_id: claimed.into(),
            hlc: Some(proto::Stamp { wall_ms: SystemClock.now_ms(), logical: 0 }),
            sent_ms: SystemClock.now_ms(),
            ..proto::Header::default()
        });
        match kind {
            Kind::Replication => {
                let record = proto::Record {
                    key: "settings/x".into(),
                    value: Some(b"v".to_vec()),
                    stamp: Some(proto::Stamp { wall_ms: SystemClock.now_ms(), logical: 0 }),
                    origin: claimed.into(),
                    seq: 1,
                    ..proto::Record::default()
                };
                let push = proto::PushRequest { header, records: vec![record], covers: None, since: None };
                ReplicationClient::new(channel).push(push).await.map(drop)
            }
            Kind::Raft => {
                let call = proto::RaftCall { header, ..proto::RaftCall::default() };
                RaftClient::new(channel).probe(call).await.map(drop)
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_internal_service_admits_only_a_certificate_of_this_cluster_naming_the_caller() {
        let (ours, foreign) = (Ca::new(), Ca::new());
        for kind in [Kind::Replication, Kind::Raft] {
            let served = serve(kind, ours.node("a", &ours)).await;
            // A certificate of another cluster's CA never completes the TLS handshake.
            let status = call(kind, &served, foreign.node("b", &ours), "b").await.unwrap_err();
            assert_ne!(status.code(), Code::Ok, "{kind:?}");
            // A certificate of this cluster for node `b`, in a call claiming node `c`.
            let status = call(kind, &served, ours.node("b", &ours), "c").await.unwrap_err();
            assert_eq!(status.code(), Code::Unauthenticated, "{kind:?}: {status:?}");
            assert!(status.message().contains("does not name node \"c\""), "{kind:?}: {}", status.message());
            assert!(served.store.scan("").await.unwrap().is_empty(), "{kind:?}: nothing merged");
            // Node `b` with its own certificate is admitted.
            call(kind, &served, ours.node("b", &ours), "b").await.unwrap();
            served.server.abort();
            if let Some(raft) = served.raft {
                raft.shutdown().await;
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_call_without_a_client_certificate_is_refused_by_every_internal_service() {
        let ours = Ca::new();
        let ca_only = TlsConfig::from_ca_pem(ours.pem.clone()).unwrap();
        for kind in [Kind::Replication, Kind::Raft] {
            // Client certificates optional at the TLS layer: the gate refuses.
            let server = ours.node("a", &ours).client_auth(ClientAuth::Optional);
            let served = serve(kind, server).await;
            let status = call(kind, &served, ca_only.clone(), "b").await.unwrap_err();
            assert_eq!(status.code(), Code::Unauthenticated, "{kind:?}: {status:?}");
            assert!(
                status.message().contains("need a node certificate of this cluster"),
                "{}",
                status.message()
            );
            assert!(served.store.scan("").await.unwrap().is_empty(), "{kind:?}: nothing merged");
            served.server.abort();
            if let Some(raft) = served.raft {
                raft.shutdown().await;
            }
        }
    }
}
