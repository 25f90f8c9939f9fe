//! The conformance suite that every [`ResourceResolver`] runs (feature `testing`).
//!
//! The suite builds one definition of each [`Case`] three ways (its target present,
//! its target missing, and invalid) in a temporary directory and against loopback
//! listeners, and checks the trait's contract for each: `handles` answers as declared
//! and consistently; a handled path that is missing resolves to
//! [`ResolveError::NotFound`]; a present one resolves and checks available; per-node
//! overrides are followed; an unhandled kind is [`ResolveError::Unsupported`]; and
//! `check` never panics and reports unavailability with a detail.
//!
//! ```
//! use spectrum_resources::LocalPathResolver;
//! use spectrum_resources::testing::{Case, ResolverSuite};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! ResolverSuite::new(LocalPathResolver::new()).handling(&[Case::LocalDatabase]).run().await;
//! # });
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use spectrum_core::NodeId;
use tokio::net::TcpListener;

use crate::definition::{
    DataLocation, DatabaseCategory, DatabaseSpec, FileProtocol, FileServerSpec, JdbcSpec, ResourceDefinition,
    ResourceSpec, WebServiceSpec,
};
use crate::error::ResolveError;
use crate::name::ResourceName;
use crate::resolver::{Availability, Resolved, ResourceResolver};
use crate::secret::Secret;

/// The kinds of definition the suite exercises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Case {
    /// A database at a local location, with a per-node override.
    LocalDatabase,
    /// A database at a shared location.
    SharedDatabase,
    /// A JDBC connection.
    Jdbc,
    /// A remote (SFTP) file server.
    RemoteFileServer,
    /// A local file server.
    LocalFileServer,
    /// A web service.
    WebService,
}

impl Case {
    /// Every case.
    pub const ALL: [Case; 6] = [
        Case::LocalDatabase,
        Case::SharedDatabase,
        Case::Jdbc,
        Case::RemoteFileServer,
        Case::LocalFileServer,
        Case::WebService,
    ];

    fn is_path_based(self) -> bool {
        matches!(self, Case::LocalDatabase | Case::SharedDatabase | Case::LocalFileServer)
    }
}

/// Runs the contract checks against one resolver.
#[derive(Debug)]
pub struct ResolverSuite {
    resolver: Arc<dyn ResourceResolver>,
    handled: BTreeSet<Case>,
}

impl ResolverSuite {
    /// A suite for `resolver`, declared to handle no case yet.
    pub fn new(resolver: impl ResourceResolver) -> Self {
        Self { resolver: Arc::new(resolver), handled: BTreeSet::new() }
    }

    /// Declares the cases the resolver handles; it must not handle the others.
    pub fn handling(mut self, cases: &[Case]) -> Self {
        self.handled.extend(cases.iter().copied());
        self
    }

    /// Runs every check. Needs a Tokio runtime with I/O and time enabled.
    ///
    /// # Panics
    ///
    /// When the resolver breaks the contract, with a message naming the case.
    pub async fn run(self) {
        let fixture = Fixture::new().await;
        for case in Case::ALL {
            self.case(&fixture, case).await;
        }
    }

    async fn case(&self, fx: &Fixture, case: Case) {
        let present = fx.definition(case, Target::Present);
        let missing = fx.definition(case, Target::Missing);
        let invalid = fx.definition(case, Target::Invalid);
        let handled = self.handled.contains(&case);
        for def in [&present, &missing] {
            let first = self.resolver.handles(&def.spec);
            assert_eq!(first, handled, "{case:?}: handles() is {first}, declared {handled}");
            assert_eq!(self.resolver.handles(&def.spec), first, "{case:?}: handles() is not consistent");
        }

        if !handled {
            for def in [&present, &missing] {
                let result = self.resolver.resolve(def, &fx.node).await;
                assert!(
                    matches!(result, Err(ResolveError::Unsupported { .. })),
                    "{case:?}: resolving an unhandled kind must be Unsupported, got {result:?}"
                );
                let availability = self.check(def, &fx.node).await;
                assert_unavailable(case, "unhandled", &availability);
            }
            return;
        }

        // A present target resolves and checks available.
        let resolved = self.resolver.resolve(&present, &fx.node).await;
        match (&resolved, case.is_path_based()) {
            (Ok(Resolved::Path(path)), true) => {
                assert!(path.exists(), "{case:?}: resolved to {path:?}, which does not exist");
            }
            (Ok(Resolved::Endpoint(endpoint)), false) => {
                assert_eq!((endpoint.host.as_str(), endpoint.port), ("127.0.0.1", fx.open_port), "{case:?}");
            }
            _ => panic!("{case:?}: resolving a present target gave {resolved:?}"),
        }
        let availability = self.check(&present, &fx.node).await;
        assert!(availability.available, "{case:?}: present target checked {availability}");

        // A missing target: NotFound for a path, unavailable either way.
        let result = self.resolver.resolve(&missing, &fx.node).await;
        if case.is_path_based() {
            match &result {
                Err(ResolveError::NotFound { path }) => assert_eq!(path, &fx.missing, "{case:?}"),
                other => panic!("{case:?}: resolving a missing path must be NotFound, got {other:?}"),
            }
        } else {
            assert!(
                matches!(
                    result,
                    Ok(Resolved::Endpoint(_))
                        | Err(ResolveError::Unreachable { .. } | ResolveError::TimedOut { .. })
                ),
                "{case:?}: resolving a closed port gave {result:?}"
            );
        }
        let availability = self.check(&missing, &fx.node).await;
        assert_unavailable(case, "missing target", &availability);

        // An invalid definition (built in code, bypassing validation) never resolves.
        let result = self.resolver.resolve(&invalid, &fx.node).await;
        assert!(result.is_err(), "{case:?}: an invalid definition resolved to {result:?}");
        let availability = self.check(&invalid, &fx.node).await;
        assert_unavailable(case, "invalid definition", &availability);

        if case == Case::LocalDatabase {
            // The default path is missing; this node's override exists, another's does not.
            let result = self.resolver.resolve(&fx.with_overrides(), &fx.node).await;
            assert!(
                matches!(&result, Ok(Resolved::Path(p)) if p == &fx.present),
                "{case:?}: the node's override must be chosen, got {result:?}"
            );
            let result = self.resolver.resolve(&fx.with_overrides(), &fx.other_node).await;
            assert!(
                matches!(&result, Err(ResolveError::NotFound { path }) if path == &fx.elsewhere),
                "{case:?}: the other node's override must be chosen, got {result:?}"
            );
        }
    }

    /// Runs `check` on its own task, so a panic is reported as a contract breach.
    async fn check(&self, def: &ResourceDefinition, node: &NodeId) -> Availability {
        let resolver = Arc::clone(&self.resolver);
        let (def, node) = (def.clone(), node.clone());
        tokio::spawn(async move { resolver.check(&def, &node).await })
            .await
            .unwrap_or_else(|e| panic!("check() panicked: {e}"))
    }
}

fn assert_unavailable(case: Case, what: &str, availability: &Availability) {
    assert!(!availability.available, "{case:?}: {what} checked available");
    assert!(!availability.detail.trim().is_empty(), "{case:?}: {what} reported no detail");
    assert!(!availability.detail.contains(SUITE_SECRET), "{case:?}: {what} detail shows the secret");
}

const SUITE_SECRET: &str = "suite-secret-value";

#[derive(Clone, Copy)]
enum Target {
    Present,
    Missing,
    Invalid,
}

struct Fixture {
    _dir: tempfile::TempDir,
    present: PathBuf,
    missing: PathBuf,
    elsewhere: PathBuf,
    _listener: TcpListener,
    open_port: u16,
    closed_port: u16,
    node: NodeId,
    other_node: NodeId,
}

impl Fixture {
    async fn new() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let present = dir.path().join("present.db");
        std::fs::write(&present, b"data").expect("write the present file");
        let missing = dir.path().join("missing.db");
        let elsewhere = dir.path().join("elsewhere.db");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback listener");
        let open_port = listener.local_addr().expect("listener address").port();
        let closed_port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a probe listener");
            probe.local_addr().expect("probe address").port()
        };
        Self {
            _dir: dir,
            present,
            missing,
            elsewhere,
            _listener: listener,
            open_port,
            closed_port,
            node: NodeId::new("suite-node").expect("node id"),
            other_node: NodeId::new("other-node").expect("node id"),
        }
    }

    fn definition(&self, case: Case, target: Target) -> ResourceDefinition {
        let path: &Path = match target {
            Target::Present => &self.present,
            Target::Missing => &self.missing,
            Target::Invalid => Path::new("relative/path"),
        };
        let port = match target {
            Target::Present => self.open_port,
            _ => self.closed_port,
        };
        let password = Some(Secret::new(SUITE_SECRET));
        let spec = match case {
            Case::LocalDatabase => ResourceSpec::Database(DatabaseSpec {
                category: DatabaseCategory::Postal,
                location: DataLocation::local(path),
            }),
            Case::SharedDatabase => ResourceSpec::Database(DatabaseSpec {
                category: DatabaseCategory::Geocoding,
                location: DataLocation::shared(path),
            }),
            Case::Jdbc => {
                let url = match target {
                    Target::Invalid => "not a jdbc url".to_owned(),
                    _ => format!("jdbc:postgresql://127.0.0.1:{port}/suite"),
                };
                ResourceSpec::Jdbc(JdbcSpec { password, ..JdbcSpec::new(url, "org.postgresql.Driver") })
            }
            Case::RemoteFileServer => {
                let host = match target {
                    Target::Invalid => "bad host!",
                    _ => "127.0.0.1",
                };
                ResourceSpec::FileServer(FileServerSpec {
                    port: Some(port),
                    password,
                    ..FileServerSpec::remote(FileProtocol::Sftp, host, "/exports")
                })
            }
            Case::LocalFileServer => {
                ResourceSpec::FileServer(FileServerSpec::local(path.to_string_lossy().into_owned()))
            }
            Case::WebService => {
                let url = match target {
                    Target::Invalid => "gopher://127.0.0.1/".to_owned(),
                    _ => format!("http://127.0.0.1:{port}/api"),
                };
                ResourceSpec::WebService(WebServiceSpec { password, ..WebServiceSpec::new(url) })
            }
        };
        ResourceDefinition::new(ResourceName::new(format!("suite-{case:?}")).expect("name"), spec)
    }

    fn with_overrides(&self) -> ResourceDefinition {
        let overrides = BTreeMap::from([
            (self.node.clone(), self.present.clone()),
            (self.other_node.clone(), self.elsewhere.clone()),
        ]);
        ResourceDefinition::new(
            ResourceName::new("suite-overrides").expect("name"),
            ResourceSpec::Database(DatabaseSpec {
                category: DatabaseCategory::Postal,
                location: DataLocation::Local { path: self.missing.clone(), overrides },
            }),
        )
    }
}
