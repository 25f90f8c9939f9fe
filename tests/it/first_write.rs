//! A node whose store is new (a first start, or a replaced disk) makes its first
//! write only once its clock is twice the maximum offset past its start, so the
//! new store's stamps follow every stamp issued before it began (see
//! `spectrum_replication::horizon::FirstWrite`).

use std::time::Duration;

use spectrum::NodeBuilder;
use spectrum::core::{Clock, Member, SystemClock};

use crate::support::readyz_becomes;

#[tokio::test]
async fn a_node_on_a_new_store_stamps_its_first_write_twice_the_maximum_offset_after_it_started() {
    let offset = Duration::from_millis(300);
    let before_ms = SystemClock.now_ms();
    let node = NodeBuilder::new("node-1".parse().unwrap(), "it-first-write".parse().unwrap())
        .in_memory()
        .max_clock_offset(offset)
        .start()
        .await
        .unwrap();
    readyz_becomes(&node.local_addr().to_string(), 200).await;
    let record = node.store().get(&Member::key_of(&"node-1".parse().unwrap())).await.unwrap();
    let record = record.expect("the node recorded itself in membership");
    assert_eq!(record.seq, 1, "membership is the new store's first write");
    assert!(
        record.stamp.wall_ms > before_ms + 2 * 300,
        "first write stamped {} ms after the node started, not more than twice the 300 ms offset",
        record.stamp.wall_ms.saturating_sub(before_ms)
    );
    node.shutdown().await;
}
