//! The cluster as this node sees it (status), and an operator's drain and undrain.

use bytes::Bytes;
use spectrum_core::{Liveness, Member, MemberState, NodeId};
use spectrum_replication::{AckLevel, WriteBatch};
use tracing::info;

use super::{Admin, AdminError};
use crate::model::{MemberInfo, NodeStateChanged, NodeStatus, PeerInfo, ReplicationInfo};

impl Admin {
    /// This node's view of the cluster: membership, peers, keys, tombstones and open conflicts, digest, and which
    /// resources are available here.
    ///
    /// # Errors
    ///
    /// Store and registry failures.
    pub async fn status(&self) -> Result<NodeStatus, AdminError> {
        let store = &self.ctx.store;
        let statuses = self.replicator.peers();
        // A member's liveness is its address's, as this node's failure detector sees
        // it; this node is alive.
        let members = self
            .members()
            .await?
            .into_iter()
            .map(|member| {
                let liveness = if member.id == self.ctx.id {
                    Liveness::Alive
                } else {
                    statuses.iter().find(|p| p.addr == member.addr).map_or(Liveness::Unknown, |p| p.liveness)
                };
                MemberInfo { member, liveness }
            })
            .collect::<Vec<MemberInfo>>();
        // A removed member is not called on: its row would only age.
        let removed: Vec<&Member> =
            members.iter().map(|m| &m.member).filter(|m| m.state == MemberState::Removed).collect();
        let peers = statuses
            .into_iter()
            // By id once the peer answered (a new member may reuse the address).
            .filter(|p| !removed.iter().any(|m| p.id.as_ref().map_or(p.addr == m.addr, |id| *id == m.id)))
            .map(|p| PeerInfo {
                id: p.id,
                addr: p.addr.to_string(),
                lag: p.lag,
                last_contact_ms_ago: p
                    .last_contact
                    .map(|t| u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX)),
                clock_offset_ms: p.clock_offset_ms,
                clock_uncertainty_ms: p.clock_uncertainty_ms,
                clock_skewed: p.clock_skewed,
                last_error: p.last_error,
                liveness: p.liveness,
            })
            .collect();
        let records = store.scan("").await?;
        let tombstones = records.iter().filter(|r| r.is_tombstone()).count();
        let keys = records.len() - tombstones;
        let digest = store.digest().await?;
        let conflicts = store.conflicts("").await?.len();
        Ok(NodeStatus {
            cluster: self.ctx.cluster.to_string(),
            node: self.ctx.id.clone(),
            addr: self.addr.to_string(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            replication: ReplicationInfo::new(self.replicator.mode(), self.replicator.consensus_status()),
            keys: keys as u64,
            tombstones: tombstones as u64,
            conflicts: conflicts as u64,
            digest: digest.entries.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            members,
            peers,
            resources: self.status_resources().await?,
            clock_fenced: self.clock_fence.as_ref().and_then(|fence| fence()),
            out_of_cluster: self.out_of_cluster.as_ref().and_then(|out| out()),
        })
    }

    /// Sets member `id` to `state`: an operator drains or undrains a member, or
    /// removes one that died for good (it then counts for nothing and is refused if
    /// it returns); undraining a removed member lets it return.
    ///
    /// # Errors
    ///
    /// [`AdminError::NotFound`] for an unknown member; [`AdminError::MemberLeft`]
    /// to drain or undrain a member that left; [`AdminError::LastActive`] to
    /// drain or remove the last active member; [`AdminError::InvalidArgument`] for
    /// a state an operator cannot set, for draining a removed member, and for a
    /// node asked to remove itself.
    pub async fn set_node_state(
        &self,
        id: &NodeId,
        state: MemberState,
        ack: AckLevel,
    ) -> Result<NodeStateChanged, AdminError> {
        if !matches!(state, MemberState::Active | MemberState::Draining | MemberState::Removed) {
            return Err(AdminError::InvalidArgument(format!("an operator cannot set a node {state}")));
        }
        if state == MemberState::Removed && id == &self.ctx.id {
            return Err(AdminError::RemoveSelf { node: id.clone() });
        }
        let key = Member::key_of(id);
        let record = self
            .live(&key)
            .await?
            .ok_or_else(|| AdminError::not_found(format!("no member {:?} in this cluster", id.as_str())))?;
        let mut member =
            Member::from_record_value(record.value.as_deref().unwrap_or_default()).map_err(|e| {
                AdminError::StoredInvalid {
                    what: format!("membership record of {id}"),
                    reason: e.to_string(),
                }
            })?;
        match (member.state, state) {
            (MemberState::Left, MemberState::Active | MemberState::Draining) => {
                return Err(AdminError::MemberLeft { id: id.clone() });
            }
            (MemberState::Removed, MemberState::Draining) => {
                return Err(AdminError::InvalidArgument(format!(
                    "node {id} was removed; undrain it to let it return first"
                )));
            }
            (MemberState::Active, MemberState::Draining | MemberState::Removed)
                if !self.members().await?.iter().any(|m| &m.id != id && m.state == MemberState::Active) =>
            {
                return Err(AdminError::LastActive { id: id.clone() });
            }
            _ => {}
        }
        if state == MemberState::Removed && member.state != MemberState::Removed {
            // Raft mode: refused before anything is written (a write proposed
            // without a majority may commit later, when nobody expects it).
            if let Err(e) = self.replicator.check_removal(id).await {
                let reason = consensus_reason(e);
                return Err(AdminError::Replication(spectrum_replication::ReplicationError::Consensus {
                    reason: format!("{reason}; {id} is still a member, its membership record unchanged"),
                }));
            }
        }
        let before = Bytes::from(member.to_record_value());
        let previous = member.state;
        member.state = state;
        let value = Bytes::from(member.to_record_value());
        let write = self.write(WriteBatch::new().put(key.clone(), value), ack).await?;
        if state == MemberState::Removed {
            // Raft mode: it no longer counts toward the majority (a no-op otherwise).
            if let Err(e) = self.replicator.remove_member(id, self.write_timeout).await {
                return Err(self.undo_removal(id, key, before, write.version, e).await);
            }
        }
        info!(member = %id, state = %state, version = %write.version, "member state set");
        Ok(NodeStateChanged { member, previous: Some(previous), write })
    }

    /// Raft mode, the group refused to take `id` out of the voters (or did
    /// not answer in time): puts its membership record back as it was, if
    /// nobody wrote it since `removed` (a member still voting must not be
    /// recorded as removed: balancers would drop it, and it would refuse to
    /// serve). The error says which came of it.
    async fn undo_removal(
        &self,
        id: &NodeId,
        key: String,
        before: Bytes,
        removed: spectrum_replication::VersionToken,
        failed: spectrum_replication::ReplicationError,
    ) -> AdminError {
        let condition = spectrum_replication::Condition::version(key.clone(), removed);
        let restored = self.write_if(WriteBatch::new().put(key, before), vec![condition]).await;
        // Said once: the error is wrapped as a consensus error again below.
        let failed = consensus_reason(failed);
        let reason = match restored {
            Ok(write) => {
                info!(member = %id, version = %write.version, error = %failed, "removal refused; membership record restored");
                format!("{failed}; {id} is still a member, its membership record as it was")
            }
            Err(e) => {
                tracing::warn!(member = %id, error = %e, "removal refused, and the membership record could not be restored");
                format!(
                    "{failed}; {id} may still vote, yet its record says removed (restoring it failed: {e}); \
                     run `spectrum node undrain {id}`, or the removal again"
                )
            }
        };
        AdminError::Replication(spectrum_replication::ReplicationError::Consensus { reason })
    }
}

/// What `error` says, without the "consensus unavailable" its own text
/// starts with when it is one (the caller wraps the reason as one again).
fn consensus_reason(error: spectrum_replication::ReplicationError) -> String {
    match error {
        spectrum_replication::ReplicationError::Consensus { reason } => reason,
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use spectrum_core::{Member, MemberState, NodeId};
    use spectrum_replication::{AckLevel, WriteBatch};
    use spectrum_resources::CompositeResolver;

    use crate::admin::AdminError;

    /// Draining every member would leave balancers nothing to send requests
    /// to, the undrain included (an embedding trial locked itself out so): the
    /// last active member is refused, any other may drain.
    #[tokio::test]
    async fn the_last_active_member_is_not_drained() {
        let admin = crate::admin::testing::admin(Arc::new(CompositeResolver::standard())).await;
        let (n1, n2): (NodeId, NodeId) = ("n1".parse().unwrap(), "n2".parse().unwrap());
        let err = admin.set_node_state(&n1, MemberState::Draining, AckLevel::Local).await.unwrap_err();
        assert!(matches!(err, AdminError::LastActive { .. }), "{err}");
        assert!(err.to_string().contains("undrain another member first"), "{err}");

        let other = Member::new(n2.clone(), "http://127.0.0.1:2".parse().unwrap(), MemberState::Active);
        admin
            .ctx
            .store
            .apply(WriteBatch::new().put(other.record_key(), other.to_record_value()))
            .await
            .unwrap();
        admin.set_node_state(&n1, MemberState::Draining, AckLevel::Local).await.unwrap();
        let err = admin.set_node_state(&n2, MemberState::Draining, AckLevel::Local).await.unwrap_err();
        assert!(matches!(err, AdminError::LastActive { ref id } if *id == n2), "{err}");
        let err = admin.set_node_state(&n2, MemberState::Removed, AckLevel::Local).await.unwrap_err();
        assert!(matches!(err, AdminError::LastActive { .. }), "removing it is refused too: {err}");
        admin.set_node_state(&n1, MemberState::Active, AckLevel::Local).await.unwrap();
        admin.set_node_state(&n2, MemberState::Draining, AckLevel::Local).await.unwrap();
    }
}
