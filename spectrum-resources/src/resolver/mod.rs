//! The [`ResourceResolver`] trait and its reference implementations.
//!
//! A resolver turns a [`ResourceDefinition`] into something usable on one node (a
//! [`Resolved`] path or endpoint) and checks whether the resource is available there
//! ([`Availability`]). Each reference resolver handles some kinds; a
//! [`CompositeResolver`] puts them together so a node can resolve every kind:
//!
//! | resolver | handles | resolves to | `check` |
//! |---|---|---|---|
//! | [`LocalPathResolver`] | databases at a [`Local`](crate::DataLocation::Local) location | the node's override or the common path | the path exists and is readable |
//! | [`SharedLocationResolver`] | databases at a [`Shared`](crate::DataLocation::Shared) location | the share's path | the path exists and is readable, within a timeout |
//! | [`EndpointResolver`] | JDBC, file servers, web services | host and port (a path for a local file server) | a TCP connection within a timeout |
//! | [`CompositeResolver`] | whatever its members handle | the first member that handles the kind | that member's check |

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use spectrum_core::NodeId;

use crate::definition::{Endpoint, ResourceDefinition, ResourceSpec};
use crate::error::ResolveError;
use crate::name::ResourceName;

mod composite;
mod endpoint;
mod fs;
mod local;
mod shared;

pub use composite::CompositeResolver;
pub use endpoint::{DEFAULT_CONNECT_TIMEOUT, EndpointResolver};
pub use local::LocalPathResolver;
pub use shared::{DEFAULT_SHARED_TIMEOUT, SharedLocationResolver};

/// Turns resource definitions into something usable on a node, and checks their
/// availability there.
///
/// Resolving is I/O (file systems, network mounts, sockets), so the trait is async
/// (`#[async_trait]`), `Send + Sync + Debug + 'static`, and held as
/// `Arc<dyn ResourceResolver>`; `Arc<R>` and `Box<R>` forward to `R`.
///
/// # Contract
///
/// - [`handles`](Self::handles) is pure and cheap: the same spec always gets the same
///   answer, and it does no I/O.
/// - [`resolve`](Self::resolve) of a definition the resolver does not handle returns
///   [`ResolveError::Unsupported`].
/// - A path-based resolution returns [`Resolved::Path`] only for a path that exists on
///   this node; a missing one is [`ResolveError::NotFound`].
/// - [`check`](Self::check) never panics and never fails: whatever goes wrong is an
///   unavailable [`Availability`] whose `detail` says why.
/// - Neither method logs or returns a secret.
#[async_trait]
pub trait ResourceResolver: Send + Sync + fmt::Debug + 'static {
    /// Whether this resolver handles definitions of this spec's kind (and location).
    fn handles(&self, spec: &ResourceSpec) -> bool;

    /// Resolves `def` on `node` into something usable there.
    ///
    /// # Errors
    ///
    /// [`ResolveError::Unsupported`] for a kind this resolver does not handle;
    /// [`ResolveError::NotFound`] or [`ResolveError::NotReadable`] for a path that
    /// is missing or unreadable on this node; [`ResolveError::TimedOut`] when the file
    /// system does not answer in time; [`ResolveError::InvalidDefinition`] for a
    /// definition that does not validate; [`ResolveError::Failed`] for failures of the
    /// resolver's own.
    async fn resolve(&self, def: &ResourceDefinition, node: &NodeId) -> Result<Resolved, ResolveError>;

    /// Checks whether `def` is available on `node`.
    ///
    /// The default resolves the definition and reports the result: a resolver whose
    /// `resolve` already proves availability (a readable path) needs nothing more.
    /// Override it when availability takes more than resolving (connecting to an
    /// endpoint); without an override, an endpoint would be reported available as
    /// soon as its host and port parse.
    async fn check(&self, def: &ResourceDefinition, node: &NodeId) -> Availability {
        Availability::from_result(&self.resolve(def, node).await)
    }
}

#[async_trait]
impl<R: ResourceResolver + ?Sized> ResourceResolver for Arc<R> {
    fn handles(&self, spec: &ResourceSpec) -> bool {
        (**self).handles(spec)
    }

    async fn resolve(&self, def: &ResourceDefinition, node: &NodeId) -> Result<Resolved, ResolveError> {
        (**self).resolve(def, node).await
    }

    async fn check(&self, def: &ResourceDefinition, node: &NodeId) -> Availability {
        (**self).check(def, node).await
    }
}

#[async_trait]
impl<R: ResourceResolver + ?Sized> ResourceResolver for Box<R> {
    fn handles(&self, spec: &ResourceSpec) -> bool {
        (**self).handles(spec)
    }

    async fn resolve(&self, def: &ResourceDefinition, node: &NodeId) -> Result<Resolved, ResolveError> {
        (**self).resolve(def, node).await
    }

    async fn check(&self, def: &ResourceDefinition, node: &NodeId) -> Availability {
        (**self).check(def, node).await
    }
}

/// What a definition resolves to on a node. More forms may come (a URL, an open
/// pool), hence `#[non_exhaustive]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Resolved {
    /// A local path that exists on this node.
    Path(PathBuf),
    /// A host and port to connect to (JDBC, file server, web service), without
    /// credentials: those stay in the definition.
    Endpoint(Endpoint),
}

impl fmt::Display for Resolved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Path(path) => write!(f, "path {}", path.display()),
            Self::Endpoint(endpoint) => write!(f, "endpoint {endpoint}"),
        }
    }
}

/// Whether a resource is available on a node, and why (or why not).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Availability {
    /// Whether the resource can be used on the node.
    pub available: bool,
    /// What was found, for people: the path or endpoint, or why it cannot be used.
    pub detail: String,
}

impl Availability {
    /// An available resource.
    pub fn available(detail: impl Into<String>) -> Self {
        Self { available: true, detail: detail.into() }
    }

    /// An unavailable resource; `detail` says why.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self { available: false, detail: detail.into() }
    }

    /// The availability a resolution shows: available with what it resolved to, or
    /// unavailable with the error.
    pub fn from_result(result: &Result<Resolved, ResolveError>) -> Self {
        match result {
            Ok(resolved) => Self::available(resolved.to_string()),
            Err(err) => Self::unavailable(err.to_string()),
        }
    }
}

impl fmt::Display for Availability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = if self.available { "available" } else { "unavailable" };
        write!(f, "{state}: {}", self.detail)
    }
}

/// The availability of one named resource, as node status reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceCheck {
    /// The resource's name.
    pub name: ResourceName,
    /// The resource's kind (`"database"`, `"jdbc"`, …).
    pub kind: String,
    /// Whether it is available on the node.
    pub availability: Availability,
}

/// Helpers for every [`ResourceResolver`].
#[async_trait]
pub trait ResolverExt: ResourceResolver {
    /// Checks every definition on `node`, concurrently, in the order given.
    async fn check_all(&self, defs: &[ResourceDefinition], node: &NodeId) -> Vec<ResourceCheck> {
        let checks = defs.iter().map(|def| async move {
            ResourceCheck {
                name: def.name.clone(),
                kind: def.kind().to_owned(),
                availability: self.check(def, node).await,
            }
        });
        futures::future::join_all(checks).await
    }
}

impl<R: ResourceResolver + ?Sized> ResolverExt for R {}
