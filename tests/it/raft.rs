//! Raft mode on whole nodes in this process: writes through consensus from any
//! node, a lost leader replaced, a restarted node catching up (by snapshot
//! once the log behind it is compacted), acknowledged writes surviving a
//! restart of every node, and compare-and-set refused in last-writer-wins mode.

use std::time::Duration;

use spectrum::Cluster;
use spectrum::client::{AdminClient, NodeStateChange};
use spectrum::model::ReadAfter;
use spectrum_replication::{AckLevel, RaftSettings};

const WAIT: Duration = Duration::from_secs(20);

fn settings() -> RaftSettings {
    RaftSettings {
        heartbeat: Duration::from_millis(50),
        election_timeout: (Duration::from_millis(500), Duration::from_millis(1000)),
        snapshot_every: 10,
        keep_behind_snapshot: 0,
    }
}

async fn raft_cluster(name: &str, dir: &std::path::Path) -> Cluster {
    crate::support::raft_cluster(name, dir, settings()).await
}

/// A ready Raft cluster named `name` in `dir`, its node ids, and clients of
/// its first two nodes.
async fn ready_with_two_clients(
    name: &str,
    dir: &std::path::Path,
) -> (Cluster, Vec<String>, AdminClient, AdminClient) {
    let cluster = raft_cluster(name, dir).await;
    all_ready(&cluster).await;
    let ids: Vec<String> = cluster.nodes().map(|n| n.id().to_string()).collect();
    let (a, b) = (client(&cluster, &ids[0]).await, client(&cluster, &ids[1]).await);
    (cluster, ids, a, b)
}

async fn client(cluster: &Cluster, id: &str) -> AdminClient {
    AdminClient::connect(cluster.node(id).unwrap().addr(), None).await.unwrap()
}

/// Waits until every running node is a ready member (generously: nodes
/// restarted together on new ports first find each other, then a leader).
async fn all_ready(cluster: &Cluster) {
    for n in cluster.nodes() {
        let deadline = tokio::time::Instant::now() + 2 * WAIT;
        while !n.readiness().is_ready() {
            assert!(tokio::time::Instant::now() < deadline, "{} never became ready", n.id());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn value(c: &AdminClient, key: &str, after: ReadAfter) -> String {
    String::from_utf8(c.get(key, after).await.unwrap().value).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn raft_mode_survives_a_lost_leader_and_a_restarted_node_catches_up_by_snapshot() {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into());
    let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter(filter).try_init();
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = raft_cluster("raft-it", dir.path()).await;
    all_ready(&cluster).await;
    let ids: Vec<String> = cluster.nodes().map(|n| n.id().to_string()).collect();
    let mut last = None;
    for (i, id) in ids.iter().enumerate() {
        let written = client(&cluster, id)
            .await
            .put(&format!("settings/k{i}"), format!("v{i}"), AckLevel::Quorum)
            .await
            .unwrap();
        last = Some(written.write);
    }
    let after = ReadAfter::from(last.as_ref().unwrap());
    for id in &ids {
        let c = client(&cluster, id).await;
        for i in 0..3 {
            assert_eq!(value(&c, &format!("settings/k{i}"), after.clone()).await, format!("v{i}"));
        }
    }

    // The leader dies: another is elected and writes go on through any survivor.
    let leader = cluster.nodes().next().unwrap().raft().unwrap().leader().unwrap();
    assert!(cluster.kill_node(&leader).await);
    let survivor = ids.iter().find(|id| **id != leader).unwrap().clone();
    let written =
        client(&cluster, &survivor).await.put("settings/after", "yes", AckLevel::Quorum).await.unwrap();
    let new_leader = cluster.node(&survivor).unwrap().raft().unwrap().leader().unwrap();
    assert_ne!(new_leader, leader);

    // Many writes while it is down: the log behind the snapshot is purged, so
    // the old leader, restarted, catches up by installing a snapshot.
    let c = client(&cluster, &survivor).await;
    for i in 0..30 {
        last =
            Some(c.put(&format!("settings/many{i}"), format!("{i}"), AckLevel::Quorum).await.unwrap().write);
    }
    let id = leader.parse().unwrap();
    cluster.start_node(&id).await.unwrap();
    all_ready(&cluster).await;
    let back = client(&cluster, &leader).await;
    let after = ReadAfter::from(last.as_ref().unwrap());
    assert_eq!(value(&back, "settings/many29", after.clone()).await, "29");
    assert_eq!(value(&back, "settings/after", ReadAfter::from(&written.write)).await, "yes");
    assert_eq!(value(&back, "settings/k0", after.clone()).await, "v0");
    assert!(cluster.node(&leader).unwrap().raft().unwrap().snapshot_index().is_some());

    // Every acknowledged write survives a restart of every node.
    let all: Vec<String> = cluster.nodes().map(|n| n.id().to_string()).collect();
    for id in &all {
        assert!(cluster.kill_node(id).await);
    }
    for id in &all {
        cluster.start_node(&id.parse().unwrap()).await.unwrap();
    }
    all_ready(&cluster).await;
    for id in &all {
        let c = client(&cluster, id).await;
        assert_eq!(value(&c, "settings/many29", after.clone()).await, "29");
        assert_eq!(value(&c, "settings/after", after.clone()).await, "yes");
        for i in 0..3 {
            assert_eq!(value(&c, &format!("settings/k{i}"), after.clone()).await, format!("v{i}"));
        }
    }

    // An operator removes a dead member: it leaves the voters, through consensus,
    // and the membership record the balancer follows says so.
    let (gone, stays) = (all[2].clone(), all[0].clone());
    assert!(cluster.kill_node(&gone).await);
    let c = client(&cluster, &stays).await;
    let changed = c.set_node_state(&gone, NodeStateChange::Remove, AckLevel::Quorum).await.unwrap();
    assert_eq!(changed.member.state, spectrum_core::MemberState::Removed);
    // The change is committed, so both voters have appended it; each one's
    // metrics (what `voters` reads) are published after, asynchronously.
    for id in [&all[0], &all[1]] {
        let mut voters = Vec::new();
        for _ in 0..100 {
            voters = cluster.node(id).unwrap().raft().unwrap().voters();
            if !voters.contains(&gone) && voters.len() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(!voters.contains(&gone) && voters.len() == 2, "{id}: {voters:?} after 10 s");
    }
    c.put("settings/two-voters", "ok", AckLevel::Quorum).await.unwrap();
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn compare_and_set_transactions_and_consistent_reads_are_decided_once_for_the_whole_cluster() {
    use spectrum::client::PutCondition;
    use spectrum::model::{TxnConditionSpec, TxnSpec, TxnWriteSpec};

    let dir = tempfile::tempdir().unwrap();
    let (cluster, ids, a, b) = ready_with_two_clients("raft-cas", dir.path()).await;

    // Create-if-absent from two nodes at once: exactly one wins.
    let (x, y) = tokio::join!(
        a.put_if("settings/owner", "a", PutCondition::Absent),
        b.put_if("settings/owner", "b", PutCondition::Absent)
    );
    let (won, lost) = match (x, y) {
        (Ok(w), Err(e)) | (Err(e), Ok(w)) => (w, e),
        other => panic!("exactly one create must win: {other:?}"),
    };
    assert_eq!(lost.code(), Some(tonic::Code::FailedPrecondition));
    assert!(lost.to_string().contains(&won.write.version.to_string()), "{lost}");

    // Set only if unchanged since read: a stale version is refused.
    let v1 = won.write.version.clone();
    let v2 = a.put_if("settings/owner", "c", PutCondition::Version(v1.clone())).await.unwrap().write.version;
    let stale = b.put_if("settings/owner", "d", PutCondition::Version(v1)).await.unwrap_err();
    assert_eq!(stale.code(), Some(tonic::Code::FailedPrecondition), "{stale}");
    for id in &ids {
        let entry = client(&cluster, id).await.get_consistent("settings/owner").await.unwrap();
        assert_eq!((entry.value.as_slice(), &entry.version), (b"c".as_slice(), &v2));
    }

    // A transaction applies all of its writes or none.
    let txn = |version: Option<String>| TxnSpec {
        conditions: vec![TxnConditionSpec { key: "settings/owner".into(), version }],
        writes: vec![
            TxnWriteSpec { key: "settings/t1".into(), value: Some("1".into()), delete: false },
            TxnWriteSpec { key: "settings/owner".into(), value: None, delete: true },
        ],
    };
    let refused = b.txn(&txn(None)).await.unwrap_err();
    assert_eq!(refused.code(), Some(tonic::Code::FailedPrecondition));
    assert_eq!(a.get_consistent("settings/t1").await.unwrap_err().code(), Some(tonic::Code::NotFound));
    // Two writes to one key are refused, naming it; nothing is written.
    let mut twice = txn(Some(v2.to_string()));
    twice.writes.push(TxnWriteSpec { key: "settings/t1".into(), value: Some("2".into()), delete: false });
    let refused = b.txn(&twice).await.unwrap_err();
    assert_eq!(refused.code(), Some(tonic::Code::InvalidArgument), "{refused}");
    assert!(refused.to_string().contains("\"settings/t1\" is written twice"), "{refused}");
    assert_eq!(a.get_consistent("settings/t1").await.unwrap_err().code(), Some(tonic::Code::NotFound));
    b.txn(&txn(Some(v2.to_string()))).await.unwrap();
    let listed = a.list_consistent("settings/").await.unwrap();
    let keys: Vec<&str> = listed.0.iter().map(|e| e.key.as_str()).collect();
    assert!(keys.contains(&"settings/t1") && !keys.contains(&"settings/owner"), "{keys:?}");

    // A dataflow name is taken once, cluster-wide.
    let (x, y) = tokio::join!(
        a.create_dataflow("orders", r#"{"steps":[]}"#, false, AckLevel::Quorum),
        b.create_dataflow("orders", r#"{"steps":["x"]}"#, false, AckLevel::Quorum)
    );
    let codes: Vec<Option<tonic::Code>> =
        [x, y].into_iter().map(|r| r.err().and_then(|e| e.code())).collect();
    assert!(codes.contains(&None) && codes.contains(&Some(tonic::Code::AlreadyExists)), "{codes:?}");
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_last_writer_wins_cluster_refuses_what_needs_raft_naming_raft_mode() {
    use spectrum::client::PutCondition;
    use spectrum::model::{TxnSpec, TxnWriteSpec};

    let cluster = Cluster::builder("lww-refuses".parse().unwrap()).size(1).start().await.unwrap();
    let id = cluster.nodes().next().unwrap().id().to_string();
    let c = client(&cluster, &id).await;
    let txn = TxnSpec {
        conditions: Vec::new(),
        writes: vec![TxnWriteSpec { key: "settings/a".into(), value: Some("1".into()), delete: false }],
    };
    let refusals = [
        c.put_if("settings/a", "1", PutCondition::Absent).await.unwrap_err(),
        c.txn(&txn).await.unwrap_err(),
        c.get_consistent("settings/a").await.unwrap_err(),
        c.list_consistent("settings/").await.unwrap_err(),
    ];
    for e in refusals {
        assert_eq!(e.code(), Some(tonic::Code::FailedPrecondition), "{e}");
        assert!(e.to_string().contains("needs Raft mode (replication = \"raft\")"), "{e}");
    }
    // Nothing weaker was done instead.
    assert_eq!(
        c.get("settings/a", ReadAfter::Anything).await.unwrap_err().code(),
        Some(tonic::Code::NotFound)
    );
    cluster.shutdown().await;
}

/// Three clients, each on its own node (so most calls are forwarded to the
/// leader), run random consistent reads, writes and compare-and-sets on two
/// keys at once; the history they record must be linearizable (a
/// compare-and-set register per key, Wing & Gong's check). Every value written
/// is unique, so "the key holds version V" is "the key holds the value written
/// with V", which is the register's compare-and-set.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_clients_on_every_node_record_a_linearizable_history() {
    use rand::{Rng, SeedableRng};
    use spectrum::client::PutCondition;
    use spectrum_replication::linearizability::{Command, Recorder, Response, check};
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let cluster = raft_cluster("raft-linearizable", dir.path()).await;
    all_ready(&cluster).await;
    let recorder = Arc::new(Recorder::new());
    let mut tasks = Vec::new();
    for (process, node) in cluster.nodes().enumerate() {
        let c = AdminClient::connect(node.addr(), None).await.unwrap();
        let recorder = recorder.clone();
        let process = process as u64;
        tasks.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(process);
            // What this client last read of each key: the value and its version.
            let mut seen: [Option<(String, spectrum_replication::VersionToken)>; 2] = [None, None];
            for op in 0..40u32 {
                let k = rng.random_range(0..2usize);
                let key = format!("settings/reg-{k}");
                match rng.random_range(0..3u8) {
                    0 => {
                        let call = recorder.invoke(process, &key, Command::Read);
                        match c.get_consistent(&key).await {
                            Ok(e) => {
                                let value = String::from_utf8(e.value).unwrap();
                                seen[k] = Some((value.clone(), e.version));
                                recorder.complete(call, Response::Read(Some(value)));
                            }
                            Err(e) if e.code() == Some(tonic::Code::NotFound) => {
                                seen[k] = None;
                                recorder.complete(call, Response::Read(None));
                            }
                            Err(e) => panic!("consistent read of {key}: {e}"),
                        }
                    }
                    1 => {
                        let value = format!("p{process}-{op}");
                        let call = recorder.invoke(process, &key, Command::Write { value: value.clone() });
                        c.put(&key, value, AckLevel::Quorum).await.expect("put");
                        recorder.complete(call, Response::Ok);
                    }
                    _ => {
                        let new = format!("p{process}-{op}");
                        let (expected, condition) = match &seen[k] {
                            Some((value, version)) => {
                                (Some(value.clone()), PutCondition::Version(version.clone()))
                            }
                            None => (None, PutCondition::Absent),
                        };
                        let command = Command::CompareAndSet { expected, new: new.clone() };
                        let call = recorder.invoke(process, &key, command);
                        match c.put_if(&key, new, condition).await {
                            Ok(_) => recorder.complete(call, Response::Ok),
                            Err(e) if e.code() == Some(tonic::Code::FailedPrecondition) => {
                                recorder.complete(call, Response::Failed)
                            }
                            Err(e) => panic!("compare-and-set of {key}: {e}"),
                        }
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let history = recorder.history().unwrap();
    assert_eq!(history.operations().len(), 120);
    let report = check(&history);
    assert!(report.is_linearizable(), "{report}");
    cluster.shutdown().await;
}

/// A write sent again under the same idempotency key (typed client, gRPC
/// metadata; or HTTP header) is answered with the first attempt's decision and
/// applied once; without the key the same retry is a new write. A bad or
/// repeated key is refused and nothing is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_retried_under_its_idempotency_key_is_answered_with_its_first_decision_and_applied_once() {
    use spectrum::client::PutCondition;

    use crate::http_api::call_with;

    let dir = tempfile::tempdir().unwrap();
    let (cluster, ids, a, b) = ready_with_two_clients("raft-idem", dir.path()).await;

    // A create-if-absent retried through another node under the same key: the
    // retry gets the first attempt's version, not "condition failed".
    let key: spectrum::management::idempotency::IdempotencyKey = "create-owner-1".parse().unwrap();
    let first = a.clone().with_idempotency_key(key.clone());
    let created = first.put_if("settings/owner", "a", PutCondition::Absent).await.unwrap();
    let retried = b.clone().with_idempotency_key(key.clone());
    let again = retried.put_if("settings/owner", "a", PutCondition::Absent).await.unwrap();
    assert_eq!(again.write.version, created.write.version, "the first decision's answer");
    let fresh = b.put_if("settings/owner", "a", PutCondition::Absent).await.unwrap_err();
    assert_eq!(fresh.code(), Some(tonic::Code::FailedPrecondition), "without the key, a new write: {fresh}");

    // A plain put retried under its key writes one version; without the key, two.
    let once = a.clone().with_idempotency_key("put-mode-1".parse().unwrap());
    let v1 = once.put("settings/mode", "fast", AckLevel::Quorum).await.unwrap().write.version;
    let v2 = once.put("settings/mode", "fast", AckLevel::Quorum).await.unwrap().write.version;
    assert_eq!(v1, v2);
    assert_eq!(a.get_consistent("settings/mode").await.unwrap().version, v1, "no second version");
    let v3 = a.put("settings/mode", "fast", AckLevel::Quorum).await.unwrap().write.version;
    assert_ne!(v3, v1, "a put without a key is a new write");
    // The key reused for another write: that write, never the first one's answer.
    let v4 = once.put("settings/mode", "slow", AckLevel::Quorum).await.unwrap().write.version;
    let now = a.get_consistent("settings/mode").await.unwrap();
    assert_eq!((now.value.as_slice(), &now.version), (b"slow".as_slice(), &v4));
    assert!(v4 != v1 && v4 != v3);

    // The HTTP API takes the key as the Idempotency-Key header.
    let base = format!("http://{}", cluster.node(&ids[2]).unwrap().local_addr());
    let path = "/api/v1/config/settings/region?if_absent=true";
    let put = |headers: &'static [(&'static str, &'static str)]| {
        let base = base.clone();
        async move { call_with(&base, "PUT", path, None, headers, b"eu").await }
    };
    let (h1, h2) =
        (put(&[("idempotency-key", "region-1")]).await, put(&[("Idempotency-Key", "region-1")]).await);
    assert_eq!((h1.status, h2.status), (200, 200), "{:?} {:?}", h1.body, h2.body);
    assert_eq!(h1.json()["version"], h2.json()["version"]);
    assert_eq!(put(&[("idempotency-key", "region-2")]).await.status, 409, "another key: a new write");

    // Refused before anything runs: a key given twice, a key with a space.
    let path = "/api/v1/config/settings/refused";
    for headers in
        [&[("idempotency-key", "k1"), ("idempotency-key", "k2")][..], &[("idempotency-key", "a b")]]
    {
        let refused = call_with(&base, "PUT", path, None, headers, b"x").await;
        assert_eq!(refused.status, 400, "{headers:?}");
        assert!(refused.error().1.contains("invalid idempotency-key"), "{:?}", refused.error());
    }
    let mut raw =
        spectrum::pb::proto::management_client::ManagementClient::connect(base.clone()).await.unwrap();
    let mut request = tonic::Request::new(spectrum::pb::proto::PutRequest {
        key: "settings/refused".into(),
        value: b"x".to_vec(),
        ..Default::default()
    });
    request.metadata_mut().insert("idempotency-key", "a b".parse().unwrap());
    let refused = raw.put(request).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused}");
    assert_eq!(a.get_consistent("settings/refused").await.unwrap_err().code(), Some(tonic::Code::NotFound));
    cluster.shutdown().await;
}
