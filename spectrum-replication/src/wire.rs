//! Conversions between the wire messages ([`proto`]) and the domain
//! types. Inbound messages are validated with `TryFrom`; a malformed message is an
//! [`InvalidMessage`], answered with `invalid_argument`, never a panic.

use std::fmt;

use bytes::Bytes;
use spectrum_core::{NodeId, PeerAddr, Timestamp};

use crate::error::StoreError;
use crate::origin::{InvalidOrigin, Origin};
use crate::proto;
use crate::record::{Lineage, MAX_SEQ, Record, VersionToken, VersionVector, validate_key};

/// Most origins a record's lineage context may name: one per store
/// incarnation that ever wrote its key, far below this in any real cluster.
const MAX_CONTEXT_ORIGINS: usize = 4096;

/// An inbound message failed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
// `pub` (in a private module) because the `TryFrom` impls on the public
// `Record` and `VersionVector` name it as their error.
#[allow(unreachable_pub)]
pub struct InvalidMessage {
    /// Path of the offending field, such as `records[2].key`.
    pub(crate) field: String,
    /// Why it was rejected.
    pub(crate) reason: String,
}

impl InvalidMessage {
    pub(crate) fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self { field: field.into(), reason: reason.into() }
    }
}

impl fmt::Display for InvalidMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid {}: {}", self.field, self.reason)
    }
}

impl std::error::Error for InvalidMessage {}

impl From<InvalidMessage> for tonic::Status {
    fn from(e: InvalidMessage) -> Self {
        tonic::Status::invalid_argument(e.to_string())
    }
}

impl From<Timestamp> for proto::Stamp {
    fn from(t: Timestamp) -> Self {
        proto::Stamp { wall_ms: t.wall_ms, logical: t.logical }
    }
}

impl From<proto::Stamp> for Timestamp {
    fn from(s: proto::Stamp) -> Self {
        Timestamp::new(s.wall_ms, s.logical)
    }
}

impl From<&Record> for proto::Record {
    fn from(r: &Record) -> Self {
        proto::Record {
            key: r.key.clone(),
            value: r.value.as_ref().map(|v| v.to_vec()),
            stamp: Some(r.stamp.into()),
            origin: r.origin.to_string(),
            seq: r.seq,
            replaces: r.lineage.replaces.as_ref().map(ToString::to_string),
            context: (!r.lineage.context.entries.is_empty()).then(|| (&r.lineage.context).into()),
        }
    }
}

impl From<Record> for proto::Record {
    fn from(r: Record) -> Self {
        proto::Record::from(&r)
    }
}

impl TryFrom<proto::Record> for Record {
    type Error = InvalidMessage;
    fn try_from(r: proto::Record) -> Result<Self, Self::Error> {
        record_at(r, "record")
    }
}

fn record_at(r: proto::Record, path: &str) -> Result<Record, InvalidMessage> {
    validate_key(&r.key).map_err(|e| InvalidMessage::new(format!("{path}.key"), e.to_string()))?;
    let origin: Origin = r
        .origin
        .parse()
        .map_err(|e: InvalidOrigin| InvalidMessage::new(format!("{path}.origin"), e.to_string()))?;
    if r.seq == 0 {
        return Err(InvalidMessage::new(format!("{path}.seq"), "sequence numbers start at 1"));
    }
    let stamp = r.stamp.ok_or_else(|| InvalidMessage::new(format!("{path}.stamp"), "missing"))?;
    let replaces = match r.replaces {
        None => None,
        Some(text) => Some(
            text.parse::<VersionToken>()
                .map_err(|e: StoreError| InvalidMessage::new(format!("{path}.replaces"), e.to_string()))?,
        ),
    };
    let context = vv_from_wire(r.context, &format!("{path}.context"))?;
    if context.entries.len() > MAX_CONTEXT_ORIGINS {
        return Err(InvalidMessage::new(
            format!("{path}.context"),
            format!("{} origins; at most {MAX_CONTEXT_ORIGINS}", context.entries.len()),
        ));
    }
    let lineage = Lineage { replaces, context };
    Ok(Record {
        key: r.key,
        value: r.value.map(Bytes::from),
        stamp: stamp.into(),
        origin,
        seq: r.seq,
        lineage,
    })
}

/// Converts the records of a message, naming the offending index on failure.
///
/// # Errors
///
/// [`InvalidMessage`] for the first malformed record (`records[i].field`).
pub(crate) fn records_from_wire(records: Vec<proto::Record>) -> Result<Vec<Record>, InvalidMessage> {
    records.into_iter().enumerate().map(|(i, r)| record_at(r, &format!("records[{i}]"))).collect()
}

/// Converts records for the wire.
pub(crate) fn records_to_wire(records: &[Record]) -> Vec<proto::Record> {
    records.iter().map(proto::Record::from).collect()
}

impl From<&VersionVector> for proto::VersionVector {
    fn from(v: &VersionVector) -> Self {
        proto::VersionVector { entries: v.entries.iter().map(|(o, s)| (o.to_string(), *s)).collect() }
    }
}

impl TryFrom<proto::VersionVector> for VersionVector {
    type Error = InvalidMessage;
    fn try_from(v: proto::VersionVector) -> Result<Self, Self::Error> {
        let mut out = VersionVector::default();
        for (origin, seq) in v.entries {
            let id: Origin = origin.parse().map_err(|e: InvalidOrigin| {
                InvalidMessage::new(format!("version vector entry {:?}", shorten(&origin)), e.to_string())
            })?;
            if seq > MAX_SEQ {
                return Err(InvalidMessage::new(
                    format!("version vector entry {:?}", shorten(&origin)),
                    format!("sequence number {seq} is above {MAX_SEQ}"),
                ));
            }
            if seq > 0 {
                out.raise(&id, seq);
            }
        }
        Ok(out)
    }
}

/// `text` cut to 80 characters, for messages about hostile input.
fn shorten(text: &str) -> String {
    text.chars().take(80).collect()
}

/// Converts an optional wire vector (absent means empty).
///
/// # Errors
///
/// [`InvalidMessage`] naming `field` when an entry's origin is not a valid
/// [`Origin`] or its sequence number is absurd.
pub(crate) fn vv_from_wire(
    v: Option<proto::VersionVector>,
    field: &str,
) -> Result<VersionVector, InvalidMessage> {
    match v {
        None => Ok(VersionVector::default()),
        Some(v) => VersionVector::try_from(v).map_err(|e| InvalidMessage::new(field, e.to_string())),
    }
}

/// The validated header of a replication message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PeerHeader {
    /// The sender's cluster id, as sent (compared with ours before anything else).
    pub(crate) cluster_id: String,
    /// The sender.
    pub(crate) node_id: NodeId,
    /// The origin the sender's store writes under (of `node_id`; its node id
    /// itself when the sender predates store incarnations and sent none).
    pub(crate) origin: Origin,
    /// The address the sender is reached at, or `None` when it sent none (a
    /// client that serves nothing).
    pub(crate) addr: Option<PeerAddr>,
    /// The sender's HLC when it sent the message.
    pub(crate) hlc: Timestamp,
    /// The sender's physical clock when it sent the message, when it says.
    pub(crate) sent_ms: Option<u64>,
    /// In an answer: when the request was sent (the caller's clock) and received
    /// (the answerer's clock).
    pub(crate) echo: Option<Echo>,
}

/// The times of the request an answer answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Echo {
    /// The request's `sent_ms` (the caller's clock).
    pub(crate) sent_ms: u64,
    /// When the answerer received it (its own clock).
    pub(crate) received_ms: u64,
}

impl TryFrom<Option<proto::Header>> for PeerHeader {
    type Error = InvalidMessage;
    fn try_from(h: Option<proto::Header>) -> Result<Self, Self::Error> {
        let h = h.ok_or_else(|| InvalidMessage::new("header", "missing"))?;
        if h.cluster_id.is_empty() {
            return Err(InvalidMessage::new("header.cluster_id", "missing"));
        }
        let node_id =
            NodeId::new(&h.node_id).map_err(|e| InvalidMessage::new("header.node_id", e.to_string()))?;
        let origin = header_origin(&h.origin, &node_id)?;
        let addr = match h.addr.as_str() {
            "" => None,
            given => {
                Some(PeerAddr::new(given).map_err(|e| InvalidMessage::new("header.addr", e.to_string()))?)
            }
        };
        let hlc = h.hlc.ok_or_else(|| InvalidMessage::new("header.hlc", "missing"))?;
        let nonzero = |ms: u64| (ms != 0).then_some(ms);
        let echo = match (nonzero(h.echo_sent_ms), nonzero(h.echo_received_ms)) {
            (Some(sent_ms), Some(received_ms)) => Some(Echo { sent_ms, received_ms }),
            _ => None,
        };
        Ok(PeerHeader {
            cluster_id: h.cluster_id,
            node_id,
            origin,
            addr,
            hlc: hlc.into(),
            sent_ms: nonzero(h.sent_ms),
            echo,
        })
    }
}

/// The origin a header names: `text` parsed, which must be of `node`, or the
/// legacy origin `node` itself when `text` is empty.
fn header_origin(text: &str, node: &NodeId) -> Result<Origin, InvalidMessage> {
    if text.is_empty() {
        return Ok(Origin::legacy(node.clone()));
    }
    let origin: Origin =
        text.parse().map_err(|e: InvalidOrigin| InvalidMessage::new("header.origin", e.to_string()))?;
    if origin.node() != node {
        return Err(InvalidMessage::new(
            "header.origin",
            format!("origin {origin} is not of the sender, node {node}"),
        ));
    }
    Ok(origin)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> proto::Record {
        proto::Record {
            key: "k".into(),
            value: Some(b"v".to_vec()),
            stamp: Some(proto::Stamp { wall_ms: 5, logical: 1 }),
            origin: "n1".into(),
            seq: 1,
            ..proto::Record::default()
        }
    }

    #[test]
    fn version_vectors_with_absurd_sequence_numbers_are_refused() {
        let v = proto::VersionVector { entries: [("n1".to_owned(), u64::MAX)].into_iter().collect() };
        let err = VersionVector::try_from(v).unwrap_err();
        assert!(err.to_string().contains("sequence number"), "{err}");
    }

    #[test]
    fn a_record_from_before_lineages_decodes_with_none_and_a_lineage_round_trips() {
        let old = Record::try_from(good()).unwrap();
        assert_eq!(old.lineage, Lineage::default(), "no replaces, empty context");
        let mut context = VersionVector::default();
        context.raise(&"n2~0000000000000007".parse().unwrap(), 3);
        let lineage = Lineage { replaces: Some("n2~0000000000000007:3".parse().unwrap()), context };
        let r = Record { lineage: lineage.clone(), ..old };
        let wire = proto::Record::from(&r);
        assert_eq!(wire.replaces.as_deref(), Some("n2~0000000000000007:3"));
        assert_eq!(Record::try_from(wire).unwrap().lineage, lineage);
        let huge = proto::VersionVector {
            entries: (0..=MAX_CONTEXT_ORIGINS).map(|i| (format!("n{i}"), 1)).collect(),
        };
        let err = record_at(proto::Record { context: Some(huge), ..good() }, "record").unwrap_err();
        assert_eq!(err.field, "record.context");
    }

    #[test]
    fn records_round_trip_through_the_wire() {
        let r = Record::try_from(good()).unwrap();
        assert_eq!(proto::Record::from(&r), good());
        let tomb = proto::Record { value: None, ..good() };
        assert!(Record::try_from(tomb).unwrap().is_tombstone());
    }

    #[test]
    fn malformed_records_are_rejected_with_the_field_named() {
        let cases = [
            (proto::Record { key: String::new(), ..good() }, "records[1].key"),
            (proto::Record { seq: 0, ..good() }, "records[1].seq"),
            (proto::Record { origin: "bad origin".into(), ..good() }, "records[1].origin"),
            (proto::Record { origin: "n1~1".into(), ..good() }, "records[1].origin"),
            (proto::Record { origin: "n1~0000000000000000".into(), ..good() }, "records[1].origin"),
            (proto::Record { stamp: None, ..good() }, "records[1].stamp"),
            (proto::Record { replaces: Some("n1".into()), ..good() }, "records[1].replaces"),
            (
                proto::Record {
                    context: Some(proto::VersionVector {
                        entries: [("bad origin".to_owned(), 1)].into_iter().collect(),
                    }),
                    ..good()
                },
                "records[1].context",
            ),
        ];
        for (bad, field) in cases {
            let err = records_from_wire(vec![good(), bad]).unwrap_err();
            assert_eq!(err.field, field);
            let status = tonic::Status::from(err);
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
            assert!(status.message().contains(field), "{}", status.message());
        }
    }

    #[test]
    fn headers_need_a_cluster_a_node_and_a_stamp() {
        let h = proto::Header {
            cluster_id: "c".into(),
            node_id: "n".into(),
            addr: String::new(),
            hlc: Some(proto::Stamp { wall_ms: 1, logical: 0 }),
            ..proto::Header::default()
        };
        assert_eq!(PeerHeader::try_from(Some(h.clone())).unwrap().addr, None, "no address is allowed");
        let with_addr = proto::Header { addr: "127.0.0.1:7000".into(), ..h.clone() };
        let addr = PeerHeader::try_from(Some(with_addr)).unwrap().addr;
        assert_eq!(addr.map(|a| a.to_string()).as_deref(), Some("http://127.0.0.1:7000"));
        let bad_addr = proto::Header { addr: "not an address".into(), ..h.clone() };
        assert_eq!(PeerHeader::try_from(Some(bad_addr)).unwrap_err().field, "header.addr");
        assert!(PeerHeader::try_from(None).is_err());
        assert!(PeerHeader::try_from(Some(proto::Header { hlc: None, ..h.clone() })).is_err());
        assert!(PeerHeader::try_from(Some(proto::Header { node_id: String::new(), ..h.clone() })).is_err());
        assert!(PeerHeader::try_from(Some(proto::Header { cluster_id: String::new(), ..h })).is_err());
    }

    #[test]
    fn a_header_names_the_senders_origin_or_is_read_as_its_node_id() {
        let h = proto::Header {
            cluster_id: "c".into(),
            node_id: "n1".into(),
            hlc: Some(proto::Stamp { wall_ms: 1, logical: 0 }),
            ..proto::Header::default()
        };
        let legacy = PeerHeader::try_from(Some(h.clone())).unwrap();
        assert_eq!(
            legacy.origin,
            Origin::legacy(legacy.node_id.clone()),
            "a sender from before incarnations"
        );
        let current = proto::Header { origin: "n1~00000000000000ab".into(), ..h.clone() };
        assert_eq!(PeerHeader::try_from(Some(current)).unwrap().origin.incarnation(), 0xab);
        for bad in ["n2~00000000000000ab", "n2", "n1~ab", &"~".repeat(10_000)] {
            let err =
                PeerHeader::try_from(Some(proto::Header { origin: bad.into(), ..h.clone() })).unwrap_err();
            assert_eq!(err.field, "header.origin", "{bad:?}");
            assert!(err.reason.len() < 400, "{bad:?}: a short reason");
        }
    }

    #[test]
    fn version_vectors_reject_bad_origins_and_drop_zero_entries() {
        let mut v = proto::VersionVector::default();
        v.entries.insert("n1".into(), 4);
        v.entries.insert("n2".into(), 0);
        let vv = VersionVector::try_from(v.clone()).unwrap();
        assert_eq!(vv.entries.len(), 1);
        v.entries.insert("n1~00000000000000ab".into(), 2);
        assert_eq!(VersionVector::try_from(v.clone()).unwrap().entries.len(), 2, "one entry per incarnation");
        let mut hostile = v.clone();
        hostile.entries.insert(format!("n1~{}", "f".repeat(100_000)), 1);
        let err = VersionVector::try_from(hostile).unwrap_err();
        assert!(err.to_string().len() < 500, "the message quotes a bounded part: {}", err.to_string().len());
        v.entries.insert("no spaces".into(), 1);
        assert!(vv_from_wire(Some(v), "digest").unwrap_err().to_string().contains("digest"));
    }
}
