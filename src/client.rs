//! [`AdminClient`]: the typed Rust client of a cluster's management API.
//!
//! Point it at the balancer (or any node): every call is answered by whichever
//! node the balancer picks, and every result is a [`model`](crate::model) type
//! that implements `Serialize` and `Display`. Writes take an [`AckLevel`] and
//! return a [`WriteReceipt`]; reads take a [`ReadAfter`], so a read after a write
//! sees it on whichever node answers:
//!
//! ```
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use spectrum::Cluster;
//! use spectrum::client::{AckLevel, AdminClient, ReadAfter};
//!
//! let cluster = Cluster::builder("client-docs".parse()?).size(3).start().await?;
//! let admin = AdminClient::connect(&cluster.balancer_addr(), None).await?;
//!
//! let written = admin.put("settings/greeting", "hello", AckLevel::All).await?;
//! assert_eq!(written.write.acked, 3);
//! let entry = admin.get("settings/greeting", ReadAfter::from(&written.write)).await?;
//! assert_eq!(entry.value, b"hello");
//! println!("{}", admin.status().await?);
//! cluster.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! # Errors
//!
//! Every call returns [`ClientError`]: the node's refusal with its gRPC code and
//! message ([`ClientError::Refused`]; `NOT_FOUND`, `INVALID_ARGUMENT` naming the
//! field, `UNAUTHENTICATED`, …), a connection failure, or an answer this client
//! cannot read.

mod consensus;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use spectrum_core::{PeerAddr, TransportConfig};
use thiserror::Error;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::auth::{Token, TokenInterceptor};
use crate::model::{
    AuditLog, BalancerSettings, ConfigExport, ConflictInfo, Conflicts, Dataflows, Entries, Entry,
    ImportReport, KeyWritten, LicenseInfo, LicenseInstalled, NameWritten, NodeStateChanged, NodeStatus,
    ResourceChecks, ResourceExport, ResourceInfo, ResourceStored, Resources, StrategyWritten, UserRevoked,
    UserToken, Users, WeightWritten,
};
use crate::pb::{
    InvalidAnswer, ack_to_wire, node_id, proto, read_after_to_wire, read_options_to_wire, receipt, required,
    role_to_wire,
};

mod watch;

pub use watch::{WatchEvents, WatchOptions};

pub use crate::auth::Role;
pub use crate::model::AuditQuery;
pub use crate::watch::{EventKind, WatchEvent, WatchPosition};

pub use crate::model::{ReadAfter, WriteReceipt};
pub use crate::session::Session;
pub use consensus::PutCondition;
pub use spectrum_balancer::strategy::{StrategyName, StrategySpec};
pub use spectrum_core::MemberState;
pub use spectrum_replication::AckLevel;

/// A management call failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The endpoint could not be reached.
    #[error("cannot reach {}://{}", if *tls { "https" } else { "http" }, endpoint.authority())]
    Connect {
        /// The address tried.
        endpoint: PeerAddr,
        /// Whether it was tried over TLS (`https://`).
        tls: bool,
        /// Why.
        #[source]
        source: tonic::transport::Error,
    },
    /// The node refused the call, or the call failed on the way.
    #[error("{message} ({code:?})")]
    Refused {
        /// The gRPC status code.
        code: tonic::Code,
        /// The node's message.
        message: String,
    },
    /// The node's answer could not be read.
    #[error(transparent)]
    InvalidAnswer(#[from] InvalidAnswer),
}

impl ClientError {
    /// The gRPC code of a refusal, `None` for other failures.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            ClientError::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }
}

impl From<tonic::Status> for ClientError {
    fn from(s: tonic::Status) -> Self {
        // tonic's client answers `CANCELLED` with `TimeoutExpired`'s text when
        // the channel's request timeout passes.
        if s.code() == tonic::Code::Cancelled && s.message() == tonic::TimeoutExpired(()).to_string() {
            // This side gave up: the call went, and may yet take effect.
            return ClientError::Refused {
                code: s.code(),
                message: "no answer within the client's request timeout: the call may still take effect \
                          (a write's outcome is unknown: read the key to see it, or send the write again \
                          with the same idempotency key)"
                    .to_owned(),
            };
        }
        ClientError::Refused { code: s.code(), message: spectrum_core::transport::status_with_causes(&s) }
    }
}

type Inner = proto::management_client::ManagementClient<InterceptedService<Channel, TokenInterceptor>>;

/// A channel to `endpoint`, connected now over `transport` (for other clients
/// of the same endpoint, such as a balancer's stats).
///
/// # Errors
///
/// [`ClientError::Connect`] when the endpoint cannot be reached or the TLS
/// handshake fails.
pub async fn connect_channel(
    endpoint: &PeerAddr,
    transport: &TransportConfig,
) -> Result<Channel, ClientError> {
    transport.endpoint(endpoint).connect().await.map_err(|source| ClientError::Connect {
        endpoint: endpoint.clone(),
        tls: transport.tls.is_some(),
        source,
    })
}

/// A typed management client. Cheap to clone: clones share one connection (and
/// its [session](Self::with_session), when it keeps one).
#[derive(Debug, Clone)]
pub struct AdminClient {
    inner: Inner,
    /// The channel and interceptor `inner` was made from, to make it again
    /// with other metadata.
    made_from: Arc<(Channel, TokenInterceptor)>,
    /// The session every write is merged into and every read sends, if kept.
    session: Option<Arc<Mutex<Session>>>,
    /// How long a node may wait to catch up with a read's session.
    read_wait: Option<Duration>,
}

/// A result that carries the receipt of the write it made (if it made one).
trait Written {
    fn receipt(&self) -> Option<&WriteReceipt>;
}

macro_rules! written {
    ($($result:ty),*; optional: $($optional:ty),*) => {
        $(impl Written for $result {
            fn receipt(&self) -> Option<&WriteReceipt> {
                Some(&self.write)
            }
        })*
        $(impl Written for $optional {
            fn receipt(&self) -> Option<&WriteReceipt> {
                self.write.as_ref()
            }
        })*
    };
}

written!(
    KeyWritten, LicenseInstalled, NameWritten, ResourceStored, NodeStateChanged, UserToken, UserRevoked,
    StrategyWritten, WeightWritten; optional: ImportReport, crate::model::ResealReport
);

/// A member's state an operator may set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NodeStateChange {
    /// Back to serving.
    Undrain,
    /// Finish in-flight work and take no new requests.
    Drain,
    /// Removed for good (a member that died): it counts for nothing and is refused
    /// if it returns, until undrained.
    Remove,
}

impl AdminClient {
    /// Connects to `endpoint` (a balancer or a node) and sends `token` with every
    /// call when one is given.
    ///
    /// # Errors
    ///
    /// [`ClientError::Connect`] when the endpoint cannot be reached.
    pub async fn connect(endpoint: &PeerAddr, token: Option<Token>) -> Result<Self, ClientError> {
        Self::connect_with(endpoint, token, &TransportConfig::default()).await
    }

    /// [`connect`](Self::connect) with `transport`'s settings: with its
    /// [`tls`](TransportConfig::tls), over TLS (`https://` to the endpoint's host and
    /// port, the server's certificate verified against the CA for that host).
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use spectrum::client::AdminClient;
    /// use spectrum::core::{TransportConfig, tls::TlsConfig};
    ///
    /// let tls = TlsConfig::from_ca_file("certs/ca.pem".as_ref())?;
    /// let transport = TransportConfig::default().with_tls(tls);
    /// let client = AdminClient::connect_with(&"lb.example:7100".parse()?, None, &transport).await?;
    /// println!("{:?}", client.status().await?);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`ClientError::Connect`] when the endpoint cannot be reached or the TLS
    /// handshake fails.
    pub async fn connect_with(
        endpoint: &PeerAddr,
        token: Option<Token>,
        transport: &TransportConfig,
    ) -> Result<Self, ClientError> {
        Ok(Self::from_channel(connect_channel(endpoint, transport).await?, token))
    }

    /// A client over an existing channel (a lazily connected one, a simulator's).
    pub fn from_channel(channel: Channel, token: Option<Token>) -> Self {
        let interceptor = TokenInterceptor::new(token);
        let inner = Self::inner(&channel, &interceptor);
        Self { inner, made_from: Arc::new((channel, interceptor)), session: None, read_wait: None }
    }

    fn inner(channel: &Channel, interceptor: &TokenInterceptor) -> Inner {
        let max = spectrum_core::transport::DEFAULT_MAX_MESSAGE_BYTES;
        proto::management_client::ManagementClient::with_interceptor(channel.clone(), interceptor.clone())
            .max_decoding_message_size(max)
    }

    /// This client, sending `key` as the idempotency key of every call (see
    /// [`idempotency`](crate::management::idempotency)): in Raft mode a write
    /// sent again through it, after an answer that left its outcome unknown, is
    /// answered with the first attempt's decision and applied once. Use one
    /// fresh key (a UUID) per write, for that write and its retries only; keys
    /// are remembered for about a minute.
    ///
    /// ```no_run
    /// # async fn run(admin: spectrum::client::AdminClient) -> Result<(), Box<dyn std::error::Error>> {
    /// use spectrum::client::PutCondition;
    ///
    /// let once = admin.with_idempotency_key("order-4711-region".parse()?);
    /// let mut outcome = once.put_if("settings/region", "eu-west", PutCondition::Absent).await;
    /// if outcome.as_ref().err().and_then(|e| e.code()) == Some(tonic::Code::Unavailable) {
    ///     // Outcome unknown: the retry gets the first decision, never a second write.
    ///     outcome = once.put_if("settings/region", "eu-west", PutCondition::Absent).await;
    /// }
    /// outcome?;
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn with_idempotency_key(mut self, key: crate::management::idempotency::IdempotencyKey) -> Self {
        let (channel, interceptor) = &*self.made_from;
        let interceptor = interceptor.clone().with_idempotency_key(&key);
        self.inner = Self::inner(channel, &interceptor);
        self.made_from = Arc::new((channel.clone(), interceptor));
        self
    }

    /// This client, keeping a session that starts at `session` (empty:
    /// `Session::default()`): every write's version token is merged into it and
    /// every read sends it, so each read sees every write made through this
    /// client (and its clones) whichever node answers.
    ///
    /// ```no_run
    /// # async fn run(admin: spectrum::client::AdminClient) -> Result<(), Box<dyn std::error::Error>> {
    /// use spectrum::client::{AckLevel, ReadAfter, Session};
    ///
    /// let admin = admin.with_session(Session::default());
    /// admin.put("settings/greeting", "hello", AckLevel::Local).await?;
    /// // Through a balancer, whichever node answers waits until it holds the write.
    /// let entry = admin.get("settings/greeting", ReadAfter::Anything).await?;
    /// assert_eq!(entry.value, b"hello");
    /// println!("resume later with {}", admin.session().unwrap_or_default());
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn with_session(mut self, session: Session) -> Self {
        self.session = Some(Arc::new(Mutex::new(session)));
        self
    }

    /// This client, letting a node wait up to `wait` to catch up with a read's
    /// session or version (nodes cap it at 30 s; their default is 2 s).
    ///
    /// Each call is also bounded by the client's own request timeout
    /// ([`TransportConfig::request_timeout`](spectrum_core::TransportConfig::request_timeout),
    /// 10 s from [`connect`](Self::connect)): for a longer wait, connect with
    /// [`connect_with`](Self::connect_with) and a request timeout that outlasts
    /// it (through a balancer that may try three nodes, three times it), or the
    /// call ends `CANCELLED` before the node can say what it is missing.
    #[must_use]
    pub fn with_read_wait(mut self, wait: Duration) -> Self {
        self.read_wait = Some(wait);
        self
    }

    /// The session this client keeps (every write made through it so far), if
    /// it keeps one.
    pub fn session(&self) -> Option<Session> {
        self.session.as_ref().map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).clone())
    }

    /// Replaces the session this client keeps (starting to keep one if it did not).
    pub fn set_session(&mut self, session: Session) {
        match &self.session {
            Some(kept) => *kept.lock().unwrap_or_else(PoisonError::into_inner) = session,
            None => self.session = Some(Arc::new(Mutex::new(session))),
        }
    }

    fn call(&self) -> Inner {
        self.inner.clone()
    }

    /// Merges the write `result` made into the session, if one is kept.
    fn noted<T: Written>(&self, result: T) -> T {
        if let (Some(kept), Some(write)) = (&self.session, result.receipt()) {
            kept.lock().unwrap_or_else(PoisonError::into_inner).merge_token(&write.version);
        }
        result
    }

    /// The read options to send with a read after `after`: its session merged with
    /// the kept one, and this client's wait (a lone version goes as `min_version`).
    fn read_options(&self, after: &ReadAfter) -> Option<proto::ReadOptions> {
        let mut session = match after {
            ReadAfter::Session { session, .. } => session.clone(),
            _ => Session::default(),
        };
        session.merge(&self.session().unwrap_or_default());
        let wait = match after {
            ReadAfter::Session { wait: Some(wait), .. } => Some(*wait),
            _ => self.read_wait,
        };
        if session.is_empty() && wait.is_none() {
            return None;
        }
        read_options_to_wire(&ReadAfter::Session { session, wait })
    }

    /// Reads one entry of the configuration database.
    ///
    /// # Errors
    ///
    /// `NOT_FOUND` when the key holds nothing; `INVALID_ARGUMENT` for a key outside
    /// the namespaces; `UNAVAILABLE` when the answering node has not caught up with
    /// `after` within its wait.
    pub async fn get(&self, key: &str, after: impl Into<ReadAfter>) -> Result<Entry, ClientError> {
        let after: ReadAfter = after.into();
        let request = proto::GetRequest {
            key: key.to_owned(),
            min_version: read_after_to_wire(&after),
            read: self.read_options(&after),
        };
        let answer = self.call().get(request).await?.into_inner();
        let entry = required("entry", answer.entry)?;
        Ok(entry.try_into()?)
    }

    /// Every live entry whose key starts with `prefix`.
    ///
    /// # Errors
    ///
    /// `UNAVAILABLE` when the node has not caught up with `after`.
    pub async fn list(&self, prefix: &str, after: impl Into<ReadAfter>) -> Result<Entries, ClientError> {
        let after: ReadAfter = after.into();
        let request = proto::ListRequest {
            prefix: prefix.to_owned(),
            min_version: read_after_to_wire(&after),
            read: self.read_options(&after),
        };
        let answer = self.call().list(request).await?.into_inner();
        Ok(Entries(answer.entries.into_iter().map(Entry::try_from).collect::<Result<_, _>>()?))
    }

    /// The open conflicts of keys starting with `prefix`, as the answering node
    /// holds them (every node agrees once it has every write): writes to one key
    /// made on different nodes without seeing each other, each with the version,
    /// node and time of the write the key kept and of the one it lost. A later
    /// write to the key through a node that holds the conflict clears it.
    ///
    /// # Errors
    ///
    /// `UNAVAILABLE` when the node has not caught up with `after`.
    pub async fn conflicts(
        &self,
        prefix: &str,
        after: impl Into<ReadAfter>,
    ) -> Result<Conflicts, ClientError> {
        let after: ReadAfter = after.into();
        let request = proto::ListConflictsRequest {
            prefix: prefix.to_owned(),
            min_version: read_after_to_wire(&after),
            read: self.read_options(&after),
        };
        let answer = self.call().list_conflicts(request).await?.into_inner();
        let found = answer.conflicts.into_iter().map(ConflictInfo::try_from).collect::<Result<_, _>>()?;
        Ok(Conflicts(found))
    }

    /// Writes `value` at `key`, acknowledged at `ack`.
    ///
    /// # Errors
    ///
    /// `INVALID_ARGUMENT` naming what is wrong with the key or value (a license or
    /// resource is validated as such); `PERMISSION_DENIED` for `membership/`;
    /// `DEADLINE_EXCEEDED` when the acknowledgement did not come in time (the write
    /// is applied and keeps replicating).
    pub async fn put(
        &self,
        key: &str,
        value: impl Into<Vec<u8>>,
        ack: AckLevel,
    ) -> Result<KeyWritten, ClientError> {
        let request = proto::PutRequest {
            key: key.to_owned(),
            value: value.into(),
            ack: ack_to_wire(ack),
            ..proto::PutRequest::default()
        };
        let write = self.call().put(request).await?.into_inner().try_into()?;
        Ok(self.noted(KeyWritten { key: key.to_owned(), deleted: false, write }))
    }

    /// Deletes `key`.
    ///
    /// # Errors
    ///
    /// `NOT_FOUND` when it holds nothing; as [`put`](Self::put) otherwise.
    pub async fn delete(&self, key: &str, ack: AckLevel) -> Result<KeyWritten, ClientError> {
        let request = proto::DeleteRequest { key: key.to_owned(), ack: ack_to_wire(ack) };
        let write = self.call().delete(request).await?.into_inner().try_into()?;
        Ok(self.noted(KeyWritten { key: key.to_owned(), deleted: true, write }))
    }

    /// The answering node's view of the cluster.
    ///
    /// # Errors
    ///
    /// As any call.
    pub async fn status(&self) -> Result<NodeStatus, ClientError> {
        Ok(self.call().status(proto::StatusRequest {}).await?.into_inner().try_into()?)
    }

    /// Installs a license document (JSON: owner, seats, expires) under `name`
    /// (`main` when `None`).
    ///
    /// # Errors
    ///
    /// `INVALID_ARGUMENT` naming the bad field, or for an expired license.
    pub async fn set_license(
        &self,
        name: Option<&str>,
        document: impl Into<Vec<u8>>,
        ack: AckLevel,
    ) -> Result<LicenseInstalled, ClientError> {
        let request = proto::SetLicenseRequest {
            license: document.into(),
            name: name.unwrap_or_default().to_owned(),
            ack: ack_to_wire(ack),
        };
        let a = self.call().set_license(request).await?.into_inner();
        let license = required("license", a.license)?;
        Ok(self.noted(LicenseInstalled { license: license.try_into()?, write: receipt(a.write)? }))
    }

    /// The license `name` (`main` when `None`).
    ///
    /// # Errors
    ///
    /// `NOT_FOUND` when none is installed.
    pub async fn license(
        &self,
        name: Option<&str>,
        after: impl Into<ReadAfter>,
    ) -> Result<LicenseInfo, ClientError> {
        let after: ReadAfter = after.into();
        let request = proto::ShowLicenseRequest {
            name: name.unwrap_or_default().to_owned(),
            min_version: read_after_to_wire(&after),
            read: self.read_options(&after),
        };
        let a = self.call().show_license(request).await?.into_inner();
        let license = required("license", a.license)?;
        Ok(license.try_into()?)
    }

    /// Stores the dataflow `name` (a JSON object); with `replace` false, a name
    /// already taken is refused.
    ///
    /// # Errors
    ///
    /// `ALREADY_EXISTS`; `INVALID_ARGUMENT` for a bad name or definition.
    pub async fn create_dataflow(
        &self,
        name: &str,
        definition: impl Into<Vec<u8>>,
        replace: bool,
        ack: AckLevel,
    ) -> Result<NameWritten, ClientError> {
        let request = proto::CreateDataflowRequest {
            name: name.to_owned(),
            definition: definition.into(),
            replace,
            ack: ack_to_wire(ack),
        };
        let write = self.call().create_dataflow(request).await?.into_inner();
        Ok(self.noted(NameWritten {
            what: "dataflow",
            name: name.to_owned(),
            deleted: false,
            write: write.try_into()?,
        }))
    }

    /// Every dataflow.
    ///
    /// # Errors
    ///
    /// As any read.
    pub async fn dataflows(&self, after: impl Into<ReadAfter>) -> Result<Dataflows, ClientError> {
        let after: ReadAfter = after.into();
        let request = proto::ListDataflowsRequest {
            min_version: read_after_to_wire(&after),
            read: self.read_options(&after),
        };
        let a = self.call().list_dataflows(request).await?.into_inner();
        Ok(Dataflows(a.dataflows.into_iter().map(TryInto::try_into).collect::<Result<_, _>>()?))
    }

    /// The dataflow `name`.
    ///
    /// # Errors
    ///
    /// `NOT_FOUND`.
    pub async fn dataflow(
        &self,
        name: &str,
        after: impl Into<ReadAfter>,
    ) -> Result<crate::model::Dataflow, ClientError> {
        let after: ReadAfter = after.into();
        let request = proto::ShowDataflowRequest {
            name: name.to_owned(),
            min_version: read_after_to_wire(&after),
            read: self.read_options(&after),
        };
        let a = self.call().show_dataflow(request).await?.into_inner();
        let d = required("dataflow", a.dataflow)?;
        Ok(d.try_into()?)
    }

    /// Deletes the dataflow `name`.
    ///
    /// # Errors
    ///
    /// `NOT_FOUND`.
    pub async fn delete_dataflow(&self, name: &str, ack: AckLevel) -> Result<NameWritten, ClientError> {
        let request = proto::DeleteDataflowRequest { name: name.to_owned(), ack: ack_to_wire(ack) };
        let write = self.call().delete_dataflow(request).await?.into_inner();
        Ok(self.noted(NameWritten {
            what: "dataflow",
            name: name.to_owned(),
            deleted: true,
            write: write.try_into()?,
        }))
    }

    /// Stores a resource definition (JSON; secrets in clear are sealed by the node
    /// before anything is stored). With `replace` false, a name already taken is
    /// refused.
    ///
    /// # Errors
    ///
    /// `INVALID_ARGUMENT` naming the field at fault; `ALREADY_EXISTS`;
    /// `FAILED_PRECONDITION` when the node has no cluster key to seal a secret with.
    pub async fn create_resource(
        &self,
        definition: impl Into<Vec<u8>>,
        replace: bool,
        ack: AckLevel,
    ) -> Result<ResourceStored, ClientError> {
        let request =
            proto::CreateResourceRequest { definition: definition.into(), replace, ack: ack_to_wire(ack) };
        let a = self.call().create_resource(request).await?.into_inner();
        let resource = required("resource", a.resource)?;
        Ok(self.noted(ResourceStored { resource: resource.try_into()?, write: receipt(a.write)? }))
    }

    /// Every resource definition, redacted.
    ///
    /// # Errors
    ///
    /// As any read.
    pub async fn resources(&self, after: impl Into<ReadAfter>) -> Result<Resources, ClientError> {
        let after: ReadAfter = after.into();
        let request = proto::ListResourcesRequest {
            min_version: read_after_to_wire(&after),
            read: self.read_options(&after),
        };
        let a = self.call().list_resources(request).await?.into_inner();
        Ok(Resources(a.resources.into_iter().map(TryInto::try_into).collect::<Result<_, _>>()?))
    }

    /// The resource `name`, redacted.
    ///
    /// # Errors
    ///
    /// `NOT_FOUND`; `INVALID_ARGUMENT` for a bad name.
    pub async fn resource(
        &self,
        name: &str,
        after: impl Into<ReadAfter>,
    ) -> Result<ResourceInfo, ClientError> {
        let after: ReadAfter = after.into();
        let request = proto::ShowResourceRequest {
            name: name.to_owned(),
            min_version: read_after_to_wire(&after),
            read: self.read_options(&after),
        };
        let a = self.call().show_resource(request).await?.into_inner();
        let r = required("resource", a.resource)?;
        Ok(r.try_into()?)
    }

    /// Deletes the resource `name`.
    ///
    /// # Errors
    ///
    /// `NOT_FOUND`.
    pub async fn delete_resource(&self, name: &str, ack: AckLevel) -> Result<NameWritten, ClientError> {
        let request = proto::DeleteResourceRequest { name: name.to_owned(), ack: ack_to_wire(ack) };
        let write = self.call().delete_resource(request).await?.into_inner();
        Ok(self.noted(NameWritten {
            what: "resource",
            name: name.to_owned(),
            deleted: true,
            write: write.try_into()?,
        }))
    }

    /// Checks the resources `names` (every resource when empty) on every member.
    ///
    /// # Errors
    ///
    /// `NOT_FOUND` for a name with no definition. A member that cannot be asked is
    /// reported in its entry, not as an error.
    pub async fn check_resources(&self, names: &[String]) -> Result<ResourceChecks, ClientError> {
        let request = proto::CheckResourcesRequest {
            names: names.to_vec(),
            local_only: false,
            min_version: String::new(),
            read: self.read_options(&ReadAfter::Anything),
        };
        let a = self.call().check_resources(request).await?.into_inner();
        Ok(ResourceChecks { nodes: a.nodes.into_iter().map(TryInto::try_into).collect::<Result<_, _>>()? })
    }

    /// Exports every resource definition, secrets redacted.
    ///
    /// # Errors
    ///
    /// As any read.
    pub async fn export_resources(&self, after: impl Into<ReadAfter>) -> Result<ResourceExport, ClientError> {
        let after: ReadAfter = after.into();
        let request = proto::ExportResourcesRequest {
            min_version: read_after_to_wire(&after),
            read: self.read_options(&after),
        };
        let a = self.call().export_resources(request).await?.into_inner();
        let served_by = node_id("served_by", &a.served_by)?;
        Ok(ResourceExport { file: a.file, count: a.count, served_by })
    }

    /// Imports an export file; with `dry_run`, only says what it would do.
    ///
    /// # Errors
    ///
    /// `INVALID_ARGUMENT` for a malformed file; nothing is written then.
    pub async fn import_resources(
        &self,
        file: impl Into<Vec<u8>>,
        dry_run: bool,
        ack: AckLevel,
    ) -> Result<ImportReport, ClientError> {
        let request = proto::ImportResourcesRequest { file: file.into(), dry_run, ack: ack_to_wire(ack) };
        let a = self.call().import_resources(request).await?.into_inner();
        Ok(self.noted(import_report(dry_run, a.applied, a.source_cluster, a.plan, a.write)?))
    }

    /// Exports the whole configuration (licenses, dataflows, settings and
    /// resources, resource secrets redacted) as one file.
    ///
    /// # Errors
    ///
    /// As any read.
    pub async fn export_config(&self, after: impl Into<ReadAfter>) -> Result<ConfigExport, ClientError> {
        let after: ReadAfter = after.into();
        let request = proto::ExportConfigRequest {
            min_version: read_after_to_wire(&after),
            read: self.read_options(&after),
        };
        let a = self.call().export_config(request).await?.into_inner();
        Ok(ConfigExport {
            file: a.file,
            licenses: a.licenses,
            dataflows: a.dataflows,
            settings: a.settings,
            resources: a.resources,
            served_by: node_id("served_by", &a.served_by)?,
        })
    }

    /// Imports a configuration export file in one write; with `dry_run`, only says
    /// what it would do. The plan names items as `<namespace>/<name>`.
    ///
    /// # Errors
    ///
    /// `INVALID_ARGUMENT` naming a malformed part or item (an expired license
    /// included); nothing is written then.
    pub async fn import_config(
        &self,
        file: impl Into<Vec<u8>>,
        dry_run: bool,
        ack: AckLevel,
    ) -> Result<ImportReport, ClientError> {
        let request = proto::ImportConfigRequest { file: file.into(), dry_run, ack: ack_to_wire(ack) };
        let a = self.call().import_config(request).await?.into_inner();
        Ok(self.noted(import_report(dry_run, a.applied, a.source_cluster, a.plan, a.write)?))
    }

    /// Drains or undrains the member `node`.
    ///
    /// # Errors
    ///
    /// `NOT_FOUND` for an unknown member; `FAILED_PRECONDITION` for one that left.
    pub async fn set_node_state(
        &self,
        node: &str,
        change: NodeStateChange,
        ack: AckLevel,
    ) -> Result<NodeStateChanged, ClientError> {
        let state = match change {
            NodeStateChange::Drain => proto::NodeState::Draining,
            NodeStateChange::Undrain => proto::NodeState::Active,
            NodeStateChange::Remove => proto::NodeState::Removed,
        };
        let request = proto::SetNodeStateRequest {
            node_id: node.to_owned(),
            state: state as i32,
            ack: ack_to_wire(ack),
        };
        let a = self.call().set_node_state(request).await?.into_inner();
        let member = required("member", a.member)?;
        let previous = match a.previous_state.as_str() {
            "" => None,
            text => Some(text.parse().map_err(|e| ClientError::from(crate::pb::bad("previous_state", e)))?),
        };
        Ok(self.noted(NodeStateChanged { member: member.try_into()?, previous, write: receipt(a.write)? }))
    }

    /// Adds the user `name` with `role`; the answer holds the user's token, in
    /// clear, the only time it is ever shown. Needs the admin role.
    ///
    /// # Errors
    ///
    /// `ALREADY_EXISTS` for a name taken (even by a revoked user);
    /// `INVALID_ARGUMENT` for a bad or reserved name; `PERMISSION_DENIED`.
    pub async fn add_user(&self, name: &str, role: Role, ack: AckLevel) -> Result<UserToken, ClientError> {
        let request =
            proto::AddUserRequest { name: name.to_owned(), role: role_to_wire(role), ack: ack_to_wire(ack) };
        Ok(self.noted(self.call().add_user(request).await?.into_inner().try_into()?))
    }

    /// Every user, revoked ones included (never their tokens). Needs the admin role.
    ///
    /// # Errors
    ///
    /// `PERMISSION_DENIED`; as any read.
    pub async fn users(&self, after: impl Into<ReadAfter>) -> Result<Users, ClientError> {
        let after: ReadAfter = after.into();
        let request = proto::ListUsersRequest {
            min_version: read_after_to_wire(&after),
            read: self.read_options(&after),
        };
        let a = self.call().list_users(request).await?.into_inner();
        Ok(Users(a.users.into_iter().map(TryInto::try_into).collect::<Result<_, _>>()?))
    }

    /// Revokes the token of user `name` on every node (within one sync interval).
    /// Needs the admin role.
    ///
    /// # Errors
    ///
    /// `NOT_FOUND`; `PERMISSION_DENIED`.
    pub async fn revoke_user(&self, name: &str, ack: AckLevel) -> Result<UserRevoked, ClientError> {
        let request = proto::RevokeUserRequest { name: name.to_owned(), ack: ack_to_wire(ack) };
        let a = self.call().revoke_user(request).await?.into_inner();
        let user = required("user", a.user)?;
        Ok(self.noted(UserRevoked { user: user.try_into()?, write: receipt(a.write)? }))
    }

    /// Gives user `name` a new token (returned, in clear, once); the old one stops
    /// working. Needs the admin role.
    ///
    /// # Errors
    ///
    /// `NOT_FOUND`; `FAILED_PRECONDITION` for a revoked user; `PERMISSION_DENIED`.
    pub async fn rotate_user(&self, name: &str, ack: AckLevel) -> Result<UserToken, ClientError> {
        let request = proto::RotateUserRequest { name: name.to_owned(), ack: ack_to_wire(ack) };
        Ok(self.noted(self.call().rotate_user(request).await?.into_inner().try_into()?))
    }

    /// The audit log as the answering node holds it, newest first. Needs the
    /// operator role.
    ///
    /// # Errors
    ///
    /// `PERMISSION_DENIED`; as any read.
    pub async fn audit(&self, query: &AuditQuery) -> Result<AuditLog, ClientError> {
        let request = proto::ListAuditRequest {
            since_ms: query.since_ms,
            user: query.user.clone().unwrap_or_default(),
            limit: query.limit.unwrap_or(0),
            read: self.read_options(&query.after),
        };
        let a = self.call().list_audit(request).await?.into_inner();
        Ok(AuditLog(a.entries.into_iter().map(TryInto::try_into).collect::<Result<_, _>>()?))
    }

    /// Reseals every resource secret still sealed with a previous cluster key with
    /// the current one (`spectrum key rotate`; see the README's key rotation).
    ///
    /// # Errors
    ///
    /// `PERMISSION_DENIED` below admin; `FAILED_PRECONDITION` when the answering node
    /// has no cluster key.
    pub async fn reseal_secrets(&self, ack: AckLevel) -> Result<crate::model::ResealReport, ClientError> {
        let a = self
            .call()
            .reseal_secrets(proto::ResealSecretsRequest { ack: ack_to_wire(ack) })
            .await?
            .into_inner();
        Ok(self.noted(crate::model::ResealReport {
            resealed: a.resealed,
            current: a.current,
            unreadable: a.unreadable,
            write: a.write.map(TryInto::try_into).transpose()?,
        }))
    }

    /// Sets the strategy every balancer uses, overriding each balancer's file
    /// (balancers that follow membership switch within one discovery interval,
    /// without a failed request). Needs the admin role.
    ///
    /// ```no_run
    /// # async fn run(admin: spectrum::client::AdminClient) -> Result<(), Box<dyn std::error::Error>> {
    /// use spectrum::client::{AckLevel, StrategyName, StrategySpec};
    ///
    /// let spec = StrategySpec::new(StrategyName::ConsistentHash, Some("x-tenant"), Some(1.5))?;
    /// let set = admin.set_balancer_strategy(&spec, AckLevel::All).await?;
    /// println!("{set}");
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// `PERMISSION_DENIED` below admin; `INVALID_ARGUMENT` naming the field when
    /// the node refuses the spec.
    pub async fn set_balancer_strategy(
        &self,
        spec: &StrategySpec,
        ack: AckLevel,
    ) -> Result<StrategyWritten, ClientError> {
        let request =
            proto::SetBalancerStrategyRequest { strategy: Some(spec.into()), ack: ack_to_wire(ack) };
        let a = self.call().set_balancer_strategy(request).await?.into_inner();
        Ok(self.noted(StrategyWritten { strategy: Some(spec.clone()), write: receipt(a.write)? }))
    }

    /// Clears the strategy set in the database: every balancer goes back to its
    /// own file's. Needs the admin role.
    ///
    /// # Errors
    ///
    /// `NOT_FOUND` when none is set; `PERMISSION_DENIED` below admin.
    pub async fn clear_balancer_strategy(&self, ack: AckLevel) -> Result<StrategyWritten, ClientError> {
        let request = proto::ClearBalancerStrategyRequest { ack: ack_to_wire(ack) };
        let write = self.call().clear_balancer_strategy(request).await?.into_inner().try_into()?;
        Ok(self.noted(StrategyWritten { strategy: None, write }))
    }

    /// Sets member `node`'s weight for every balancer, overriding balancer files
    /// (`0`: no requests while another node can take them; weights matter to
    /// `weighted_round_robin`). Needs the admin role.
    ///
    /// # Errors
    ///
    /// `NOT_FOUND` for a node that is not a member; `INVALID_ARGUMENT` for a bad
    /// id; `PERMISSION_DENIED` below admin.
    pub async fn set_balancer_weight(
        &self,
        node: &str,
        weight: u32,
        ack: AckLevel,
    ) -> Result<WeightWritten, ClientError> {
        let request =
            proto::SetBalancerWeightRequest { node_id: node.to_owned(), weight, ack: ack_to_wire(ack) };
        let write = self.call().set_balancer_weight(request).await?.into_inner().try_into()?;
        Ok(self.noted(WeightWritten { node: node_id("node", node)?, weight: Some(weight), write }))
    }

    /// Clears member `node`'s weight: balancer files decide it again (default 1).
    /// Needs the admin role.
    ///
    /// # Errors
    ///
    /// `NOT_FOUND` when none is set for it; `PERMISSION_DENIED` below admin.
    pub async fn clear_balancer_weight(
        &self,
        node: &str,
        ack: AckLevel,
    ) -> Result<WeightWritten, ClientError> {
        let request = proto::ClearBalancerWeightRequest { node_id: node.to_owned(), ack: ack_to_wire(ack) };
        let write = self.call().clear_balancer_weight(request).await?.into_inner().try_into()?;
        Ok(self.noted(WeightWritten { node: node_id("node", node)?, weight: None, write }))
    }

    /// What the database sets for every balancer: the strategy (if any) and the
    /// weights. Each balancer's own status (`spectrum status` through it) says
    /// which strategy it runs now.
    ///
    /// # Errors
    ///
    /// As any read.
    pub async fn balancer_settings(
        &self,
        after: impl Into<ReadAfter>,
    ) -> Result<BalancerSettings, ClientError> {
        let after: ReadAfter = after.into();
        let request = proto::ShowBalancerSettingsRequest {
            min_version: read_after_to_wire(&after),
            read: self.read_options(&after),
        };
        Ok(self.call().show_balancer_settings(request).await?.into_inner().try_into()?)
    }

    /// Like [`list`](Self::list), bounded by `timeout` (for pollers such as the
    /// balancer's discovery, which must move on to the next address).
    ///
    /// # Errors
    ///
    /// `DEADLINE_EXCEEDED` when no answer came in time.
    pub async fn list_within(&self, prefix: &str, timeout: Duration) -> Result<Entries, ClientError> {
        match tokio::time::timeout(timeout, self.list(prefix, ReadAfter::Anything)).await {
            Ok(answer) => answer,
            Err(_) => Err(ClientError::Refused {
                code: tonic::Code::DeadlineExceeded,
                message: format!("no answer within {} ms", timeout.as_millis()),
            }),
        }
    }
}

/// The report of an import (of resources or of the whole configuration) from its
/// answer's fields.
fn import_report(
    dry_run: bool,
    applied: bool,
    source_cluster: String,
    plan: Option<proto::ImportPlan>,
    write: Option<proto::WriteResult>,
) -> Result<ImportReport, ClientError> {
    Ok(ImportReport {
        dry_run,
        applied,
        source_cluster,
        plan: plan.unwrap_or_default().into(),
        write: write.map(TryInto::try_into).transpose()?,
    })
}

#[cfg(test)]
mod timeout_tests {
    use super::*;

    #[test]
    fn a_call_this_client_gave_up_on_says_its_outcome_is_unknown() {
        let gave_up = ClientError::from(tonic::Status::cancelled(tonic::TimeoutExpired(()).to_string()));
        let text = gave_up.to_string();
        assert!(text.contains("outcome is unknown") && text.contains("idempotency key"), "{text}");
        let other = ClientError::from(tonic::Status::cancelled("the server went away"));
        assert!(other.to_string().contains("the server went away"), "{other}");
    }
}
