//! [`Token`]: a bearer token that never prints, and [`TokenInterceptor`], the
//! client's insertion of it into every call.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use subtle::ConstantTimeEq;
use thiserror::Error;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::{Request, Status};

/// Longest token accepted, in bytes.
pub const MAX_TOKEN_LEN: usize = 512;

/// A token was refused: empty, too long, or holding characters an HTTP header
/// cannot carry.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid token: {reason}")]
pub struct InvalidToken {
    /// What is wrong with it (never the token itself).
    pub reason: &'static str,
}

/// What every token made by [`Token::generate`] starts with, so secret scanners
/// and people can tell a Spectrum user token when they see one.
pub const USER_TOKEN_PREFIX: &str = "spt_";

/// The operating system could not supply random bytes for a new token.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("cannot draw a random token: {reason}")]
pub struct NoRandomness {
    /// The operating system's error.
    pub reason: String,
}

/// A management bearer token. Its `Debug` is redacted and it has no `Display`, so
/// it cannot end up in a log line by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(Arc<str>);

impl Token {
    /// Validates a token: 1 to [`MAX_TOKEN_LEN`] bytes of visible ASCII.
    ///
    /// # Errors
    ///
    /// [`InvalidToken`] saying what is wrong.
    pub fn new(token: impl AsRef<str>) -> Result<Self, InvalidToken> {
        let token = token.as_ref();
        if token.is_empty() {
            return Err(InvalidToken { reason: "it is empty" });
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(InvalidToken { reason: "it is longer than 512 bytes" });
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(InvalidToken { reason: "only visible ASCII characters (no spaces) are allowed" });
        }
        Ok(Self(Arc::from(token)))
    }

    /// The secret itself, for a configuration file or a header.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// A new user token: 32 bytes from the operating system's random number
    /// generator, as `spt_` and 64 hex digits. It is shown once, to whoever asked
    /// for it; the configuration database keeps only its
    /// [`TokenHash`](super::TokenHash).
    ///
    /// # Errors
    ///
    /// [`NoRandomness`] when the operating system cannot supply random bytes.
    pub fn generate() -> Result<Self, NoRandomness> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| NoRandomness { reason: e.to_string() })?;
        let mut text = String::with_capacity(4 + 64);
        text.push_str(USER_TOKEN_PREFIX);
        for b in bytes {
            text.push_str(&format!("{b:02x}"));
        }
        Ok(Self(Arc::from(text)))
    }

    /// The `authorization` header value that carries it.
    pub(super) fn header(&self) -> MetadataValue<Ascii> {
        // Visible ASCII (checked in `new`) is always a valid header value.
        MetadataValue::try_from(format!("Bearer {}", self.0)).expect("a token is visible ASCII")
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(***)")
    }
}

impl FromStr for Token {
    type Err = InvalidToken;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<String> for Token {
    type Error = InvalidToken;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl<'de> serde::Deserialize<'de> for Token {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Token::new(s).map_err(serde::de::Error::custom)
    }
}

/// Constant-time equality, also in the length: `subtle` returns early on slices
/// of different lengths, so both sides are copied into buffers of
/// [`MAX_TOKEN_LEN`] bytes and compared whole, with the lengths compared in
/// constant time too. Only a given token longer than any valid one is refused at
/// once, which tells its sender nothing they did not know.
pub(super) fn tokens_match(given: &[u8], expected: &[u8]) -> bool {
    let mut a = [0u8; MAX_TOKEN_LEN];
    let mut b = [0u8; MAX_TOKEN_LEN];
    let (Some(a_part), Some(b_part)) = (a.get_mut(..given.len()), b.get_mut(..expected.len())) else {
        return false;
    };
    a_part.copy_from_slice(given);
    b_part.copy_from_slice(expected);
    let same_len = (given.len() as u64).ct_eq(&(expected.len() as u64));
    (a.ct_eq(&b) & same_len).into()
}

/// The client's side: adds `authorization: Bearer <token>` to every call when a
/// token is set.
#[derive(Debug, Clone)]
pub struct TokenInterceptor {
    header: Option<MetadataValue<Ascii>>,
    /// The `idempotency-key` every call carries, if any.
    idempotency_key: Option<MetadataValue<Ascii>>,
}

impl TokenInterceptor {
    /// Sends `token` with every call, or nothing when `None`.
    pub fn new(token: Option<Token>) -> Self {
        Self { header: token.as_ref().map(Token::header), idempotency_key: None }
    }

    /// Sends `key` as `idempotency-key` with every call too (see
    /// [`idempotency`](crate::management::idempotency)).
    pub fn with_idempotency_key(mut self, key: &crate::management::idempotency::IdempotencyKey) -> Self {
        // A key is visible ASCII, always a valid metadata value.
        self.idempotency_key = key.as_str().parse().ok();
        self
    }
}

impl tonic::service::Interceptor for TokenInterceptor {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(header) = &self.header {
            request.metadata_mut().insert("authorization", header.clone());
        }
        if let Some(key) = &self.idempotency_key {
            request.metadata_mut().insert(crate::management::idempotency::HEADER, key.clone());
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_validated_and_never_printed() {
        assert!(Token::new("").is_err());
        assert!(Token::new("a b").is_err());
        assert!(Token::new("é").is_err());
        assert!(Token::new("x".repeat(MAX_TOKEN_LEN + 1)).is_err());
        let t = Token::new("hunter2").unwrap();
        assert!(!format!("{t:?}").contains("hunter2"));
    }

    #[test]
    fn generated_tokens_are_long_distinct_and_valid() {
        let (a, b) = (Token::generate().unwrap(), Token::generate().unwrap());
        assert_ne!(a, b);
        assert!(a.expose().starts_with(USER_TOKEN_PREFIX));
        assert_eq!(a.expose().len(), 4 + 64);
        assert_eq!(Token::new(a.expose()).unwrap(), a);
    }

    #[test]
    fn only_equal_tokens_match() {
        assert!(tokens_match(b"abc", b"abc"));
        for wrong in [&b"ab"[..], b"abcd", b"ABC", b""] {
            assert!(!tokens_match(wrong, b"abc"));
        }
        assert!(!tokens_match(&[b'a'; MAX_TOKEN_LEN + 1], b"abc"));
    }
}
