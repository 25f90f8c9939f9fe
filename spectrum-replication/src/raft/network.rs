//! The client side of Raft mode's internal gRPC service: openraft's
//! [`RaftNetworkFactory`] over the node's shared channels, and the calls a
//! node makes to a peer's Raft service (forward, read index, join, probe).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use openraft::LogId;
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use spectrum_core::PeerAddr;
use spectrum_core::channels::ChannelCache;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tracing::debug;

use super::codec::{entry_to_proto, from_json, to_json};
use super::wal::Durable;
use super::{RaftMember, TypeConfig};
use crate::credential::AttachToken;
use crate::error::{PeerFailure, ReplicationError};
use crate::handshake::{Contact, Handshake};
use crate::proto;
use crate::proto::raft_client::RaftClient;

/// The calls of the Raft service.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Method {
    AppendEntries,
    Vote,
    InstallSnapshot,
    Forward,
    ReadIndex,
    Join,
    Remove,
    Probe,
}

/// How recently a member must have been heard from at the address membership
/// gives for [`Wire::resolve`] to keep calling it there.
const RECORDED_FRESH: Duration = Duration::from_secs(5);

/// How this node calls its peers' Raft services: the node's shared channels,
/// the peer credential, and the handshake every message carries.
#[derive(Debug, Clone)]
pub(crate) struct Wire {
    pub(crate) channels: Arc<ChannelCache>,
    pub(crate) attach: AttachToken,
    pub(crate) handshake: Handshake,
}

impl Wire {
    pub(super) fn client(&self, addr: &PeerAddr) -> RaftClient<InterceptedService<Channel, AttachToken>> {
        let max = self.channels.max_message_bytes();
        RaftClient::with_interceptor(self.channels.get(addr), self.attach.clone())
            .max_decoding_message_size(max)
            .max_encoding_message_size(max)
    }

    /// Where `member` is reached now: the address membership gives while it
    /// was heard from there within [`RECORDED_FRESH`]; otherwise the address
    /// it last spoke from, as the handshakes of this node's calls recorded it
    /// (a member restarted at another address is found before membership
    /// says so); else membership's. So a second process claiming a running
    /// member's id (a copied node file) does not draw that member's calls.
    pub(crate) fn resolve(&self, member: &RaftMember) -> Option<PeerAddr> {
        let peers = self.handshake.peers().snapshot();
        let claiming = peers
            .iter()
            .filter(|p| p.id.as_ref().is_some_and(|id| id.as_str() == member.id))
            .filter_map(|p| Some((p.last_contact?, &p.addr)));
        let mut learned: Option<(Instant, &PeerAddr)> = None;
        for (at, addr) in claiming {
            // Membership keeps addresses in `PeerAddr`'s own form.
            if addr.as_str() == member.addr && at.elapsed() < RECORDED_FRESH {
                return Some(addr.clone());
            }
            if learned.is_none_or(|(best, _)| at > best) {
                learned = Some((at, addr));
            }
        }
        learned.map(|(_, addr)| addr.clone()).or_else(|| member.addr.parse().ok())
    }

    /// Makes one call to `addr`, bounded by `timeout`, and admits the answer's
    /// header; returns the answer's JSON.
    pub(crate) async fn call(
        &self,
        addr: &PeerAddr,
        method: Method,
        mut call: proto::RaftCall,
        timeout: Duration,
    ) -> Result<Vec<u8>, ReplicationError> {
        call.header = Some(self.handshake.header());
        let mut request = tonic::Request::new(call);
        request.set_timeout(timeout);
        let mut client = self.client(addr);
        let answer = tokio::time::timeout(timeout, async {
            match method {
                Method::AppendEntries => client.append_entries(request).await,
                Method::Vote => client.vote(request).await,
                Method::InstallSnapshot => client.install_snapshot(request).await,
                Method::Forward => client.forward(request).await,
                Method::ReadIndex => client.read_index(request).await,
                Method::Join => client.join(request).await,
                Method::Remove => client.remove(request).await,
                Method::Probe => client.probe(request).await,
            }
        })
        .await;
        match answer {
            Err(_) => Err(no_answer(addr, timeout)),
            Ok(Err(status)) => Err(self.refused(addr, &status)),
            Ok(Ok(answer)) => self.admit_answer(addr, answer.into_inner()),
        }
    }

    /// Opens an AppendStream to `addr` with `first` as its first call, and
    /// waits up to `timeout` for the stream and the call's answer; returns
    /// the stream and the answer's JSON.
    async fn open_stream(
        &self,
        addr: &PeerAddr,
        mut first: proto::RaftCall,
        timeout: Duration,
    ) -> Result<(AppendStream, Vec<u8>), ReplicationError> {
        first.header = Some(self.handshake.header());
        // One call in flight: the next goes in only after this one's answer
        // came back, by which time the transport has taken this one out.
        let (calls, outgoing) = mpsc::channel(1);
        calls
            .try_send(first)
            .map_err(|_| ReplicationError::consensus("a new AppendStream's queue took no call"))?;
        let mut client = self.client(addr);
        let opened = tokio::time::timeout(timeout, async {
            let answers = client.append_stream(ReceiverStream::new(outgoing)).await?.into_inner();
            let mut stream = AppendStream { addr: addr.clone(), calls, answers };
            let answer = stream.answers.message().await;
            Ok::<_, tonic::Status>((stream, answer))
        })
        .await;
        match opened {
            Err(_) => Err(no_answer(addr, timeout)),
            Ok(Err(status)) | Ok(Ok((_, Err(status)))) => Err(self.refused(addr, &status)),
            Ok(Ok((_, Ok(None)))) => Err(stream_ended(addr)),
            Ok(Ok((stream, Ok(Some(answer))))) => Ok((stream, self.admit_answer(addr, answer)?)),
        }
    }

    /// Sends `call` on `stream` and waits up to `timeout` for its answer;
    /// returns the answer's JSON. After an error the stream is broken (an
    /// answer may still come, and would answer this call): drop it.
    async fn stream_call(
        &self,
        stream: &mut AppendStream,
        mut call: proto::RaftCall,
        timeout: Duration,
    ) -> Result<Vec<u8>, ReplicationError> {
        call.header = Some(self.handshake.header());
        let answer = tokio::time::timeout(timeout, async {
            if stream.calls.send(call).await.is_err() {
                return Ok(None);
            }
            stream.answers.message().await
        })
        .await;
        let addr = &stream.addr;
        match answer {
            Err(_) => Err(no_answer(addr, timeout)),
            Ok(Err(status)) => Err(self.refused(addr, &status)),
            Ok(Ok(None)) => Err(stream_ended(addr)),
            Ok(Ok(Some(answer))) => self.admit_answer(addr, answer),
        }
    }

    /// A call `addr` answered with an error status.
    pub(super) fn refused(&self, addr: &PeerAddr, status: &tonic::Status) -> ReplicationError {
        self.handshake.note_refusal(addr, status);
        ReplicationError::Peer { peer: addr.clone(), failure: PeerFailure::from_call(status) }
    }

    /// Admits the header of `addr`'s `answer`; returns its JSON.
    pub(super) fn admit_answer(
        &self,
        addr: &PeerAddr,
        answer: proto::RaftAnswer,
    ) -> Result<Vec<u8>, ReplicationError> {
        self.handshake.admit(answer.header, Contact::Dialled(addr)).map_err(|r| r.into_error(addr))?;
        Ok(answer.json)
    }

    /// A call whose answer is JSON of `T`.
    pub(crate) async fn call_json<T: DeserializeOwned>(
        &self,
        addr: &PeerAddr,
        method: Method,
        call: proto::RaftCall,
        timeout: Duration,
    ) -> Result<T, ReplicationError> {
        let json = self.call(addr, method, call, timeout).await?;
        parse_answer(addr, &json)
    }
}

/// The answer `addr` sent as JSON of `T`.
pub(super) fn parse_answer<T: DeserializeOwned>(addr: &PeerAddr, json: &[u8]) -> Result<T, ReplicationError> {
    from_json("answer", json).map_err(|e| ReplicationError::Peer {
        peer: addr.clone(),
        failure: PeerFailure::Malformed { field: "json".into(), reason: e.to_string() },
    })
}

/// No answer from `addr` within `timeout`.
pub(super) fn no_answer(addr: &PeerAddr, timeout: Duration) -> ReplicationError {
    let failure = PeerFailure::Timeout { message: format!("no answer within {} ms", timeout.as_millis()) };
    ReplicationError::Peer { peer: addr.clone(), failure }
}

/// `addr` ended an AppendStream without an answer to the last call (it may
/// have taken the call).
fn stream_ended(addr: &PeerAddr) -> ReplicationError {
    let failure = PeerFailure::Interrupted { message: "the peer ended the AppendStream".into() };
    ReplicationError::Peer { peer: addr.clone(), failure }
}

/// An open AppendStream to one follower: calls go in through `calls`,
/// answers come back on `answers`, one per call, in order.
#[derive(Debug)]
struct AppendStream {
    addr: PeerAddr,
    calls: mpsc::Sender<proto::RaftCall>,
    answers: tonic::Streaming<proto::RaftAnswer>,
}

/// The longest a call to a follower waits for the entries up to the commit
/// index it carries to be on disk here before it goes with the last commit
/// index that was (see [`PeerLink::clear_commit`]).
const COMMIT_WAIT: Duration = Duration::from_millis(20);

/// How long a target found without a stream (AppendStream, ForwardStream)
/// is sent one call each before a stream is tried again.
pub(super) const STREAM_RETRY_AFTER: Duration = Duration::from_secs(60);

/// See [`Network::without_stream`].
pub(crate) type WithoutStream = Arc<parking_lot::Mutex<HashMap<u64, std::time::Instant>>>;

/// openraft's network: one [`PeerLink`] per target node.
#[derive(Debug, Clone)]
pub(crate) struct Network {
    pub(crate) wire: Wire,
    /// How far this node's log is on disk, when its own entries may be
    /// reported before they are (see `log_store`, "The leader's own
    /// entries"): a commit index is sent only once the entries up to it are.
    pub(crate) durable: Option<watch::Receiver<Durable>>,
    /// The targets found to have no AppendStream (nodes of an older
    /// version), and when: every link, including the short-lived ones
    /// openraft makes for a read index's heartbeats, sends them one call each
    /// for [`STREAM_RETRY_AFTER`], then tries a stream again (the node may
    /// have been upgraded).
    pub(crate) without_stream: WithoutStream,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerLink;

    async fn new_client(&mut self, target: u64, node: &RaftMember) -> PeerLink {
        PeerLink {
            wire: self.wire.clone(),
            target,
            member: node.clone(),
            durable: self.durable.clone(),
            cleared: None,
            stream: None,
            without_stream: self.without_stream.clone(),
            // A refusal an earlier link noted is looked for once.
            noted_lost_state: AtomicBool::new(true),
        }
    }
}

/// The link to one peer's Raft service.
#[derive(Debug)]
pub(crate) struct PeerLink {
    wire: Wire,
    target: u64,
    member: RaftMember,
    durable: Option<watch::Receiver<Durable>>,
    /// The last commit index sent that was on disk here when sent.
    cleared: Option<LogId<u64>>,
    /// The AppendStream to the target, while it works.
    stream: Option<AppendStream>,
    /// See [`Network::without_stream`].
    without_stream: WithoutStream,
    /// The peer table may hold the target's refusal as one that lost its
    /// Raft state (see `note_lost_state`): until a call is answered again,
    /// when it is cleared; every other answered call costs one load.
    noted_lost_state: AtomicBool,
}

/// The error openraft expects from a call that did not get an answer.
#[derive(Debug, thiserror::Error)]
#[error("raft peer {peer}: {source}")]
struct LinkError {
    peer: String,
    source: ReplicationError,
}

impl PeerLink {
    /// The commit index to tell the follower: `commit` once the entries up to
    /// it are on disk here, waiting for that a little (at most a quarter of
    /// the call's `ttl`, [`COMMIT_WAIT`]); until then the last commit this
    /// link already cleared. A follower applies what it is told is committed,
    /// so it must never hear of an entry this leader's crash could still
    /// take back (its copy not on disk yet: see `log_store`). Telling it less
    /// is safe (a follower's commit index only moves forward) and costs it
    /// only the wait for the next call, never the call itself.
    async fn clear_commit(&mut self, commit: Option<LogId<u64>>, ttl: Duration) -> Option<LogId<u64>> {
        let (Some(durable), Some(commit)) = (&mut self.durable, commit) else { return commit };
        let wait = (ttl / 4).min(COMMIT_WAIT);
        match tokio::time::timeout(wait, Durable::wait_for(durable, commit.index)).await {
            Ok(Ok(())) => {
                self.cleared = Some(commit);
                Some(commit)
            }
            Ok(Err(_)) | Err(_) => self.cleared,
        }
    }

    /// Where the target is reached now.
    // The error is openraft's, as its network trait returns it.
    #[allow(clippy::result_large_err)]
    fn addr<E: std::error::Error>(&self) -> Result<PeerAddr, RPCError<u64, RaftMember, RaftError<u64, E>>> {
        self.wire.resolve(&self.member).ok_or_else(|| {
            let e = LinkError {
                peer: self.member.to_string(),
                source: ReplicationError::consensus("the member's address does not parse"),
            };
            RPCError::Unreachable(Unreachable::new(&e))
        })
    }

    async fn send<E, T>(
        &self,
        method: Method,
        call: proto::RaftCall,
        option: &RPCOption,
    ) -> Result<T, RPCError<u64, RaftMember, RaftError<u64, E>>>
    where
        E: std::error::Error + DeserializeOwned,
        T: DeserializeOwned,
    {
        let addr = self.addr()?;
        self.answered(self.wire.call_json(&addr, method, call, option.hard_ttl()).await)
    }

    /// Sends an AppendEntries `call` on the AppendStream to the target,
    /// opening one when there is none (or the target moved); one call each to
    /// a target without AppendStreams.
    async fn append(
        &mut self,
        call: proto::RaftCall,
        option: &RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, RaftMember, RaftError<u64>>> {
        let unary = self
            .without_stream
            .lock()
            .get(&self.target)
            .is_some_and(|since| since.elapsed() < STREAM_RETRY_AFTER);
        if unary {
            return self.send(Method::AppendEntries, call, option).await;
        }
        let addr = self.addr()?;
        let ttl = option.hard_ttl();
        let json = match self.stream.take().filter(|s| s.addr == addr) {
            Some(mut stream) => {
                let json = self.wire.stream_call(&mut stream, call, ttl).await;
                // Kept only while it works: after an error an answer may still
                // come and would be read as the next call's.
                if json.is_ok() {
                    self.stream = Some(stream);
                }
                json
            }
            None => match self.wire.open_stream(&addr, call.clone(), ttl).await {
                Ok((stream, json)) => {
                    self.stream = Some(stream);
                    Ok(json)
                }
                // A node of an older version, without the stream: the call
                // goes on its own, as will every later one to it.
                Err(ReplicationError::Peer {
                    failure: PeerFailure::Refused { code: tonic::Code::Unimplemented, .. },
                    ..
                }) => {
                    debug!(peer = %self.member, "no AppendStream: AppendEntries go as one call each");
                    self.without_stream.lock().insert(self.target, std::time::Instant::now());
                    return self.send(Method::AppendEntries, call, option).await;
                }
                Err(e) => Err(e),
            },
        };
        self.answered(json.and_then(|json| parse_answer(&addr, &json)))
    }

    /// Shows in the peer table (status's ERROR) that the target refuses this
    /// group's calls because it lost its Raft state, from the refusal until
    /// a call is answered again (see `lost_state`): its failure detector
    /// still hears it, so it would show as alive and merely lagging.
    fn note_lost_state(&self, failed: Option<&ReplicationError>) {
        let lost = super::lost_state::LOST_STATE;
        let why = match failed {
            Some(error) => match error.to_string() {
                why if why.contains(lost) => why,
                _ => return,
            },
            None if !self.noted_lost_state.swap(false, Ordering::Relaxed) => return,
            None => {
                let Some(addr) = self.wire.resolve(&self.member) else { return };
                self.wire.handshake.peers().update(&addr, |p| {
                    if p.last_error.as_deref().is_some_and(|e| e.contains(lost)) {
                        p.last_error = None;
                    }
                });
                return;
            }
        };
        let Some(addr) = self.wire.resolve(&self.member) else { return };
        self.noted_lost_state.store(true, Ordering::Relaxed);
        self.wire.handshake.peers().update(&addr, |p| p.last_error = Some(why));
    }

    /// openraft's reading of a call's outcome.
    #[allow(clippy::result_large_err)]
    fn answered<E, T>(
        &self,
        answer: Result<Result<T, RaftError<u64, E>>, ReplicationError>,
    ) -> Result<T, RPCError<u64, RaftMember, RaftError<u64, E>>>
    where
        E: std::error::Error,
    {
        self.note_lost_state(answer.as_ref().err());
        match answer {
            Ok(Ok(t)) => Ok(t),
            Ok(Err(remote)) => Err(RPCError::RemoteError(RemoteError::new(self.target, remote))),
            Err(source) => {
                let unreachable = matches!(
                    &source,
                    ReplicationError::Peer {
                        failure: PeerFailure::Unreachable { .. } | PeerFailure::Timeout { .. },
                        ..
                    }
                );
                let e = LinkError { peer: self.member.to_string(), source };
                if unreachable {
                    Err(RPCError::Unreachable(Unreachable::new(&e)))
                } else {
                    Err(RPCError::Network(NetworkError::new(&e)))
                }
            }
        }
    }
}

impl RaftNetwork<TypeConfig> for PeerLink {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, RaftMember, RaftError<u64>>> {
        let leader_commit = self.clear_commit(rpc.leader_commit, option.hard_ttl()).await;
        let entries = rpc.entries.iter().map(entry_to_proto).collect();
        let bare = AppendEntriesRequest::<TypeConfig> {
            vote: rpc.vote,
            prev_log_id: rpc.prev_log_id,
            entries: Vec::new(),
            leader_commit,
        };
        let call = proto::RaftCall {
            json: to_json(&bare),
            entries,
            target_incarnation: self.member.incarnation,
            ..proto::RaftCall::default()
        };
        self.append(call, &option).await
    }

    async fn install_snapshot(
        &mut self,
        mut rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<u64>, RPCError<u64, RaftMember, RaftError<u64, InstallSnapshotError>>>
    {
        let data = std::mem::take(&mut rpc.data);
        let call = proto::RaftCall {
            json: to_json(&rpc),
            data,
            target_incarnation: self.member.incarnation,
            ..proto::RaftCall::default()
        };
        self.send(Method::InstallSnapshot, call, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, RaftMember, RaftError<u64>>> {
        let call = proto::RaftCall {
            json: to_json(&rpc),
            target_incarnation: self.member.incarnation,
            ..proto::RaftCall::default()
        };
        self.send(Method::Vote, call, &option).await
    }
}
