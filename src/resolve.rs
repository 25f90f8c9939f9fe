//! [`resolve`]: a [`PeerAddr`] to the socket address to connect to, for the
//! places that need an IP (the balancer's backends); gRPC channels resolve host
//! names themselves.

use std::io;
use std::net::SocketAddr;

use spectrum_core::PeerAddr;

/// `addr` as a socket address: an IP literal as it is, a host name through the
/// system resolver (its first address, IPv4 or IPv6 as the resolver orders them).
///
/// # Errors
///
/// The resolver's error, or [`io::ErrorKind::NotFound`] when the name has no address.
pub async fn resolve(addr: &PeerAddr) -> io::Result<SocketAddr> {
    if let Some(socket) = addr.socket_addr() {
        return Ok(socket);
    }
    tokio::net::lookup_host(addr.authority())
        .await?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{} has no address", addr.host())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn literals_are_kept_and_localhost_resolves_to_loopback() {
        let ip: PeerAddr = "127.0.0.3:7001".parse().unwrap();
        assert_eq!(resolve(&ip).await.unwrap(), "127.0.0.3:7001".parse().unwrap());
        let named: PeerAddr = "localhost:7001".parse().unwrap();
        let got = resolve(&named).await.unwrap();
        assert!(got.ip().is_loopback() && got.port() == 7001, "{got}");
    }

    #[tokio::test]
    async fn a_name_that_does_not_resolve_is_an_error() {
        let bad: PeerAddr = "no-such-host.invalid:7001".parse().unwrap();
        assert!(resolve(&bad).await.is_err());
    }
}
