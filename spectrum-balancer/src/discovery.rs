//! Where the balancer learns the cluster's members, and the strategy and weights
//! the cluster sets for it: the [`Discovery`] trait.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use spectrum_core::{Member, NodeId};

use crate::error::BalancerError;
use crate::strategy::StrategySpec;

/// The strategy and weights the cluster's configuration database sets for every
/// balancer, as [`Discovery::settings`] reads them. They override the balancer's
/// own: the strategy it was started with and the weights of its backend list.
///
/// # Precedence
///
/// - `strategy`: while it is `Some`, it replaces the balancer's own strategy whole
///   (its hash key included: a spec without one routes without affinity); once it
///   is `None`, the balancer's own is back.
/// - `weights`: a node listed here has this weight; any other keeps the weight it
///   was given with the backend list, or 1.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct BalancingSettings {
    /// The strategy every balancer uses, when the database sets one.
    pub strategy: Option<StrategySpec>,
    /// Weights by node (`0`: no requests while another backend can take them).
    pub weights: BTreeMap<NodeId, u32>,
}

impl BalancingSettings {
    /// Settings with this strategy (or none) and these weights.
    pub fn new(strategy: Option<StrategySpec>, weights: BTreeMap<NodeId, u32>) -> Self {
        Self { strategy, weights }
    }
}

/// A source of cluster membership (and, optionally, of the strategy and weights the
/// cluster sets), polled by the balancer.
///
/// # The contract
///
/// - [`members`](Discovery::members) returns the whole current membership record,
///   not a change: the balancer adds what is new, drains what is
///   [`Draining`](spectrum_core::MemberState::Draining), and removes what is
///   [`Left`](spectrum_core::MemberState::Left), [`Joining`](spectrum_core::MemberState::Joining)
///   or absent. Members keep their health and load figures from one poll to the next.
/// - [`settings`](Discovery::settings) returns the whole current
///   [`BalancingSettings`], or `None` when the source does not know them; the
///   balancer swaps its strategy and weights to match (see
///   [`BalancingSettings`] for precedence).
/// - Both are called once at start and then every interval given to
///   [`BalancerBuilder::discovery`](crate::BalancerBuilder::discovery), members
///   first (settings are not asked when the members could not be applied), never
///   twice at once. They may take time (they are I/O) but should answer within
///   the interval.
///
/// # Errors
///
/// A failed poll ([`BalancerError::Discovery`], built with
/// [`BalancerError::discovery`]) is logged and changes nothing: the balancer keeps
/// serving the members it knows with the strategy and weights in force, and polls
/// again at the next interval.
///
/// ```
/// use async_trait::async_trait;
/// use spectrum_balancer::{BalancerError, Discovery};
/// use spectrum_core::{Member, MemberState};
///
/// /// Members read from a file of `id addr state` lines.
/// #[derive(Debug)]
/// struct FromFile(std::path::PathBuf);
///
/// #[async_trait]
/// impl Discovery for FromFile {
///     async fn members(&self) -> Result<Vec<Member>, BalancerError> {
///         let text = tokio::fs::read_to_string(&self.0).await.map_err(BalancerError::discovery)?;
///         text.lines()
///             .filter_map(|line| {
///                 let mut f = line.split_whitespace();
///                 Some((f.next()?, f.next()?, f.next()?))
///             })
///             .map(|(id, addr, state)| {
///                 let id = id.parse().map_err(BalancerError::discovery)?;
///                 let state: MemberState = state.parse().map_err(BalancerError::discovery)?;
///                 let addr = addr.parse().map_err(BalancerError::discovery)?;
///                 Ok(Member::new(id, addr, state))
///             })
///             .collect()
///     }
/// }
/// ```
#[async_trait]
pub trait Discovery: Send + Sync + fmt::Debug + 'static {
    /// The cluster's current members.
    ///
    /// # Errors
    ///
    /// Any failure to learn them; the balancer keeps what it knows.
    async fn members(&self) -> Result<Vec<Member>, BalancerError>;

    /// The strategy and weights the cluster sets for its balancers, or `None` when
    /// this source does not know them.
    ///
    /// The default answers `None`: the balancer then keeps the strategy and
    /// weights it was started with, and what you lose is changing them while it
    /// runs. Override it when the source can read them (the `spectrum` crate's
    /// discovery reads the database's `balancer/` namespace).
    ///
    /// # Errors
    ///
    /// Any failure to learn them; the balancer keeps the strategy and weights in force.
    async fn settings(&self) -> Result<Option<BalancingSettings>, BalancerError> {
        Ok(None)
    }
}

#[async_trait]
impl<T: Discovery + ?Sized> Discovery for Arc<T> {
    async fn members(&self) -> Result<Vec<Member>, BalancerError> {
        (**self).members().await
    }
    async fn settings(&self) -> Result<Option<BalancingSettings>, BalancerError> {
        (**self).settings().await
    }
}

#[async_trait]
impl<T: Discovery + ?Sized> Discovery for Box<T> {
    async fn members(&self) -> Result<Vec<Member>, BalancerError> {
        (**self).members().await
    }
    async fn settings(&self) -> Result<Option<BalancingSettings>, BalancerError> {
        (**self).settings().await
    }
}

/// A fixed membership list (and, optionally, fixed balancing settings): the static
/// configuration, as a [`Discovery`].
#[derive(Debug, Clone, Default)]
pub struct StaticDiscovery {
    members: Vec<Member>,
    settings: Option<BalancingSettings>,
}

impl StaticDiscovery {
    /// Always answers `members`, and no settings.
    pub fn new(members: Vec<Member>) -> Self {
        Self { members, settings: None }
    }

    /// Also always answers `settings`.
    pub fn with_settings(mut self, settings: BalancingSettings) -> Self {
        self.settings = Some(settings);
        self
    }
}

#[async_trait]
impl Discovery for StaticDiscovery {
    async fn members(&self) -> Result<Vec<Member>, BalancerError> {
        Ok(self.members.clone())
    }
    async fn settings(&self) -> Result<Option<BalancingSettings>, BalancerError> {
        Ok(self.settings.clone())
    }
}

#[cfg(test)]
mod tests {
    use spectrum_core::MemberState;

    use super::*;

    #[tokio::test]
    async fn a_static_list_answers_itself_through_every_pointer() {
        let m =
            Member::new("n1".parse().unwrap(), "http://127.0.0.1:7001".parse().unwrap(), MemberState::Active);
        let fixed = StaticDiscovery::new(vec![m.clone()]);
        assert_eq!(fixed.members().await.unwrap(), vec![m.clone()]);
        let shared: Arc<dyn Discovery> = Arc::new(fixed.clone());
        assert_eq!(shared.members().await.unwrap(), vec![m.clone()]);
        let boxed: Box<dyn Discovery> = Box::new(fixed);
        assert_eq!(boxed.members().await.unwrap(), vec![m]);
        assert_eq!(boxed.settings().await.unwrap(), None, "no settings unless given");
    }

    #[tokio::test]
    async fn static_settings_are_answered_through_every_pointer() {
        let settings = BalancingSettings::new(
            Some(StrategySpec::named(crate::strategy::StrategyName::Random)),
            [("n1".parse().unwrap(), 3)].into(),
        );
        let fixed: Arc<dyn Discovery> = Arc::new(StaticDiscovery::default().with_settings(settings.clone()));
        assert_eq!(fixed.settings().await.unwrap(), Some(settings));
    }
}
