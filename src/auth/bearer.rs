//! [`BearerAuth`]: the node's check of every management call.

use std::sync::Arc;

use tonic::{Request, Status};

use super::token::tokens_match;
use super::{Caller, Lookup, Role, Token, TokenHash, UserIndex};

/// The node's side: finds out who is calling from the bearer token and puts the
/// [`Caller`] into the request's extensions, or refuses the call with
/// `UNAUTHENTICATED`. Which role each call needs is the management service's
/// business.
///
/// - The token from the node file (`token`, [`NodeBuilder::management_token`](crate::NodeBuilder::management_token))
///   is the bootstrap admin, [`Caller::BOOTSTRAP`]; it is compared in constant
///   time ([`subtle`]), including in its length.
/// - Any other token is hashed ([`TokenHash`]) and looked up in the node's
///   [`UserIndex`]: no I/O per call. A revoked token is refused.
/// - With no token configured and no user ever added, every call passes as
///   [`Caller::anonymous`], an admin (development mode, as before users existed).
///   Adding the first user closes the cluster: from then on every call needs a
///   token.
///
/// ```
/// use spectrum::auth::{BearerAuth, Token, TokenInterceptor};
/// use tonic::service::Interceptor;
///
/// let token: Token = "s3cret".parse()?;
/// assert_eq!(format!("{token:?}"), "Token(***)");
/// let mut server = BearerAuth::new(Some(token.clone()));
/// let mut client = TokenInterceptor::new(Some(token));
/// let request = server.call(client.call(tonic::Request::new(()))?)?;
/// let caller = request.extensions().get::<spectrum::auth::Caller>().unwrap();
/// assert_eq!(caller.name, "bootstrap");
/// assert!(server.call(tonic::Request::new(())).is_err(), "no token, no call");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct BearerAuth {
    bootstrap: Option<Token>,
    users: Option<Arc<UserIndex>>,
}

impl BearerAuth {
    /// Checks against the bootstrap `token` only, or lets everything through when
    /// `None`.
    pub fn new(token: Option<Token>) -> Self {
        Self { bootstrap: token, users: None }
    }

    /// Checks against the bootstrap `token` and the tokens of `users`.
    pub fn with_users(token: Option<Token>, users: Arc<UserIndex>) -> Self {
        Self { bootstrap: token, users: Some(users) }
    }

    /// Who sent the HTTP request with these `headers` (`authorization: Bearer
    /// <token>`), or why it is refused: the same check, and the same messages, as
    /// for a gRPC call. The HTTP/JSON API ([`http_api`](crate::http_api)) calls it.
    ///
    /// # Errors
    ///
    /// `UNAUTHENTICATED` for a missing, unknown or revoked token.
    pub fn authenticate(&self, headers: &http::HeaderMap) -> Result<Caller, Status> {
        self.authenticate_credential(headers).map(|(caller, _)| caller)
    }

    /// As [`authenticate`](Self::authenticate), with the [`Credential`] the
    /// caller presented, to check again during a long call.
    ///
    /// # Errors
    ///
    /// `UNAUTHENTICATED` for a missing, unknown or revoked token.
    pub fn authenticate_credential(&self, headers: &http::HeaderMap) -> Result<(Caller, Credential), Status> {
        self.identify(presented(headers.get_all(http::header::AUTHORIZATION).iter().map(|v| v.as_bytes())))
    }

    /// Who holds the token `given`, and what it presented, or why it is refused.
    fn identify(&self, given: Presented<'_>) -> Result<(Caller, Credential), Status> {
        let no_users = self.users.as_ref().is_none_or(|u| u.is_empty());
        if self.bootstrap.is_none() && no_users {
            return Ok((Caller::anonymous(), Credential(Presenting::Anonymous(self.users.clone()))));
        }
        let given = match given {
            Presented::Bearer(token) => token,
            Presented::Absent => {
                return Err(Status::unauthenticated(
                    "missing bearer token: send authorization: Bearer <token>",
                ));
            }
            Presented::Malformed(why) => {
                return Err(Status::unauthenticated(format!("{why}: send authorization: Bearer <token>")));
            }
        };
        if let Some(bootstrap) = &self.bootstrap
            && tokens_match(given.as_bytes(), bootstrap.expose().as_bytes())
        {
            return Ok((Caller::bootstrap(), Credential(Presenting::Bootstrap)));
        }
        if let (Some(users), Ok(token)) = (&self.users, Token::new(given)) {
            let hash = TokenHash::of(&token);
            match users.lookup(&hash) {
                Lookup::Valid(caller) => {
                    let credential = Presenting::User {
                        users: users.clone(),
                        hash,
                        name: caller.name.clone(),
                        role: caller.role,
                    };
                    return Ok((caller, Credential(credential)));
                }
                Lookup::Revoked => {
                    return Err(Status::unauthenticated("invalid bearer token: it was revoked"));
                }
                Lookup::Unknown => {}
            }
        }
        Err(Status::unauthenticated("invalid bearer token"))
    }
}

impl tonic::service::Interceptor for BearerAuth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let lines = request.metadata().get_all("authorization").iter().map(|v| v.as_encoded_bytes());
        let (caller, credential) = self.identify(presented(lines))?;
        request.extensions_mut().insert(caller);
        request.extensions_mut().insert(credential);
        Ok(request)
    }
}

/// What a caller presented when its call began, to check again while a long
/// call runs: a watch ends once its token is revoked or rotated, or its
/// user's role changes, rather than streaming on to a token every new call
/// refuses (as etcd cancels the watches of a revoked lease).
#[derive(Debug, Clone)]
pub struct Credential(Presenting);

#[derive(Debug, Clone)]
enum Presenting {
    /// The node file's token: valid as long as the node runs.
    Bootstrap,
    /// Development mode (no token, no user): valid until a user is added.
    Anonymous(Option<Arc<UserIndex>>),
    /// A user's token, by its hash, with the user's name and the role it had.
    User { users: Arc<UserIndex>, hash: TokenHash, name: String, role: Role },
}

/// `stream`, ended once `credential` (when there is one) no longer lets its
/// caller in: checked against the store before each item
/// ([`Credential::still_valid_now`], so an event the store applied after a
/// revocation is never delivered on the revoked token), the item is replaced
/// by `end` of the refusal, and the stream ends with it.
pub(crate) fn until_invalid<S>(
    stream: S,
    credential: Option<Credential>,
    end: fn(Status) -> S::Item,
) -> impl futures::Stream<Item = S::Item>
where
    S: futures::Stream,
{
    use futures::StreamExt;
    futures::stream::unfold(
        (Box::pin(stream), credential, false),
        move |(mut stream, credential, ended)| async move {
            if ended {
                return None;
            }
            let item = stream.next().await?;
            let valid = match &credential {
                Some(credential) => credential.still_valid_now().await,
                None => Ok(()),
            };
            match valid {
                Err(refusal) => Some((end(refusal), (stream, credential, true))),
                Ok(()) => Some((item, (stream, credential, false))),
            }
        },
    )
}

impl Credential {
    /// As [`still_valid`](Self::still_valid), judged from the caller's user
    /// record (or, in development mode, whether any user exists) read now from
    /// the store the node's [`UserIndex`] follows: the index catches up with the
    /// store's change feed on a task of its own, so on its own it can answer
    /// for a moment with a user the store has already revoked. A failed read
    /// is logged and the index answers.
    ///
    /// # Errors
    ///
    /// As [`still_valid`](Self::still_valid).
    pub async fn still_valid_now(&self) -> Result<(), Status> {
        match &self.0 {
            Presenting::Bootstrap => Ok(()),
            Presenting::Anonymous(Some(users)) => match users.is_empty_now().await {
                Ok(false) => Err(development_mode_ended()),
                Ok(true) => Ok(()),
                Err(error) => {
                    tracing::warn!(%error, "could not read the users to check a long call; the index answers");
                    self.still_valid()
                }
            },
            Presenting::Anonymous(None) => Ok(()),
            Presenting::User { users, hash, name, role } => match users.lookup_now(name, hash).await {
                Ok(lookup) => judge(lookup, *role),
                Err(error) => {
                    tracing::warn!(user = %name, %error, "could not read a user to check a long call; the index answers");
                    self.still_valid()
                }
            },
        }
    }

    /// Whether the credential still lets its caller in with the same role.
    ///
    /// # Errors
    ///
    /// `UNAUTHENTICATED` saying what changed: the token was revoked, is no
    /// longer any user's (rotated), or its user's role changed; or a user was
    /// added, which ends development mode.
    pub fn still_valid(&self) -> Result<(), Status> {
        match &self.0 {
            Presenting::Bootstrap => Ok(()),
            Presenting::Anonymous(users) if users.as_ref().is_some_and(|u| !u.is_empty()) => {
                Err(development_mode_ended())
            }
            Presenting::Anonymous(_) => Ok(()),
            Presenting::User { users, hash, role, .. } => judge(users.lookup(hash), *role),
        }
    }
}

/// Whether a user's token that had `role` when its call began still lets
/// the call go on, as `lookup` finds it now.
fn judge(lookup: Lookup, role: Role) -> Result<(), Status> {
    match lookup {
        Lookup::Valid(caller) if caller.role == role => Ok(()),
        Lookup::Valid(caller) => Err(Status::unauthenticated(format!(
            "the bearer token's role changed from {role} to {}: call again",
            caller.role
        ))),
        Lookup::Revoked => Err(Status::unauthenticated("invalid bearer token: it was revoked")),
        Lookup::Unknown => {
            Err(Status::unauthenticated("invalid bearer token: it is no longer any user's (rotated?)"))
        }
    }
}

/// The refusal of a development-mode caller once a user exists.
fn development_mode_ended() -> Status {
    Status::unauthenticated("development mode ended (a user was added): send authorization: Bearer <token>")
}

/// What a request's `authorization` header lines present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Presented<'a> {
    /// No `authorization` header.
    Absent,
    /// A bearer token (not yet checked).
    Bearer(&'a str),
    /// Something else, and why it is not a bearer token.
    Malformed(String),
}

/// What the lines of an `authorization` header present: one line
/// `Bearer <token>` (RFC 6750 §2.1), its scheme in any case (RFC 7235 §2.1:
/// schemes are case-insensitive). Two lines are refused rather than one of
/// them picked: which one a proxy or a node would take is anyone's guess.
pub(crate) fn presented<'a>(lines: impl IntoIterator<Item = &'a [u8]>) -> Presented<'a> {
    let mut lines = lines.into_iter();
    let Some(line) = lines.next() else { return Presented::Absent };
    if lines.next().is_some() {
        return Presented::Malformed("more than one authorization header".into());
    }
    let Ok(text) = std::str::from_utf8(line) else {
        return Presented::Malformed("the authorization header is not text".into());
    };
    match text.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
            Presented::Bearer(token.trim_start_matches(' '))
        }
        Some((scheme, _)) if scheme.len() <= 32 && scheme.bytes().all(|b| b.is_ascii_graphic()) => {
            Presented::Malformed(format!("the authorization scheme {scheme:?} is not Bearer"))
        }
        _ => Presented::Malformed("the authorization header names no scheme Bearer".into()),
    }
}

/// The bearer token of a request's `authorization` header lines, when they
/// present one that is a well-formed [`Token`]; for calls a node forwards
/// with its caller's token.
pub(crate) fn bearer_token<'a>(lines: impl IntoIterator<Item = &'a [u8]>) -> Option<Token> {
    match presented(lines) {
        Presented::Bearer(token) => token.parse().ok(),
        Presented::Absent | Presented::Malformed(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use tonic::service::Interceptor;

    use super::*;
    use crate::auth::Role;
    use crate::namespace::User;

    fn call_with(auth: &mut BearerAuth, header: Option<&str>) -> Result<Caller, Status> {
        let mut request = Request::new(());
        if let Some(h) = header {
            request.metadata_mut().insert("authorization", h.parse().unwrap());
        }
        auth.call(request).map(|r| r.extensions().get::<Caller>().cloned().expect("a caller"))
    }

    fn index_with(name: &str, role: Role, token: &Token, revoked: bool) -> Arc<UserIndex> {
        let index = Arc::new(UserIndex::new());
        let user = User { name: name.into(), role, token_hash: TokenHash::of(token), created_ms: 0, revoked };
        let record = spectrum_replication::Record {
            key: format!("users/{name}"),
            value: Some(user.encode().into()),
            stamp: spectrum_core::Timestamp { wall_ms: 1, logical: 0 },
            origin: "n1".parse().unwrap(),
            seq: 1,
            lineage: Default::default(),
        };
        index.apply(&record);
        index
    }

    #[test]
    fn only_the_exact_bootstrap_token_passes_as_bootstrap() {
        let mut auth = BearerAuth::new(Some("abc".parse().unwrap()));
        assert_eq!(call_with(&mut auth, Some("Bearer abc")).unwrap(), Caller::bootstrap());
        for wrong in ["Bearer ab", "Bearer abcd", "Bearer ABC", "abc", "Bearer "] {
            let err = call_with(&mut auth, Some(wrong)).unwrap_err();
            assert_eq!(err.code(), tonic::Code::Unauthenticated, "{wrong}");
        }
        assert!(call_with(&mut auth, None).unwrap_err().message().contains("missing bearer token"));
        let long = format!("Bearer {}", "a".repeat(super::super::MAX_TOKEN_LEN + 10));
        assert!(call_with(&mut auth, Some(&long)).is_err());
    }

    #[test]
    fn the_scheme_is_read_in_any_case_another_scheme_or_two_headers_are_refused_saying_so() {
        let mut auth = BearerAuth::new(Some("abc".parse().unwrap()));
        for scheme in ["bearer", "BEARER", "Bearer"] {
            assert_eq!(call_with(&mut auth, Some(&format!("{scheme} abc"))).unwrap(), Caller::bootstrap());
        }
        let basic = call_with(&mut auth, Some("Basic YWxhZGRpbjpvcGVuc2VzYW1l")).unwrap_err();
        assert_eq!(
            basic.message(),
            "the authorization scheme \"Basic\" is not Bearer: send authorization: Bearer <token>"
        );
        let bare = call_with(&mut auth, Some("abc")).unwrap_err();
        assert!(bare.message().starts_with("the authorization header names no scheme Bearer"), "{bare}");
        let mut request = Request::new(());
        request.metadata_mut().append("authorization", "Bearer abc".parse().unwrap());
        request.metadata_mut().append("authorization", "Bearer other".parse().unwrap());
        let twice = auth.call(request).unwrap_err();
        assert_eq!(twice.code(), tonic::Code::Unauthenticated);
        assert!(twice.message().starts_with("more than one authorization header"), "{twice}");
        let mut headers = http::HeaderMap::new();
        headers.append(http::header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(auth.authenticate(&headers).unwrap(), Caller::bootstrap());
        headers.append(http::header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert!(auth.authenticate(&headers).unwrap_err().message().starts_with("more than one"));
    }

    #[test]
    fn without_a_token_or_users_every_call_passes_as_anonymous() {
        assert_eq!(call_with(&mut BearerAuth::new(None), None).unwrap(), Caller::anonymous());
        let empty = Arc::new(UserIndex::new());
        assert_eq!(call_with(&mut BearerAuth::with_users(None, empty), None).unwrap(), Caller::anonymous());
    }

    #[test]
    fn user_tokens_resolve_to_their_user_and_revoked_ones_are_refused() {
        let token = Token::generate().unwrap();
        let header = format!("Bearer {}", token.expose());
        let mut auth = BearerAuth::with_users(None, index_with("vera", Role::Viewer, &token, false));
        let caller = call_with(&mut auth, Some(&header)).unwrap();
        assert_eq!((caller.name.as_str(), caller.role), ("vera", Role::Viewer));
        let err = call_with(&mut auth, None).unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated, "users exist: the cluster is closed");
        let other = format!("Bearer {}", Token::generate().unwrap().expose());
        assert_eq!(call_with(&mut auth, Some(&other)).unwrap_err().message(), "invalid bearer token");
        let mut revoked = BearerAuth::with_users(None, index_with("vera", Role::Viewer, &token, true));
        let err = call_with(&mut revoked, Some(&header)).unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
        assert!(err.message().contains("revoked"), "{err}");
        let mut both = BearerAuth::with_users(
            Some("boot".parse().unwrap()),
            index_with("v", Role::Viewer, &token, false),
        );
        assert_eq!(call_with(&mut both, Some("Bearer boot")).unwrap(), Caller::bootstrap());
        assert_eq!(call_with(&mut both, Some(&header)).unwrap().name, "v");
    }
    /// A watch checks its credential against the store, not only the index:
    /// the index follows the store's change feed on a task of its own, so an
    /// event applied after a revocation can reach the watch before the index
    /// has taken the revocation in.
    #[tokio::test]
    async fn a_long_call_checks_its_credential_against_the_store_not_the_index_behind_it() {
        use spectrum_replication::{ConfigStore, MemoryStore, WriteBatch};

        let store: Arc<dyn ConfigStore> =
            Arc::new(MemoryStore::new("n1".parse().unwrap(), Arc::new(spectrum_core::Hlc::system())));
        let token = Token::generate().unwrap();
        let record = |revoked: bool| {
            let user = User {
                name: "ann".into(),
                role: Role::Operator,
                token_hash: TokenHash::of(&token),
                created_ms: 0,
                revoked,
            };
            String::from_utf8(user.encode()).unwrap()
        };
        // Development mode: the index follows an empty store.
        let users = UserIndex::follow(&store).await.unwrap();
        let auth = BearerAuth::with_users(None, users.clone());
        let (caller, anonymous) = auth.identify(Presented::Absent).unwrap();
        assert_eq!(caller, Caller::anonymous());
        // On this single-threaded runtime the index's task has not run since
        // the store applied these writes: the index alone still answers as
        // before them (the race this guards against).
        store.apply(WriteBatch::new().put("users/ann", record(false))).await.unwrap();
        assert!(anonymous.still_valid().is_ok(), "premise: the index has not caught up yet");
        let ended = anonymous.still_valid_now().await.unwrap_err();
        assert!(ended.message().starts_with("development mode ended"), "{ended}");

        // The index catches up on its own task.
        for _ in 0..1_000 {
            if !users.is_empty() {
                break;
            }
            tokio::task::yield_now().await;
        }
        let header = format!("Bearer {}", token.expose());
        let (caller, credential) =
            auth.identify(Presented::Bearer(header.strip_prefix("Bearer ").unwrap())).unwrap();
        assert_eq!(caller.name, "ann");
        assert!(credential.still_valid_now().await.is_ok(), "a current user's long call goes on");
        store.apply(WriteBatch::new().put("users/ann", record(true))).await.unwrap();
        assert!(credential.still_valid().is_ok(), "premise: the index has not caught up yet");
        let revoked = credential.still_valid_now().await.unwrap_err();
        assert_eq!(revoked.code(), tonic::Code::Unauthenticated);
        assert!(revoked.message().contains("revoked"), "{revoked}");
        assert!(credential.still_valid().is_ok(), "the index is left to its feed");
    }
}
