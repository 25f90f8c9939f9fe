//! Every store implementation passes the conformance suite.

use spectrum_replication::MemoryStore;
use spectrum_replication::testing::conformance_suite;

#[tokio::test]
async fn memory_store_passes_the_conformance_suite() {
    conformance_suite(MemoryStore::new).await;
}
