//! Operating a Raft-mode cluster in this process: status names the mode, the
//! leader, the term, the indexes and the group, over gRPC and over HTTP; the
//! leader stopped cleanly (built to leave on terminate) leaves the voters, the other two keep committing,
//! and it rejoins as a voter when it starts again.

use std::time::Duration;

use futures::StreamExt;
use spectrum::Cluster;
use spectrum::client::{AdminClient, NodeStateChange, WatchOptions};
use spectrum::model::NodeStatus;
use spectrum_core::{Liveness, MemberState};
use spectrum_replication::conformance::fast_raft_settings;
use spectrum_replication::{AckLevel, ReplicationMode};

use crate::http_api::call;

const WAIT: Duration = Duration::from_secs(30);

async fn status_until(c: &AdminClient, what: &str, ok: impl Fn(&NodeStatus) -> bool) -> NodeStatus {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let s = c.status().await.unwrap();
        if ok(&s) {
            return s;
        }
        assert!(tokio::time::Instant::now() < deadline, "never {what}: {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn voters(s: &NodeStatus) -> Vec<String> {
    s.replication.raft.as_ref().map(|r| r.voters.clone()).unwrap_or_default()
}

fn led_by_three(s: &NodeStatus) -> bool {
    s.replication.raft.as_ref().is_some_and(|r| r.leader.is_some() && r.voters.len() == 3)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_shows_the_raft_group_and_a_leader_stopped_cleanly_leaves_the_voters_then_rejoins() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::builder("raft-ops".parse().unwrap())
        .data_dir(dir.path())
        .configure_nodes(|b| {
            b.replication(ReplicationMode::Raft).raft_settings(fast_raft_settings()).leave_on_terminate(true)
        })
        .start()
        .await
        .unwrap();
    let ids: Vec<String> = cluster.nodes().map(|n| n.id().to_string()).collect();
    let first = AdminClient::connect(cluster.node(&ids[0]).unwrap().addr(), None).await.unwrap();
    let s = status_until(&first, "a leader and three voters", led_by_three).await;
    first.put("settings/a", "1", AckLevel::Quorum).await.unwrap();
    // Every node, followers included (they exchange no Raft traffic with each
    // other), finds every member alive, and stays so.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for id in &ids {
        let c = AdminClient::connect(cluster.node(id).unwrap().addr(), None).await.unwrap();
        let s = status_until(&c, "every member alive", |s| {
            s.members.iter().all(|m| m.liveness == Liveness::Alive)
        })
        .await;
        assert_eq!(s.peers.len(), 2, "{s}");
    }
    assert_eq!(s.replication.mode, "raft");
    let raft = s.replication.raft.clone().unwrap();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(raft.voters, sorted);
    assert!(raft.learners.is_empty() && raft.term >= 1 && raft.applied.is_some(), "{s}");
    let leader = raft.leader.clone().unwrap();
    let text = s.to_string();
    assert!(text.contains(&format!("leader {leader}, term {}", raft.term)), "{text}");

    // The leader counts the commit index; over HTTP the same answer.
    let on_leader = AdminClient::connect(cluster.node(&leader).unwrap().addr(), None).await.unwrap();
    let ls = on_leader.status().await.unwrap();
    let lr = ls.replication.raft.unwrap();
    assert_eq!(lr.role, "leader");
    assert!(lr.committed.is_some_and(|c| c >= 1), "{lr:?}");
    let http = call(cluster.node(&leader).unwrap().addr().as_str(), "GET", "/api/v1/status", None, b"").await;
    assert_eq!(http.status, 200);
    let json = http.json();
    assert_eq!(json["replication"]["mode"], "raft", "{json}");
    assert_eq!(json["replication"]["raft"]["role"], "leader", "{json}");
    assert_eq!(json["replication"]["raft"]["voters"].as_array().map(Vec::len), Some(3), "{json}");
    // The OpenAPI document describes the new part of the answer.
    let doc =
        call(cluster.node(&leader).unwrap().addr().as_str(), "GET", "/api/v1/openapi.json", None, b"").await;
    let schemas = &doc.json()["components"]["schemas"];
    for schema in ["ReplicationInfo", "RaftInfo"] {
        assert!(schemas[schema].is_object(), "no {schema} schema in the OpenAPI document");
    }

    // The leader stops cleanly: out of the voters, and recorded as left.
    assert!(cluster.stop_node(&leader).await);
    let rest: Vec<&String> = ids.iter().filter(|id| **id != leader).collect();
    let survivor = AdminClient::connect(cluster.node(rest[0]).unwrap().addr(), None).await.unwrap();
    let s = status_until(&survivor, "two voters with a new leader", |s| {
        voters(s).len() == 2 && s.replication.raft.as_ref().is_some_and(|r| r.leader.is_some())
    })
    .await;
    assert!(!voters(&s).contains(&leader), "{s}");
    assert!(s.members.iter().any(|m| m.member.id.as_str() == leader && m.member.state == MemberState::Left));
    for id in &rest {
        let c = AdminClient::connect(cluster.node(id).unwrap().addr(), None).await.unwrap();
        c.put(&format!("settings/by-{id}"), "two voters", AckLevel::Quorum).await.unwrap();
    }

    // Started again, it rejoins as a voter and takes writes.
    cluster.start_node(&leader.parse().unwrap()).await.unwrap();
    let back = AdminClient::connect(cluster.node(&leader).unwrap().addr(), None).await.unwrap();
    status_until(&back, "three voters again", led_by_three).await;
    write_until_taken(&back, "settings/back", "the node that rejoined").await;
    cluster.shutdown().await;
}

/// Three nodes in Raft mode with fast timing, stores under `dir`.
async fn raft_cluster(name: &str, dir: &std::path::Path) -> Cluster {
    crate::support::raft_cluster(name, dir, fast_raft_settings()).await
}

/// Writes `key` through `client` until a write is taken (within [`WAIT`]).
async fn write_until_taken(client: &AdminClient, key: &str, what: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while client.put(key, "yes", AckLevel::Quorum).await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "{what} never took a write");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Removes `node` through `client`, asking again while the group refuses
/// (a leader being elected, a voter just back), until its record says
/// removed (within [`WAIT`]).
async fn remove_until_removed(client: &AdminClient, node: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while client.set_node_state(node, NodeStateChange::Remove, AckLevel::Quorum).await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "{node} could not be removed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    status_until(client, "the node removed", |s| state_of(s, node) == Some(MemberState::Removed)).await;
}

fn state_of(s: &NodeStatus, id: &str) -> Option<MemberState> {
    s.members.iter().find(|m| m.member.id.as_str() == id).map(|m| m.member.state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_voter_stopped_cleanly_is_active_again_when_it_restarts_and_a_removed_one_stays_out_until_undrained()
 {
    let dir = tempfile::tempdir().unwrap();
    // The default: a stopped node stays a voter, recorded as draining while down.
    let mut cluster = raft_cluster("raft-restart", dir.path()).await;
    let ids: Vec<String> = cluster.nodes().map(|n| n.id().to_string()).collect();
    let first = AdminClient::connect(cluster.node(&ids[0]).unwrap().addr(), None).await.unwrap();
    status_until(&first, "a leader and three voters", led_by_three).await;

    // Stopped cleanly (drained first), then started again: active, not left
    // draining until an operator undrains it.
    let (stopped, other) = (&ids[2], &ids[1]);
    assert!(cluster.stop_node(stopped).await);
    let watcher = AdminClient::connect(cluster.node(other).unwrap().addr(), None).await.unwrap();
    status_until(&watcher, "the stopped node recorded as draining", |s| {
        state_of(s, stopped) == Some(MemberState::Draining)
    })
    .await;
    cluster.start_node(&stopped.parse().unwrap()).await.unwrap();
    status_until(&watcher, "the restarted node active again", |s| {
        state_of(s, stopped) == Some(MemberState::Active)
    })
    .await;
    let ready = call(cluster.node(stopped).unwrap().addr().as_str(), "GET", "/readyz", None, b"").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut ready = ready;
    while ready.status != 200 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never ready: {}",
            String::from_utf8_lossy(&ready.body)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        ready = call(cluster.node(stopped).unwrap().addr().as_str(), "GET", "/readyz", None, b"").await;
    }

    // An operator's drain outlasts a restart.
    watcher.set_node_state(stopped, NodeStateChange::Drain, AckLevel::Quorum).await.unwrap();
    assert!(cluster.stop_node(stopped).await);
    cluster.start_node(&stopped.parse().unwrap()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let s = status_until(&watcher, "a leader", |s| {
        s.replication.raft.as_ref().is_some_and(|r| r.leader.is_some())
    })
    .await;
    assert_eq!(state_of(&s, stopped), Some(MemberState::Draining), "{s}");
    watcher.set_node_state(stopped, NodeStateChange::Undrain, AckLevel::Quorum).await.unwrap();

    // Killed, then removed while down: started again on its old data, it does
    // not write itself back into membership.
    assert!(cluster.kill_node(stopped).await);
    let leader_view = status_until(&watcher, "a leader", |s| {
        s.replication.raft.as_ref().is_some_and(|r| r.leader.is_some())
    })
    .await;
    assert!(leader_view.replication.raft.is_some());
    remove_until_removed(&watcher, stopped).await;
    cluster.start_node(&stopped.parse().unwrap()).await.unwrap();
    // Its own log still has it a voter: a member's newer configuration tells it
    // otherwise, it asks to join again, and the leader refuses, saying why.
    let addr = cluster.node(stopped).unwrap().addr().as_str().to_string();
    let refused = readyz_until(&addr, "the removed node told why it is refused", |json| {
        json["join_error"].as_str().is_some_and(|e| e.contains("was removed from the cluster"))
    })
    .await;
    assert_eq!(refused["failing"][0], "refused by the cluster (see join_error)", "{refused}");
    let s = watcher.status().await.unwrap();
    assert_eq!(state_of(&s, stopped), Some(MemberState::Removed), "the removed node wrote itself back: {s}");
    assert_eq!(voters(&s).len(), 2, "{s}");
    // Out of the group, its copy is not kept up to date: it answers no read
    // from it, saying why (a consistent read too, at once).
    let out = AdminClient::connect(cluster.node(stopped).unwrap().addr(), None).await.unwrap();
    assert_out_of_cluster(&out, "the cluster refuses to take it back: ").await;
    watcher.put("settings/after", "still writable", AckLevel::Quorum).await.unwrap();

    // Undrained, it is taken back as a voter without a restart, and serves.
    watcher.set_node_state(stopped, NodeStateChange::Undrain, AckLevel::Quorum).await.unwrap();
    status_until(&watcher, "the undrained node a voter again", |s| {
        voters(s).len() == 3 && state_of(s, stopped) == Some(MemberState::Active)
    })
    .await;
    readyz_until(&addr, "the undrained node ready", |json| json["ready"] == true).await;
    let back = AdminClient::connect(cluster.node(stopped).unwrap().addr(), None).await.unwrap();
    write_until_taken(&back, "settings/returned", "the returned node").await;
    assert_eq!(&back.get_consistent("settings/after").await.unwrap().value[..], b"still writable");
    cluster.shutdown().await;
}

/// Checks that `out`, a node out of the cluster, refuses a read, a consistent
/// read and a write as `UNAVAILABLE`, each saying why (`reason`), and says
/// so in its status.
async fn assert_out_of_cluster(out: &AdminClient, reason: &str) {
    let refusals = [
        out.get("settings/after", spectrum::model::ReadAfter::Anything).await.map(|_| ()).unwrap_err(),
        out.get_consistent("settings/after").await.map(|_| ()).unwrap_err(),
        out.put("settings/from-outside", "no", AckLevel::Quorum).await.map(|_| ()).unwrap_err(),
    ];
    for refusal in refusals {
        assert_eq!(refusal.code(), Some(tonic::Code::Unavailable), "{refusal}");
        let text = refusal.to_string();
        assert!(text.contains("is out of the cluster (") && text.contains(reason), "{text}");
    }
    // Its status still answers, saying so.
    let status = out.status().await.unwrap();
    assert!(status.out_of_cluster.as_deref().is_some_and(|why| why.contains(reason)), "{status}");
    assert!(status.to_string().contains("OUT OF THE CLUSTER"), "{status}");
}

/// `/readyz` of the node at `addr` once `ok` holds of its JSON.
async fn readyz_until(addr: &str, what: &str, ok: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let json = call(addr, "GET", "/readyz", None, b"").await.json();
        if ok(&json) {
            return json;
        }
        assert!(tokio::time::Instant::now() < deadline, "never {what}: {json}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_removed_while_it_runs_is_out_until_undrained_then_a_voter_again_without_a_restart() {
    removed_while_it_runs_then_undrained(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_leader_removed_while_it_runs_is_out_until_undrained_then_a_voter_again_without_a_restart() {
    removed_while_it_runs_then_undrained(true).await;
}

/// Removes a running node (the leader, or a follower), checks it stays out
/// while removed, undrains it and waits for it to be a serving voter again.
async fn removed_while_it_runs_then_undrained(the_leader: bool) {
    let dir = tempfile::tempdir().unwrap();
    let cluster = raft_cluster("raft-removed-live", dir.path()).await;
    let ids: Vec<String> = cluster.nodes().map(|n| n.id().to_string()).collect();
    let watcher = AdminClient::connect(cluster.node(&ids[0]).unwrap().addr(), None).await.unwrap();
    let leader = status_until(&watcher, "a leader and three voters", led_by_three).await;
    let leader = leader.replication.raft.unwrap().leader.unwrap();
    let watcher_id = ids.iter().find(|id| **id != leader).unwrap();
    let watcher = AdminClient::connect(cluster.node(watcher_id).unwrap().addr(), None).await.unwrap();
    let removed =
        if the_leader { &leader } else { ids.iter().find(|id| **id != leader && *id != watcher_id).unwrap() };
    let addr = cluster.node(removed).unwrap().addr().as_str().to_string();
    // A watch on it, running (it has seen a write) before the removal.
    let direct = AdminClient::connect(cluster.node(removed).unwrap().addr(), None).await.unwrap();
    let mut events =
        direct.watch_with("settings/", None, WatchOptions::default().reconnect_for(Duration::ZERO));
    for n in 0.. {
        assert!(n < 50, "the watch saw no write");
        tokio::select! {
            event = events.next() => {
                event.expect("an event").expect("a change");
                break;
            }
            () = tokio::time::sleep(Duration::from_millis(200)) => {
                watcher.put(&format!("settings/before-{n}"), "1", AckLevel::Quorum).await.unwrap();
            }
        }
    }

    watcher.set_node_state(removed, NodeStateChange::Remove, AckLevel::Quorum).await.unwrap();
    status_until(&watcher, "two voters", |s| voters(s).len() == 2).await;
    // The watch ends, saying why, for the client to resume elsewhere.
    let ended = loop {
        match tokio::time::timeout(WAIT, events.next()).await.expect("the watch on the removed node ended") {
            Some(Ok(_)) => {}
            Some(Err(e)) => break e,
            None => panic!("the watch ended without saying why"),
        }
    };
    assert_eq!(ended.code(), Some(tonic::Code::Unavailable), "{ended}");
    let text = ended.to_string();
    assert!(
        text.contains("is out of the cluster (an operator removed it") && text.contains("another node"),
        "{text}"
    );
    let out = readyz_until(&addr, "the removed node not ready", |json| json["ready"] == false).await;
    assert!(out["failing"].as_array().unwrap().iter().any(|f| f == "removed from the cluster"), "{out}");
    // It stays out while removed (it asks, and is refused).
    tokio::time::sleep(Duration::from_secs(6)).await;
    let s = watcher.status().await.unwrap();
    assert_eq!((voters(&s).len(), state_of(&s, removed)), (2, Some(MemberState::Removed)), "{s}");
    let out = AdminClient::connect(cluster.node(removed).unwrap().addr(), None).await.unwrap();
    assert_out_of_cluster(&out, "an operator removed it").await;

    watcher.set_node_state(removed, NodeStateChange::Undrain, AckLevel::Quorum).await.unwrap();
    status_until(&watcher, "three voters again", |s| voters(s).len() == 3).await;
    readyz_until(&addr, "the undrained node ready", |json| json["ready"] == true).await;
    let back = AdminClient::connect(cluster.node(removed).unwrap().addr(), None).await.unwrap();
    write_until_taken(&back, "settings/back", "the node taken back").await;
    cluster.shutdown().await;
}

/// A voter restarted on an empty data directory (its disk lost) has forgotten
/// its votes and the entries it acknowledged: it answers no vote or entry and
/// says why, the other two go on, and once an operator removes it and lets it
/// return it joins as a new member and has the data.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_voter_back_on_an_empty_disk_takes_no_part_until_removed_and_undrained_then_rejoins_with_the_data()
{
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = raft_cluster("raft-lost-disk", dir.path()).await;
    let ids: Vec<String> = cluster.nodes().map(|n| n.id().to_string()).collect();
    let watcher = AdminClient::connect(cluster.node(&ids[0]).unwrap().addr(), None).await.unwrap();
    status_until(&watcher, "a leader and three voters", led_by_three).await;
    write_until_taken(&watcher, "settings/before", "the cluster").await;

    let lost = &ids[2];
    assert!(cluster.kill_node(lost).await);
    std::fs::remove_dir_all(dir.path().join(lost)).unwrap();
    cluster.start_node(&lost.parse().unwrap()).await.unwrap();
    let addr = cluster.node(lost).unwrap().addr().as_str().to_string();
    let refused = readyz_until(&addr, "the node told it lost its Raft state", |json| {
        json["join_error"].as_str().is_some_and(|e| e.contains("lost its Raft state"))
    })
    .await;
    let why = refused["join_error"].as_str().unwrap();
    assert!(why.contains(&format!("spectrum node remove {lost}")), "{why}");
    assert_eq!(refused["ready"], false, "{refused}");
    // The other two go on. The leader's entries and candidates' votes for it
    // are refused (taken, they would set its term: a leader's first attempt
    // came about 4 s after the restart when the refusals were taken out, and
    // panicked the leader's openraft on a match index going back).
    write_until_taken(&watcher, "settings/meanwhile", "the two others").await;
    let own = AdminClient::connect(cluster.node(lost).unwrap().addr(), None).await.unwrap();
    for _ in 0..30 {
        let s = own.status().await.unwrap();
        let raft = s.replication.raft.as_ref().expect("raft status");
        assert!(raft.term == 0 && raft.applied.is_none(), "the node that lost its state took part: {s}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // With another voter down, only one of the two that would remain takes
    // part: the removal is refused at once, and nothing is written (a trial's
    // removal timed out as "outcome unknown" and committed later, leaving
    // the record saying removed while the node still voted).
    let other = &ids[1];
    assert!(cluster.kill_node(other).await);
    let refused = watcher.set_node_state(lost, NodeStateChange::Remove, AckLevel::Quorum).await.unwrap_err();
    let text = refused.to_string();
    assert!(
        text.contains("take part, not a majority") && text.contains("its membership record unchanged"),
        "{text}"
    );
    cluster.start_node(&other.parse().unwrap()).await.unwrap();
    status_until(&watcher, "a leader and the other voter back", led_by_three).await;
    let s = watcher.status().await.unwrap();
    assert_eq!(state_of(&s, lost), Some(MemberState::Active), "the refused removal wrote: {s}");

    // Removed, then let return: it joins anew, copies the log, and serves.
    remove_until_removed(&watcher, lost).await;
    watcher.set_node_state(lost, NodeStateChange::Undrain, AckLevel::Quorum).await.unwrap();
    status_until(&watcher, "the node a voter again", |s| {
        voters(s).len() == 3 && state_of(s, lost) == Some(MemberState::Active)
    })
    .await;
    readyz_until(&addr, "the returned node ready", |json| json["ready"] == true).await;
    assert_eq!(&own.get_consistent("settings/meanwhile").await.unwrap().value[..], b"yes");
    assert_eq!(&own.get_consistent("settings/before").await.unwrap().value[..], b"yes");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_removal_the_group_refuses_leaves_the_node_a_member_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = raft_cluster("raft-removal-refused", dir.path()).await;
    let ids: Vec<String> = cluster.nodes().map(|n| n.id().to_string()).collect();
    let watcher = AdminClient::connect(cluster.node(&ids[0]).unwrap().addr(), None).await.unwrap();
    status_until(&watcher, "a leader and three voters", led_by_three).await;
    // One voter dead: removing another would leave one of two reachable.
    assert!(cluster.kill_node(&ids[2]).await);
    let target = &ids[1];
    let error = watcher.set_node_state(target, NodeStateChange::Remove, AckLevel::Quorum).await.unwrap_err();
    assert!(error.to_string().contains("is still a member"), "{error}");
    let s = watcher.status().await.unwrap();
    assert_eq!(state_of(&s, target), Some(MemberState::Active), "{s}");
    assert_eq!(voters(&s).len(), 3, "{s}");
    let addr = cluster.node(target).unwrap().addr().as_str().to_string();
    readyz_until(&addr, "the node still ready", |json| json["ready"] == true).await;
    cluster.shutdown().await;
}

/// With a majority of the voters down, a write on the last node is refused
/// `UNAVAILABLE` within its write timeout, saying why (an embedding trial
/// waited about twice the timeout for a message about a read index: openraft's
/// own wait for a leader's majority outlasted the node's deadline).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_a_majority_down_a_write_is_refused_within_its_write_timeout_saying_why() {
    const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::builder("it-raft-majority-down".parse().unwrap())
        .data_dir(dir.path())
        .configure_nodes(|b| {
            // openraft's default timing (not the fast test settings), as the trial ran.
            b.replication(ReplicationMode::Raft).write_timeout(WRITE_TIMEOUT)
        })
        .start()
        .await
        .unwrap();
    // The leader survives; its first write (which first finds where its audit
    // ring stopped, by a read index) comes after the other two are gone.
    let any = AdminClient::connect(cluster.node("node-1").unwrap().addr(), None).await.unwrap();
    let s = status_until(&any, "a leader and three voters", led_by_three).await;
    let leader = s.replication.raft.unwrap().leader.unwrap();
    let transport = spectrum_core::TransportConfig { request_timeout: Some(WAIT), ..Default::default() };
    let on_leader = cluster.node(&leader).unwrap().addr().clone();
    let client = AdminClient::connect_with(&on_leader, None, &transport).await.unwrap();
    for other in ["node-1", "node-2", "node-3"].into_iter().filter(|n| *n != leader) {
        assert!(cluster.kill_node(other).await);
    }

    for key in ["settings/a", "settings/b"] {
        let started = tokio::time::Instant::now();
        let err = client.put(key, "x", AckLevel::Quorum).await.unwrap_err();
        let took = started.elapsed();
        assert_eq!(err.code(), Some(tonic::Code::Unavailable), "{err}");
        // Within the write timeout and the audit record's wait (0.5 s); the
        // trial's doubling (a second wait for the record) would take 4 s.
        assert!(took < WRITE_TIMEOUT * 7 / 4, "refused after {took:?}: {err}");
        assert!(err.to_string().contains("no majority of the voters answered"), "{err}");
    }
    cluster.shutdown().await;
}
