//! The management API's bearer token, on both sides of a call: [`Token`] (a
//! validated secret that never prints), [`BearerAuth`] (the node's check of every
//! call) and [`TokenInterceptor`] (the client's insertion of the header).
//!
//! With a token configured, every management call must carry
//! `authorization: Bearer <token>`; the comparison is constant-time
//! ([`subtle`]), including in the token's length, so timing tells an attacker
//! nothing about it.
//!
//! ```
//! use spectrum::auth::{BearerAuth, Token, TokenInterceptor};
//! use tonic::service::Interceptor;
//!
//! let token: Token = "s3cret".parse()?;
//! assert_eq!(format!("{token:?}"), "Token(***)");
//! let mut server = BearerAuth::new(Some(token.clone()));
//! let mut client = TokenInterceptor::new(Some(token));
//! let request = client.call(tonic::Request::new(()))?;
//! assert!(server.call(request).is_ok());
//! assert!(server.call(tonic::Request::new(())).is_err(), "no token, no call");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

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

    /// The `authorization` header value that carries it.
    fn header(&self) -> MetadataValue<Ascii> {
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

/// The node's side: checks every management call for the bearer token; without
/// a configured token every call passes.
#[derive(Debug, Clone)]
pub struct BearerAuth {
    token: Option<Token>,
}

impl BearerAuth {
    /// Checks against `token`, or lets everything through when `None`.
    pub fn new(token: Option<Token>) -> Self {
        Self { token }
    }
}

impl tonic::service::Interceptor for BearerAuth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(expected) = &self.token else {
            return Ok(request);
        };
        let given = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                Status::unauthenticated("missing bearer token: send authorization: Bearer <token>")
            })?;
        if tokens_match(given.as_bytes(), expected.expose().as_bytes()) {
            Ok(request)
        } else {
            Err(Status::unauthenticated("invalid bearer token"))
        }
    }
}

/// Constant-time equality, also in the length: `subtle` returns early on slices
/// of different lengths, so both sides are copied into buffers of
/// [`MAX_TOKEN_LEN`] bytes and compared whole, with the lengths compared in
/// constant time too. Only a given token longer than any valid one is refused at
/// once, which tells its sender nothing they did not know.
fn tokens_match(given: &[u8], expected: &[u8]) -> bool {
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
}

impl TokenInterceptor {
    /// Sends `token` with every call, or nothing when `None`.
    pub fn new(token: Option<Token>) -> Self {
        Self { header: token.as_ref().map(Token::header) }
    }
}

impl tonic::service::Interceptor for TokenInterceptor {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(header) = &self.header {
            request.metadata_mut().insert("authorization", header.clone());
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use tonic::service::Interceptor;

    use super::*;

    fn call_with(auth: &mut BearerAuth, header: Option<&str>) -> Result<(), Status> {
        let mut request = Request::new(());
        if let Some(h) = header {
            request.metadata_mut().insert("authorization", h.parse().unwrap());
        }
        auth.call(request).map(drop)
    }

    #[test]
    fn only_the_exact_token_passes() {
        let mut auth = BearerAuth::new(Some("abc".parse().unwrap()));
        assert!(call_with(&mut auth, Some("Bearer abc")).is_ok());
        for wrong in ["Bearer ab", "Bearer abcd", "Bearer ABC", "abc", "Bearer "] {
            let err = call_with(&mut auth, Some(wrong)).unwrap_err();
            assert_eq!(err.code(), tonic::Code::Unauthenticated, "{wrong}");
        }
        assert!(call_with(&mut auth, None).unwrap_err().message().contains("missing bearer token"));
        let long = format!("Bearer {}", "a".repeat(MAX_TOKEN_LEN + 10));
        assert!(call_with(&mut auth, Some(&long)).is_err());
    }

    #[test]
    fn without_a_token_every_call_passes() {
        assert!(call_with(&mut BearerAuth::new(None), None).is_ok());
    }

    #[test]
    fn tokens_are_validated_and_never_printed() {
        assert!(Token::new("").is_err());
        assert!(Token::new("a b").is_err());
        assert!(Token::new("é").is_err());
        assert!(Token::new("x".repeat(MAX_TOKEN_LEN + 1)).is_err());
        let t = Token::new("hunter2").unwrap();
        assert!(!format!("{t:?}").contains("hunter2"));
    }
}
