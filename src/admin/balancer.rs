//! The strategy and weights every balancer follows (`balancer/`): set, clear, show.
//! Balancers that follow membership read them within one discovery interval.

use bytes::Bytes;
use spectrum_balancer::strategy::StrategySpec;
use spectrum_core::NodeId;
use spectrum_replication::{AckLevel, Record, WriteBatch};
use tracing::info;

use super::{Admin, AdminError};
use crate::model::{
    BalancerSettings, ReadAfter, StrategySetting, StrategyWritten, WeightSetting, WeightWritten,
};
use crate::namespace::{BalancerKey, BalancerSetting, Namespace, NamespaceValue};

impl Admin {
    /// Sets the strategy every balancer uses, overriding each balancer's own file
    /// (its whole `[strategy]`: hash key and load factor included).
    ///
    /// # Errors
    ///
    /// The write's own errors (the spec is valid by construction).
    pub async fn set_balancer_strategy(
        &self,
        spec: StrategySpec,
        ack: AckLevel,
    ) -> Result<StrategyWritten, AdminError> {
        let value = BalancerSetting::Strategy(spec.clone()).encode();
        let write =
            self.write(WriteBatch::new().put(BalancerKey::Strategy.key(), Bytes::from(value)), ack).await?;
        info!(strategy = %spec, version = %write.version, "balancer strategy set");
        Ok(StrategyWritten { strategy: Some(spec), write })
    }

    /// Clears the strategy set in the database: every balancer goes back to its
    /// own file's.
    ///
    /// # Errors
    ///
    /// [`AdminError::NotFound`] when none is set; the write's own errors.
    pub async fn clear_balancer_strategy(&self, ack: AckLevel) -> Result<StrategyWritten, AdminError> {
        let key = BalancerKey::Strategy.key();
        if self.live(&key).await?.is_none() {
            return Err(AdminError::not_found(
                "no balancer strategy is set in the database (balancers use their own file's)",
            ));
        }
        let write = self.write(WriteBatch::new().delete(key), ack).await?;
        info!(version = %write.version, "balancer strategy cleared");
        Ok(StrategyWritten { strategy: None, write })
    }

    /// Sets member `node`'s weight for every balancer, overriding balancer files.
    ///
    /// # Errors
    ///
    /// [`AdminError::NotFound`] when `node` is not a member of the cluster; the
    /// write's own errors.
    pub async fn set_balancer_weight(
        &self,
        node: &NodeId,
        weight: u32,
        ack: AckLevel,
    ) -> Result<WeightWritten, AdminError> {
        if !self.members().await?.iter().any(|m| &m.id == node) {
            return Err(AdminError::not_found(format!(
                "no member {node}: weights are set for members of the cluster (spectrum status lists them)"
            )));
        }
        let value = BalancerSetting::Weight(weight).encode();
        let key = BalancerKey::Weight(node.clone()).key();
        let write = self.write(WriteBatch::new().put(key, Bytes::from(value)), ack).await?;
        info!(%node, weight, version = %write.version, "balancer weight set");
        Ok(WeightWritten { node: node.clone(), weight: Some(weight), write })
    }

    /// Clears `node`'s weight: balancer files decide it again (default 1).
    ///
    /// # Errors
    ///
    /// [`AdminError::NotFound`] when the database sets none for it; the write's
    /// own errors.
    pub async fn clear_balancer_weight(
        &self,
        node: &NodeId,
        ack: AckLevel,
    ) -> Result<WeightWritten, AdminError> {
        let key = BalancerKey::Weight(node.clone()).key();
        if self.live(&key).await?.is_none() {
            return Err(AdminError::not_found(format!(
                "no balancer weight is set for {node} in the database"
            )));
        }
        let write = self.write(WriteBatch::new().delete(key), ack).await?;
        info!(%node, version = %write.version, "balancer weight cleared");
        Ok(WeightWritten { node: node.clone(), weight: None, write })
    }

    /// What the database sets for every balancer, once this node holds `after`.
    ///
    /// # Errors
    ///
    /// [`AdminError::NotCaughtUp`]; [`AdminError::StoredInvalid`] for a record
    /// that no longer decodes.
    pub async fn balancer_settings(&self, after: &ReadAfter) -> Result<BalancerSettings, AdminError> {
        self.wait_for(after).await?;
        let mut settings = BalancerSettings::default();
        for record in self.ctx.store.scan(Namespace::Balancer.prefix()).await? {
            let Some((key, value)) = decode(&record)? else { continue };
            match (key, value) {
                (BalancerKey::Weight(node), BalancerSetting::Weight(weight)) => {
                    settings.weights.push(WeightSetting { node, weight, version: record.token() });
                }
                (_, BalancerSetting::Strategy(spec)) => {
                    settings.strategy = Some(StrategySetting { spec, version: record.token() });
                }
                _ => {}
            }
        }
        Ok(settings)
    }
}

/// A live record of `balancer/`, decoded and checked against its name; `None`
/// for a tombstone.
fn decode(record: &Record) -> Result<Option<(BalancerKey, BalancerSetting)>, AdminError> {
    let Some(bytes) = record.value.as_deref() else { return Ok(None) };
    let invalid = |reason| AdminError::StoredInvalid { what: format!("record {}", record.key), reason };
    let name = record.key.strip_prefix(Namespace::Balancer.prefix()).unwrap_or(&record.key);
    let key = BalancerKey::parse(name).map_err(|e| invalid(e.reason))?;
    let value = BalancerSetting::decode(bytes).map_err(|e| invalid(e.reason))?;
    value.check_name(name).map_err(|e| invalid(e.reason))?;
    Ok(Some((key, value)))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use spectrum_balancer::strategy::StrategyName;
    use spectrum_resources::CompositeResolver;

    use super::*;

    async fn admin() -> Admin {
        crate::admin::testing::admin(Arc::new(CompositeResolver::standard())).await
    }

    #[tokio::test]
    async fn strategy_and_weights_are_set_shown_and_cleared() {
        let admin = admin().await;
        assert_eq!(admin.balancer_settings(&ReadAfter::Anything).await.unwrap(), BalancerSettings::default());
        let spec = StrategySpec::new(StrategyName::ConsistentHash, Some("x-tenant"), Some(2.0)).unwrap();
        let set = admin.set_balancer_strategy(spec.clone(), AckLevel::Local).await.unwrap();
        let n1: NodeId = "n1".parse().unwrap();
        let weighted = admin.set_balancer_weight(&n1, 0, AckLevel::Local).await.unwrap();
        let shown = admin.balancer_settings(&ReadAfter::from(&weighted.write)).await.unwrap();
        assert_eq!(shown.strategy, Some(StrategySetting { spec, version: set.write.version }));
        assert_eq!(
            shown.weights,
            [WeightSetting { node: n1.clone(), weight: 0, version: weighted.write.version }]
        );

        admin.clear_balancer_strategy(AckLevel::Local).await.unwrap();
        admin.clear_balancer_weight(&n1, AckLevel::Local).await.unwrap();
        assert_eq!(admin.balancer_settings(&ReadAfter::Anything).await.unwrap(), BalancerSettings::default());
        let again = admin.clear_balancer_strategy(AckLevel::Local).await.unwrap_err();
        assert!(matches!(again, AdminError::NotFound { .. }), "{again}");
        assert!(matches!(
            admin.clear_balancer_weight(&n1, AckLevel::Local).await,
            Err(AdminError::NotFound { .. })
        ));
    }

    #[tokio::test]
    async fn a_weight_for_a_node_that_is_not_a_member_is_refused_naming_it() {
        let admin = admin().await;
        let err =
            admin.set_balancer_weight(&"node-9".parse().unwrap(), 2, AckLevel::Local).await.unwrap_err();
        assert!(matches!(&err, AdminError::NotFound { what } if what.contains("node-9")), "{err}");
        assert!(admin.balancer_settings(&ReadAfter::Anything).await.unwrap().weights.is_empty());
    }
}
