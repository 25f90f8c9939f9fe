//! A small dataflow service, used by the examples and tests to show a cluster at
//! work: it runs a dataflow definition from the configuration database against an
//! address and looks its postcode up in a postal database resource resolved on
//! the serving node.
//!
//! A dataflow definition (`dataflows/<name>`) is a JSON object:
//!
//! ```json
//! { "steps": ["trim", "uppercase", "expand_abbreviations", "postal_lookup"], "resource": "postal-db" }
//! ```
//!
//! The postal database is a text file, one `STREET|CITY|POSTCODE` line per entry
//! (normalised: upper case, abbreviations expanded); lines starting with `#` are
//! comments.
//!
//! Each node loads every dataflow once and reloads one when its definition
//! changes, through a watch of `dataflows/` on its own copy
//! ([`NodeContext::watch`]); `Run` answers with the definition's version and
//! whether it was already loaded (`preloaded`).
//!
//! `Download` streams filler bytes on demand (up to [`MAX_DOWNLOAD_BYTES`]): a large
//! streamed response every node can serve, for benchmarks (`examples/bench_balancer`)
//! and tests of streaming through a balancer.

mod reload;

use std::fmt;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures::Stream;

use serde::Deserialize;
use spectrum_resources::{ResolveError, Resolved, ResourceDefinition};
use tonic::{Request, Response, Status};

use crate::namespace::Namespace;
use crate::namespace::{NamespaceValue, TypedError, ValueError};
use crate::node::NodeContext;

/// Generated types and stubs of `spectrum.demo.v1`.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("spectrum.demo.v1");
}

pub use proto::dataflow_client::DataflowClient;
pub use proto::dataflow_server::DataflowServer;

/// Largest postal database file read, in bytes.
const MAX_POSTAL_FILE: u64 = 16 * 1024 * 1024;

/// Most bytes one `Download` call streams.
pub const MAX_DOWNLOAD_BYTES: u64 = 1 << 30;
/// Bytes per `Download` message unless the request asks otherwise.
pub const DEFAULT_CHUNK_BYTES: u32 = 64 * 1024;
/// Largest `Download` message the request may ask for.
pub const MAX_CHUNK_BYTES: u32 = 1 << 20;

/// The messages of one `Download` call.
pub type DownloadStream = Pin<Box<dyn Stream<Item = Result<proto::Chunk, Status>> + Send>>;

/// One step of a dataflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Trims and collapses whitespace.
    Trim,
    /// Upper-cases the address.
    Uppercase,
    /// Expands street abbreviations (`St` → `STREET`, …).
    ExpandAbbreviations,
    /// Looks the postcode up in the dataflow's postal database resource.
    PostalLookup,
}

/// A dataflow definition as stored under `dataflows/<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataflowDefinition {
    /// The steps, run in order.
    pub steps: Vec<Step>,
    /// The postal database resource used by [`Step::PostalLookup`].
    #[serde(default)]
    pub resource: Option<String>,
}

/// The result of running a dataflow on one address.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Outcome {
    /// The normalised address.
    pub normalized: String,
    /// The postcode, when looked up.
    pub postcode: String,
    /// The city, when looked up.
    pub city: String,
}

const ABBREVIATIONS: &[(&str, &str)] = &[
    ("ST", "STREET"),
    ("RD", "ROAD"),
    ("AVE", "AVENUE"),
    ("AV", "AVENUE"),
    ("BLVD", "BOULEVARD"),
    ("LN", "LANE"),
    ("DR", "DRIVE"),
    ("CT", "COURT"),
    ("PL", "PLACE"),
    ("SQ", "SQUARE"),
];

fn expand(word: &str) -> String {
    let bare = word.trim_end_matches(['.', ',']);
    let tail = &word[bare.len()..];
    let tail = tail.trim_start_matches('.');
    match ABBREVIATIONS.iter().find(|(abbr, _)| abbr.eq_ignore_ascii_case(bare)) {
        Some((_, full)) => format!("{full}{tail}"),
        None => word.to_owned(),
    }
}

/// The demo's dataflow schema, for
/// [`NodeBuilder::dataflow_check`](crate::NodeBuilder::dataflow_check): a
/// [`DataflowDefinition`] (known steps, no other fields), a `resource` that is a
/// valid resource name, and one when a step looks postcodes up. `Err` names what is wrong, as serde says it.
///
/// ```
/// use serde_json::json;
/// use spectrum::demo::check_dataflow;
///
/// assert!(check_dataflow(&json!({"steps": ["trim", "uppercase"]})).is_ok());
/// assert!(check_dataflow(&json!({"steps": ["explode"]})).unwrap_err().contains("explode"));
/// assert!(check_dataflow(&json!({"steps": ["postal_lookup"]})).unwrap_err().contains("resource"));
/// assert!(check_dataflow(&json!({"steps": ["postal_lookup"], "resource": ""})).is_err());
/// ```
pub fn check_dataflow(definition: &serde_json::Value) -> Result<(), String> {
    let def = DataflowDefinition::deserialize(definition).map_err(|e| e.to_string())?;
    if let Some(resource) = &def.resource {
        spectrum_resources::ResourceName::new(resource).map_err(|e| format!("resource: {e}"))?;
    }
    if def.steps.contains(&Step::PostalLookup) && def.resource.is_none() {
        return Err("the postal_lookup step needs a `resource` (a postal database)".into());
    }
    Ok(())
}

/// Runs the text steps of `def` on `address` (everything but the lookup).
pub fn normalize(def: &DataflowDefinition, address: &str) -> String {
    let mut text = address.to_owned();
    for step in &def.steps {
        text = match step {
            Step::Trim => text.split_whitespace().collect::<Vec<_>>().join(" "),
            Step::Uppercase => text.to_uppercase(),
            Step::ExpandAbbreviations => text.split(' ').map(expand).collect::<Vec<_>>().join(" "),
            Step::PostalLookup => text,
        };
    }
    text
}

/// Finds `normalized` (`[NUMBER ]STREET, CITY`) in a postal database's text.
pub fn lookup(postal: &str, normalized: &str) -> Option<(String, String)> {
    let (street, city) = normalized.split_once(',')?;
    let street = street.trim();
    let street = street
        .split_once(' ')
        .filter(|(n, _)| n.chars().all(|c| c.is_ascii_digit()))
        .map_or(street, |(_, s)| s);
    let city = city.trim();
    postal.lines().filter(|l| !l.trim_start().starts_with('#')).find_map(|line| {
        let mut parts = line.split('|').map(str::trim);
        let (s, c, p) = (parts.next()?, parts.next()?, parts.next()?);
        (s.eq_ignore_ascii_case(street) && c.eq_ignore_ascii_case(city)).then(|| (p.to_owned(), c.to_owned()))
    })
}

/// The dataflow service of one node.
#[derive(Clone)]
pub struct DataflowService {
    ctx: NodeContext,
    loaded: Arc<reload::Loaded>,
    /// Ends the reload watch when the last clone goes.
    _watch: Arc<reload::StopOnDrop>,
}

impl fmt::Debug for DataflowService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataflowService")
            .field("node", &self.ctx.id)
            .field("reloads", &self.loaded.reloads())
            .finish()
    }
}

impl DataflowService {
    /// The service for the node described by `ctx`: loads the node's dataflows
    /// and keeps them current with a watch (a task that ends when the last
    /// clone of the service is dropped). Call it inside a Tokio runtime.
    pub fn new(ctx: &NodeContext) -> Self {
        let (loaded, watch) = reload::start(ctx);
        Self { ctx: ctx.clone(), loaded, _watch: Arc::new(watch) }
    }

    /// How many times this node loaded or reloaded a dataflow definition.
    pub fn reloads(&self) -> u64 {
        self.loaded.reloads()
    }

    /// The service as a tonic server, ready for
    /// [`NodeBuilder::add_service_with`](crate::NodeBuilder::add_service_with).
    pub fn server(ctx: &NodeContext) -> DataflowServer<Self> {
        DataflowServer::new(Self::new(ctx))
    }

    async fn postal_file(&self, resource: &str) -> Result<String, Status> {
        let def = self
            .ctx
            .view::<ResourceDefinition>()
            .get(resource)
            .await
            .map_err(typed_status)?
            .ok_or_else(|| Status::failed_precondition(format!("resource {resource:?} is not defined")))?
            .value;
        let path = match self.ctx.resolver.resolve(&def, &self.ctx.id).await {
            Ok(Resolved::Path(p)) => p,
            Ok(_) => {
                return Err(Status::failed_precondition(format!(
                    "resource {resource:?} is not a database file"
                )));
            }
            Err(e @ ResolveError::NotFound { .. }) => return Err(Status::failed_precondition(e.to_string())),
            Err(e) => return Err(Status::unavailable(e.to_string())),
        };
        read_bounded(&path).await
    }
}

fn typed_status(e: TypedError) -> Status {
    match e {
        TypedError::Invalid { .. } => Status::failed_precondition(e.to_string()),
        other => Status::internal(other.to_string()),
    }
}

impl NamespaceValue for DataflowDefinition {
    const NAMESPACE: Namespace = Namespace::Dataflows;
    fn decode(bytes: &[u8]) -> Result<Self, ValueError> {
        serde_json::from_slice(bytes)
            .map_err(|e| ValueError::new(format!("not a valid dataflow definition: {e}")))
    }
}

async fn read_bounded(path: &Path) -> Result<String, Status> {
    let meta = tokio::fs::metadata(path)
        .await
        .map_err(|e| Status::failed_precondition(format!("{}: {e}", path.display())))?;
    if meta.len() > MAX_POSTAL_FILE {
        return Err(Status::failed_precondition(format!(
            "{} is larger than {MAX_POSTAL_FILE} bytes",
            path.display()
        )));
    }
    tokio::fs::read_to_string(path)
        .await
        .map_err(|e| Status::failed_precondition(format!("{}: {e}", path.display())))
}

/// `bytes` bytes in messages of `chunk_bytes` (the last one shorter), all slices of
/// one filler buffer: the stream allocates once, whatever its length.
///
/// # Errors
///
/// `invalid_argument` over [`MAX_DOWNLOAD_BYTES`] or [`MAX_CHUNK_BYTES`].
pub fn download_stream(bytes: u64, chunk_bytes: u32) -> Result<DownloadStream, Status> {
    if bytes > MAX_DOWNLOAD_BYTES {
        return Err(Status::invalid_argument(format!("at most {MAX_DOWNLOAD_BYTES} bytes per download")));
    }
    let chunk = match chunk_bytes {
        0 => DEFAULT_CHUNK_BYTES,
        n if n > MAX_CHUNK_BYTES => {
            return Err(Status::invalid_argument(format!("chunk_bytes is at most {MAX_CHUNK_BYTES}")));
        }
        n => n,
    };
    // No larger than the download itself (it is below 1 MiB then).
    let filler = Bytes::from(vec![b'.'; u64::from(chunk).min(bytes) as usize]);
    let mut left = bytes;
    let chunks = std::iter::from_fn(move || {
        let n = left.min(filler.len() as u64);
        left -= n;
        (n > 0).then(|| Ok(proto::Chunk { data: filler.slice(..n as usize) }))
    });
    Ok(Box::pin(futures::stream::iter(chunks)))
}

#[tonic::async_trait]
impl proto::dataflow_server::Dataflow for DataflowService {
    type DownloadStream = DownloadStream;

    async fn download(
        &self,
        request: Request<proto::DownloadRequest>,
    ) -> Result<Response<DownloadStream>, Status> {
        let req = request.into_inner();
        download_stream(req.bytes, req.chunk_bytes).map(Response::new)
    }

    async fn run(&self, request: Request<proto::RunRequest>) -> Result<Response<proto::RunResponse>, Status> {
        let req = request.into_inner();
        if req.address.len() > 1024 {
            return Err(Status::invalid_argument("address is longer than 1024 bytes"));
        }
        let key = Namespace::Dataflows.key(&req.dataflow);
        let record = self
            .ctx
            .store
            .get(&key)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?
            .filter(|r| !r.is_tombstone())
            .ok_or_else(|| Status::not_found(format!("no {key:?} on this cluster")))?;
        let flow = self.loaded.current(&req.dataflow, &record);
        let def =
            flow.definition.map_err(|e| Status::failed_precondition(format!("invalid dataflow: {e}")))?;
        let mut out = Outcome { normalized: normalize(&def, &req.address), ..Outcome::default() };
        if def.steps.contains(&Step::PostalLookup) {
            let resource = def.resource.as_deref().ok_or_else(|| {
                Status::failed_precondition(format!(
                    "dataflow {:?} looks postcodes up but names no resource",
                    req.dataflow
                ))
            })?;
            let postal = self.postal_file(resource).await?;
            let (postcode, city) = lookup(&postal, &out.normalized)
                .ok_or_else(|| Status::not_found(format!("no postcode for {:?}", out.normalized)))?;
            out.postcode = postcode;
            out.city = city;
        }
        Ok(Response::new(proto::RunResponse {
            normalized: out.normalized,
            postcode: out.postcode,
            city: out.city,
            served_by: self.ctx.id.to_string(),
            dataflow_version: flow.version.to_string(),
            preloaded: flow.by_watch,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_steps() -> DataflowDefinition {
        DataflowDefinition {
            steps: vec![Step::Trim, Step::Uppercase, Step::ExpandAbbreviations, Step::PostalLookup],
            resource: Some("postal".into()),
        }
    }

    #[test]
    fn addresses_are_normalised_step_by_step() {
        let out = normalize(&all_steps(), "  12  Main St.,   Springfield ");
        assert_eq!(out, "12 MAIN STREET, SPRINGFIELD");
    }

    #[test]
    fn postcodes_are_found_by_street_and_city() {
        let db = "# street|city|postcode\nMAIN STREET|SPRINGFIELD|49001\nELM ROAD|SHELBYVILLE|49002\n";
        assert_eq!(lookup(db, "12 MAIN STREET, SPRINGFIELD"), Some(("49001".into(), "SPRINGFIELD".into())));
        assert_eq!(lookup(db, "ELM ROAD, SHELBYVILLE").map(|p| p.0), Some("49002".into()));
        assert_eq!(lookup(db, "ELM ROAD, SPRINGFIELD"), None);
        assert_eq!(lookup(db, "no comma here"), None);
    }

    #[tokio::test]
    async fn a_download_streams_exactly_the_bytes_asked_in_chunks() {
        use futures::StreamExt as _;
        let sizes: Vec<usize> =
            download_stream(150_000, 65_536).unwrap().map(|chunk| chunk.unwrap().data.len()).collect().await;
        assert_eq!(sizes, [65_536, 65_536, 18_928]);
        assert_eq!(download_stream(0, 0).unwrap().count().await, 0);
        assert_eq!(download_stream(10, 0).unwrap().next().await.unwrap().unwrap().data.len(), 10);
    }

    #[test]
    fn a_download_over_the_limits_is_refused() {
        assert!(download_stream(MAX_DOWNLOAD_BYTES + 1, 0).is_err());
        assert!(download_stream(1, MAX_CHUNK_BYTES + 1).is_err());
    }

    #[test]
    fn dataflow_definitions_reject_unknown_steps_and_fields() {
        assert!(serde_json::from_str::<DataflowDefinition>(r#"{"steps":["teleport"]}"#).is_err());
        assert!(serde_json::from_str::<DataflowDefinition>(r#"{"steps":[],"colour":1}"#).is_err());
    }
}
