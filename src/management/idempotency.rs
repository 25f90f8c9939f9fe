//! Idempotency keys: a client names a management write so that retrying it
//! never applies it twice.
//!
//! A write in Raft mode can end with its outcome unknown (`UNAVAILABLE`: the
//! deadline passed while the leader changed; or the connection broke after the
//! call was sent). Sent again as a new call, it would be a new proposal, and a
//! compare-and-set that did apply would now answer "condition failed". With an
//! `Idempotency-Key` header (HTTP; the IETF HTTPAPI working group's draft
//! "The Idempotency-Key HTTP Header Field") or `idempotency-key` metadata
//! (gRPC) on both attempts, the node derives the same proposal id for each
//! commit the call makes, and the state machine, which decides an id once
//! (the Raft thesis, Ongaro 2014, §6.3; see `spectrum_replication`'s
//! `Transaction::with_request_id`), answers the retry with the first
//! attempt's decision: its version, or the same failed condition. Nothing is
//! written twice.
//!
//! - **Scope.** An id is derived from the caller's user name, the key and the
//!   commit's place among the call's commits (SHA-256, first 128 bits), so two
//!   users never share ids, and a call that makes several commits gives each
//!   its own.
//! - **How long.** Ids are remembered for a minute of the log's stamps, at most
//!   65,536 of them; a retry after that is decided again. Use a fresh key (a
//!   UUID) for each write, never one for two different writes: a key reused
//!   within the minute gets the first write's answer.
//! - **Last-writer-wins mode** has no log to decide ids in: the key is
//!   accepted and has no effect there (a put applied twice writes the same
//!   value twice; compare-and-set needs Raft mode).
//! - **Refused** with `INVALID_ARGUMENT` (HTTP 400), before anything runs: an
//!   empty key, one longer than [`MAX_KEY_BYTES`] or with other than visible
//!   ASCII, or the header given twice.
//!
//! ```
//! use spectrum::management::idempotency::IdempotencyKey;
//!
//! let key: IdempotencyKey = "8e03978e-40d5-43e8-bc93-6894a57f9324".parse()?;
//! assert_eq!(key.as_str().len(), 36);
//! assert!("".parse::<IdempotencyKey>().is_err());
//! assert!("two words".parse::<IdempotencyKey>().is_err(), "visible ASCII only");
//! # Ok::<(), spectrum::management::idempotency::InvalidIdempotencyKey>(())
//! ```

use std::cell::RefCell;
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::task::{Context, Poll};

use sha2::{Digest, Sha256};
use tonic::Status;
use tonic::server::NamedService;

/// The header (HTTP) and metadata key (gRPC) that carries the key.
pub const HEADER: &str = "idempotency-key";

/// The longest key accepted, in bytes.
pub const MAX_KEY_BYTES: usize = 255;

/// A client's name for one write: 1 to [`MAX_KEY_BYTES`] bytes of visible
/// ASCII (`!` to `~`), such as a UUID.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// The key as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdempotencyKey({:?})", self.0)
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {HEADER}: {0}")]
pub struct InvalidIdempotencyKey(String);

impl FromStr for IdempotencyKey {
    type Err = InvalidIdempotencyKey;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(InvalidIdempotencyKey("empty".into()));
        }
        if s.len() > MAX_KEY_BYTES {
            return Err(InvalidIdempotencyKey(format!("{} bytes, at most {MAX_KEY_BYTES}", s.len())));
        }
        if let Some(at) = s.bytes().position(|b| !b.is_ascii_graphic()) {
            return Err(InvalidIdempotencyKey(format!("byte {at} is not visible ASCII")));
        }
        Ok(Self(s.to_owned()))
    }
}

/// The key `headers` carry, if any.
///
/// # Errors
///
/// The header given more than once, or a value that is not a key.
pub fn from_headers(headers: &http::HeaderMap) -> Result<Option<IdempotencyKey>, InvalidIdempotencyKey> {
    let mut values = headers.get_all(HEADER).iter();
    let Some(value) = values.next() else { return Ok(None) };
    if values.next().is_some() {
        return Err(InvalidIdempotencyKey("given more than once".into()));
    }
    let text = value.to_str().map_err(|_| InvalidIdempotencyKey("not visible ASCII".into()))?;
    text.parse().map(Some)
}

/// The key of the call this task serves, and how many commits it made so far.
struct Scope {
    key: IdempotencyKey,
    commits: u32,
}

tokio::task_local! {
    static SCOPE: RefCell<Scope>;
}

/// Runs `call` with `key` as the idempotency key of the writes it commits
/// (see [`next_request_id`]).
pub(crate) async fn scope<F: Future>(key: Option<IdempotencyKey>, call: F) -> F::Output {
    match key {
        Some(key) => SCOPE.scope(RefCell::new(Scope { key, commits: 0 }), call).await,
        None => call.await,
    }
}

/// The request id of the next commit of the call this task serves, made for
/// `caller` (a user name), when the call carries a key: the first 128 bits of
/// SHA-256 over a domain tag, the caller, the key and the commit's number
/// within the call, each length-prefixed. `None` without a key.
pub(crate) fn next_request_id(caller: &str) -> Option<u128> {
    SCOPE
        .try_with(|scope| {
            let mut scope = scope.borrow_mut();
            let n = scope.commits;
            scope.commits = n.saturating_add(1);
            request_id(caller, &scope.key, n)
        })
        .ok()
}

fn request_id(caller: &str, key: &IdempotencyKey, n: u32) -> u128 {
    let mut hash = Sha256::new();
    hash.update(b"spectrum idempotency-key v1");
    for part in [caller.as_bytes(), key.as_str().as_bytes()] {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part);
    }
    hash.update(n.to_be_bytes());
    let digest = hash.finalize();
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest[..16]);
    u128::from_be_bytes(first)
}

/// A gRPC service (the management service) whose calls run in the scope of
/// the key their `idempotency-key` metadata carries; a call with an invalid
/// key is answered `INVALID_ARGUMENT` and not run.
#[derive(Debug, Clone)]
pub(crate) struct Idempotent<S>(pub(crate) S);

impl<S: NamedService> NamedService for Idempotent<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> tower::Service<http::Request<B>> for Idempotent<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        match from_headers(request.headers()) {
            Ok(key) => {
                let call = self.0.call(request);
                Box::pin(scope(key, call))
            }
            Err(e) => {
                let refused = Status::invalid_argument(e.to_string()).into_http();
                Box::pin(std::future::ready(Ok(refused)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> IdempotencyKey {
        s.parse().expect("a valid key")
    }

    #[test]
    fn keys_are_visible_ascii_of_at_most_255_bytes() {
        assert!(key("a").as_str() == "a");
        assert!(format!("{}", key(&"k".repeat(MAX_KEY_BYTES))).len() == MAX_KEY_BYTES);
        for bad in ["", "a b", "tab\there", "ünïcode", "new\nline"] {
            assert!(bad.parse::<IdempotencyKey>().is_err(), "{bad:?}");
        }
        let long = "k".repeat(MAX_KEY_BYTES + 1).parse::<IdempotencyKey>().unwrap_err();
        assert_eq!(long.to_string(), "invalid idempotency-key: 256 bytes, at most 255");
    }

    #[test]
    fn headers_give_one_key_and_a_repeated_or_bad_one_is_refused() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(from_headers(&headers), Ok(None));
        headers.insert(HEADER, "k-1".parse().unwrap());
        assert_eq!(from_headers(&headers), Ok(Some(key("k-1"))));
        headers.append(HEADER, "k-2".parse().unwrap());
        assert!(from_headers(&headers).unwrap_err().to_string().contains("more than once"));
        headers.insert(HEADER, http::HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap());
        assert!(from_headers(&headers).is_err());
    }

    #[test]
    fn ids_differ_by_caller_key_and_commit_and_repeat_otherwise() {
        let id = request_id("ada", &key("k"), 0);
        assert_eq!(id, request_id("ada", &key("k"), 0), "a retry gets the same id");
        assert_ne!(id, request_id("bob", &key("k"), 0), "another caller");
        assert_ne!(id, request_id("ada", &key("k2"), 0), "another key");
        assert_ne!(id, request_id("ada", &key("k"), 1), "the call's second commit");
        // Length prefixes: moving a byte from the caller to the key changes the id.
        assert_ne!(request_id("ab", &key("c"), 0), request_id("a", &key("bc"), 0));
    }

    #[tokio::test]
    async fn a_scope_numbers_its_commits_and_no_scope_gives_no_id() {
        assert_eq!(next_request_id("ada"), None);
        let ids = scope(Some(key("k")), async { [next_request_id("ada"), next_request_id("ada")] }).await;
        assert_eq!(ids, [Some(request_id("ada", &key("k"), 0)), Some(request_id("ada", &key("k"), 1))]);
        assert_eq!(scope(None, async { next_request_id("ada") }).await, None);
    }
}
