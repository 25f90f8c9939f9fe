//! Where the balancer learns the cluster's members: the [`Discovery`] trait.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use spectrum_core::Member;

use crate::error::BalancerError;

/// A source of cluster membership, polled by the balancer.
///
/// # The contract
///
/// - [`members`](Discovery::members) returns the whole current membership record,
///   not a change: the balancer adds what is new, drains what is
///   [`Draining`](spectrum_core::MemberState::Draining), and removes what is
///   [`Left`](spectrum_core::MemberState::Left), [`Joining`](spectrum_core::MemberState::Joining)
///   or absent. Members keep their health and load figures from one poll to the next.
/// - It is called once at start and then every interval given to
///   [`BalancerBuilder::discovery`](crate::BalancerBuilder::discovery), never twice at
///   once. It may take time (it is I/O) but should answer within the interval.
///
/// # Errors
///
/// A failed poll ([`BalancerError::Discovery`], built with
/// [`BalancerError::discovery`]) is logged and changes nothing: the balancer keeps
/// serving the members it knows, and polls again at the next interval.
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
}

#[async_trait]
impl<T: Discovery + ?Sized> Discovery for Arc<T> {
    async fn members(&self) -> Result<Vec<Member>, BalancerError> {
        (**self).members().await
    }
}

#[async_trait]
impl<T: Discovery + ?Sized> Discovery for Box<T> {
    async fn members(&self) -> Result<Vec<Member>, BalancerError> {
        (**self).members().await
    }
}

/// A fixed membership list: the static configuration, as a [`Discovery`].
#[derive(Debug, Clone, Default)]
pub struct StaticDiscovery {
    members: Vec<Member>,
}

impl StaticDiscovery {
    /// Always answers `members`.
    pub fn new(members: Vec<Member>) -> Self {
        Self { members }
    }
}

#[async_trait]
impl Discovery for StaticDiscovery {
    async fn members(&self) -> Result<Vec<Member>, BalancerError> {
        Ok(self.members.clone())
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
    }
}
