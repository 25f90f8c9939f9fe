//! [`ClusterKey`]: the key that encrypts secrets at rest.
//!
//! Every node of a cluster is given the same 32-byte key (in its configuration file, as
//! 64 hex digits or base64). Before a definition is stored, each secret in it is
//! *sealed*: encrypted with XChaCha20-Poly1305 under a fresh random 192-bit nonce, so
//! the configuration database (and every replica and backup of it) holds only
//! ciphertext. A node *opens* a secret only when a resource needs it; a node without the
//! key, or with another one, cannot, and says so.
//!
//! The sealed text is `v1:` followed by the base64 of the nonce and the ciphertext
//! (which carries its 16-byte authentication tag), so a damaged or substituted value is
//! detected rather than decrypted to garbage.
//!
//! ```
//! use spectrum_resources::ClusterKey;
//!
//! let key = ClusterKey::generate();
//! let sealed = key.seal(b"hunter2").unwrap();
//! assert!(sealed.starts_with("v1:"));
//! assert_eq!(key.open(&sealed).unwrap(), b"hunter2");
//! assert!(ClusterKey::generate().open(&sealed).is_err(), "another key cannot open it");
//! ```

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zeroize::{ZeroizeOnDrop, Zeroizing};

use crate::error::SecretError;

/// The key length in bytes.
pub const KEY_LEN: usize = 32;
/// The prefix of the current sealed format.
pub const SEALED_PREFIX: &str = "v1:";
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// Binds ciphertexts to their purpose, so a value sealed for something else under the
/// same key is not accepted as a secret.
const AAD: &[u8] = b"spectrum-resources secret v1";

/// Domain-separates [`ClusterKey::derive`]'s output from any other use of HKDF over
/// the same key (RFC 5869 salt).
const DERIVE_SALT: &[u8] = b"spectrum cluster key derive v1";

/// A cluster's 32-byte secret key. `Debug` never shows it, and its memory is overwritten
/// with zeros when dropped.
///
/// Parse one from 64 hex digits or from base64 ([`FromStr`]), or make a new one with
/// [`ClusterKey::generate`].
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterKey(Zeroizing<[u8; KEY_LEN]>);

impl ClusterKey {
    /// A key made of these bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// A new random key from the operating system's generator.
    pub fn generate() -> Self {
        let key = XChaCha20Poly1305::generate_key(&mut OsRng);
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        bytes.copy_from_slice(&key);
        Self(bytes)
    }

    /// The key as 64 lower-case hex digits, for writing a configuration file.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// A 32-byte key for one `purpose`, derived from this key with HKDF-SHA256
    /// (RFC 5869; `purpose` is the *info* input): the same on every node that holds
    /// this key, different for every purpose, and revealing nothing about this key
    /// or about the key of any other purpose. Spectrum derives the replication peer
    /// credential with the purpose `"spectrum replication peer v1"`, so the key that
    /// seals secrets never leaves the node or serves anything else.
    ///
    /// The bytes are wiped from memory when the returned value is dropped.
    ///
    /// ```
    /// use spectrum_resources::ClusterKey;
    ///
    /// let key = ClusterKey::generate();
    /// assert_eq!(*key.derive("peer"), *key.derive("peer"));
    /// assert_ne!(*key.derive("peer"), *key.derive("other"));
    /// assert_ne!(*key.derive("peer"), *ClusterKey::generate().derive("peer"));
    /// ```
    pub fn derive(&self, purpose: &str) -> Zeroizing<[u8; KEY_LEN]> {
        let hkdf = hkdf::Hkdf::<sha2::Sha256>::new(Some(DERIVE_SALT), self.0.as_slice());
        let mut out = Zeroizing::new([0u8; KEY_LEN]);
        // 32 bytes is far below HKDF-SHA256's limit of 255 × 32 bytes.
        hkdf.expand(purpose.as_bytes(), out.as_mut_slice()).expect("32 bytes is a valid HKDF-SHA256 length");
        out
    }

    /// Encrypts `clear` under a fresh random nonce; returns the sealed text
    /// (`v1:<base64>`).
    ///
    /// # Errors
    ///
    /// [`SecretError::Malformed`] if the cipher refuses the input (it does so only for
    /// inputs far larger than any secret).
    pub fn seal(&self, clear: &[u8]) -> Result<String, SecretError> {
        let cipher = XChaCha20Poly1305::new((&*self.0).into());
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let ciphertext = cipher
            .encrypt(&nonce, Payload { msg: clear, aad: AAD })
            .map_err(|_| SecretError::Malformed { reason: "the value cannot be encrypted".into() })?;
        let mut out = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        Ok(format!("{SEALED_PREFIX}{}", STANDARD.encode(out)))
    }

    /// Decrypts text made by [`seal`](Self::seal) with this key.
    ///
    /// # Errors
    ///
    /// [`SecretError::Malformed`] when the text is not a sealed value of a known format;
    /// [`SecretError::WrongKey`] when it was sealed with another key or was altered.
    pub fn open(&self, sealed: &str) -> Result<Vec<u8>, SecretError> {
        let body = sealed.strip_prefix(SEALED_PREFIX).ok_or_else(|| SecretError::Malformed {
            reason: "unknown sealed format (expected \"v1:<base64>\")".into(),
        })?;
        let raw = STANDARD
            .decode(body)
            .map_err(|e| SecretError::Malformed { reason: format!("invalid base64: {e}") })?;
        if raw.len() < NONCE_LEN + TAG_LEN {
            return Err(SecretError::Malformed { reason: "too short to be a sealed value".into() });
        }
        let (nonce, ciphertext) = raw.split_at(NONCE_LEN);
        let cipher = XChaCha20Poly1305::new((&*self.0).into());
        cipher
            .decrypt(XNonce::from_slice(nonce), Payload { msg: ciphertext, aad: AAD })
            .map_err(|_| SecretError::WrongKey)
    }
}

impl FromStr for ClusterKey {
    type Err = SecretError;

    /// Parses 64 hex digits or the base64 of 32 bytes (with or without padding).
    /// Surrounding white space is ignored. The error never echoes the input.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let bytes = if s.len() == 2 * KEY_LEN && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            (0..KEY_LEN)
                .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16))
                .collect::<Result<Vec<u8>, _>>()
                .map_err(|_| SecretError::InvalidKey { reason: "invalid hex".into() })?
        } else {
            STANDARD.decode(s).or_else(|_| STANDARD_NO_PAD.decode(s)).map_err(|_| {
                SecretError::InvalidKey {
                    reason: format!(
                        "expected {} hex digits or the base64 of {KEY_LEN} bytes ({} characters given)",
                        2 * KEY_LEN,
                        s.len()
                    ),
                }
            })?
        };
        let bytes: [u8; KEY_LEN] = bytes.try_into().map_err(|v: Vec<u8>| SecretError::InvalidKey {
            reason: format!("the key is {} bytes; it must be exactly {KEY_LEN}", v.len()),
        })?;
        Ok(Self::from_bytes(bytes))
    }
}

impl<'de> serde::Deserialize<'de> for ClusterKey {
    /// From its text form (see [`FromStr`](#impl-FromStr-for-ClusterKey)); the text is
    /// wiped once parsed, and an error never echoes it.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = Zeroizing::new(String::deserialize(d)?);
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterKey(***)")
    }
}

/// The key bytes are a [`Zeroizing`], which wipes them when dropped.
impl ZeroizeOnDrop for ClusterKey {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_from_hex_and_base64_and_never_show_in_debug() {
        let key = ClusterKey::generate();
        let hex = key.to_hex();
        assert_eq!(hex.parse::<ClusterKey>().unwrap(), key);
        let b64 = STANDARD.encode(key.0.as_slice());
        assert_eq!(b64.parse::<ClusterKey>().unwrap(), key);
        assert_eq!(STANDARD_NO_PAD.encode(key.0.as_slice()).parse::<ClusterKey>().unwrap(), key);
        assert_eq!(format!("{key:?}"), "ClusterKey(***)");
    }

    #[test]
    fn short_or_garbled_keys_are_refused_without_echoing_them() {
        for bad in ["abcd", "zz", "", &"ab".repeat(33)] {
            let err = bad.parse::<ClusterKey>().unwrap_err();
            assert!(matches!(err, SecretError::InvalidKey { .. }), "{bad:?}: {err}");
            if !bad.is_empty() {
                assert!(!err.to_string().contains(bad), "{err}");
            }
        }
    }

    #[test]
    fn derived_keys_depend_on_the_key_and_the_purpose_and_are_stable() {
        let key: ClusterKey = "00".repeat(32).parse().unwrap();
        let peer = key.derive("spectrum replication peer v1");
        assert_eq!(*peer, *key.clone().derive("spectrum replication peer v1"));
        assert_ne!(*peer, *key.derive("spectrum replication peer v2"));
        assert_ne!(peer.as_slice(), key.0.as_slice(), "never the key itself");
        let other: ClusterKey = "01".repeat(32).parse().unwrap();
        assert_ne!(*peer, *other.derive("spectrum replication peer v1"));
    }

    #[test]
    fn sealing_is_randomised_and_tamper_evident() {
        let key = ClusterKey::generate();
        let secret = b"a-secret-password";
        let a = key.seal(secret).unwrap();
        let b = key.seal(secret).unwrap();
        assert_ne!(a, b, "a fresh nonce each time");
        let mut raw = STANDARD.decode(&a[3..]).unwrap();
        // The plaintext is nowhere in the sealed bytes (a 17-byte run turns up
        // by chance with odds of 2^-136; a two-letter one in the base64 text,
        // as this test once checked, in about one run in a hundred).
        assert!(!raw.windows(secret.len()).any(|w| w == secret), "sealed in the clear");
        let last = raw.len() - 1;
        raw[last] ^= 1;
        let tampered = format!("v1:{}", STANDARD.encode(raw));
        assert!(matches!(key.open(&tampered), Err(SecretError::WrongKey)));
        assert!(matches!(key.open("v9:abc"), Err(SecretError::Malformed { .. })));
        assert!(matches!(key.open("v1:!!"), Err(SecretError::Malformed { .. })));
        assert!(matches!(key.open("v1:AAAA"), Err(SecretError::Malformed { .. })));
    }
}
