//! [`PeerAddr`]: the one validated, canonical form of a node's address.
//!
//! Members, seeds, replication peers and balancer backends all name a node by
//! address, and two spellings of one address (`127.0.0.1:7000`,
//! `http://127.0.0.1:7000/`) must compare equal or a node counts itself as its own
//! peer. Every address is therefore parsed once, at the edge, into a `PeerAddr`
//! whose text is canonical: `http://host:port`, host names lower-cased, IPv6
//! literals in brackets and in their shortest form. Equality, ordering and hashing
//! are on that text.
//!
//! ```
//! use spectrum_core::PeerAddr;
//!
//! let a: PeerAddr = "127.0.0.1:7000".parse()?;
//! let b: PeerAddr = "http://127.0.0.1:7000/".parse()?;
//! assert_eq!(a, b);
//! assert_eq!(a.as_str(), "http://127.0.0.1:7000");
//! assert_eq!(a.socket_addr(), Some("127.0.0.1:7000".parse()?));
//!
//! let named: PeerAddr = "HTTP://Node-1.Example:7001".parse()?;
//! assert_eq!(named.as_str(), "http://node-1.example:7001");
//! assert_eq!(named.socket_addr(), None, "a host name needs resolving first");
//!
//! assert!("http://node-1".parse::<PeerAddr>().is_err(), "the port is required");
//! assert!("https://node-1:7001".parse::<PeerAddr>().is_err(), "only plain http for now");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use http::uri::{Authority, Uri};
use serde::{Deserialize, Serialize};

use crate::error::InvalidAddr;

/// Longest address text accepted, in bytes (a DNS name is at most 253).
pub const MAX_ADDR_LEN: usize = 300;

/// A node's address: canonical `http://host:port`, where host is an IPv4 literal,
/// a bracketed IPv6 literal or a DNS name, and port is 1 to 65535.
///
/// Parse with [`str::parse`], [`PeerAddr::new`] or `TryFrom<String>`; build from a
/// bound socket with `From<SocketAddr>`. Serialises as its canonical text.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PeerAddr {
    /// `http://host:port`.
    text: Arc<str>,
    /// The port.
    port: u16,
    /// The host, when it is an IP literal.
    ip: Option<IpAddr>,
}

const SCHEME: &str = "http://";

impl PeerAddr {
    /// Parses `addr` (`host:port` or `http://host:port`, an optional trailing `/`).
    ///
    /// # Errors
    ///
    /// [`InvalidAddr`] naming the address and what is wrong: another scheme, a
    /// path or query, a missing or zero port, or a host that is neither an IP
    /// literal nor a DNS name.
    pub fn new(addr: impl AsRef<str>) -> Result<Self, InvalidAddr> {
        let given = addr.as_ref();
        let bad =
            |reason: &str| InvalidAddr { addr: given.chars().take(80).collect(), reason: reason.into() };
        if given.len() > MAX_ADDR_LEN {
            return Err(bad("longer than 300 bytes"));
        }
        // Every peer message names its sender this way: parsing a URL for it
        // was 1.8 % of a Raft node's CPU under load.
        if let Some(addr) = Self::from_socket_text(given) {
            return Ok(addr);
        }
        Self::from_url(given, bad)
    }

    /// The fast path of [`new`](Self::new): `http://` and an IP socket address
    /// without a scope (`http://10.0.0.1:7000`, `http://[::1]:7000`), or `None`
    /// for anything else, which [`from_url`](Self::from_url) reads.
    fn from_socket_text(given: &str) -> Option<Self> {
        let rest = given.strip_prefix(SCHEME).filter(|r| !r.contains('%'))?;
        let socket: SocketAddr = rest.parse().ok()?;
        let (ip, port) = (socket.ip().to_canonical(), socket.port());
        if port == 0 {
            return None;
        }
        // An IPv4 socket address the standard parser took is canonical unless
        // its port has leading zeros (it refuses them in the address): the
        // text is kept as given rather than formatted again.
        let canonical = socket.is_ipv4() && rest.rsplit_once(':').is_some_and(|(_, p)| !p.starts_with('0'));
        let text = match canonical {
            true => Arc::from(given),
            false => Arc::from(format!("{SCHEME}{}", SocketAddr::new(ip, port))),
        };
        Some(Self { text, port, ip: Some(ip) })
    }

    /// [`new`](Self::new) for any form: parsed as a URL, checked, and its
    /// host made canonical.
    fn from_url(given: &str, bad: impl Fn(&str) -> InvalidAddr) -> Result<Self, InvalidAddr> {
        let full = if given.contains("://") { given.to_owned() } else { format!("{SCHEME}{given}") };
        let uri: Uri = full.parse().map_err(|_| bad("not a URL of the form http://host:port"))?;
        match uri.scheme_str().map(str::to_ascii_lowercase).as_deref() {
            Some("http") => {}
            _ => return Err(bad("the scheme must be http")),
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(bad("an address has no path or query"));
        }
        let authority: &Authority = uri.authority().ok_or_else(|| bad("expected host:port"))?;
        if authority.as_str().contains('@') {
            return Err(bad("an address has no user information"));
        }
        let port = authority.port_u16().ok_or_else(|| bad("expected host:port (the port is missing)"))?;
        if port == 0 {
            return Err(bad("port 0 is not an address a peer can reach"));
        }
        let host = authority.host();
        let (host, ip) =
            canonical_host(host).ok_or_else(|| bad("the host is neither an IP address nor a DNS name"))?;
        Ok(Self { text: Arc::from(format!("{SCHEME}{host}:{port}")), port, ip })
    }

    /// The canonical text, `http://host:port`.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// `host:port`, as an HTTP authority (IPv6 hosts in brackets).
    pub fn authority(&self) -> &str {
        &self.text[SCHEME.len()..]
    }

    /// The host: an IP literal (IPv6 in brackets) or a lower-case DNS name.
    pub fn host(&self) -> &str {
        let authority = self.authority();
        &authority[..authority.len() - port_digits(self.port) - 1]
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The socket address when the host is an IP literal; `None` for a DNS name,
    /// which must be resolved first.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        self.ip.map(|ip| SocketAddr::new(ip, self.port))
    }
}

/// The canonical spelling of a host and its IP when it is a literal, or `None`
/// when it is neither an IP literal nor a DNS name (RFC 1123 labels).
fn canonical_host(host: &str) -> Option<(String, Option<IpAddr>)> {
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        let ip: Ipv6Addr = inner.parse().ok()?;
        return Some(ip_host(IpAddr::V6(ip)));
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Some(ip_host(ip));
    }
    let name = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    // An all-numeric dotted name would be a malformed IPv4 literal, not a name.
    let numeric = name.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    (name.len() <= 253 && !numeric && name.split('.').all(label_ok)).then_some((name, None))
}

/// An IP literal's canonical host text (IPv4-mapped IPv6 as IPv4, IPv6 in brackets).
fn ip_host(ip: IpAddr) -> (String, Option<IpAddr>) {
    let ip = ip.to_canonical();
    let text = match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    };
    (text, Some(ip))
}

fn port_digits(port: u16) -> usize {
    port.checked_ilog10().map_or(1, |d| d as usize + 1)
}

impl From<SocketAddr> for PeerAddr {
    fn from(addr: SocketAddr) -> Self {
        let (host, ip) = ip_host(addr.ip());
        Self { text: Arc::from(format!("{SCHEME}{host}:{}", addr.port())), port: addr.port(), ip }
    }
}

impl FromStr for PeerAddr {
    type Err = InvalidAddr;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<String> for PeerAddr {
    type Error = InvalidAddr;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl TryFrom<&str> for PeerAddr {
    type Error = InvalidAddr;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl From<PeerAddr> for String {
    fn from(addr: PeerAddr) -> String {
        addr.text.to_string()
    }
}

impl AsRef<str> for PeerAddr {
    fn as_ref(&self) -> &str {
        &self.text
    }
}

impl PartialEq<str> for PeerAddr {
    fn eq(&self, other: &str) -> bool {
        &*self.text == other
    }
}

impl PartialEq<&str> for PeerAddr {
    fn eq(&self, other: &&str) -> bool {
        &*self.text == *other
    }
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerAddr({:?})", &*self.text)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn canon(s: &str) -> String {
        PeerAddr::new(s).unwrap_or_else(|e| panic!("{s}: {e}")).to_string()
    }

    #[test]
    fn spellings_of_one_address_are_one_address() {
        for s in
            ["127.0.0.1:7000", "http://127.0.0.1:7000", "http://127.0.0.1:7000/", "HTTP://127.0.0.1:7000"]
        {
            assert_eq!(canon(s), "http://127.0.0.1:7000");
        }
        assert_eq!(canon("Node-1.Example.:80"), "http://node-1.example:80");
        assert_eq!(canon("[0:0:0:0:0:0:0:1]:7000"), "http://[::1]:7000");
        assert_eq!(canon("localhost:7000"), "http://localhost:7000");
    }

    #[test]
    fn the_socket_fast_path_reads_what_the_url_path_reads() {
        let slow = |s: &str| PeerAddr::from_url(s, |why| InvalidAddr { addr: s.into(), reason: why.into() });
        for s in [
            "http://127.0.0.1:7410",
            "http://10.0.0.1:65535",
            "http://[::1]:80",
            "http://[0:0:0:0:0:0:0:1]:7000",
            "http://[2001:DB8::1]:5",
            "http://[::ffff:10.0.0.1]:9",
            "http://127.0.0.1:07410",
            "http://10.0.0.1:00009",
        ] {
            let fast = PeerAddr::from_socket_text(s).unwrap_or_else(|| panic!("{s}: no fast path"));
            let slow = slow(s).unwrap();
            assert_eq!((&fast, fast.port, fast.ip), (&slow, slow.port, slow.ip), "{s}");
            assert_eq!(fast.as_str(), slow.as_str(), "{s}: the same text");
        }
        for s in [
            "http://127.0.0.1:0",
            "http://[fe80::1%1]:80",
            "127.0.0.1:80",
            "HTTP://127.0.0.1:80",
            "http://a:1",
        ] {
            assert!(PeerAddr::from_socket_text(s).is_none(), "{s}");
        }
    }

    #[test]
    fn parts_are_read_back_from_the_canonical_text() {
        let a = PeerAddr::new("[::1]:7000").unwrap();
        assert_eq!((a.host(), a.port(), a.authority()), ("[::1]", 7000, "[::1]:7000"));
        assert_eq!(a.socket_addr(), Some("[::1]:7000".parse().unwrap()));
        let n = PeerAddr::new("db.local:9").unwrap();
        assert_eq!((n.host(), n.port(), n.socket_addr()), ("db.local", 9, None));
    }

    #[test]
    fn unusable_addresses_are_refused_with_a_reason() {
        for (s, why) in [
            ("http://node-1", "port"),
            ("node-1:0", "port 0"),
            ("https://node-1:7000", "scheme"),
            ("http://node-1:7000/path", "path"),
            ("http://node-1:7000/?q=1", "path or query"),
            ("user@node-1:7000", "user"),
            ("under_score:7000", "host"),
            ("-bad.example:7000", "host"),
            ("999.1.1.1:7000", "host"),
            ("not a url", "URL"),
            ("", "URL"),
        ] {
            let err = PeerAddr::new(s).expect_err(s).to_string();
            assert!(err.contains(why), "{s}: {err}");
        }
        let long = format!("{}:7000", "a".repeat(400));
        assert!(PeerAddr::new(long).is_err());
    }

    #[test]
    fn socket_addresses_convert_to_their_canonical_form() {
        let v4: SocketAddr = "127.0.0.1:7000".parse().unwrap();
        assert_eq!(PeerAddr::from(v4), PeerAddr::new("127.0.0.1:7000").unwrap());
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:7000".parse().unwrap();
        assert_eq!(PeerAddr::from(mapped).as_str(), "http://127.0.0.1:7000");
    }

    #[test]
    fn serde_uses_the_canonical_text_and_validates_on_the_way_in() {
        let a = PeerAddr::new("127.0.0.1:7000").unwrap();
        assert_eq!(String::from(a.clone()), "http://127.0.0.1:7000");
        assert!(PeerAddr::try_from(String::from("nope")).is_err());
    }

    proptest! {
        #[test]
        fn canonical_text_parses_back_to_itself(
            ip in any::<std::net::IpAddr>(), port in 1u16.., name in "[a-z][a-z0-9-]{0,10}[a-z0-9](\\.[a-z]{1,5}){0,2}",
        ) {
            for addr in [PeerAddr::from(SocketAddr::new(ip, port)), PeerAddr::new(format!("{name}:{port}")).unwrap()] {
                let again = PeerAddr::new(addr.as_str()).unwrap();
                prop_assert_eq!(&again, &addr);
                prop_assert_eq!(again.port(), port);
            }
        }

        #[test]
        fn arbitrary_text_never_panics(s in ".{0,80}") {
            let _ = PeerAddr::new(&s);
        }
    }
}
