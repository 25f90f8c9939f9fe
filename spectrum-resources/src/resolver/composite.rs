//! [`CompositeResolver`]: several resolvers as one.

use std::sync::Arc;

use async_trait::async_trait;
use spectrum_core::NodeId;

use crate::definition::{ResourceDefinition, ResourceSpec};
use crate::error::ResolveError;
use crate::resolver::{
    Availability, EndpointResolver, LocalPathResolver, Resolved, ResourceResolver, SharedLocationResolver,
};

/// A list of resolvers acting as one: each definition goes to the first member whose
/// [`handles`](ResourceResolver::handles) is true.
///
/// [`CompositeResolver::standard`] handles every kind this crate defines; put your own
/// resolver first ([`with_first`](Self::with_first)) to take over a kind, or last
/// ([`with`](Self::with)) to add one.
///
/// ```
/// use spectrum_resources::{CompositeResolver, FileServerSpec, ResourceResolver, ResourceSpec};
///
/// let resolver = CompositeResolver::standard();
/// assert!(resolver.handles(&ResourceSpec::FileServer(FileServerSpec::local("/srv/files"))));
/// assert!(!CompositeResolver::new().handles(&ResourceSpec::FileServer(FileServerSpec::local("/srv"))));
/// ```
#[derive(Debug, Clone, Default)]
pub struct CompositeResolver {
    resolvers: Vec<Arc<dyn ResourceResolver>>,
}

impl CompositeResolver {
    /// A composite with no members: it handles nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// [`LocalPathResolver`], [`SharedLocationResolver`] and [`EndpointResolver`],
    /// with their default timeouts: every kind this crate defines.
    pub fn standard() -> Self {
        Self::new()
            .with(LocalPathResolver::new())
            .with(SharedLocationResolver::new())
            .with(EndpointResolver::new())
    }

    /// The same composite with `resolver` added last (consulted after the others).
    pub fn with(mut self, resolver: impl ResourceResolver) -> Self {
        self.resolvers.push(Arc::new(resolver));
        self
    }

    /// The same composite with `resolver` added first (consulted before the others).
    pub fn with_first(mut self, resolver: impl ResourceResolver) -> Self {
        self.resolvers.insert(0, Arc::new(resolver));
        self
    }

    /// The members, in the order they are consulted.
    pub fn resolvers(&self) -> &[Arc<dyn ResourceResolver>] {
        &self.resolvers
    }

    fn find(&self, spec: &ResourceSpec) -> Option<&Arc<dyn ResourceResolver>> {
        self.resolvers.iter().find(|r| r.handles(spec))
    }
}

#[async_trait]
impl ResourceResolver for CompositeResolver {
    fn handles(&self, spec: &ResourceSpec) -> bool {
        self.find(spec).is_some()
    }

    async fn resolve(&self, def: &ResourceDefinition, node: &NodeId) -> Result<Resolved, ResolveError> {
        match self.find(&def.spec) {
            Some(resolver) => resolver.resolve(def, node).await,
            None => Err(ResolveError::Unsupported { kind: def.kind().to_owned() }),
        }
    }

    async fn check(&self, def: &ResourceDefinition, node: &NodeId) -> Availability {
        match self.find(&def.spec) {
            Some(resolver) => resolver.check(def, node).await,
            None => Availability::unavailable(
                ResolveError::Unsupported { kind: def.kind().to_owned() }.to_string(),
            ),
        }
    }
}
