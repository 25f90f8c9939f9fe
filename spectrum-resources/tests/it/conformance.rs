//! Every resolver runs the conformance suite.

use std::sync::Arc;

use spectrum_resources::testing::{Case, ResolverSuite};
use spectrum_resources::{
    CompositeResolver, EndpointResolver, LocalPathResolver, ResourceResolver, SharedLocationResolver,
};

const ENDPOINT_CASES: [Case; 4] =
    [Case::Jdbc, Case::RemoteFileServer, Case::LocalFileServer, Case::WebService];

#[tokio::test]
async fn local_path_resolver_conforms() {
    ResolverSuite::new(LocalPathResolver::new()).handling(&[Case::LocalDatabase]).run().await;
}

#[tokio::test]
async fn shared_location_resolver_conforms() {
    ResolverSuite::new(SharedLocationResolver::new()).handling(&[Case::SharedDatabase]).run().await;
}

#[tokio::test]
async fn endpoint_resolver_conforms() {
    ResolverSuite::new(EndpointResolver::new()).handling(&ENDPOINT_CASES).run().await;
}

#[tokio::test]
async fn the_standard_composite_conforms_for_every_kind() {
    ResolverSuite::new(CompositeResolver::standard()).handling(&Case::ALL).run().await;
}

#[tokio::test]
async fn an_empty_composite_conforms_by_handling_nothing() {
    ResolverSuite::new(CompositeResolver::new()).run().await;
}

#[tokio::test]
async fn arc_and_box_forward_to_the_resolver_inside() {
    let shared: Arc<dyn ResourceResolver> = Arc::new(LocalPathResolver::new());
    ResolverSuite::new(shared).handling(&[Case::LocalDatabase]).run().await;
    let boxed: Box<dyn ResourceResolver> = Box::new(EndpointResolver::new());
    ResolverSuite::new(boxed).handling(&ENDPOINT_CASES).run().await;
}

#[tokio::test]
async fn a_composite_of_partial_resolvers_handles_their_union() {
    let resolver =
        CompositeResolver::new().with(SharedLocationResolver::new()).with_first(LocalPathResolver::new());
    assert_eq!(resolver.resolvers().len(), 2);
    ResolverSuite::new(resolver).handling(&[Case::LocalDatabase, Case::SharedDatabase]).run().await;
}

/// A resolver that claims every local path exists: the suite must catch it.
#[derive(Debug)]
struct ClaimsEverythingExists;

#[async_trait::async_trait]
impl ResourceResolver for ClaimsEverythingExists {
    fn handles(&self, spec: &spectrum_resources::ResourceSpec) -> bool {
        LocalPathResolver::new().handles(spec)
    }

    async fn resolve(
        &self,
        _def: &spectrum_resources::ResourceDefinition,
        _node: &spectrum_core::NodeId,
    ) -> Result<spectrum_resources::Resolved, spectrum_resources::ResolveError> {
        Ok(spectrum_resources::Resolved::Path(std::env::temp_dir()))
    }
}

#[tokio::test]
#[should_panic(expected = "must be NotFound")]
async fn the_suite_catches_a_resolver_that_breaks_the_contract() {
    ResolverSuite::new(ClaimsEverythingExists).handling(&[Case::LocalDatabase]).run().await;
}
