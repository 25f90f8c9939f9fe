//! Idempotency keys: a client names a management write so that retrying it
//! never applies it twice.
//!
//! A write in Raft mode can end with its outcome unknown (`UNAVAILABLE`: the
//! deadline passed while the leader changed; or the connection broke after the
//! call was sent). Sent again as a new call, it would be a new proposal, and a
//! compare-and-set that did apply would now answer "condition failed". With an
//! `Idempotency-Key` header (HTTP; the IETF HTTPAPI working group's draft
//! "The Idempotency-Key HTTP Header Field", whose quoted form `"…"` is taken
//! without its quotes) or `idempotency-key` metadata (gRPC) on both attempts,
//! the node derives the same proposal id for each commit the call makes, and
//! the state machine, which decides an id once (the Raft thesis, Ongaro 2014,
//! §6.3; see `spectrum_replication`'s `Transaction::with_request_id`),
//! answers the retry with the first attempt's decision: its version, or the
//! same failed condition. Nothing is written twice.
//!
//! - **What an id names.** The caller's user name (every caller is
//!   `anonymous` on a development-mode node, with no token and no users), the
//!   key, the commit's place among the call's commits, and what the commit
//!   writes: its conditions and writes, the audit record aside (SHA-256, first
//!   128 bits). So two users never share ids, a call's commits each have
//!   their own, and a key reused for a different write (or a retry that
//!   writes something new, such as a freshly minted user token) is a new
//!   write, never answered with another write's decision.
//! - **How long.** Ids are remembered for a minute of the log's stamps, at most
//!   65,536 of them; a retry after that is a new write. Use a fresh key (a
//!   UUID) for each write, for its retries only.
//! - **Checks before the write.** A call checks some things on the answering
//!   node before it writes (a delete that the key exists, a new user that the
//!   name is free); a retry whose first attempt applied may be refused there
//!   (`NOT_FOUND`, `ALREADY_EXISTS`) rather than answered with the first
//!   decision. Nothing is written twice either way.
//! - **What a retry is told.** The first decision, as it was then (a failed
//!   condition names the version the key held at the time). It is not audited
//!   again: the first attempt's audit record is the call's.
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
use spectrum_replication::{Condition, Write};
use tonic::Status;
use tonic::server::NamedService;

use crate::auth::Caller;

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
        // Every byte before the first bad one is ASCII: a byte is a character.
        if let Some(at) = s.bytes().position(|b| !b.is_ascii_graphic()) {
            return Err(InvalidIdempotencyKey(format!("character {} is not visible ASCII", at + 1)));
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
    // The draft's form is a structured-field string: `"key"`. Unquoted, a
    // comma is two values joined (as a proxy merges repeated lines).
    match text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        Some(quoted) => quoted.parse().map(Some),
        None if text.contains(',') => {
            Err(InvalidIdempotencyKey("given more than once (a comma joins two)".into()))
        }
        None => text.parse().map(Some),
    }
}

/// The key of the call this task serves (`None` inside [`unkeyed`]), its
/// caller, and how many commits it named so far.
struct Scope {
    key: Option<IdempotencyKey>,
    caller: String,
    commits: u32,
}

tokio::task_local! {
    static SCOPE: RefCell<Scope>;
}

/// Runs `call`, made by `caller`, with `key` as the idempotency key of the
/// writes it commits (see [`next_request_id`]).
pub(crate) async fn scope<F: Future>(key: Option<IdempotencyKey>, caller: &Caller, call: F) -> F::Output {
    match key {
        Some(key) => {
            let scope = Scope { key: Some(key), caller: caller.name.clone(), commits: 0 };
            SCOPE.scope(RefCell::new(scope), call).await
        }
        None => call.await,
    }
}

/// Runs `work`, housekeeping a call does besides its own writes (tidying the
/// audit log), with no key: its commits are not named and do not count among
/// the call's, so a retry that does not repeat it names its writes alike.
pub(crate) async fn unkeyed<F: Future>(work: F) -> F::Output {
    let scope = Scope { key: None, caller: String::new(), commits: 0 };
    SCOPE.scope(RefCell::new(scope), work).await
}

/// The request id of the next commit of the call this task serves, when the
/// call carries a key: the first 128 bits of SHA-256 over a domain tag, the
/// caller, the key, the commit's number within the call and `digest()` (what
/// the commit writes, see [`digest`]; computed only for a keyed call). `None`
/// without a key.
pub(crate) fn next_request_id(digest: impl FnOnce() -> [u8; 32]) -> Option<u128> {
    SCOPE
        .try_with(|scope| {
            let mut scope = scope.borrow_mut();
            let key = scope.key.clone()?;
            let n = scope.commits;
            scope.commits = n.saturating_add(1);
            Some(request_id(&scope.caller, &key, n, &digest()))
        })
        .ok()
        .flatten()
}

fn request_id(caller: &str, key: &IdempotencyKey, n: u32, digest: &[u8; 32]) -> u128 {
    let mut hash = Sha256::new();
    hash.update(b"spectrum idempotency-key v2");
    for part in [caller.as_bytes(), key.as_str().as_bytes()] {
        field(&mut hash, part);
    }
    hash.update(n.to_be_bytes());
    hash.update(digest);
    let digest = hash.finalize();
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest[..16]);
    u128::from_be_bytes(first)
}

/// `bytes`, length-prefixed: no two sequences of fields hash alike.
fn field(hash: &mut Sha256, bytes: &[u8]) {
    hash.update((bytes.len() as u64).to_be_bytes());
    hash.update(bytes);
}

/// SHA-256 of what a commit writes: its `conditions`, then its `writes`
/// (each tagged and length-prefixed).
pub(crate) fn digest<'a>(conditions: &[Condition], writes: impl IntoIterator<Item = &'a Write>) -> [u8; 32] {
    let mut hash = Sha256::new();
    for c in conditions {
        match c {
            Condition::Absent { key } => {
                hash.update(b"a");
                field(&mut hash, key.as_bytes());
            }
            Condition::Version { key, version } => {
                hash.update(b"v");
                field(&mut hash, key.as_bytes());
                field(&mut hash, version.to_string().as_bytes());
            }
            other => {
                hash.update(b"?");
                field(&mut hash, format!("{other:?}").as_bytes());
            }
        }
    }
    for w in writes {
        match w {
            Write::Put { key, value } => {
                hash.update(b"p");
                field(&mut hash, key.as_bytes());
                field(&mut hash, value);
            }
            Write::Delete { key } => {
                hash.update(b"d");
                field(&mut hash, key.as_bytes());
            }
        }
    }
    hash.finalize().into()
}

/// A gRPC service (the management service, behind
/// [`BearerAuth`](crate::auth::BearerAuth)) whose calls run in the scope of
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
    /// The service's own future for a call without a key (no allocation on
    /// the common path); boxed otherwise.
    type Future = futures::future::Either<
        S::Future,
        Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        use futures::future::Either;
        match from_headers(request.headers()) {
            Ok(Some(key)) => {
                // Behind `BearerAuth`, every request names its caller; one
                // that does not is refused by the service itself.
                let caller = request.extensions().get::<Caller>().cloned();
                let call = self.0.call(request);
                match caller {
                    Some(caller) => {
                        Either::Right(Box::pin(async move { scope(Some(key), &caller, call).await }))
                    }
                    None => Either::Left(call),
                }
            }
            Ok(None) => Either::Left(self.0.call(request)),
            Err(e) => {
                let refused = Status::invalid_argument(e.to_string()).into_http();
                Either::Right(Box::pin(std::future::ready(Ok(refused))))
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
        headers.insert(HEADER, "\"k-1\"".parse().unwrap());
        assert_eq!(from_headers(&headers), Ok(Some(key("k-1"))), "the draft's quoted form");
        headers.insert(HEADER, "k1,k2".parse().unwrap());
        assert!(from_headers(&headers).unwrap_err().to_string().contains("more than once"), "joined lines");
        assert_eq!(
            "a b".parse::<IdempotencyKey>().unwrap_err().to_string(),
            "invalid idempotency-key: character 2 is not visible ASCII"
        );
    }

    #[test]
    fn ids_differ_by_caller_key_commit_and_contents_and_repeat_otherwise() {
        let put = |v: &'static str| digest(&[], &[Write::Put { key: "k".into(), value: v.into() }]);
        let d = put("1");
        let id = request_id("ada", &key("k"), 0, &d);
        assert_eq!(id, request_id("ada", &key("k"), 0, &put("1")), "a retry gets the same id");
        assert_ne!(id, request_id("bob", &key("k"), 0, &d), "another caller");
        assert_ne!(id, request_id("ada", &key("k2"), 0, &d), "another key");
        assert_ne!(id, request_id("ada", &key("k"), 1, &d), "the call's second commit");
        assert_ne!(id, request_id("ada", &key("k"), 0, &put("2")), "another value");
        // Length prefixes: moving a byte from the caller to the key changes the id.
        assert_ne!(request_id("ab", &key("c"), 0, &d), request_id("a", &key("bc"), 0, &d));
        let delete = digest(&[], &[Write::Delete { key: "k".into() }]);
        let absent = digest(&[Condition::absent("k")], &[Write::Put { key: "k".into(), value: "1".into() }]);
        assert!(d != delete && d != absent && delete != absent, "a delete, a condition: other writes");
    }

    #[tokio::test]
    async fn a_scope_numbers_its_commits_and_no_scope_or_unkeyed_work_gives_no_id() {
        let d = [7u8; 32];
        let ada = Caller { name: "ada".into(), role: crate::auth::Role::Admin };
        let unused = || -> [u8; 32] { panic!("no key: the digest is not computed") };
        assert_eq!(next_request_id(unused), None);
        let ids = scope(Some(key("k")), &ada, async {
            let first = next_request_id(|| d);
            assert_eq!(unkeyed(async { next_request_id(unused) }).await, None, "housekeeping is not named");
            [first, next_request_id(|| d)]
        })
        .await;
        assert_eq!(
            ids,
            [Some(request_id("ada", &key("k"), 0, &d)), Some(request_id("ada", &key("k"), 1, &d))]
        );
        assert_eq!(scope(None, &ada, async { next_request_id(unused) }).await, None);
    }
}
