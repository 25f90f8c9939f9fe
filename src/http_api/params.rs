//! What a request carries besides its path: query parameters, the body, the
//! caller's token. Each is read inside the handler, after the caller's role was
//! checked, so a caller who may not call an operation learns nothing about its
//! input; a malformed one is `400 invalid_argument` naming what is wrong.

use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use bytes::Bytes;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use spectrum_replication::AckLevel;
use tonic::Status;
use utoipa::{IntoParams, ToSchema};

use super::ApiError;
use crate::auth::{Role, Token};
use crate::model::ReadAfter;

/// `query`'s parameters as `T`.
pub(super) fn query<T: DeserializeOwned>(uri: &http::Uri) -> Result<T, Status> {
    Query::<T>::try_from_uri(uri).map(|Query(q)| q).map_err(|e| Status::invalid_argument(e.body_text()))
}

/// A JSON body as `T`.
pub(super) fn json<T: DeserializeOwned>(body: &[u8]) -> Result<T, Status> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(Status::invalid_argument("missing JSON body"));
    }
    serde_json::from_slice(body).map_err(|e| Status::invalid_argument(format!("malformed JSON body: {e}")))
}

/// The request body, at most the API's size limit: a larger one is `413
/// payload_too_large`, as JSON.
#[derive(Debug)]
pub(super) struct Body(pub(super) Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            let status = rejection.status();
            let code = if status == http::StatusCode::PAYLOAD_TOO_LARGE {
                "payload_too_large"
            } else {
                "invalid_argument"
            };
            ApiError::new(status, code, rejection.body_text())
        })?;
        Ok(Body(bytes))
    }
}

/// The one parameter of a request's path (a key, a name, a node id), percent-decoded.
#[derive(Debug)]
pub(super) struct Name(pub(super) String);

impl<S: Send + Sync> FromRequestParts<S> for Name {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(name)) => Ok(Name(name)),
            Err(rejection) => Err(ApiError::bad_request(rejection.body_text())),
        }
    }
}

/// How many members must hold a write before it is acknowledged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Ack {
    /// The answering node.
    Local,
    /// A majority of the members not left or removed (the default).
    #[default]
    Quorum,
    /// Every member not left or removed.
    All,
}

impl From<Ack> for AckLevel {
    fn from(ack: Ack) -> Self {
        match ack {
            Ack::Local => AckLevel::Local,
            Ack::Quorum => AckLevel::Quorum,
            Ack::All => AckLevel::All,
        }
    }
}

/// Parameters of a read.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReadParams {
    /// Answer only once the answering node holds this write (a version token from
    /// a write's answer): read-your-writes through the balancer.
    pub min_version: Option<String>,
    /// Answer only once the answering node holds every write of this session
    /// (the `version`s of a client's writes joined by commas; see
    /// [`Session`](crate::session::Session)).
    pub session: Option<String>,
    /// How long the node may wait for them, in ms (the node's default when
    /// absent; capped by the node).
    pub wait_ms: Option<u32>,
    /// Linearizable: answer only once the node holds every write committed
    /// before the read (Raft mode; `409 failed_precondition` otherwise).
    pub consistent: Option<bool>,
}

impl ReadParams {
    /// What the read must have seen.
    pub(super) fn after(&self) -> Result<ReadAfter, Status> {
        let version = after(self.min_version.as_deref())?;
        if self.session.is_none() && self.wait_ms.is_none() {
            return Ok(version);
        }
        let mut session: crate::session::Session = self
            .session
            .as_deref()
            .unwrap_or_default()
            .parse()
            .map_err(|e| Status::invalid_argument(format!("session: {e}")))?;
        if let ReadAfter::Version(token) = &version {
            session.merge_token(token);
        }
        let wait =
            self.wait_ms.filter(|ms| *ms > 0).map(|ms| std::time::Duration::from_millis(u64::from(ms)));
        Ok(ReadAfter::Session { session, wait })
    }
}

/// `min_version` as a [`ReadAfter`].
pub(super) fn after(min_version: Option<&str>) -> Result<ReadAfter, Status> {
    match min_version.filter(|v| !v.is_empty()) {
        None => Ok(ReadAfter::Anything),
        Some(v) => v
            .parse()
            .map(ReadAfter::Version)
            .map_err(|e: spectrum_replication::StoreError| Status::invalid_argument(e.to_string())),
    }
}

/// Parameters of a write.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WriteParams {
    /// The acknowledgement level; `quorum` when absent.
    pub ack: Option<Ack>,
}

impl WriteParams {
    /// The acknowledgement level.
    pub(super) fn level(&self) -> AckLevel {
        self.ack.unwrap_or_default().into()
    }
}

/// Parameters of a create (dataflow, resource).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CreateParams {
    /// The acknowledgement level; `quorum` when absent.
    pub ack: Option<Ack>,
    /// Replace an existing definition of the same name (else `409 already_exists`).
    pub replace: Option<bool>,
}

/// Parameters of an import.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ImportParams {
    /// The acknowledgement level; `quorum` when absent.
    pub ack: Option<Ack>,
    /// Say what the import would do, and write nothing.
    pub dry_run: Option<bool>,
}

/// Parameters of a listing of raw entries.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only keys starting with this (`settings/`); every key when absent.
    pub prefix: Option<String>,
    /// As for every read: answer once this write is held.
    pub min_version: Option<String>,
    /// Linearizable (Raft mode), as for `Get`.
    pub consistent: Option<bool>,
}

/// Parameters of a config put.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PutParams {
    /// The acknowledgement level; `quorum` when absent.
    pub ack: Option<Ack>,
    /// Compare-and-set (Raft mode): write only if the key holds this live
    /// version (else `409 failed_precondition` naming the version it holds).
    pub if_version: Option<String>,
    /// Compare-and-set (Raft mode): write only if the key holds no live entry.
    pub if_absent: Option<bool>,
}

impl PutParams {
    /// The acknowledgement level.
    pub(super) fn level(&self) -> AckLevel {
        self.ack.unwrap_or_default().into()
    }

    /// The condition: `None` for a plain put, `Some(None)` for `if_absent`,
    /// `Some(Some(v))` for `if_version`.
    pub(super) fn condition(&self) -> Result<Option<Option<spectrum_replication::VersionToken>>, Status> {
        match (self.if_absent.unwrap_or(false), self.if_version.as_deref().filter(|v| !v.is_empty())) {
            (false, None) => Ok(None),
            (true, None) => Ok(Some(None)),
            (false, Some(v)) => {
                v.parse().map(|v| Some(Some(v))).map_err(|e: spectrum_replication::StoreError| {
                    Status::invalid_argument(format!("if_version: {e}"))
                })
            }
            (true, Some(_)) => Err(Status::invalid_argument("if_absent and if_version exclude each other")),
        }
    }
}

/// Parameters of a resource check.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CheckParams {
    /// Resource names, comma-separated; every resource when absent.
    pub names: Option<String>,
    /// Check on the answering node only (else on every member).
    pub local: Option<bool>,
    /// As for every read: answer once this write is held.
    pub min_version: Option<String>,
}

impl CheckParams {
    /// The names asked for.
    pub(super) fn names(&self) -> Vec<String> {
        let names = self.names.as_deref().unwrap_or_default();
        names.split(',').map(str::trim).filter(|n| !n.is_empty()).map(str::to_owned).collect()
    }
}

/// Parameters of an audit log query.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// Only records at or after this time, in ms since the Unix epoch.
    pub since_ms: Option<u64>,
    /// Only records of this caller.
    pub user: Option<String>,
    /// At most this many records (default 100).
    pub limit: Option<u32>,
}

/// A user to add.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// The user's name.
    pub name: String,
    /// What the user may do.
    pub role: Role,
}

/// The caller's bearer token, to forward on calls this node makes for it
/// (resource checks on other members).
pub(super) fn bearer(headers: &http::HeaderMap) -> Option<Token> {
    crate::auth::bearer_token(headers.get_all(http::header::AUTHORIZATION).iter().map(|v| v.as_bytes()))
}
