//! Decoding of the calls only Raft mode answers: compare-and-set puts,
//! transactions and consistent reads.

use bytes::Bytes;
use spectrum_replication::{Condition, VersionToken};
use tonic::Status;

use super::ManagementService;
use crate::model::TxnWrite;
use crate::pb::proto;

/// The condition of a put: `None` for a plain put, `Some(None)` for
/// `if_absent`, `Some(Some(v))` for `if_version`.
pub(super) fn put_condition(req: &proto::PutRequest) -> Result<Option<Option<VersionToken>>, Status> {
    match (req.if_absent, req.if_version.as_str()) {
        (false, "") => Ok(None),
        (true, "") => Ok(Some(None)),
        (false, v) => version(v, "if_version").map(|v| Some(Some(v))),
        (true, _) => Err(Status::invalid_argument("if_absent and if_version exclude each other")),
    }
}

fn version(text: &str, field: &str) -> Result<VersionToken, Status> {
    text.parse()
        .map_err(|e: spectrum_replication::StoreError| Status::invalid_argument(format!("{field}: {e}")))
}

/// A transaction's conditions and writes, checked.
pub(super) fn txn_from_wire(req: proto::TxnRequest) -> Result<(Vec<Condition>, Vec<TxnWrite>), Status> {
    let conditions = req
        .conditions
        .into_iter()
        .enumerate()
        .map(|(i, c)| match c.version.as_str() {
            "" => Ok(Condition::absent(c.key)),
            v => Ok(Condition::version(c.key, version(v, &format!("conditions[{i}].version"))?)),
        })
        .collect::<Result<Vec<_>, Status>>()?;
    let writes = req.writes.into_iter().map(|w| (w.key, (!w.delete).then(|| Bytes::from(w.value)))).collect();
    Ok((conditions, writes))
}

impl ManagementService {
    /// Waits for a read index first when the read asks to be consistent.
    pub(super) async fn barrier_if_consistent(
        &self,
        read: Option<&proto::ReadOptions>,
    ) -> Result<(), Status> {
        if read.is_some_and(|r| r.consistent) {
            self.admin.barrier().await?;
        }
        Ok(())
    }
}
