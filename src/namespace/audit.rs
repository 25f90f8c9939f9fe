//! `audit/`: the [`AuditRecord`] of every management write.

use serde::{Deserialize, Serialize};

use super::{Namespace, NamespaceValue, ValueError};
use crate::auth::Role;

/// One management write, as the audit log keeps it at
/// `audit/<ms, 15 digits>-<node>-<n, 10 digits>` (keys sort by time, and a
/// node's records of one millisecond by their order). It names the
/// operation and its key or name, never a value or a secret. Written only by the
/// nodes, after the operation, with acknowledgement `local` (it replicates with
/// everything else); a refused or failed write is recorded too.
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
}

/// Longest error message an audit record keeps, in characters.
pub const MAX_AUDIT_MESSAGE: usize = 300;

impl AuditRecord {
    /// The key of the `n`th record written by `node` at `at_ms`.
    pub fn key(at_ms: u64, node: &str, n: u64) -> String {
        format!("{}{at_ms:015}-{node}-{n:010}", Namespace::Audit.prefix())
    }

    /// The stored form (JSON).
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
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

    #[test]
    fn audit_keys_sort_by_time() {
        let early = AuditRecord::key(999, "node-2", 5);
        let late = AuditRecord::key(1_000, "node-1", 0);
        assert_eq!(late, "audit/000000000001000-node-1-0000000000");
        assert!(early < late);
        assert!(AuditRecord::key(5, "n", 9) < AuditRecord::key(5, "n", 10));
    }
}
