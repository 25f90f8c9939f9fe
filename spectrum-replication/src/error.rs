//! Errors of the store and the replicator.

use spectrum_core::{ClockSkew, ClusterId, NodeId, PeerAddr};
use thiserror::Error;

use crate::origin::Origin;

/// Errors from a [`ConfigStore`](crate::ConfigStore).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A key was rejected.
    #[error("invalid key {key:?}: {reason}")]
    InvalidKey {
        /// The key (cut to 80 characters).
        key: String,
        /// Why.
        reason: &'static str,
    },
    /// A value was larger than the store accepts.
    #[error("value for {key:?} is {len} bytes; at most {max} are allowed")]
    ValueTooLarge {
        /// The key.
        key: String,
        /// The value's size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A batch held no writes.
    #[error("a write batch must hold at least one write")]
    EmptyBatch,
    /// A version token could not be parsed.
    #[error("invalid version token {token:?}: {reason}")]
    InvalidToken {
        /// The token as given (cut to 80 characters).
        token: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A remote record was malformed.
    #[error("invalid record from {origin}: {reason}")]
    InvalidRecord {
        /// Its claimed origin.
        origin: Origin,
        /// Why it was rejected.
        reason: String,
    },
    /// The change feed no longer holds the changes after `from` (it keeps a
    /// bounded number, and a restarted store keeps none from before the
    /// restart): re-read with [`scan`](crate::ConfigStore::scan) or
    /// [`snapshot`](crate::ConfigStore::snapshot) and resume from a fresh position.
    #[error(
        "the change feed no longer holds changes after position {from}; the oldest position it resumes from is {oldest}"
    )]
    FeedCompacted {
        /// The position asked for.
        from: u64,
        /// The oldest position the feed can resume from.
        oldest: u64,
    },
    /// A change-feed position beyond the last change stored here: it was issued
    /// by another store, or by this store before it lost its memory.
    #[error("change-feed position {from} is beyond this store's last change {head}")]
    FeedAhead {
        /// The position asked for.
        from: u64,
        /// The last change stored here.
        head: u64,
    },
    /// A delta was asked for a digest below this store's tombstone floor: the
    /// store has collected tombstones the peer has not seen, so only a
    /// [`snapshot`](crate::ConfigStore::snapshot) brings it up to date without
    /// resurrecting deleted keys.
    #[error("digest has {origin}:{seen}, below the tombstone floor {origin}:{floor}; a snapshot is needed")]
    BehindHorizon {
        /// The first origin found behind.
        origin: Origin,
        /// The digest's entry for it.
        seen: u64,
        /// This store's floor for it.
        floor: u64,
    },
    /// A durable store's file belongs to another node.
    #[error("store {path} belongs to node {stored}, not {requested}")]
    NodeMismatch {
        /// The file.
        path: String,
        /// The node recorded in it.
        stored: String,
        /// The node that tried to open it.
        requested: NodeId,
    },
    /// The store's file is open elsewhere (another process, or a store in this
    /// process that has not been dropped yet).
    #[error("store {path} is already open elsewhere")]
    InUse {
        /// The file.
        path: String,
    },
    /// The backing storage failed. `subject` names what was being accessed and
    /// `verb` what was being done to it.
    #[error("storage failed to {verb} {subject}: {source}")]
    Storage {
        /// What was accessed.
        subject: String,
        /// What was being done.
        verb: &'static str,
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Errors from a [`Replicator`](crate::Replicator).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ReplicationError {
    /// The local store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A peer belongs to another cluster.
    #[error("peer {peer} belongs to cluster {theirs}, not {ours}")]
    WrongCluster {
        /// The peer's address.
        peer: PeerAddr,
        /// Our cluster.
        ours: ClusterId,
        /// Theirs, as the peer sent it.
        theirs: String,
    },
    /// A peer's clock is off by more than allowed.
    #[error("peer {peer}: {skew}")]
    ClockSkew {
        /// The peer's address.
        peer: PeerAddr,
        /// The measured skew.
        skew: ClockSkew,
    },
    /// The requested acknowledgement level was not reached in time.
    #[error(
        "write acknowledged by {acked} of {needed} required nodes ({members} members) before the \
         {timeout_ms} ms timeout; not acknowledged by {}",
        list(missing)
    )]
    AckTimeout {
        /// How many nodes (including this one) acknowledged.
        acked: usize,
        /// How many were required.
        needed: usize,
        /// How many members were counted (this node and its peers, not those left or
        /// removed).
        members: usize,
        /// The peers that had not acknowledged when the time ran out.
        missing: Vec<PeerAddr>,
        /// The timeout.
        timeout_ms: u64,
    },
    /// The call needs consensus (compare-and-set, a transaction, a
    /// linearizable read) and this replicator is last-writer-wins: nothing was
    /// written, and no weaker version of the call was made.
    #[error("{operation} needs Raft mode (replication = \"raft\"); this cluster replicates last-writer-wins")]
    NeedsConsensus {
        /// What was asked, as a sentence fragment (`a compare-and-set write`).
        operation: &'static str,
    },
    /// Consensus could not decide in time or at all: no leader could be
    /// reached, no majority answered, or the Raft node stopped. A write may or
    /// may not have been committed (read it back before retrying a
    /// non-idempotent one).
    #[error("consensus unavailable: {reason}")]
    Consensus {
        /// What happened.
        reason: String,
    },
    /// This node left the cluster's Raft group
    /// ([`RaftReplicator::leave`](crate::RaftReplicator::leave)): it takes no
    /// writes and answers no consistent reads. Nothing was written.
    #[error(
        "node {node} left this cluster's Raft group: it takes no writes and no consistent reads; send them \
         to a member (through the balancer)"
    )]
    NotAMember {
        /// This node.
        node: NodeId,
    },
    /// A peer could not be reached, did not answer in time, refused, or answered
    /// with a malformed message.
    #[error("peer {peer} failed: {failure}")]
    Peer {
        /// The peer's address.
        peer: PeerAddr,
        /// What went wrong.
        failure: PeerFailure,
    },
}

impl ReplicationError {
    /// A [`Consensus`](ReplicationError::Consensus) error saying `reason`.
    pub(crate) fn consensus(reason: impl std::fmt::Display) -> Self {
        ReplicationError::Consensus { reason: reason.to_string() }
    }

    /// What to add to a log line about this error when the peer does not serve
    /// the call at all (`UNIMPLEMENTED`): most likely a node of the other
    /// replication mode. Empty otherwise.
    pub(crate) fn mode_hint(&self) -> &'static str {
        match self {
            ReplicationError::Peer {
                failure: PeerFailure::Refused { code: tonic::Code::Unimplemented, .. },
                ..
            } => {
                " (the peer does not serve this replication mode: every node of a cluster must have the same \
                 `replication`, \"lww\" or \"raft\")"
            }
            _ => "",
        }
    }

    /// Whether trying the same call again may help: only a [`PeerFailure`] that
    /// is [`retryable`](PeerFailure::retryable).
    pub(crate) fn retryable(&self) -> bool {
        matches!(self, ReplicationError::Peer { failure, .. } if failure.retryable())
    }
}

/// How a call to a peer failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum PeerFailure {
    /// No connection: the peer could not be dialled, the connection broke, or
    /// the peer is shutting down (gRPC `unavailable`).
    #[error("unreachable: {message}")]
    Unreachable {
        /// The transport's account of it.
        message: String,
    },
    /// The connection broke after the call was sent (gRPC `unavailable` from
    /// the transport, other than a failure to connect): the peer may have
    /// acted on the call, or not.
    #[error("connection lost during the call: {message}")]
    Interrupted {
        /// The transport's account of it.
        message: String,
    },
    /// No answer in time (gRPC `deadline_exceeded`, the transport's request
    /// timeout, or the replicator's own deadline).
    #[error("no answer in time: {message}")]
    Timeout {
        /// Which deadline passed.
        message: String,
    },
    /// The peer answered with an error status (another cluster, a skewed clock,
    /// a record it would not merge, …).
    #[error("refused with {code:?}: {message}")]
    Refused {
        /// The gRPC status code.
        code: tonic::Code,
        /// The peer's message.
        message: String,
    },
    /// The peer's answer failed validation; nothing in it was merged.
    #[error("malformed answer: invalid {field}: {reason}")]
    Malformed {
        /// Path of the offending field, such as `records[2].key`.
        field: String,
        /// Why it was rejected.
        reason: String,
    },
}

impl PeerFailure {
    /// Whether trying again may help: `false` when the peer refused for a
    /// reason that does not go away by itself (an invalid argument, a failed
    /// precondition such as another cluster or a skewed clock, an unimplemented
    /// or unauthorised call, a value out of range) or sent a malformed answer.
    pub fn retryable(&self) -> bool {
        match self {
            PeerFailure::Unreachable { .. }
            | PeerFailure::Interrupted { .. }
            | PeerFailure::Timeout { .. } => true,
            PeerFailure::Refused { code, .. } => !matches!(
                code,
                tonic::Code::InvalidArgument
                    | tonic::Code::FailedPrecondition
                    | tonic::Code::Unimplemented
                    | tonic::Code::PermissionDenied
                    | tonic::Code::Unauthenticated
                    | tonic::Code::OutOfRange
            ),
            PeerFailure::Malformed { .. } => false,
        }
    }

    /// Classifies the status a call ended with. tonic reports a failed connection
    /// as `unavailable` and its request timeout as `cancelled`.
    pub(crate) fn from_status(status: &tonic::Status) -> Self {
        // With the transport's causes: a refused TLS handshake reads as its
        // reason (an unknown issuer, say), not as `transport error` alone.
        let message = spectrum_core::transport::status_with_causes(status);
        match status.code() {
            tonic::Code::Unavailable => PeerFailure::Unreachable { message },
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => PeerFailure::Timeout { message },
            code => PeerFailure::Refused { code, message },
        }
    }
}

impl PeerFailure {
    /// As [`from_status`](Self::from_status), telling a call that never left
    /// from one whose connection broke after it was sent
    /// ([`PeerFailure::Interrupted`]), which the peer may have acted on. A
    /// caller whose call must not take effect twice retries the second only
    /// when the call is idempotent (a forwarded Raft proposal carries an id
    /// the state machine decides once).
    ///
    /// A call never left when no connection could be made (tonic's
    /// `ConnectError` in the status's sources), when the peer answered
    /// `unavailable` itself, or when hyper *canceled* it: hyper cancels only a
    /// request it never wrote, because the connection was closed or not ready
    /// when the request reached it (`hyper::Error::is_canceled`; tonic reports
    /// it as `cancelled`, "operation was canceled"). That last one is the usual
    /// answer from a peer that has just died with a connection still pooled,
    /// and is [`PeerFailure::Unreachable`], not a timeout.
    pub(crate) fn from_call(status: &tonic::Status) -> Self {
        let failure = Self::from_status(status);
        let Some(source) = std::error::Error::source(status) else {
            // No transport error under it: the peer answered `unavailable` itself.
            return failure;
        };
        let mut cause = Some(source);
        while let Some(e) = cause {
            if e.is::<tonic::ConnectError>() {
                return failure;
            }
            if e.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_canceled) {
                return PeerFailure::Unreachable {
                    message: spectrum_core::transport::status_with_causes(status),
                };
            }
            cause = e.source();
        }
        match failure {
            PeerFailure::Unreachable { message } => PeerFailure::Interrupted { message },
            other => other,
        }
    }
}

/// Addresses as one comma-separated list for a message.
fn list(addrs: &[PeerAddr]) -> String {
    if addrs.is_empty() {
        return "nobody".into();
    }
    addrs.iter().map(PeerAddr::as_str).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_that_serves_no_such_call_is_hinted_at_as_the_other_replication_mode() {
        let peer: PeerAddr = "127.0.0.1:7001".parse().unwrap();
        let failed = |code, message: &str| ReplicationError::Peer {
            peer: peer.clone(),
            failure: PeerFailure::Refused { code, message: message.into() },
        };
        let other_mode =
            failed(tonic::Code::Unimplemented, "no such method: /spectrum.replication.v1.Replication/Sync");
        assert!(other_mode.mode_hint().contains("the same `replication`"), "{}", other_mode.mode_hint());
        assert_eq!(failed(tonic::Code::Unauthenticated, "bad key").mode_hint(), "");
    }

    #[test]
    fn a_call_cut_after_it_was_sent_is_told_from_one_that_never_connected() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let never = tonic::Status::from_error(Box::new(tonic::ConnectError(Box::new(refused))));
        assert_eq!(never.code(), tonic::Code::Unavailable);
        assert!(matches!(PeerFailure::from_call(&never), PeerFailure::Unreachable { .. }), "{never:?}");
        let mut cut = tonic::Status::unavailable("connection reset");
        cut.set_source(std::sync::Arc::new(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "reset",
        )));
        assert!(matches!(PeerFailure::from_call(&cut), PeerFailure::Interrupted { .. }));
        assert!(PeerFailure::from_call(&cut).retryable());
        // The peer's own answer: it did not act on the call.
        let answered = tonic::Status::unavailable("shutting down");
        assert!(matches!(PeerFailure::from_call(&answered), PeerFailure::Unreachable { .. }));
        let timeout = tonic::Status::deadline_exceeded("late");
        assert!(matches!(PeerFailure::from_call(&timeout), PeerFailure::Timeout { .. }));
    }

    /// A request sent on a pooled HTTP/2 connection whose peer has gone: hyper
    /// cancels it unsent, and tonic says `cancelled`. It never left, so it is
    /// `Unreachable` (a forwarded proposal may be sent elsewhere), not a timeout.
    #[tokio::test]
    async fn a_request_canceled_unsent_on_a_closed_connection_never_left() {
        let (near, far) = tokio::io::duplex(64 * 1024);
        let (mut sender, connection) = hyper::client::conn::http2::handshake::<_, _, String>(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(near),
        )
        .await
        .unwrap();
        drop(far);
        // The connection task ends when it finds its peer gone.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), connection).await;
        let err = sender.send_request(hyper::Request::new(String::new())).await.unwrap_err();
        assert!(err.is_canceled(), "{err:?}");
        let status = tonic::Status::from_error(Box::new(err));
        assert_eq!(status.code(), tonic::Code::Cancelled);
        assert!(matches!(PeerFailure::from_call(&status), PeerFailure::Unreachable { .. }), "{status:?}");
        // A plain cancellation with no transport error under it stays a timeout.
        let late = tonic::Status::cancelled("Timeout expired");
        assert!(matches!(PeerFailure::from_call(&late), PeerFailure::Timeout { .. }));
    }

    #[test]
    fn peer_failures_say_whether_a_retry_may_help() {
        let of = |code, message: &str| PeerFailure::from_status(&tonic::Status::new(code, message));
        assert!(matches!(of(tonic::Code::Unavailable, "connect"), PeerFailure::Unreachable { .. }));
        assert!(matches!(of(tonic::Code::Cancelled, "Timeout expired"), PeerFailure::Timeout { .. }));
        for retryable in [tonic::Code::Unavailable, tonic::Code::Cancelled, tonic::Code::Internal] {
            assert!(of(retryable, "x").retryable(), "{retryable:?}");
        }
        for permanent in [tonic::Code::InvalidArgument, tonic::Code::FailedPrecondition] {
            assert!(!of(permanent, "x").retryable(), "{permanent:?}");
        }
        let malformed = PeerFailure::Malformed { field: "digest".into(), reason: "bad".into() };
        assert!(!malformed.retryable());
        assert_eq!(malformed.to_string(), "malformed answer: invalid digest: bad");
        let refused = of(tonic::Code::FailedPrecondition, "wrong cluster: …");
        assert_eq!(refused.to_string(), "refused with FailedPrecondition: wrong cluster: …");
    }
}
