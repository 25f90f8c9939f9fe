//! # spectrum-resources
//!
//! The external resources a Spectrum cluster uses (postal and geocoding databases,
//! JDBC connections, file servers, web services) are *defined* once in the cluster's
//! configuration database and *resolved* on each node. This crate owns both halves:
//!
//! - [`definition`]: [`ResourceDefinition`], typed and validated. Its wire form is
//!   JSON bytes that the caller stores; decoding validates, so an invalid definition
//!   never gets past [`ResourceDefinition::from_json_bytes`], and every error names the
//!   field at fault ([`DefinitionError::field`]).
//! - [`resolver`]: the [`ResourceResolver`] trait, which turns a definition into
//!   something usable on a node and checks its availability there, with reference
//!   resolvers for node-local paths, shared locations and network endpoints, and
//!   [`CompositeResolver`] to use them together.
//! - [`Secret`]: passwords that never show in `Debug`, `Display`, logs or redacted
//!   output, sealed at rest with the cluster's [`ClusterKey`].
//! - [`transfer`]: export a cluster's definitions to a file and import them into
//!   another, with a dry run.
//!
//! ## A tour
//!
//! Define a postal database installed at the same path on every node, store it, read
//! it back, and resolve and check it on one node:
//!
//! ```
//! use spectrum_core::NodeId;
//! use spectrum_resources::{
//!     CompositeResolver, DataLocation, DatabaseCategory, DatabaseSpec, ResourceDefinition,
//!     ResourceName, ResourceResolver, ResourceSpec, Resolved,
//! };
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let dir = tempfile::tempdir().unwrap();
//! let data = dir.path().join("postal-us.db");
//! std::fs::write(&data, b"10001 New York\n").unwrap();
//!
//! let def = ResourceDefinition::new(
//!     ResourceName::new("postal-us").unwrap(),
//!     ResourceSpec::Database(DatabaseSpec {
//!         category: DatabaseCategory::Postal,
//!         location: DataLocation::local(&data),
//!     }),
//! )
//! .with_description("US postcodes");
//!
//! // What the configuration database stores, and what every node reads back.
//! let bytes = def.to_json_bytes().unwrap();
//! let stored = ResourceDefinition::from_json_bytes(&bytes).unwrap();
//! assert_eq!(stored, def);
//!
//! // On a node: resolve it to a usable path, and check it is available.
//! let node = NodeId::new("node-1").unwrap();
//! let resolver = CompositeResolver::standard();
//! assert_eq!(resolver.resolve(&stored, &node).await.unwrap(), Resolved::Path(data.clone()));
//! let availability = resolver.check(&stored, &node).await;
//! assert!(availability.available, "{availability}");
//!
//! // Once the data is gone, the check says so (and why) rather than failing.
//! std::fs::remove_file(&data).unwrap();
//! let availability = resolver.check(&stored, &node).await;
//! assert!(!availability.available);
//! assert!(availability.detail.contains("does not exist"));
//! # });
//! ```
//!
//! Bad definitions are refused with the field at fault, and nothing is decoded:
//!
//! ```
//! use spectrum_resources::ResourceDefinition;
//!
//! let json = br#"{"name":"orders","spec":{"kind":"jdbc","url":"jdbc:postgresql://db:99999/orders","driver":"org.postgresql.Driver"}}"#;
//! let err = ResourceDefinition::from_json_bytes(json).unwrap_err();
//! assert_eq!(err.field(), "spec.url");
//! assert!(err.to_string().contains("out of range"));
//! ```
//!
//! Secrets are never shown, and are stored only sealed with the cluster key:
//!
//! ```
//! use spectrum_resources::{ClusterKey, JdbcSpec, ResourceDefinition, ResourceName, ResourceSpec, Secret};
//!
//! let def = ResourceDefinition::new(
//!     ResourceName::new("orders").unwrap(),
//!     ResourceSpec::Jdbc(JdbcSpec {
//!         user: Some("app".into()),
//!         password: Some(Secret::new("hunter2")),
//!         ..JdbcSpec::new("jdbc:postgresql://db.example/orders", "org.postgresql.Driver")
//!     }),
//! );
//! assert!(!format!("{def:?}").contains("hunter2"));
//! let shown = def.redacted().to_json_bytes().unwrap();
//! assert!(!String::from_utf8(shown).unwrap().contains("hunter2"));
//!
//! let key = ClusterKey::generate();
//! let stored = def.sealed(&key).unwrap().to_json_bytes().unwrap();
//! assert!(!String::from_utf8_lossy(&stored).contains("hunter2"));
//! let read = ResourceDefinition::from_json_bytes(&stored).unwrap();
//! assert_eq!(read.opened(&key).unwrap(), def);
//! assert!(read.opened(&ClusterKey::generate()).is_err(), "another cluster's key cannot read it");
//! ```
//!
//! ## Design decisions
//!
//! - **Resolvers are async I/O plug-ins.** Resolving touches file systems (network
//!   mounts that can hang) and sockets, so [`ResourceResolver`] uses `#[async_trait]`,
//!   is `Send + Sync + Debug + 'static`, and is held as `Arc<dyn ResourceResolver>`.
//!   Every check is bounded by a timeout, and `check` reports unavailability rather
//!   than failing, because node status shows it per resource and per node.
//! - **Definitions do not know the store.** They encode to and decode from JSON bytes;
//!   the node keeps them in its replicated configuration database. This crate therefore
//!   depends on `spectrum-core` only, and the same definitions serve the management API,
//!   the `spectrum` command and export files.
//! - **Tolerant of the future, strict about the present.** Decoding ignores unknown
//!   fields (a newer node may have written them during a rolling upgrade) but refuses
//!   unknown kinds and every invalid value. Public enums are `#[non_exhaustive]`, and
//!   [`DataLocation`] is tagged so further location kinds (a URL) can be added.
//! - **Secrets are redacted at the edges and encrypted at rest.** A [`Secret`] prints
//!   as `***`; [`ResourceDefinition::redacted`] is the form every API and command
//!   returns; exports redact by default, and importing a redacted secret keeps the
//!   target cluster's own, as an update that sends the placeholder back keeps the
//!   stored one ([`ResourceDefinition::keep_secrets_from`]). Before a definition is
//!   stored, the node seals its secrets with the cluster's [`ClusterKey`]
//!   ([`ResourceDefinition::sealed`]), and opens them ([`ResourceDefinition::opened`])
//!   only where a resource needs them: a node without the key cannot read them, and
//!   still lists the definition redacted.
//! - **A conformance suite** (module `testing`, behind the feature `testing`) checks the trait's
//!   contract for every resolver.

pub mod cluster_key;
mod decode;
pub mod definition;
pub mod error;
pub mod jdbc;
pub mod name;
mod net;
pub mod resolver;
pub mod secret;
#[cfg(feature = "testing")]
pub mod testing;
pub mod transfer;

pub use cluster_key::ClusterKey;
pub use definition::{
    DataLocation, DatabaseCategory, DatabaseSpec, Endpoint, FileProtocol, FileServerSpec, JdbcSpec,
    KeptSecrets, ResourceDefinition, ResourceSpec, WebServiceSpec,
};
pub use error::{DefinitionError, ResolveError, SecretError, TransferError};
pub use jdbc::{InvalidUrl, JdbcUrl};
pub use name::ResourceName;
pub use resolver::{
    Availability, CompositeResolver, EndpointResolver, LocalPathResolver, Resolved, ResolverExt,
    ResourceCheck, ResourceResolver, SharedLocationResolver,
};
pub use secret::Secret;
pub use transfer::{ExportFile, ExportOptions, ImportPlan, PreparedImport, plan_import, prepare_import};
