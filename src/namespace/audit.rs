//! `audit/`: the [`AuditRecord`] of every management write.

use serde::{Deserialize, Serialize};

use super::{Namespace, NamespaceValue, ValueError};
use crate::auth::Role;

/// One management write, as the audit log keeps it. It names the operation and
/// its key or name, never a value or a secret. Written only by the nodes, after
/// the operation, with acknowledgement `local` (it replicates with everything
/// else); a refused or failed write is recorded too.
///
/// Each node writes its records into a ring of slots, `audit/<node>/<slot, 6
/// digits>` ([`AuditRecord::key`]), its `seq`th record into slot `seq` modulo
/// the ring's size, overwriting its oldest. The log stays bounded without a
/// delete, and so without a tombstone to keep and collect, per write (a
/// rotating log, as syslog's or a circular buffer). A record is named by its
/// [`id`](AuditRecord::id), which sorts by time.
///
/// Records of earlier versions are at `audit/<ms, 15 digits>-<node>-<n, 10
/// digits>`, named by that key; they are read alike, and deleted once every
/// record of the node's ring is newer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditRecord {
    /// When, in ms since the Unix epoch (the answering node's clock).
    pub at_ms: u64,
    /// The node that answered the call.
    pub node: String,
    /// Who called: a user's name, `bootstrap` or `anonymous`.
    pub caller: String,
    /// The caller's role.
    pub role: Role,
    /// The RPC (`Put`, `AddUser`, …).
    pub operation: String,
    /// The key or name it was about (empty when it has none).
    pub target: String,
    /// Whether it succeeded.
    pub ok: bool,
    /// The gRPC code of the answer (`Ok`, `PermissionDenied`, …).
    pub code: String,
    /// The error message, when it failed (cut to [`MAX_AUDIT_MESSAGE`] characters).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// The node's count of its records before this one: it numbers them from 0,
    /// across restarts, and picks the slot. 0 in records of earlier versions.
    #[serde(default)]
    pub seq: u64,
}

/// Longest error message an audit record keeps, in characters.
pub const MAX_AUDIT_MESSAGE: usize = 300;

impl AuditRecord {
    /// The key of slot `slot` of `node`'s ring: `audit/<node>/<slot, 6 digits>`.
    pub fn key(node: &str, slot: u64) -> String {
        format!("{}{slot:06}", Self::ring_prefix(node))
    }

    /// The prefix of `node`'s ring: `audit/<node>/`.
    pub fn ring_prefix(node: &str) -> String {
        format!("{}{node}/", Namespace::Audit.prefix())
    }

    /// The record's name, unique and sorting by time: `<at_ms, 15 digits>-<node>-<seq,
    /// 10 digits>`, the key of records of earlier versions without `audit/`.
    pub fn id(&self) -> String {
        format!("{:015}-{}-{:010}", self.at_ms, self.node, self.seq)
    }

    /// The stored form (JSON).
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// Where an `audit/` key is, as [`AuditKey::parse`] reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AuditKey<'a> {
    /// Slot `slot` of `node`'s ring.
    Slot {
        /// The node that writes the ring.
        node: &'a str,
        /// The slot.
        slot: u64,
    },
    /// A record of an earlier version, written at `at_ms` by `node`.
    Legacy {
        /// When, in ms since the Unix epoch.
        at_ms: u64,
        /// The node that wrote it.
        node: &'a str,
    },
}

impl<'a> AuditKey<'a> {
    /// Reads `key`, or `None` when it is not an audit key of either form.
    pub(crate) fn parse(key: &'a str) -> Option<Self> {
        let rest = key.strip_prefix(Namespace::Audit.prefix())?;
        if let Some((node, slot)) = rest.split_once('/') {
            return Some(AuditKey::Slot { node, slot: slot.parse().ok()? });
        }
        let (at_ms, rest) = rest.split_at_checked(15)?;
        let (node, _n) = rest.strip_prefix('-')?.rsplit_once('-')?;
        Some(AuditKey::Legacy { at_ms: at_ms.parse().ok()?, node })
    }
}

impl NamespaceValue for AuditRecord {
    const NAMESPACE: Namespace = Namespace::Audit;
    fn decode(bytes: &[u8]) -> Result<Self, ValueError> {
        serde_json::from_slice(bytes).map_err(|e| ValueError::new(format!("audit record: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(at_ms: u64, node: &str, seq: u64) -> AuditRecord {
        AuditRecord {
            at_ms,
            node: node.into(),
            caller: "ada".into(),
            role: Role::Admin,
            operation: "Put".into(),
            target: "settings/a".into(),
            ok: true,
            code: "Ok".into(),
            message: String::new(),
            seq,
        }
    }

    #[test]
    fn ids_sort_by_time_then_node_then_seq() {
        let early = record(999, "node-2", 5).id();
        let late = record(1_000, "node-1", 0).id();
        assert_eq!(late, "000000000001000-node-1-0000000000");
        assert!(early < late);
        assert!(record(5, "n", 9).id() < record(5, "n", 10).id());
    }

    #[test]
    fn ring_and_legacy_keys_are_told_apart() {
        assert_eq!(AuditRecord::key("node-1", 42), "audit/node-1/000042");
        assert_eq!(AuditKey::parse("audit/node-1/000042"), Some(AuditKey::Slot { node: "node-1", slot: 42 }));
        let legacy = "audit/000000000001000-node-1-0000000007";
        assert_eq!(AuditKey::parse(legacy), Some(AuditKey::Legacy { at_ms: 1_000, node: "node-1" }));
        for bad in
            ["audit/node-1/x", "audit/12-n-1", "audit/", "settings/a", "audit/0000000000010000node-1-1"]
        {
            assert_eq!(AuditKey::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn records_of_earlier_versions_decode_with_seq_0() {
        let mut json = serde_json::to_value(record(7, "n1", 3)).unwrap();
        json.as_object_mut().unwrap().remove("seq");
        let old = AuditRecord::decode(&serde_json::to_vec(&json).unwrap()).unwrap();
        assert_eq!(old, record(7, "n1", 0));
    }
}
