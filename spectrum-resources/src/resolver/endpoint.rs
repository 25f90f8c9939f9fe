//! [`EndpointResolver`]: JDBC connections, file servers and web services.

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use spectrum_core::NodeId;
use tokio::net::TcpStream;
use tracing::instrument;

use crate::definition::{Endpoint, FileProtocol, ResourceDefinition, ResourceSpec};
use crate::error::{DefinitionError, ResolveError};
use crate::resolver::{Availability, Resolved, ResourceResolver, fs};

/// How long a TCP connection attempt may take by default.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Resolves JDBC connections, file servers and web services to their host and port
/// (a local file server to its root path), and checks them by opening a TCP
/// connection (a local file server by reading its root).
///
/// Resolving does no network I/O; [`check`](ResourceResolver::check) connects, bounded
/// by a timeout ([`DEFAULT_CONNECT_TIMEOUT`] unless set) that covers the name lookup
/// too. The connection is closed at once: reachability of host and port, not a login,
/// is what is checked, so no secret is ever sent.
#[derive(Debug, Clone)]
pub struct EndpointResolver {
    connect_timeout: Duration,
}

impl EndpointResolver {
    /// A resolver that allows each connection attempt [`DEFAULT_CONNECT_TIMEOUT`].
    pub fn new() -> Self {
        Self { connect_timeout: DEFAULT_CONNECT_TIMEOUT }
    }

    /// The same resolver allowing each connection attempt (and local path check)
    /// `timeout`.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Opens (and closes) a TCP connection to `endpoint`.
    ///
    /// # Errors
    ///
    /// [`ResolveError::Unreachable`] when the connection is refused or the host
    /// unknown; [`ResolveError::TimedOut`] when it takes longer than allowed.
    pub async fn probe(&self, endpoint: &Endpoint) -> Result<(), ResolveError> {
        let connect = TcpStream::connect((endpoint.host.as_str(), endpoint.port));
        match tokio::time::timeout(self.connect_timeout, connect).await {
            Ok(Ok(_stream)) => Ok(()),
            Ok(Err(e)) => Err(ResolveError::Unreachable {
                host: endpoint.host.clone(),
                port: endpoint.port,
                reason: e.to_string(),
            }),
            Err(_) => Err(ResolveError::TimedOut {
                target: endpoint.to_string(),
                after_ms: u64::try_from(self.connect_timeout.as_millis()).unwrap_or(u64::MAX),
            }),
        }
    }
}

impl Default for EndpointResolver {
    fn default() -> Self {
        Self::new()
    }
}

/// Where a spec leads: an endpoint, or a local file server's root.
enum Target {
    Endpoint(Endpoint),
    LocalRoot(PathBuf),
}

fn target(spec: &ResourceSpec) -> Result<Target, ResolveError> {
    let prefix = |e: DefinitionError| ResolveError::InvalidDefinition(e.prefixed("spec"));
    match spec {
        ResourceSpec::Jdbc(jdbc) => jdbc.endpoint().map(Target::Endpoint).map_err(prefix),
        ResourceSpec::WebService(web) => web.endpoint().map(Target::Endpoint).map_err(prefix),
        ResourceSpec::FileServer(server) => {
            server.validate().map_err(prefix)?;
            match server.endpoint() {
                Some(endpoint) => Ok(Target::Endpoint(endpoint)),
                None if server.protocol == FileProtocol::Local => {
                    Ok(Target::LocalRoot(server.root.clone().into()))
                }
                None => Err(prefix(DefinitionError::missing("port"))),
            }
        }
        other => Err(ResolveError::Unsupported { kind: other.kind().to_owned() }),
    }
}

#[async_trait]
impl ResourceResolver for EndpointResolver {
    fn handles(&self, spec: &ResourceSpec) -> bool {
        matches!(spec, ResourceSpec::Jdbc(_) | ResourceSpec::FileServer(_) | ResourceSpec::WebService(_))
    }

    #[instrument(skip_all, fields(resource = %def.name, node = %node))]
    async fn resolve(&self, def: &ResourceDefinition, node: &NodeId) -> Result<Resolved, ResolveError> {
        match target(&def.spec)? {
            Target::Endpoint(endpoint) => Ok(Resolved::Endpoint(endpoint)),
            Target::LocalRoot(root) => fs::readable_path(def.name.as_str(), root, self.connect_timeout).await,
        }
    }

    #[instrument(skip_all, fields(resource = %def.name, node = %node))]
    async fn check(&self, def: &ResourceDefinition, node: &NodeId) -> Availability {
        let resolved = match target(&def.spec) {
            Ok(Target::Endpoint(endpoint)) => match self.probe(&endpoint).await {
                Ok(()) => Ok(format!("connected to {endpoint}")),
                Err(e) => Err(e),
            },
            Ok(Target::LocalRoot(root)) => fs::readable_path(def.name.as_str(), root, self.connect_timeout)
                .await
                .map(|resolved| resolved.to_string()),
            Err(e) => Err(e),
        };
        match resolved {
            Ok(detail) => {
                tracing::debug!(%detail, "resource available");
                Availability::available(detail)
            }
            Err(error) => {
                tracing::debug!(%error, "resource unavailable");
                Availability::unavailable(error.to_string())
            }
        }
    }
}
