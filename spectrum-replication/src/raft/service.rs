//! [`RaftService`]: the server side of Raft mode's internal gRPC service.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use openraft::error::{ClientWriteError, ForwardToLeader, RaftError};
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest, VoteResponse};
use tokio::sync::watch;
use tonic::body::Body;
use tonic::codegen::{Service, http};
use tonic::server::NamedService;
use tonic::{Request, Response, Status, Streaming};

use super::codec::{Proposal, entry_from_proto, from_json, to_json};
use super::log_store::InstallInFlight;
use super::replicator::{ForwardAnswer, Inner, ReadIndexAnswer};
use super::{RaftMember, TypeConfig};
use crate::credential::PeerToken;
use crate::gate::PeerGate;
use crate::handshake::Admitted;
use crate::proto;
use crate::proto::raft_server::{Raft as RaftRpc, RaftServer};

/// The answers of an AppendStream (one per call, in order) or a
/// ForwardStream (one per call, as each is decided).
pub(crate) type AnswerStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<proto::RaftAnswer, Status>> + Send + 'static>>;

/// A stream's calls, each with its admission or refusal; an error ends the
/// stream (the transport failed, or a call claimed another node).
type AdmittedCalls = std::pin::Pin<
    Box<
        dyn futures::Stream<Item = Result<(proto::RaftCall, Result<Admitted, Status>), Status>>
            + Send
            + 'static,
    >,
>;

/// How a stream ends when this node is shut down: the peer opens another, on
/// a new connection once this node is back.
fn stopped() -> Status {
    Status::unavailable("this node's Raft has stopped")
}

/// Longest a stream may take to send its first call (the peer sends it with
/// the stream's headers).
const FIRST_CALL_WITHIN: Duration = Duration::from_secs(5);

/// Proposals of one ForwardStream being decided at once; while this many are,
/// the stream's next call is not read (HTTP/2 flow control then holds the
/// follower back).
const FORWARDS_PER_STREAM: usize = 256;

/// Longest the leader waits for a streamed proposal's decision when the call
/// gives no timeout of its own, or a longer one.
const FORWARD_WITHIN: Duration = Duration::from_secs(60);

/// `answers` until the first error, ended with [`stopped`] as soon as this
/// node is shut down (a stream holds its connection open, and a server
/// shutting down waits for its streams to end).
fn until_stopped(
    answers: impl futures::Stream<Item = Result<proto::RaftAnswer, Status>> + Send + 'static,
    stop: watch::Receiver<bool>,
) -> AnswerStream {
    let answers = Box::pin(answers);
    Box::pin(futures::stream::unfold(Some((answers, stop)), |state| async move {
        let (mut answers, mut stop) = state?;
        let next = tokio::select! {
            biased;
            // (A dropped sender means the node is gone too.)
            _ = stop.wait_for(|stop| *stop) => return Some((Err(stopped()), None)),
            next = answers.next() => next,
        };
        // A refusal ends the stream.
        next.map(|answer| {
            let more = answer.is_ok();
            (answer, more.then_some((answers, stop)))
        })
    }))
}

/// Longest a join may take on the leader (the learner catches up first).
const JOIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves Raft mode's internal protocol for one node (see the [module
/// docs](super)). Every call is admitted like a replication call before
/// anything of it is acted on (for a stream, AppendStream or ForwardStream,
/// its metadata before its first call is read, then each call): the peer
/// credential when the cluster has one (`unauthenticated` otherwise), a
/// client certificate naming the calling node when the node serves TLS, and
/// the header checks (another cluster is `failed_precondition`, a malformed
/// message `invalid_argument`). A refused call changes nothing.
#[derive(Debug, Clone)]
pub struct RaftService {
    inner: Arc<Inner>,
    gate: PeerGate,
}

impl RaftService {
    pub(crate) fn new(inner: Arc<Inner>) -> Self {
        let tokens: Vec<PeerToken> =
            inner.credential.iter().chain(&inner.previous).map(|c| c.token(&inner.cluster)).collect();
        let gate =
            PeerGate::new("raft").with_tokens(Arc::new(tokens)).require_peer_certificate(inner.peer_tls);
        Self { inner, gate }
    }

    /// The gRPC service to add to a tonic server or router, accepting and
    /// sending messages of up to `max_message_bytes`.
    pub fn into_server(
        self,
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
        RaftServer::new(self)
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes)
    }

    /// Admits a call through the peer gate every internal service shares
    /// (credential, certificate, metadata bounds, header). Nothing of the call
    /// is read before this passes.
    fn admit(&self, request: &Request<proto::RaftCall>, method: &str) -> Result<Admitted, Status> {
        self.gate.admit(&self.inner.wire.handshake, request, method)
    }

    /// Opens a stream of calls to `method` (AppendStream, ForwardStream):
    /// admits its metadata and credential, waits up to [`FIRST_CALL_WITHIN`]
    /// for its first call and admits that call (the certificate must name the
    /// node its header claims); any refusal so far refuses the stream. Returns
    /// every call, each admitted or refused in turn (a call claiming another
    /// node than the first ends the stream, `permission_denied`), and this
    /// node's stop signal.
    async fn open_stream(
        &self,
        mut request: Request<Streaming<proto::RaftCall>>,
        method: &'static str,
    ) -> Result<(AdmittedCalls, watch::Receiver<bool>), Status> {
        self.gate.admit_opening(&request, method)?;
        let mut stop = self.inner.stop.subscribe();
        let first = tokio::select! {
            first = tokio::time::timeout(FIRST_CALL_WITHIN, request.get_mut().message()) => match first {
                Ok(first) => first?,
                Err(_) => return Err(Status::deadline_exceeded(format!("the {method} sent no call in time"))),
            },
            _ = stop.wait_for(|stop| *stop) => return Err(stopped()),
        };
        let first = first.ok_or_else(|| Status::invalid_argument(format!("the {method} carried no call")))?;
        let handshake = &self.inner.wire.handshake;
        let opened = self.gate.admit_stream(handshake, &request, &first, method)?;
        let first = Ok((first, Ok(opened.clone())));
        let service = self.clone();
        let rest = request.into_inner().map(move |call| {
            let call = call?;
            let admitted = service.gate.admit_next(&service.inner.wire.handshake, &opened, &call, method)?;
            Ok((call, admitted))
        });
        Ok((Box::pin(futures::stream::once(futures::future::ready(first)).chain(rest)), stop))
    }

    /// Hands an admitted AppendEntries call to Raft and answers it.
    async fn append(&self, admitted: &Admitted, call: proto::RaftCall) -> Result<proto::RaftAnswer, Status> {
        self.may_take_part("AppendEntries", call.target_incarnation)?;
        let mut rpc: AppendEntriesRequest<TypeConfig> = from_json("json", &call.json)?;
        rpc.entries = call.entries.into_iter().map(entry_from_proto).collect::<Result<_, _>>()?;
        let result = self.inner.raft.append_entries(rpc).await;
        Ok(self.raw_answer(admitted, to_json(&result)))
    }

    /// Proposes a follower's `proposal` here; the answer for the follower.
    /// A node whose Raft has stopped, or whose queue has, takes nothing: the
    /// follower proposes the write again, to the next leader. (Once taken, a
    /// write whose Raft stops before it commits is answered Fatal, and the
    /// follower proposes it again too, under the same id, which the state
    /// machine decides once.)
    async fn forwarded(&self, proposal: Option<proto::RaftProposal>) -> Result<ForwardAnswer, Status> {
        let proposal = proposal.ok_or_else(|| Status::invalid_argument("invalid proposal: missing"))?;
        let proposal = Proposal::try_from(proposal)?;
        let stopped = self.inner.raft.metrics().borrow().running_state.is_err();
        let taken = if stopped { None } else { self.inner.batcher.propose(proposal).await };
        Ok(match taken {
            Some(answer) => answer,
            None => Err(RaftError::APIError(ClientWriteError::ForwardToLeader(ForwardToLeader::empty()))),
        })
    }

    /// Decides a ForwardStream's `call`, if `admitted`: its answer, numbered
    /// as the call was, or its refusal (its header's, or its proposal's when
    /// malformed); none once the call's timeout (at most [`FORWARD_WITHIN`])
    /// passed, as the follower stopped waiting then.
    async fn forward_streamed(
        &self,
        admitted: Result<Admitted, Status>,
        call: proto::RaftCall,
    ) -> Option<proto::RaftAnswer> {
        let sequence = call.sequence;
        let refused = |status: Status| proto::RaftAnswer {
            sequence,
            refusal_code: status.code() as i32,
            refusal: status.message().to_owned(),
            ..proto::RaftAnswer::default()
        };
        let admitted = match admitted {
            Ok(admitted) => admitted,
            Err(status) => return Some(refused(status)),
        };
        let within = match call.timeout_ms {
            0 => FORWARD_WITHIN,
            ms => Duration::from_millis(ms).min(FORWARD_WITHIN),
        };
        let result = match tokio::time::timeout(within, self.forwarded(call.proposal)).await {
            Err(_) => return None,
            Ok(Err(status)) => return Some(refused(status)),
            Ok(Ok(result)) => result,
        };
        let answer = self.raw_answer(&admitted, to_json(&result));
        Some(proto::RaftAnswer { sequence, ..answer })
    }

    /// Refuses `method` (`unavailable`, saying why) while this node may not
    /// answer calls that count its vote or its log, and when the caller's
    /// group records this node's Raft file as another incarnation than the
    /// one it has (`recorded`; 0 when not recorded): see `lost_state`.
    fn may_take_part(&self, method: &str, recorded: u64) -> Result<(), Status> {
        let me = &self.inner.me;
        if let Some(refusal) = self.inner.lost_state.refusal(&me.id, method) {
            return Err(refusal);
        }
        match super::lost_state::incarnation_refusal(&me.id, method, recorded, me.incarnation) {
            Some(refusal) => Err(refusal),
            None => Ok(()),
        }
    }

    fn raw_answer(&self, admitted: &Admitted, json: Vec<u8>) -> proto::RaftAnswer {
        let header = Some(self.inner.wire.handshake.answer(admitted));
        proto::RaftAnswer { header, json, ..proto::RaftAnswer::default() }
    }

    fn answer(&self, admitted: &Admitted, json: Vec<u8>) -> Response<proto::RaftAnswer> {
        Response::new(self.raw_answer(admitted, json))
    }
}

#[async_trait]
impl RaftRpc for RaftService {
    async fn append_entries(
        &self,
        request: Request<proto::RaftCall>,
    ) -> Result<Response<proto::RaftAnswer>, Status> {
        let admitted = self.admit(&request, "AppendEntries")?;
        Ok(Response::new(self.append(&admitted, request.into_inner()).await?))
    }

    type AppendStreamStream = AnswerStream;

    async fn append_stream(
        &self,
        request: Request<Streaming<proto::RaftCall>>,
    ) -> Result<Response<AnswerStream>, Status> {
        let (calls, stop) = self.open_stream(request, "AppendStream").await?;
        // One call at a time, in the order sent: the answer stream is polled
        // by the stream's own task, so no task or channel is added.
        // A refused call ends the stream: the leader opens another.
        let service = self.clone();
        let answers = calls.and_then(move |(call, admitted)| {
            let service = service.clone();
            async move { service.append(&admitted?, call).await }
        });
        Ok(Response::new(until_stopped(answers, stop)))
    }

    type ForwardStreamStream = AnswerStream;

    async fn forward_stream(
        &self,
        request: Request<Streaming<proto::RaftCall>>,
    ) -> Result<Response<AnswerStream>, Status> {
        let (calls, stop) = self.open_stream(request, "ForwardStream").await?;
        // Proposals are decided concurrently (the queue packs them into
        // entries), each answered when decided, with its call's number; a
        // refused call is answered with its refusal.
        let service = self.clone();
        let answers = calls
            .map(move |admitted| {
                let service = service.clone();
                async move {
                    let (call, admitted) = admitted?;
                    Ok(service.forward_streamed(admitted, call).await)
                }
            })
            .buffer_unordered(FORWARDS_PER_STREAM)
            .try_filter_map(futures::future::ok);
        Ok(Response::new(until_stopped(answers, stop)))
    }

    async fn vote(&self, request: Request<proto::RaftCall>) -> Result<Response<proto::RaftAnswer>, Status> {
        let admitted = self.admit(&request, "Vote")?;
        let rpc: VoteRequest<u64> = from_json("json", &request.get_ref().json)?;
        if self.inner.lost_state.is_unchecked() {
            // Not yet checked (the usual state of a new node while the group
            // is being founded; its next probe settles it): the vote is
            // denied, as Raft denies one, rather than failed, which openraft
            // logs as an ERROR at every cluster's first start. The denial
            // carries this node's own vote, as openraft's would, and no log:
            // a candidate learns nothing from it but "not granted".
            let denied: Result<VoteResponse<u64>, RaftError<u64>> = Ok(VoteResponse {
                vote: self.inner.raft.metrics().borrow().vote,
                vote_granted: false,
                last_log_id: None,
            });
            tracing::debug!(candidate = %rpc.vote, "vote denied: not yet known whether the group has this node as a voter");
            return Ok(self.answer(&admitted, to_json(&denied)));
        }
        self.may_take_part("Vote", request.get_ref().target_incarnation)?;
        let result = self.inner.raft.vote(rpc).await;
        Ok(self.answer(&admitted, to_json(&result)))
    }

    async fn install_snapshot(
        &self,
        request: Request<proto::RaftCall>,
    ) -> Result<Response<proto::RaftAnswer>, Status> {
        let admitted = self.admit(&request, "InstallSnapshot")?;
        self.may_take_part("InstallSnapshot", request.get_ref().target_incarnation)?;
        let call = request.into_inner();
        let mut rpc: InstallSnapshotRequest<TypeConfig> = from_json("json", &call.json)?;
        rpc.data = call.data;
        // The last chunk installs it, and the purge that follows waits for
        // the installed position while this counts (see `log_store`, on
        // purges). On a task of its own, so that it counts until openraft
        // answers even when the call is dropped (its deadline passed, the
        // leader gave up): openraft goes on installing either way.
        let installing = rpc.done.then(|| self.inner.db.upgrade()).flatten().map(InstallInFlight::new);
        let raft = self.inner.raft.clone();
        let result = tokio::spawn(async move {
            let _installing = installing;
            raft.install_snapshot(rpc).await
        })
        .await
        .map_err(|e| Status::internal(format!("installing a snapshot: {e}")))?;
        Ok(self.answer(&admitted, to_json(&result)))
    }

    async fn forward(
        &self,
        request: Request<proto::RaftCall>,
    ) -> Result<Response<proto::RaftAnswer>, Status> {
        let admitted = self.admit(&request, "Forward")?;
        let result = self.forwarded(request.into_inner().proposal).await?;
        Ok(self.answer(&admitted, to_json(&result)))
    }

    async fn read_index(
        &self,
        request: Request<proto::RaftCall>,
    ) -> Result<Response<proto::RaftAnswer>, Status> {
        let admitted = self.admit(&request, "ReadIndex")?;
        let result: ReadIndexAnswer = self.inner.raft.get_read_log_id().await.map(|(read, _)| read);
        Ok(self.answer(&admitted, to_json(&result)))
    }

    async fn join(&self, request: Request<proto::RaftCall>) -> Result<Response<proto::RaftAnswer>, Status> {
        let admitted = self.admit(&request, "Join")?;
        let member: RaftMember = from_json("json", &request.get_ref().json)?;
        if member.id != admitted.header.node_id.as_str() {
            return Err(Status::permission_denied(format!(
                "node {} may not ask to add node {:?}",
                admitted.header.node_id, member.id
            )));
        }
        let result = match tokio::time::timeout(JOIN_TIMEOUT, self.inner.add_member(member)).await {
            Ok(r) => r,
            Err(_) => Err("the leader did not add the member in time".to_owned()),
        };
        Ok(self.answer(&admitted, to_json(&result)))
    }

    async fn remove(&self, request: Request<proto::RaftCall>) -> Result<Response<proto::RaftAnswer>, Status> {
        let admitted = self.admit(&request, "Remove")?;
        let node: String = from_json("json", &request.get_ref().json)?;
        let node: spectrum_core::NodeId = node
            .parse()
            .map_err(|e: spectrum_core::InvalidId| Status::invalid_argument(format!("json: {e}")))?;
        // A node may ask to remove itself: that is how it leaves. The leader
        // checks that the group keeps a reachable majority first.
        let result = self.inner.remove_voter(&node, JOIN_TIMEOUT).await;
        Ok(self.answer(&admitted, to_json(&result)))
    }

    async fn probe(&self, request: Request<proto::RaftCall>) -> Result<Response<proto::RaftAnswer>, Status> {
        let admitted = self.admit(&request, "Probe")?;
        let answer = self.inner.probe().await;
        Ok(self.answer(&admitted, to_json(&answer)))
    }
}
