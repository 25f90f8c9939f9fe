//! Who may call, and what is audited: the one policy both management APIs (gRPC
//! here, HTTP/JSON in [`http_api`](crate::http_api)) enforce. Each API identifies
//! the caller its own way ([`BearerAuth`](crate::auth::BearerAuth) for both), then
//! calls [`Policy::authorize`] with the [`Rpc`] it is about to run and wraps a write
//! in [`Policy::audited_op`]; errors are gRPC [`Status`]es, which the HTTP API
//! turns into HTTP statuses, so both say the same thing and the audit log records
//! the same code whichever API was used.

use tonic::Status;

use super::Rpc;
use crate::admin::{Admin, AuditOutcome};
use crate::auth::Caller;
use crate::model::ImportReport;

/// How long an answer waits for the audit record of its outcome (see
/// [`Policy::audited`]): long enough for a write the cluster can commit, so
/// that a record is readable as soon as the answer is.
const AUDIT_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// The role check and audit path of one node's management APIs.
#[derive(Debug, Clone)]
pub(crate) struct Policy {
    admin: Admin,
}

impl Policy {
    /// The policy of the node `admin` runs on (audit records are written through it).
    pub(crate) fn new(admin: Admin) -> Self {
        Self { admin }
    }

    /// The operations it guards.
    pub(crate) fn admin(&self) -> &Admin {
        &self.admin
    }

    /// Checks `caller`'s role for `rpc`; a refused write is audited, on `target`.
    pub(crate) async fn authorize(&self, caller: Caller, rpc: Rpc, target: &str) -> Result<Caller, Status> {
        if let Err(denied) = rpc.check(&caller) {
            if rpc.is_write() {
                self.audited::<()>(&caller, rpc, target, Err(denied.clone())).await.ok();
            }
            return Err(denied);
        }
        Ok(caller)
    }

    /// Runs the write `rpc` on `target`: its audit record of success goes into the
    /// write's own batch (one commit), and a failure is recorded on its own.
    pub(crate) async fn audited_op<T>(
        &self,
        caller: &Caller,
        rpc: Rpc,
        target: &str,
        op: impl std::future::Future<Output = Result<T, Status>>,
    ) -> Result<T, Status> {
        let (result, recorded) = crate::admin::with_pending(caller, rpc.name(), target, op).await;
        if recorded && result.is_ok() {
            return result;
        }
        self.audited(caller, rpc, target, result).await
    }

    /// Records the write `rpc` on `target` and how it ended, then passes `result` on.
    ///
    /// The record is given up after [`AUDIT_WAIT`] (and logged): a call that
    /// failed because the cluster cannot commit (a majority of Raft voters
    /// down) would otherwise wait as long again for its record, which fails
    /// for the same reason (an embedding trial saw twice the write timeout).
    /// Given up, not left running: a record still finding where this node's
    /// ring stopped would hold up the next write's record.
    pub(crate) async fn audited<T>(
        &self,
        caller: &Caller,
        rpc: Rpc,
        target: &str,
        result: Result<T, Status>,
    ) -> Result<T, Status> {
        let outcome = match &result {
            Ok(_) => AuditOutcome::Ok,
            Err(s) => {
                AuditOutcome::Failed { code: format!("{:?}", s.code()), message: s.message().to_owned() }
            }
        };
        let recorded = self.admin.audit(caller, rpc.name(), target, outcome);
        if tokio::time::timeout(AUDIT_WAIT, recorded).await.is_err() {
            tracing::warn!(operation = rpc.name(), caller = %caller.name, "gave up recording a management call in the audit log");
        }
        result
    }

    /// An import's result, audited (naming what it added and changed) unless it
    /// was a dry run, which writes nothing.
    pub(crate) async fn audited_import(
        &self,
        caller: &Caller,
        rpc: Rpc,
        dry_run: bool,
        done: Result<ImportReport, Status>,
    ) -> Result<ImportReport, Status> {
        if dry_run {
            return done;
        }
        let target = match &done {
            Ok(report) => {
                [&report.plan.add[..], &report.plan.change[..]].concat().join(",").chars().take(256).collect()
            }
            Err(_) => String::new(),
        };
        self.audited(caller, rpc, &target, done).await
    }
}

/// The license name a `SetLicense` writes (`main` when empty), for the audit log.
pub(crate) fn license_name(name: &str) -> String {
    if name.is_empty() { "main".to_owned() } else { name.chars().take(128).collect() }
}

/// The `name` of a resource definition, for the audit log; never anything else
/// of it (a definition holds secrets).
pub(crate) fn definition_name(definition: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(definition)
        .ok()
        .and_then(|v| v.get("name")?.as_str().map(|n| n.chars().take(128).collect()))
        .unwrap_or_default()
}
