//! [`ManagementDiscovery`]: the balancer learns the cluster's members from the
//! nodes themselves, by reading the `membership/` namespace through the management
//! API, so nodes join, drain and leave with no balancer restart.
//!
//! A member whose advertised address is a host name is handed to the balancer
//! with that name resolved (the balancer proxies to IP addresses), again at every
//! poll; when a name stops resolving, its last address is kept.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use spectrum_balancer::{BalancerError, Discovery};
use spectrum_core::tls::TlsConfig;
use spectrum_core::{MEMBERSHIP_PREFIX, Member, PeerAddr, TransportConfig};
use tonic::transport::Channel;
use tracing::{debug, warn};

use crate::auth::Token;
use crate::client::AdminClient;
use crate::resolve::resolve;

/// Longest one membership read may take before the next address is tried.
const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// Reads membership from any reachable node: first the members it learned last
/// time, then the seed addresses it was given.
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

    /// The members recorded in `membership/` as the node at `addr` holds them,
    /// sorted by id; unreadable records are skipped with a warning.
    async fn read(&self, addr: &PeerAddr) -> Result<Vec<Member>, String> {
        let channel =
            self.channels.lock().entry(addr.clone()).or_insert_with(|| self.transport.channel(addr)).clone();
        let client = AdminClient::from_channel(channel, self.token.clone());
        let entries = client.list_within(MEMBERSHIP_PREFIX, READ_TIMEOUT).await.map_err(|e| e.to_string())?;
        let mut members: Vec<Member> = entries
            .0
            .iter()
            .filter_map(|e| match Member::from_record_value(&e.value) {
                Ok(m) => Some(m),
                Err(error) => {
                    warn!(node = %addr, key = %e.key, %error, "ignoring unreadable membership record");
                    None
                }
            })
            .collect();
        members.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(members)
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

#[async_trait]
impl Discovery for ManagementDiscovery {
    async fn members(&self) -> Result<Vec<Member>, BalancerError> {
        // The members learned last time first, then the seeds not among them (each
        // address once: a dead node that is both is tried once per poll).
        let mut addrs = self.known.lock().clone();
        for seed in &self.seeds {
            if !addrs.contains(seed) {
                addrs.push(seed.clone());
            }
        }
        self.channels.lock().retain(|addr, _| addrs.contains(addr));
        let mut last_error = String::from("no node address to read membership from");
        // A node that has not joined yet (a new or emptied disk, no peer answered)
        // holds no membership, or not its own record: believing it would remove
        // every backend. Its answer is used only when no node that lists itself
        // answers (say, seeds given by IP for members advertising host names).
        let mut unjoined = None;
        for addr in &addrs {
            match self.read(addr).await {
                Ok(members) if members.iter().any(|m| m.addr == *addr) => {
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
        if let Some(members) = unjoined {
            return Ok(self.adopt(members).await);
        }
        Err(BalancerError::discovery(last_error))
    }
}
