//! The story of the example, asserted: replication to every node, requests spread
//! over all nodes, no failed request after one node stops.

use spectrum::demo::DataflowClient;
use spectrum::management::proto::{GetRequest, PutRequest};

use crate::support::{ACK_ALL, admin, configure_dataflow, run_requests, start_cluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_written_through_the_balancer_reaches_every_node() {
    let cluster = start_cluster("it-replication").await;
    let dir = tempfile::tempdir().unwrap();
    let mut through_balancer = admin(&cluster.balancer_url()).await;
    let version = configure_dataflow(&mut through_balancer, &dir.path().join("postal.db")).await;

    for node in cluster.nodes() {
        let mut direct = admin(node.url()).await;
        for key in ["resources/postal-db", "dataflows/normalize-address"] {
            let got = direct
                .get(GetRequest { key: key.into(), min_version: version.clone(), read: None })
                .await
                .unwrap_or_else(|s| panic!("{} lacks {key}: {s}", node.id()))
                .into_inner();
            assert_eq!(got.served_by, node.id().as_str());
            assert!(!got.entry.unwrap().value.is_empty());
        }
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_download_streams_whole_through_the_balancer() {
    let cluster = start_cluster("it-download").await;
    let mut client = DataflowClient::connect(cluster.balancer_url()).await.unwrap();
    let request = spectrum::demo::proto::DownloadRequest { bytes: 5 * 1024 * 1024 + 7, chunk_bytes: 0 };
    let mut stream = client.download(request).await.unwrap().into_inner();
    let (mut bytes, mut messages) = (0u64, 0);
    while let Some(chunk) = stream.message().await.unwrap() {
        bytes += chunk.data.len() as u64;
        messages += 1;
    }
    assert_eq!(bytes, 5 * 1024 * 1024 + 7);
    assert_eq!(messages, 81, "64 KiB messages and one short one");
    let refused = client.download(spectrum::demo::proto::DownloadRequest { bytes: 1 << 31, chunk_bytes: 0 });
    assert_eq!(refused.await.unwrap_err().code(), tonic::Code::InvalidArgument);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_spread_over_all_nodes_and_survive_a_stopped_node() {
    let mut cluster = start_cluster("it-failover").await;
    let dir = tempfile::tempdir().unwrap();
    let mut through_balancer = admin(&cluster.balancer_url()).await;
    configure_dataflow(&mut through_balancer, &dir.path().join("postal.db")).await;

    let mut client = DataflowClient::connect(cluster.balancer_url()).await.unwrap();
    // On a loaded machine a slow health check can take a node out for a moment
    // (that is the balancer doing its job); spreading is measured while all
    // three are in. Evenness is the strategy's own tests' business.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while cluster.balancer().stats().iter().filter(|b| b.healthy).count() < 3 {
        assert!(std::time::Instant::now() < deadline, "the balancer never saw three healthy nodes");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let served = run_requests(&mut client, 30).await;
    assert_eq!(served.len(), 3, "every node serves: {served:?}");

    assert!(cluster.stop_node("node-2").await);
    let served = run_requests(&mut client, 30).await;
    assert!(!served.contains_key("node-2"), "a stopped node serves nothing: {served:?}");
    assert_eq!(served.values().sum::<usize>(), 30);
    assert_eq!(served.len(), 2, "both remaining nodes serve: {served:?}");

    let put = through_balancer
        .put(PutRequest {
            key: "settings/after-failover".into(),
            value: b"yes".to_vec(),
            ack: ACK_ALL,
            ..PutRequest::default()
        })
        .await
        .expect("a write with one node down still reaches every remaining member")
        .into_inner();
    for node in cluster.nodes() {
        let got = admin(node.url())
            .await
            .get(GetRequest {
                key: "settings/after-failover".into(),
                min_version: put.version.clone(),
                read: None,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got.entry.unwrap().value, b"yes");
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fourth_node_joins_a_running_cluster_and_gets_its_state_and_traffic() {
    let mut cluster = start_cluster("it-join").await;
    let dir = tempfile::tempdir().unwrap();
    let mut through_balancer = admin(&cluster.balancer_url()).await;
    let version = configure_dataflow(&mut through_balancer, &dir.path().join("postal.db")).await;

    let joined = cluster.add_node().await.expect("node-4 starts").url().to_owned();
    let got = admin(&joined)
        .await
        .get(GetRequest { key: "dataflows/normalize-address".into(), min_version: version, read: None })
        .await
        .expect("the new node pulls the cluster's state")
        .into_inner();
    assert_eq!(got.served_by, "node-4");

    let mut client = DataflowClient::connect(cluster.balancer_url()).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let served = run_requests(&mut client, 8).await;
        if served.contains_key("node-4") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "node-4 never received traffic: {served:?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // A node restarted by id takes no new id: the next node is node-5 (an
    // embedding trial got node-6 after such a restart, or an id in use).
    assert!(cluster.kill_node("node-2").await);
    cluster.start_node(&"node-2".parse().unwrap()).await.expect("node-2 starts again");
    assert_eq!(cluster.add_node().await.expect("node-5 starts").id().as_str(), "node-5");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_drained_through_the_management_api_gets_no_new_requests() {
    use spectrum::management::proto::{NodeState, SetNodeStateRequest};

    let cluster = start_cluster("it-drain").await;
    let dir = tempfile::tempdir().unwrap();
    let mut through_balancer = admin(&cluster.balancer_url()).await;
    configure_dataflow(&mut through_balancer, &dir.path().join("postal.db")).await;
    through_balancer
        .set_node_state(SetNodeStateRequest {
            node_id: "node-3".into(),
            state: NodeState::Draining as i32,
            ack: ACK_ALL,
        })
        .await
        .expect("drain accepted");

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !cluster.balancer().stats().iter().any(|b| b.id.as_str() == "node-3" && b.draining) {
        assert!(std::time::Instant::now() < deadline, "the balancer never saw node-3 draining");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let mut client = DataflowClient::connect(cluster.balancer_url()).await.unwrap();
    let served = run_requests(&mut client, 20).await;
    assert!(!served.contains_key("node-3"), "a draining node gets no new requests: {served:?}");

    through_balancer
        .set_node_state(SetNodeStateRequest {
            node_id: "node-3".into(),
            state: NodeState::Active as i32,
            ack: ACK_ALL,
        })
        .await
        .expect("undrain accepted");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if run_requests(&mut client, 6).await.contains_key("node-3") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "node-3 never came back after undrain");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_an_empty_store_writes_and_reads_nothing_until_a_peer_has_answered() {
    use spectrum::NodeBuilder;
    use spectrum::core::transport;
    use std::net::SocketAddr;
    use tonic::Code;

    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    // Reserve an address for the second node, which is not up yet.
    let later = transport::bind(loopback).await.unwrap();
    let later_addr = later.local_addr;
    drop(later);
    let first = NodeBuilder::new("node-1".parse().unwrap(), "it-catch-up".parse().unwrap())
        .in_memory()
        .seeds([later_addr.into()])
        .start()
        .await
        .unwrap();
    let put =
        || PutRequest { key: "settings/early".into(), value: b"1".to_vec(), ack: 0, ..PutRequest::default() };
    let err = admin(first.url()).await.put(put()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    assert!(err.message().contains("catching up"), "{err}");
    let read = spectrum::management::proto::GetRequest { key: "settings/early".into(), ..Default::default() };
    let err = admin(first.url()).await.get(read).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "an empty copy is not an answer: {err}");
    assert!(err.message().contains("catching up"), "{err}");

    let second = NodeBuilder::new("node-2".parse().unwrap(), "it-catch-up".parse().unwrap())
        .in_memory()
        .listener(transport::bind(later_addr).await.unwrap())
        .seeds([first.addr().clone()])
        .start()
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut client = admin(first.url()).await;
    while let Err(e) = client.put(put()).await {
        assert!(std::time::Instant::now() < deadline, "node-1 never caught up: {e}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    second.shutdown().await;
    first.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_steady_load_fails_no_request_and_loses_no_config() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("warn").try_init();
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = spectrum::Cluster::builder("it-rolling".parse().unwrap())
        .data_dir(dir.path().join("data"))
        .configure_nodes(|b| b.add_service_with(spectrum::demo::DataflowService::server))
        .start()
        .await
        .unwrap();
    let mut through_balancer = admin(&cluster.balancer_url()).await;
    let version = configure_dataflow(&mut through_balancer, &dir.path().join("postal.db")).await;

    let stop = Arc::new(AtomicBool::new(false));
    let (served, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut load = Vec::new();
    for _ in 0..4 {
        let url = cluster.balancer_url();
        let (stop, served, failed) = (stop.clone(), served.clone(), failed.clone());
        load.push(tokio::spawn(async move {
            let mut client = DataflowClient::connect(url).await.unwrap();
            while !stop.load(Ordering::Relaxed) {
                let request = spectrum::demo::proto::RunRequest {
                    dataflow: "normalize-address".into(),
                    address: "12 Main St, Springfield".into(),
                };
                match client.run(request).await {
                    Ok(_) => served.fetch_add(1, Ordering::Relaxed),
                    Err(status) => {
                        eprintln!("failed during the rolling restart: {status}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    for id in ["node-1", "node-2", "node-3"] {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let node = cluster.restart_node(id).await.expect("restarts");
        let got = admin(node.url())
            .await
            .get(GetRequest {
                key: "dataflows/normalize-address".into(),
                min_version: version.clone(),
                read: None,
            })
            .await
            .expect("the restarted node holds the configuration");
        assert_eq!(got.into_inner().served_by, id);
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0, "{} requests served", served.load(Ordering::Relaxed));
    assert!(served.load(Ordering::Relaxed) > 20, "load ran throughout");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_member_can_be_removed_and_is_refused_until_an_operator_lets_it_back() {
    use spectrum::NodeError;
    use spectrum::client::{AckLevel, AdminClient, NodeStateChange};

    let mut cluster = start_cluster("it-remove").await;
    let first = cluster.node("node-1").unwrap().addr().clone();
    let dead = cluster.node("node-3").unwrap().addr().clone();
    let admin = AdminClient::connect(&first, None).await.unwrap();
    assert!(cluster.kill_node("node-3").await);

    // `all` cannot be met while the dead member counts; the error says who is missing.
    let err = admin.put("settings/a", "1", AckLevel::All).await.unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::DeadlineExceeded), "{err}");
    assert!(err.to_string().contains("is applied"), "{err}");
    assert!(err.to_string().contains(&format!("not acknowledged by {dead}")), "{err}");
    assert!(err.to_string().contains(&format!("node-3 at {dead}: ")), "names who and how alive: {err}");

    // node-1's failure detector stops finding node-3 alive once it is silent for
    // longer than usual (about seven mean contact intervals: phi 3), and its
    // status says so.
    let mut seen = spectrum::core::Liveness::Alive;
    for _ in 0..200 {
        let status = admin.status().await.unwrap();
        seen = status.members.iter().find(|m| m.member.id.as_str() == "node-3").unwrap().liveness;
        if seen != spectrum::core::Liveness::Alive {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(matches!(seen, spectrum::core::Liveness::Suspect | spectrum::core::Liveness::Down), "{seen}");

    // A node cannot remove itself; another node removes the dead one.
    let err = admin.set_node_state("node-1", NodeStateChange::Remove, AckLevel::Quorum).await.unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::InvalidArgument), "{err}");
    // The refusal is marked as nothing done, so a balancer that picked node-1
    // for the call sends it to another node, which can make it.
    let mut raw = crate::support::admin(cluster.node("node-1").unwrap().url()).await;
    let request = spectrum::management::proto::SetNodeStateRequest {
        node_id: "node-1".into(),
        state: spectrum::management::proto::NodeState::Removed as i32,
        ack: 0,
    };
    let refused = raw.set_node_state(request).await.unwrap_err();
    let marker = refused.metadata().get(spectrum_balancer::refusal::REFUSED_HEADER);
    assert_eq!(
        marker.and_then(|v| v.to_str().ok()),
        Some(spectrum_balancer::refusal::NOT_READY),
        "{refused:?}"
    );
    let removed = admin.set_node_state("node-3", NodeStateChange::Remove, AckLevel::All).await.unwrap();
    assert_eq!(removed.member.state, spectrum::core::MemberState::Removed);
    let written = admin.put("settings/b", "2", AckLevel::All).await.unwrap();
    assert_eq!((written.write.acked, written.write.members), (2, 2), "the removed member no longer counts");

    // It comes back under its id: refused, naming the removal.
    let id: spectrum::core::NodeId = "node-3".parse().unwrap();
    match cluster.start_node(&id).await {
        Err(NodeError::Removed { id, .. }) => assert_eq!(id.as_str(), "node-3"),
        Err(other) => panic!("expected a refusal for a removed node, got {other}"),
        Ok(_) => panic!("a removed node started"),
    }
    // An operator lets it back: it starts, and counts again.
    admin.set_node_state("node-3", NodeStateChange::Undrain, AckLevel::Quorum).await.unwrap();
    let back = cluster.start_node(&id).await.unwrap().addr().clone();
    // Once node-1 holds node-3's record at its new address, `all` counts it again.
    for _ in 0..100 {
        let status = admin.status().await.unwrap();
        if status.members.iter().any(|m| m.member.id == id && m.member.addr == back) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let written = admin.put("settings/c", "3", AckLevel::All).await.unwrap();
    assert_eq!(written.write.members, 3);
    cluster.shutdown().await;
}
