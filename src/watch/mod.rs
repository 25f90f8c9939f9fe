//! Watch: follow the changes of a prefix of the configuration database, as they
//! are applied, and resume after a disconnect without losing or repeating any.
//!
//! Every node serves `Watch(prefix, from, session)` on its management service
//! (reach it through the balancer; the HTTP API has the same as
//! newline-delimited JSON, `GET /api/v1/watch`); a service embedded in a node
//! watches its node's copy with [`NodeContext::watch`](crate::NodeContext::watch),
//! and the typed client with [`AdminClient::watch`](crate::client::AdminClient::watch),
//! which resumes by itself across reconnects.
//!
//! # Events
//!
//! A watch sends a [`WatchEvent`] per change under its prefix, in the answering
//! node's apply order (local writes and writes merged from peers alike): a put
//! with the key's new value, or a delete, each with the write's version token
//! and a [`WatchPosition`] to resume from. Resource definitions are redacted as
//! reads redact them (secrets are never sent), users' token hashes too. Progress
//! events (no change, only a newer position) keep an idle watcher's position
//! recent, at most once a second.
//!
//! # Resuming
//!
//! An event's position covers the events before it, never one after it, and
//! the event itself when its write is the next of its origin's that the
//! position covers, or the event ends what the node held (otherwise another
//! node may send that one event again): a watcher resumes from the last event
//! it handled.
//!
//! - **On the same node** (the position's store origin is this node's store),
//!   the watch continues from the position in the node's durable change log:
//!   every change after it, once, in order, including those made while the
//!   watcher was away and across restarts of the node. A position older than
//!   what the log keeps (by count and age, see
//!   [`ChangeLogLimits`](spectrum_replication::ChangeLogLimits)) is refused as
//!   compacted (`OUT_OF_RANGE`), naming the oldest position available: list the
//!   prefix again, then watch from a new position.
//! - **On another node** (a balancer sent the reconnecting watcher elsewhere, or
//!   the node lost its disk), feed positions mean nothing, so the position's
//!   `seen` version vector is used. The node first waits until it holds every
//!   write `seen` names (as a read with a session does; `UNAVAILABLE` when it
//!   does not catch up in time), then sends, per key under the prefix, the
//!   newest record it holds that `seen` does not cover (oldest stamp first), and
//!   follows its own feed from there. This **coalesces**: a key changed several
//!   times while the watcher was away is delivered once, with its latest value
//!   (or as a delete); intermediate values, and the order between keys, are not
//!   replayed. A record the first node held above a gap in its version vector
//!   may be delivered again. When the node has already collected deletes the
//!   watcher has not seen, it refuses (`OUT_OF_RANGE`): a delete that is gone
//!   cannot be sent.
//!
//! # Bounds
//!
//! Each watch holds at most [`WatchLimits::buffer`] events on the node. A
//! watcher that takes none for [`WatchLimits::stall`] while events wait gets
//! `RESOURCE_EXHAUSTED` naming the position to resume from; the node's change
//! log, not its memory, holds what it has not read yet.

mod event;
mod feed;
mod position;
mod wire;

pub use event::{EventKind, WatchError, WatchEvent};
pub use feed::{WatchLimits, WatchStream, watch};
pub use position::{InvalidWatchPosition, WatchPosition};
pub use wire::event_to_wire;
