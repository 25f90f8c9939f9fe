//! [`WatchEvent`]: one change a watch delivers, and [`WatchError`]: why a watch ended.

use std::fmt;
use std::time::Duration;

use serde::Serialize;
use spectrum_core::Timestamp;
use spectrum_replication::{Origin, StoreError, VersionToken};
use thiserror::Error;
use utoipa::ToSchema;

use super::WatchPosition;
use crate::model::{as_json_or_text, as_text};
use crate::session::SessionGap;

/// What happened to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// The key was set to `value`.
    Put,
    /// The key was deleted.
    Delete,
    /// No change under the prefix, only a newer resume position: the node has
    /// moved on (changes elsewhere, or a while without any). Keeping it lets a
    /// reconnecting watcher resume from a recent position.
    Progress,
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EventKind::Put => "put",
            EventKind::Delete => "delete",
            EventKind::Progress => "progress",
        })
    }
}

/// One event of a watch, in the answering node's apply order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct WatchEvent {
    /// Put, delete or progress.
    pub kind: EventKind,
    /// The key (empty for progress).
    pub key: String,
    /// The value of a put (empty otherwise). Over the management API, resource
    /// definitions are redacted as reads redact them; through
    /// [`NodeContext::watch`](crate::NodeContext::watch), values are as stored.
    #[serde(serialize_with = "as_json_or_text")]
    #[schema(value_type = Object)]
    pub value: Vec<u8>,
    /// The version token of the write (absent for progress, and for a record the
    /// node dropped without a write of its own: see [`EventKind::Delete`]).
    #[serde(serialize_with = "version_text")]
    #[schema(value_type = String)]
    pub version: Option<VersionToken>,
    /// The write's hybrid-logical-clock stamp (zero when there is no version).
    #[serde(skip)]
    pub stamp: Timestamp,
    /// Where to resume to receive what follows this event.
    #[serde(serialize_with = "as_text")]
    #[schema(value_type = String)]
    pub position: WatchPosition,
}

fn version_text<S: serde::Serializer>(v: &Option<VersionToken>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(token) => s.collect_str(token),
        None => s.serialize_str(""),
    }
}

impl WatchEvent {
    /// A progress event at `position`.
    pub fn progress(position: WatchPosition) -> Self {
        Self {
            kind: EventKind::Progress,
            key: String::new(),
            value: Vec::new(),
            version: None,
            stamp: Timestamp::ZERO,
            position,
        }
    }
}

impl fmt::Display for WatchEvent {
    /// `KIND KEY VALUE` on one line, as `spectrum config watch` prints it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.key)?;
        if self.kind == EventKind::Put {
            write!(f, " {}", crate::model::one_line(&self.value, 120))?;
        }
        Ok(())
    }
}

/// Why a watch could not start, or ended.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum WatchError {
    /// The position is older than what this node's change log keeps.
    #[error(
        "watch position {from} is compacted: this node's change log reaches back to {oldest}; \
         list the prefix again and watch from a new position"
    )]
    Compacted {
        /// The position asked for.
        from: WatchPosition,
        /// The oldest position the node can resume from.
        oldest: WatchPosition,
    },
    /// Resuming on another node needs the deletes made since the watcher's
    /// `seen`, and this node has already collected some of them.
    #[error(
        "watch position {from} is compacted: this node has collected deletes of {origin} up to {floor} \
         and the watcher saw only up to {seen}; list the prefix again and watch from a new position"
    )]
    BelowHorizon {
        /// The position asked for.
        from: WatchPosition,
        /// The origin whose deletes were collected.
        origin: Origin,
        /// What the watcher saw of it.
        seen: u64,
        /// The highest sequence number of a collected delete of it.
        floor: u64,
    },
    /// The position is another node's, and this node has not yet caught up with
    /// what the watcher saw there.
    #[error("this node has not caught up with watch position {from}: it lacks {}", missing.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))]
    NotCaughtUp {
        /// The position asked for.
        from: WatchPosition,
        /// What this node lacks, per origin.
        missing: Vec<SessionGap>,
    },
    /// The position is of this node's store but beyond its last change.
    #[error("watch position {from} is beyond this node's last change {head}")]
    Ahead {
        /// The position asked for.
        from: WatchPosition,
        /// This node's last change.
        head: u64,
    },
    /// The watcher took no event for too long while events waited: the node
    /// ended the stream rather than hold them.
    #[error("the watcher fell behind (it took no event for {}s); resume from {last}", stalled.as_secs())]
    FellBehind {
        /// The position of the last event queued for it.
        last: WatchPosition,
        /// How long it took nothing.
        stalled: Duration,
    },
    /// The node is stopping: resume on another node.
    #[error("node {node} is stopping; resume the watch on another node")]
    Stopping {
        /// The node.
        node: spectrum_core::NodeId,
    },
    /// The node went out of the cluster while the watch ran (removed by an
    /// operator, refused by the cluster, or its Raft stopped on an error):
    /// its copy no longer follows the cluster, so resume on another node.
    #[error("node {node} is out of the cluster ({reason}); resume the watch on another node")]
    OutOfCluster {
        /// The node.
        node: spectrum_core::NodeId,
        /// Why it is out.
        reason: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<WatchError> for tonic::Status {
    fn from(e: WatchError) -> Self {
        let message = e.to_string();
        match e {
            WatchError::Compacted { .. } | WatchError::BelowHorizon { .. } => Self::out_of_range(message),
            WatchError::Ahead { .. } => Self::failed_precondition(message),
            WatchError::FellBehind { .. } => Self::resource_exhausted(message),
            WatchError::NotCaughtUp { .. }
            | WatchError::Stopping { .. }
            | WatchError::OutOfCluster { .. } => Self::unavailable(message),
            WatchError::Store(StoreError::Storage { .. }) => Self::unavailable(message),
            WatchError::Store(_) => Self::internal(message),
        }
    }
}
