//! One mapping from [`AdminError`] to a gRPC [`Status`].

use spectrum_replication::{ReplicationError, StoreError};
use spectrum_resources::SecretError;
use tonic::Status;

use crate::admin::AdminError;
use crate::namespace::KeyError;
use crate::registry::RegistryError;

impl From<AdminError> for Status {
    fn from(e: AdminError) -> Self {
        let message = e.to_string();
        let not_ready = refused_not_ready(&e);
        let mut status = match e {
            AdminError::Key(KeyError::ReadOnly { .. }) => Status::permission_denied(message),
            AdminError::Key(_)
            | AdminError::License(_)
            | AdminError::Definition(_)
            | AdminError::Placeholder(_)
            | AdminError::Transfer(_)
            | AdminError::InvalidArgument(_)
            | AdminError::RemoveSelf { .. } => Status::invalid_argument(message),
            AdminError::Store(
                StoreError::InvalidKey { .. }
                | StoreError::ValueTooLarge { .. }
                | StoreError::EmptyBatch
                | StoreError::InvalidToken { .. }
                | StoreError::InvalidRecord { .. },
            ) => Status::invalid_argument(message),
            AdminError::Store(ref e @ StoreError::Storage { .. }) | AdminError::Unwritable(ref e) => {
                let message = format!(
                    "{message}; this node refuses writes and is not ready until its store writes again \
                     (it keeps retrying); write through another node"
                );
                if storage_full(e) {
                    Status::resource_exhausted(message)
                } else {
                    Status::unavailable(message)
                }
            }
            AdminError::Registry(e) => registry_status(e),
            AdminError::Watch(e) => e.into(),
            AdminError::NotFound { .. } => Status::not_found(message),
            AdminError::AlreadyExists { .. } | AdminError::UserExists { .. } => {
                Status::already_exists(message)
            }
            AdminError::StoredInvalid { .. }
            | AdminError::ClockFenced { .. }
            | AdminError::MemberLeft { .. }
            | AdminError::LastActive { .. }
            | AdminError::UserRevoked { .. } => Status::failed_precondition(message),
            AdminError::Replication(
                ReplicationError::NeedsConsensus { .. } | ReplicationError::NotAMember { .. },
            )
            | AdminError::ConditionFailed(_)
            | AdminError::PutConditionFailed { .. } => Status::failed_precondition(message),
            AdminError::CatchingUp { .. }
            | AdminError::OutOfCluster { .. }
            | AdminError::Stale { .. }
            | AdminError::NotCaughtUp { .. }
            | AdminError::Replication(_) => Status::unavailable(message),
            AdminError::AckTimeout { .. } => Status::deadline_exceeded(message),
            _ => Status::internal(message),
        };
        if not_ready {
            status.metadata_mut().insert(
                spectrum_balancer::refusal::REFUSED_HEADER,
                tonic::metadata::MetadataValue::from_static(spectrum_balancer::refusal::NOT_READY),
            );
        }
        status
    }
}

/// Whether `e` refuses the call before any of its work because this node is not
/// ready (catching up, out of the cluster, its clock fenced, its copy possibly
/// stale, its store unable to write) or cannot make it while another node can
/// (removing itself). The answer is
/// then marked so that a balancer sends the call to another node, even one that is
/// not idempotent (see [`spectrum_balancer::refusal`]).
fn refused_not_ready(e: &AdminError) -> bool {
    matches!(
        e,
        AdminError::CatchingUp { .. }
            | AdminError::OutOfCluster { .. }
            | AdminError::RemoveSelf { .. }
            | AdminError::ClockFenced { .. }
            | AdminError::Stale { .. }
            | AdminError::Unwritable(_)
    )
}

/// Whether a storage failure is a full disk (or quota): `ENOSPC`, `EDQUOT`.
fn storage_full(e: &StoreError) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>()
            && matches!(io.kind(), std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded)
        {
            return true;
        }
        cause = c.source();
    }
    let text = e.to_string();
    text.contains("No space left on device") || text.contains("Disk quota exceeded")
}

fn registry_status(e: RegistryError) -> Status {
    let message = e.to_string();
    match &e {
        RegistryError::NotFound { .. } => Status::not_found(message),
        RegistryError::Invalid { .. } => Status::failed_precondition(message),
        RegistryError::Secret { source, .. } => match source {
            SecretError::Placeholder => Status::invalid_argument(message),
            SecretError::Field { source: inner, .. } if **inner == SecretError::Placeholder => {
                Status::invalid_argument(message)
            }
            SecretError::NoKey | SecretError::Field { .. } => Status::failed_precondition(format!(
                "{message}; give every node the same cluster_key in its configuration"
            )),
            _ => Status::failed_precondition(message),
        },
        _ => Status::internal(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_that_left_the_raft_group_refuses_with_failed_precondition_naming_why() {
        let left = AdminError::Replication(ReplicationError::NotAMember { node: "node-3".parse().unwrap() });
        let status = Status::from(left);
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        assert!(status.message().contains("node node-3 left this cluster's Raft group"), "{status:?}");
    }
}
