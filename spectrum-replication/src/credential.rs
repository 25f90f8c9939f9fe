//! [`PeerCredential`]: how nodes of one cluster recognise each other's replication
//! calls in development mode (no TLS).
//!
//! Every node of a cluster holds the same 32 secret bytes (the root `spectrum`
//! package derives them from the cluster key). A replicator built with a credential
//! ([`AntiEntropyBuilder::credential`](crate::AntiEntropyBuilder::credential)) sends
//! with every call the metadata entry
//!
//! ```text
//! x-spectrum-peer: <64 lower-case hex digits of HMAC-SHA256(credential, "spectrum replication peer v1\0" + cluster id)>
//! ```
//!
//! and a [`ReplicationService`](crate::ReplicationService) built with one
//! ([`with_credential`](crate::ReplicationService::with_credential)) answers any call
//! that lacks it, or carries another value, `UNAUTHENTICATED`, before it reads or
//! merges anything; the comparison runs in constant time. The credential itself
//! never crosses the wire, and the token is bound to the cluster id.
//!
//! What this does not do: without TLS the token travels in clear, so anyone who can
//! watch traffic between nodes can replay it, and every node presents the same
//! token, so it does not prove *which* node is calling. Mutual TLS (a certificate
//! per node, chained to the cluster CA) is what closes both.
//!
//! Without a credential the service accepts every call, as before: that is for
//! tests and simulations, never for a cluster reachable by anyone else.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use spectrum_core::ClusterId;
use subtle::ConstantTimeEq;
use tonic::metadata::{AsciiMetadataValue, MetadataMap};
use zeroize::{ZeroizeOnDrop, Zeroizing};

/// The metadata entry that carries the peer token on every replication call.
pub const PEER_HEADER: &str = "x-spectrum-peer";

/// Length of a credential, in bytes.
pub const CREDENTIAL_LEN: usize = 32;

/// Binds a token to its use (HMAC input, before the cluster id).
const TOKEN_CONTEXT: &[u8] = b"spectrum replication peer v1\0";

/// The secret every node of a cluster shares to authenticate replication calls
/// (see the [module docs](self)). `Debug` never shows it, and its memory is wiped
/// when dropped.
///
/// ```
/// use spectrum_replication::PeerCredential;
///
/// let credential = PeerCredential::from_bytes([7; 32]);
/// assert_eq!(format!("{credential:?}"), "PeerCredential(***)");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct PeerCredential(Zeroizing<[u8; CREDENTIAL_LEN]>);

impl PeerCredential {
    /// A credential made of these bytes (derive them from a cluster secret; never
    /// use a key that serves anything else directly).
    pub fn from_bytes(bytes: [u8; CREDENTIAL_LEN]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// A credential derived from a shared secret that is not a uniformly random
    /// key, such as a management token: HMAC-SHA256 keyed with a fixed label over
    /// `secret` (HKDF's extract step). It is only as hard to guess as `secret`: a
    /// token seen on the wire lets an observer try guesses offline. Prefer a
    /// random 32-byte cluster key ([`from_bytes`](Self::from_bytes) of a key
    /// derived from it).
    pub fn from_shared_secret(secret: &[u8]) -> Self {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(b"spectrum replication peer v1 (shared secret)")
            .expect("HMAC-SHA256 takes a key of any length");
        mac.update(secret);
        let mut bytes = Zeroizing::new([0u8; CREDENTIAL_LEN]);
        bytes.copy_from_slice(&mac.finalize().into_bytes());
        Self(bytes)
    }

    /// The token sent with every call to a node of `cluster`.
    pub(crate) fn token(&self, cluster: &ClusterId) -> PeerToken {
        // HMAC accepts keys of any length; 32 bytes cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.0.as_slice())
            .expect("HMAC-SHA256 takes a key of any length");
        mac.update(TOKEN_CONTEXT);
        mac.update(cluster.as_str().as_bytes());
        let tag = mac.finalize().into_bytes();
        let mut hex = Zeroizing::new(String::with_capacity(2 * tag.len()));
        for b in tag {
            hex.push(char::from(HEX[usize::from(b >> 4)]));
            hex.push(char::from(HEX[usize::from(b & 0xf)]));
        }
        PeerToken(hex)
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

impl fmt::Debug for PeerCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PeerCredential(***)")
    }
}

/// The bytes are a [`Zeroizing`], which wipes them when dropped.
impl ZeroizeOnDrop for PeerCredential {}

/// The hex token a credential gives for one cluster: what callers send and what
/// the service expects.
#[derive(Clone)]
pub(crate) struct PeerToken(Zeroizing<String>);

impl PeerToken {
    /// Whether any of the (at most [`MAX_TOKENS`]) peer entries of `metadata` is
    /// exactly this token, each compared in constant time.
    pub(crate) fn admits(&self, metadata: &MetadataMap) -> bool {
        metadata
            .get_all(PEER_HEADER)
            .iter()
            .take(MAX_TOKENS)
            .any(|v| bool::from(v.as_encoded_bytes().ct_eq(self.0.as_bytes())))
    }

    /// The token as a metadata value, to attach to a call.
    pub(crate) fn value(&self) -> AsciiMetadataValue {
        let mut value = AsciiMetadataValue::try_from(self.0.as_str()).expect("hex is valid metadata");
        value.set_sensitive(true);
        value
    }
}

impl fmt::Debug for PeerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PeerToken(***)")
    }
}

/// Most peer entries a call may carry: the current credential's and those of
/// previous keys still accepted during a key rotation. Internal services refuse
/// a call with more (see `gate.rs`).
pub const MAX_TOKENS: usize = 4;

/// Attaches the peer tokens (the current credential's first, then those of
/// previous keys, so that peers not yet given the new key still admit the call)
/// to every outgoing call.
#[derive(Debug, Clone)]
pub(crate) struct AttachToken(pub(crate) Vec<AsciiMetadataValue>);

impl tonic::service::Interceptor for AttachToken {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        for token in &self.0 {
            request.metadata_mut().append(PEER_HEADER, token.clone());
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(id: &str) -> ClusterId {
        id.parse().unwrap()
    }

    #[test]
    fn tokens_depend_on_the_credential_and_the_cluster() {
        let a = PeerCredential::from_bytes([1; 32]);
        let token = a.token(&cluster("c1"));
        assert_eq!(token.0.len(), 64);
        assert!(token.0.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(*token.0, *a.token(&cluster("c1")).0);
        assert_ne!(*token.0, *a.token(&cluster("c2")).0);
        assert_ne!(*token.0, *PeerCredential::from_bytes([2; 32]).token(&cluster("c1")).0);
        assert_eq!(format!("{token:?}"), "PeerToken(***)");
        let shared = PeerCredential::from_shared_secret(b"s3cret");
        assert_eq!(shared, PeerCredential::from_shared_secret(b"s3cret"));
        assert_ne!(shared, PeerCredential::from_shared_secret(b"s3cret!"));
    }

    #[test]
    fn only_the_exact_token_is_admitted() {
        let token = PeerCredential::from_bytes([1; 32]).token(&cluster("c1"));
        let mut md = MetadataMap::new();
        assert!(!token.admits(&md), "missing");
        md.insert(PEER_HEADER, token.value());
        assert!(token.admits(&md));
        let wrong = PeerCredential::from_bytes([2; 32]).token(&cluster("c1"));
        md.insert(PEER_HEADER, wrong.value());
        assert!(!token.admits(&md), "another credential");
        md.insert(PEER_HEADER, AsciiMetadataValue::from_static("abc"));
        assert!(!token.admits(&md), "a prefix");
    }
}
