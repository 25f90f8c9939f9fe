//! One gRPC channel per peer address, shared by everything a process sends to its
//! peers, with a client certificate that can be replaced while it runs.
//!
//! A [`tonic::transport::Channel`] keeps the TLS settings it was made with for
//! every connection it ever opens, so rotating the certificate a node presents to
//! its peers means making new channels. [`ChannelCache::set_tls`] does that: it
//! swaps the TLS settings and forgets every cached channel, so the next call to a
//! peer connects with the new certificate. Calls already under way finish on the
//! channel they hold (mutual TLS checks a certificate at the handshake only), and
//! the old connections close once their last holder lets go.
//!
//! ```
//! use spectrum_core::{PeerAddr, TransportConfig};
//! use spectrum_core::channels::ChannelCache;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let cache = ChannelCache::new(TransportConfig::default());
//! let peer: PeerAddr = "http://127.0.0.1:7001".parse().unwrap();
//! let _channel = cache.get(&peer); // connects lazily, on the first call
//! assert_eq!(cache.len(), 1);
//! cache.retain(|addr| *addr != peer);
//! assert_eq!(cache.len(), 0);
//! # }
//! ```

use std::collections::HashMap;

use parking_lot::{Mutex, RwLock};
use tonic::transport::Channel;

use crate::addr::PeerAddr;
use crate::tls::TlsConfig;
use crate::transport::TransportConfig;

/// Channels to peers, one per address, made with a [`TransportConfig`] whose TLS
/// can be replaced (see the [module docs](self)). Share it as `Arc<ChannelCache>`.
#[derive(Debug)]
pub struct ChannelCache {
    transport: RwLock<TransportConfig>,
    channels: Mutex<HashMap<PeerAddr, Channel>>,
}

impl ChannelCache {
    /// A cache whose channels are made with `transport`
    /// ([`TransportConfig::channel`]).
    pub fn new(transport: TransportConfig) -> Self {
        Self { transport: RwLock::new(transport), channels: Mutex::new(HashMap::new()) }
    }

    /// The channel to `addr`: the cached one, or a new lazily connected one.
    pub fn get(&self, addr: &PeerAddr) -> Channel {
        if let Some(channel) = self.channels.lock().get(addr) {
            return channel.clone();
        }
        let channel = self.transport.read().channel(addr);
        self.channels.lock().entry(addr.clone()).or_insert(channel).clone()
    }

    /// The transport new channels are made with (its TLS as last set).
    pub fn transport(&self) -> TransportConfig {
        self.transport.read().clone()
    }

    /// Largest encoded gRPC message accepted or sent, in bytes
    /// ([`TransportConfig::max_message_bytes`]).
    pub fn max_message_bytes(&self) -> usize {
        self.transport.read().max_message_bytes
    }

    /// Makes every channel from now on with `tls` (a rotated client certificate, or
    /// a new CA) and forgets the cached ones; calls under way finish on theirs.
    pub fn set_tls(&self, tls: TlsConfig) {
        self.transport.write().tls = Some(tls);
        self.channels.lock().clear();
    }

    /// Keeps only the channels whose address `keep` accepts (peers that left).
    pub fn retain(&self, mut keep: impl FnMut(&PeerAddr) -> bool) {
        self.channels.lock().retain(|addr, _| keep(addr));
    }

    /// How many channels are cached.
    pub fn len(&self) -> usize {
        self.channels.lock().len()
    }

    /// Whether no channel is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::TlsConfig;

    fn peer(port: u16) -> PeerAddr {
        format!("http://127.0.0.1:{port}").parse().unwrap()
    }

    #[tokio::test]
    async fn a_peer_gets_one_channel_until_the_tls_is_replaced() {
        let cache = ChannelCache::new(TransportConfig::default());
        cache.get(&peer(1));
        cache.get(&peer(1));
        cache.get(&peer(2));
        assert_eq!(cache.len(), 2);
        assert!(cache.transport().tls.is_none());

        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&key).unwrap();
        cache.set_tls(TlsConfig::from_ca_pem(ca.pem()).unwrap());
        assert!(cache.is_empty(), "replacing the TLS forgets every channel made with the old one");
        assert!(cache.transport().tls.is_some());
        assert_eq!(cache.transport().scheme(), "https");
    }
}
