//! [`ManagementDiscovery`]: the balancer learns the cluster's members from the
//! nodes themselves, by reading the `membership/` namespace through the management
//! API, so nodes join, drain and leave with no balancer restart; and the strategy
//! and weights every balancer follows from the `balancer/` namespace
//! ([`BalancerSetting`]), so they change with no restart either.
//!
//! A member whose advertised address is a host name is handed to the balancer
//! with that name resolved (the balancer proxies to IP addresses), again at every
//! poll; when a name stops resolving, its last address is kept.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use spectrum_balancer::{BalancerError, BalancingSettings, Discovery};
use spectrum_core::tls::TlsConfig;
use spectrum_core::{MEMBERSHIP_PREFIX, Member, PeerAddr, TransportConfig};
use tonic::transport::Channel;
use tracing::{debug, warn};

use crate::auth::Token;
use crate::client::AdminClient;
use crate::model::Entries;
use crate::namespace::{BalancerKey, BalancerSetting, Namespace, NamespaceValue};
use crate::resolve::resolve;

/// Longest one membership read may take before the next address is tried.
const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// Reads membership (and the balancer settings) from any reachable node: first
/// the members it learned last time, then the seed addresses it was given.
pub struct ManagementDiscovery {
    seeds: Vec<PeerAddr>,
    known: Mutex<Vec<PeerAddr>>,
    token: Option<Token>,
    transport: TransportConfig,
    /// One lazily connected channel per address polled, so a poll reuses the
    /// connection of the last one instead of opening a new one.
    channels: Mutex<HashMap<PeerAddr, Channel>>,
    /// The last address each advertised host name resolved to.
    resolved: Mutex<HashMap<PeerAddr, SocketAddr>>,
}

impl fmt::Debug for ManagementDiscovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManagementDiscovery")
            .field("seeds", &self.seeds)
            .field("known", &*self.known.lock())
            .field("token", &self.token)
            .finish()
    }
}

impl ManagementDiscovery {
    /// Discovery starting from node addresses `seeds`.
    pub fn new(seeds: impl IntoIterator<Item = PeerAddr>) -> Self {
        Self {
            seeds: seeds.into_iter().collect(),
            known: Mutex::new(Vec::new()),
            token: None,
            transport: TransportConfig::default(),
            channels: Mutex::new(HashMap::new()),
            resolved: Mutex::new(HashMap::new()),
        }
    }

    /// Reads over TLS (nodes of a cluster with certificates serve TLS only).
    pub fn with_tls(mut self, tls: TlsConfig) -> Self {
        self.transport.tls = Some(tls);
        self
    }

    /// Sends `authorization: Bearer <token>` with every read.
    pub fn with_token(mut self, token: Token) -> Self {
        self.token = Some(token);
        self
    }

    /// The entries under `prefix` as the node at `addr` holds them.
    async fn read(&self, addr: &PeerAddr, prefix: &str) -> Result<Entries, String> {
        let channel =
            self.channels.lock().entry(addr.clone()).or_insert_with(|| self.transport.channel(addr)).clone();
        let client = AdminClient::from_channel(channel, self.token.clone());
        client.list_within(prefix, READ_TIMEOUT).await.map_err(|e| e.to_string())
    }

    /// The addresses to read from, in order: the members learned last time, then
    /// the seeds not among them (each address once: a dead node that is both is
    /// tried once per poll).
    fn addrs(&self) -> Vec<PeerAddr> {
        let mut addrs = self.known.lock().clone();
        for seed in &self.seeds {
            if !addrs.contains(seed) {
                addrs.push(seed.clone());
            }
        }
        addrs
    }

    /// The entries under `prefix` from the first address that answers.
    async fn read_any(&self, prefix: &str) -> Result<Entries, BalancerError> {
        let addrs = self.addrs();
        self.channels.lock().retain(|addr, _| addrs.contains(addr));
        let mut last_error = String::from("no node address to read from");
        for addr in &addrs {
            match self.read(addr, prefix).await {
                Ok(entries) => return Ok(entries),
                Err(e) => {
                    debug!(node = %addr, error = %e, prefix, "cannot read");
                    last_error = format!("{addr}: {e}");
                }
            }
        }
        Err(BalancerError::discovery(last_error))
    }

    /// Remembers `members`' addresses for the next poll and returns them with
    /// their names resolved.
    async fn adopt(&self, members: Vec<Member>) -> Vec<Member> {
        *self.known.lock() = members.iter().filter(|m| !m.state.is_gone()).map(|m| m.addr.clone()).collect();
        self.resolve_names(members).await
    }

    /// `members` with each host-name address resolved (or, when it no longer
    /// resolves, its last address; a name that never resolved is left for the
    /// balancer to skip with a warning).
    async fn resolve_names(&self, mut members: Vec<Member>) -> Vec<Member> {
        for member in members.iter_mut().filter(|m| m.addr.socket_addr().is_none()) {
            let socket = match resolve(&member.addr).await {
                Ok(socket) => {
                    self.resolved.lock().insert(member.addr.clone(), socket);
                    Some(socket)
                }
                Err(error) => {
                    let last = self.resolved.lock().get(&member.addr).copied();
                    warn!(node = %member.id, addr = %member.addr, %error, last = ?last, "cannot resolve member address");
                    last
                }
            };
            if let Some(socket) = socket {
                member.addr = PeerAddr::from(socket);
            }
        }
        members
    }
}

/// The members of `membership/` entries, sorted by id; unreadable records are
/// skipped with a warning.
fn members_of(entries: &Entries) -> Vec<Member> {
    let mut members: Vec<Member> = entries
        .0
        .iter()
        .filter_map(|e| match Member::from_record_value(&e.value) {
            Ok(m) => Some(m),
            Err(error) => {
                warn!(key = %e.key, %error, "ignoring unreadable membership record");
                None
            }
        })
        .collect();
    members.sort_by(|a, b| a.id.cmp(&b.id));
    members
}

/// The settings of `balancer/` entries. An unreadable weight is skipped with a
/// warning (that node keeps its file's weight).
///
/// # Errors
///
/// An unreadable strategy record: the balancer then keeps the strategy in force
/// rather than fall back to its file's.
fn settings_of(entries: &Entries) -> Result<BalancingSettings, BalancerError> {
    let mut strategy = None;
    let mut weights = BTreeMap::new();
    for e in &entries.0 {
        let name = e.key.strip_prefix(Namespace::Balancer.prefix()).unwrap_or(&e.key);
        let decoded = BalancerKey::parse(name).and_then(|key| {
            let value = BalancerSetting::decode(&e.value)?;
            value.check_name(name)?;
            Ok((key, value))
        });
        match decoded {
            Ok((BalancerKey::Weight(node), BalancerSetting::Weight(w))) => {
                weights.insert(node, w);
            }
            Ok((_, BalancerSetting::Strategy(spec))) => strategy = Some(spec),
            Ok(_) => {}
            Err(error) if name == crate::namespace::STRATEGY_NAME => {
                return Err(BalancerError::discovery(format!("{}: {error}", e.key)));
            }
            Err(error) => warn!(key = %e.key, %error, "ignoring unreadable balancer setting"),
        }
    }
    Ok(BalancingSettings::new(strategy, weights))
}

#[async_trait]
impl Discovery for ManagementDiscovery {
    async fn members(&self) -> Result<Vec<Member>, BalancerError> {
        let addrs = self.addrs();
        self.channels.lock().retain(|addr, _| addrs.contains(addr));
        let mut last_error = String::from("no node address to read membership from");
        // A node that has not joined yet (a new or emptied disk, no peer answered)
        // holds no membership, or not its own record: believing it would remove
        // every backend. Its answer is used only when no node that lists itself
        // as a member answers (say, seeds given by IP for members advertising
        // host names).
        let mut unjoined = None;
        for addr in &addrs {
            match self.read(addr, MEMBERSHIP_PREFIX).await.map(|entries| members_of(&entries)) {
                // A node that lists itself gone (removed, left) answers from a
                // copy the cluster no longer updates (Raft mode: it is out of
                // the group), so its answer is a fallback too.
                Ok(members) if members.iter().any(|m| m.addr == *addr && !m.state.is_gone()) => {
                    return Ok(self.adopt(members).await);
                }
                Ok(members) => {
                    debug!(node = %addr, members = members.len(), "membership from a node that does not list itself; trying another");
                    unjoined.get_or_insert(members);
                }
                Err(e) => {
                    debug!(node = %addr, error = %e, "cannot read membership");
                    last_error = format!("{addr}: {e}");
                }
            }
        }
        match unjoined {
            Some(members) => Ok(self.adopt(members).await),
            None => Err(BalancerError::discovery(last_error)),
        }
    }

    /// The `balancer/` namespace: the strategy and weights every balancer follows.
    async fn settings(&self) -> Result<Option<BalancingSettings>, BalancerError> {
        settings_of(&self.read_any(Namespace::Balancer.prefix()).await?).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use spectrum_balancer::strategy::{StrategyName, StrategySpec};

    use super::*;
    use crate::model::Entry;

    fn entry(key: &str, value: &[u8]) -> Entry {
        Entry {
            key: key.into(),
            value: value.to_vec(),
            version: "n1:1".parse().unwrap(),
            stamp_wall_ms: 0,
            stamp_logical: 0,
        }
    }

    #[test]
    fn balancer_entries_become_settings_and_a_bad_weight_is_skipped() {
        let entries = Entries(vec![
            entry("balancer/strategy", br#"{"strategy":{"name":"random"}}"#),
            entry("balancer/weight/node-1", br#"{"weight":0}"#),
            entry("balancer/weight/node-2", br#"{"weight":"heavy"}"#),
        ]);
        let settings = settings_of(&entries).unwrap();
        assert_eq!(settings.strategy, Some(StrategySpec::named(StrategyName::Random)));
        assert_eq!(settings.weights, BTreeMap::from([("node-1".parse().unwrap(), 0)]));
        assert_eq!(settings_of(&Entries(vec![])).unwrap(), BalancingSettings::default());
    }

    #[test]
    fn an_unreadable_strategy_fails_the_poll_so_the_strategy_in_force_stays() {
        let entries = Entries(vec![entry("balancer/strategy", br#"{"strategy":{"name":"fastest"}}"#)]);
        let err = settings_of(&entries).unwrap_err().to_string();
        assert!(err.contains("balancer/strategy") && err.contains("fastest"), "{err}");
    }
}
