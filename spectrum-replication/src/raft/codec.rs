//! How Raft mode's log entries, proposals and snapshots are encoded (protobuf,
//! the same on disk and on the wire), and how they are checked on the way in.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use openraft::{CommittedLeaderId, EntryPayload, LogId};
use prost::Message;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use spectrum_core::Timestamp;

use super::Entry;
use crate::proto;
use crate::record::{MAX_WALL_MS, VersionToken, Write, WriteBatch};
use crate::transaction::{Condition, Transaction};
use crate::wire::InvalidMessage;

/// A transaction as proposed to the log: the proposer's HLC stamp and the
/// transaction. Applying it stamps its records with at least `stamp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Proposal {
    /// The proposer's HLC when it proposed.
    pub(crate) stamp: Timestamp,
    /// What to decide; its [`request_id`](Transaction::request_id) is the
    /// proposal's id (see [`Proposal::id`]).
    pub(crate) txn: Transaction,
}

/// A proposal's id: 128 random bits, drawn once per write and sent again with
/// every retry of it, so the state machine decides a write once however many
/// times it reaches the log (the Raft thesis's §6.3, "Implementing
/// linearizable semantics"; see `recent`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct ProposalId(pub(crate) u128);

impl ProposalId {
    /// A fresh id: with 128 random bits, two writes never share one.
    pub(crate) fn random() -> Self {
        Self(rand::random())
    }

    /// Its form on the wire: 16 bytes, big-endian.
    pub(crate) fn to_bytes(self) -> Vec<u8> {
        self.0.to_be_bytes().to_vec()
    }

    /// From the wire: 16 bytes; none when empty (a build before ids).
    pub(crate) fn from_bytes(field: &str, bytes: &[u8]) -> Result<Option<Self>, InvalidMessage> {
        if bytes.is_empty() {
            return Ok(None);
        }
        let raw: [u8; 16] = bytes
            .try_into()
            .map_err(|_| InvalidMessage::new(field, format!("{} bytes, not 16", bytes.len())))?;
        Ok(Some(Self(u128::from_be_bytes(raw))))
    }
}

impl fmt::Display for ProposalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl From<&Proposal> for proto::RaftProposal {
    fn from(p: &Proposal) -> Self {
        proto::RaftProposal {
            stamp: Some(p.stamp.into()),
            conditions: p
                .txn
                .conditions
                .iter()
                .map(|c| match c {
                    Condition::Absent { key } => proto::RaftCondition { key: key.clone(), version: None },
                    Condition::Version { key, version } => {
                        proto::RaftCondition { key: key.clone(), version: Some(version.to_string()) }
                    }
                })
                .collect(),
            writes: p
                .txn
                .writes
                .writes
                .iter()
                .map(|w| match w {
                    Write::Put { key, value } => {
                        proto::RaftWrite { key: key.clone(), value: Some(value.to_vec()) }
                    }
                    Write::Delete { key } => proto::RaftWrite { key: key.clone(), value: None },
                })
                .collect(),
            id: p.id().map(ProposalId::to_bytes).unwrap_or_default(),
        }
    }
}

impl TryFrom<proto::RaftProposal> for Proposal {
    type Error = InvalidMessage;

    fn try_from(p: proto::RaftProposal) -> Result<Self, Self::Error> {
        let stamp: Timestamp =
            p.stamp.ok_or_else(|| InvalidMessage::new("proposal.stamp", "missing"))?.into();
        if stamp.wall_ms > MAX_WALL_MS {
            return Err(InvalidMessage::new("proposal.stamp", "beyond the year 10000"));
        }
        let conditions = p
            .conditions
            .into_iter()
            .enumerate()
            .map(|(i, c)| match c.version {
                None => Ok(Condition::Absent { key: c.key }),
                Some(v) => v
                    .parse::<VersionToken>()
                    .map(|version| Condition::Version { key: c.key, version })
                    .map_err(|e| {
                        InvalidMessage::new(format!("proposal.conditions[{i}].version"), e.to_string())
                    }),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let writes = p
            .writes
            .into_iter()
            .map(|w| match w.value {
                Some(value) => Write::Put { key: w.key, value: Bytes::from(value) },
                None => Write::Delete { key: w.key },
            })
            .collect();
        let id = ProposalId::from_bytes("proposal.id", &p.id)?;
        Ok(Proposal {
            stamp,
            txn: Transaction { conditions, writes: WriteBatch { writes }, request_id: id.map(|id| id.0) },
        })
    }
}

impl Proposal {
    /// Its id, the same on every retry of one write; `None` in entries of
    /// builds before ids (never deduplicated).
    pub(crate) fn id(&self) -> Option<ProposalId> {
        self.txn.request_id.map(ProposalId)
    }

    /// How many writes the transaction holds.
    pub(crate) fn writes(&self) -> usize {
        self.txn.writes.writes.len()
    }

    /// Roughly how many bytes it takes in a log entry.
    pub(crate) fn size(&self) -> usize {
        let writes: usize = self
            .txn
            .writes
            .writes
            .iter()
            .map(|w| match w {
                Write::Put { key, value } => key.len() + value.len() + 8,
                Write::Delete { key } => key.len() + 8,
            })
            .sum();
        let conditions: usize = self.txn.conditions.iter().map(|c| c.key().len() + 48).sum();
        writes + conditions + 16
    }
}

/// What one log entry proposes (openraft's `D`): one or more transactions, each
/// with its own stamp, decided in order and each answered on its own. The
/// leader packs proposals made while the previous entry was being written into
/// one entry, so one log append and one fsync carry them all (as etcd batches
/// its proposals).
///
/// Shared, not copied, when cloned: the log keeps the entries it appended
/// lately to answer the reads that follow (see `log_store`), and each read
/// clones them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Batch {
    /// The transactions, in the order they are decided.
    pub(crate) proposals: Arc<Vec<Proposal>>,
}

impl Batch {
    /// The entry of `proposals`.
    pub(crate) fn new(proposals: Vec<Proposal>) -> Self {
        Self { proposals: Arc::new(proposals) }
    }

    /// The proposals, taken when this is their only holder, else copied.
    pub(crate) fn into_proposals(self) -> Vec<Proposal> {
        Arc::unwrap_or_clone(self.proposals)
    }
}

impl From<&Batch> for proto::raft_log_entry::Payload {
    fn from(b: &Batch) -> Self {
        use proto::raft_log_entry::Payload;
        match b.proposals.as_slice() {
            // The form builds before batching wrote and read.
            [one] => Payload::Proposal(one.into()),
            many => {
                Payload::Batch(proto::RaftProposalBatch { proposals: many.iter().map(Into::into).collect() })
            }
        }
    }
}

impl TryFrom<proto::RaftProposalBatch> for Batch {
    type Error = InvalidMessage;

    fn try_from(b: proto::RaftProposalBatch) -> Result<Self, Self::Error> {
        let proposals = b
            .proposals
            .into_iter()
            .enumerate()
            .map(|(i, p)| {
                Proposal::try_from(p)
                    .map_err(|e| InvalidMessage::new(format!("batch.proposals[{i}]"), e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Batch::new(proposals))
    }
}

// openraft's `serde` feature asks every log payload to be serde; ours never
// travels as JSON (entries are protobuf on disk and on the wire), but when it
// does it is the protobuf bytes.
impl Serialize for Batch {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let b = proto::RaftProposalBatch { proposals: self.proposals.iter().map(Into::into).collect() };
        serializer.serialize_bytes(&b.encode_to_vec())
    }
}

impl<'de> Deserialize<'de> for Batch {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bytes: Vec<u8> = serde::Deserialize::deserialize(deserializer)?;
        let b = proto::RaftProposalBatch::decode(bytes.as_slice()).map_err(serde::de::Error::custom)?;
        Batch::try_from(b).map_err(serde::de::Error::custom)
    }
}

/// The state machine's answer to one applied entry (openraft's `R`): one
/// [`Applied`] per proposal of its [`Batch`], none for a blank or membership
/// entry.
pub(crate) type Answers = Vec<Applied>;

/// The state machine's answer to one proposal, sent back to a proposer on
/// another node as JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Applied {
    /// Not a write (no answer for this proposal).
    #[default]
    Nothing,
    /// Every condition held; the writes are stored, numbered from `first`.
    Written {
        /// The sequence number of its first write (under the Raft origin);
        /// write `j` is `first + j`.
        first: u64,
    },
    /// The transaction breaks the store's limits (a bad key, a value too
    /// large, too many writes); nothing was written.
    Invalid {
        /// Why.
        reason: String,
    },
    /// This node cannot say what was decided: the proposal was decided before
    /// a crash and this node's answer was not kept, or it may be a retry of
    /// one decided too long ago to be remembered (see `recent`). Nothing was
    /// written for it now.
    Unknown {
        /// Why.
        reason: String,
    },
    /// Condition `index` on `key` failed; the key held `current` (a version
    /// token's text), or no live entry.
    Failed {
        /// Position of the condition.
        index: usize,
        /// Its key.
        key: String,
        /// The live version the key held.
        current: Option<String>,
    },
}

/// Encodes a log entry.
pub(crate) fn entry_to_proto(entry: &Entry) -> proto::RaftLogEntry {
    use proto::raft_log_entry::Payload;
    let payload = match &entry.payload {
        EntryPayload::Blank => Payload::Blank(true),
        EntryPayload::Normal(b) => b.into(),
        EntryPayload::Membership(m) => Payload::MembershipJson(serde_json::to_string(m).unwrap_or_default()),
    };
    proto::RaftLogEntry {
        term: entry.log_id.leader_id.term,
        leader: entry.log_id.leader_id.node_id,
        index: entry.log_id.index,
        payload: Some(payload),
    }
}

/// Decodes and checks a log entry.
pub(crate) fn entry_from_proto(e: proto::RaftLogEntry) -> Result<Entry, InvalidMessage> {
    use proto::raft_log_entry::Payload;
    let payload = match e.payload {
        None | Some(Payload::Blank(_)) => EntryPayload::Blank,
        Some(Payload::Proposal(p)) => EntryPayload::Normal(Batch::new(vec![Proposal::try_from(p)?])),
        Some(Payload::Batch(b)) => EntryPayload::Normal(Batch::try_from(b)?),
        Some(Payload::MembershipJson(json)) => EntryPayload::Membership(
            serde_json::from_str(&json)
                .map_err(|err| InvalidMessage::new("entry.membership", err.to_string()))?,
        ),
    };
    Ok(Entry { log_id: LogId::new(CommittedLeaderId::new(e.term, e.leader), e.index), payload })
}

/// Encodes a log entry to bytes (its form on disk).
pub(crate) fn encode_entry(entry: &Entry) -> Vec<u8> {
    entry_to_proto(entry).encode_to_vec()
}

/// Decodes a log entry from its form on disk.
pub(crate) fn decode_entry(bytes: &[u8]) -> Result<Entry, InvalidMessage> {
    let e =
        proto::RaftLogEntry::decode(bytes).map_err(|err| InvalidMessage::new("entry", err.to_string()))?;
    entry_from_proto(e)
}

/// An openraft value as JSON bytes.
pub(crate) fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

/// An openraft value from JSON bytes, or why not.
pub(crate) fn from_json<T: for<'de> Deserialize<'de>>(
    field: &str,
    bytes: &[u8],
) -> Result<T, InvalidMessage> {
    serde_json::from_slice(bytes).map_err(|e| InvalidMessage::new(field, e.to_string()))
}

/// A typed error for openraft's storage-error plumbing, which wants a
/// `std::error::Error`.
#[derive(Debug)]
pub(crate) struct Corrupt(pub(crate) String);

impl fmt::Display for Corrupt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Corrupt {}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload, LogId};
    use prost::Message;
    use spectrum_core::Timestamp;

    use super::{Batch, Proposal, decode_entry, encode_entry};
    use crate::proto;
    use crate::raft::Entry;
    use crate::record::WriteBatch;
    use crate::transaction::{Condition, Transaction};

    fn proposal(key: &str) -> Proposal {
        let mut txn = Transaction::new(WriteBatch::new().put(key.to_owned(), "v").delete("settings/gone"));
        txn.conditions = vec![Condition::absent(key)];
        Proposal { stamp: Timestamp::new(5, 1), txn: txn.with_request_id(u128::MAX - 7) }
    }

    fn entry(proposals: Vec<Proposal>) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(2, 9), 4),
            payload: EntryPayload::Normal(Batch::new(proposals)),
        }
    }

    #[test]
    fn a_batch_round_trips_and_a_batch_of_one_keeps_the_form_older_builds_read() {
        let many = entry(vec![proposal("settings/a"), proposal("settings/b")]);
        assert_eq!(decode_entry(&encode_entry(&many)).unwrap(), many);

        let one = entry(vec![proposal("settings/a")]);
        let bytes = encode_entry(&one);
        let raw = proto::RaftLogEntry::decode(bytes.as_slice()).unwrap();
        assert!(matches!(raw.payload, Some(proto::raft_log_entry::Payload::Proposal(_))));
        assert_eq!(decode_entry(&bytes).unwrap(), one);
    }

    #[test]
    fn a_malformed_proposal_in_a_batch_is_refused_naming_its_position() {
        let mut bad = proto::RaftProposal::from(&proposal("settings/a"));
        bad.stamp = None;
        let batch = proto::RaftProposalBatch { proposals: vec![(&proposal("settings/b")).into(), bad] };
        let raw = proto::RaftLogEntry {
            term: 1,
            leader: 1,
            index: 1,
            payload: Some(proto::raft_log_entry::Payload::Batch(batch)),
        };
        let e = decode_entry(&raw.encode_to_vec()).unwrap_err();
        assert!(e.to_string().contains("batch.proposals[1]"), "{e}");
    }

    #[test]
    fn a_proposal_id_is_sixteen_bytes_or_none() {
        let mut raw = proto::RaftProposal::from(&proposal("settings/a"));
        assert_eq!(raw.id.len(), 16);
        raw.id = vec![1; 15];
        let e = Proposal::try_from(raw.clone()).unwrap_err();
        assert!(e.to_string().contains("proposal.id") && e.to_string().contains("15 bytes"), "{e}");
        // An entry written before ids: decided, never deduplicated.
        raw.id.clear();
        assert_eq!(Proposal::try_from(raw).unwrap().id(), None);
    }
}
