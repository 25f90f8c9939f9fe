//! Users, roles and the audit log, through the balancer of an in-process cluster
//! whose nodes share a bootstrap token.

use std::time::Duration;

use futures::StreamExt;
use spectrum::Cluster;
use spectrum::auth::Token;
use spectrum::client::{AckLevel, AdminClient, AuditQuery, NodeStateChange, ReadAfter, Role};
use spectrum::core::PeerAddr;
use spectrum::model::{AuditLog, UserToken};
use tonic::Code;

const BOOTSTRAP: &str = "it-users-bootstrap-token";
const SECRET: &str = "Tr0ub4dor-and-3";

/// Longest a test waits for something to replicate: the nodes' sync interval is
/// 1 s, and the machine may be loaded.
const REPLICATION_BOUND: Duration = Duration::from_secs(10);

async fn secured(name: &str, size: usize, bootstrap: &str) -> Cluster {
    let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("warn").try_init();
    Cluster::builder(name.parse().unwrap())
        .size(size)
        .management_token(bootstrap.parse().unwrap())
        .start()
        .await
        .expect("cluster starts")
}

async fn client(addr: &PeerAddr, token: &str) -> AdminClient {
    AdminClient::connect(addr, Some(token.parse().unwrap())).await.expect("connect")
}

/// A secured three-node cluster, the bootstrap admin's client through its
/// balancer, and the users it added: `vera` (viewer) and `otto` (operator).
async fn with_vera_and_otto(name: &str) -> (Cluster, AdminClient, UserToken, UserToken) {
    let cluster = secured(name, 3, BOOTSTRAP).await;
    let admin = client(&cluster.balancer_addr(), BOOTSTRAP).await;
    let vera = admin.add_user("vera", Role::Viewer, AckLevel::All).await.unwrap();
    let otto = admin.add_user("otto", Role::Operator, AckLevel::All).await.unwrap();
    (cluster, admin, vera, otto)
}

/// Reads the audit log through `admin` until `done` holds for it (records written
/// through other nodes replicate), bounded by [`REPLICATION_BOUND`].
async fn audit_until(admin: &AdminClient, done: impl Fn(&AuditLog) -> bool) -> AuditLog {
    let deadline = tokio::time::Instant::now() + REPLICATION_BOUND;
    loop {
        let log = admin.audit(&AuditQuery { limit: Some(1000), ..AuditQuery::default() }).await.unwrap();
        if done(&log) {
            return log;
        }
        assert!(tokio::time::Instant::now() < deadline, "the audit log never got there: {log}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn has(log: &AuditLog, caller: &str, operation: &str, target: &str, ok: bool) -> bool {
    log.0.iter().any(|e| {
        let r = &e.record;
        r.caller == caller && r.operation == operation && r.target == target && r.ok == ok
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_limit_what_users_may_do_and_the_audit_log_names_every_writer_without_secrets() {
    let (cluster, admin, vera, otto) = with_vera_and_otto("it-users-roles").await;
    let balancer = cluster.balancer_addr();
    assert_eq!((vera.user.role, otto.user.role), (Role::Viewer, Role::Operator));
    assert_ne!(vera.token, otto.token);
    let err = admin.add_user("vera", Role::Admin, AckLevel::All).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::AlreadyExists), "{err}");
    let err = admin.add_user("bootstrap", Role::Admin, AckLevel::All).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::InvalidArgument), "{err}");
    let as_vera = client(&balancer, vera.token.expose()).await;
    let as_otto = client(&balancer, otto.token.expose()).await;

    // A viewer reads but cannot write: PERMISSION_DENIED naming the role, nothing changed.
    as_vera.status().await.unwrap();
    let err = as_vera.put("settings/colour", "red", AckLevel::All).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::PermissionDenied), "{err}");
    assert!(err.to_string().contains("needs the admin role"), "{err}");
    let err = as_vera.set_node_state("node-2", NodeStateChange::Drain, AckLevel::All).await.unwrap_err();
    assert!(err.to_string().contains("needs the operator role"), "{err}");
    let err = as_vera.audit(&AuditQuery::default()).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::PermissionDenied), "{err}");
    for node in cluster.nodes() {
        let direct = client(node.addr(), BOOTSTRAP).await;
        assert!(direct.list("settings/", ReadAfter::Anything).await.unwrap().0.is_empty(), "{}", node.id());
    }

    // An operator drains and undrains a node, but manages no users.
    let drained = as_otto.set_node_state("node-2", NodeStateChange::Drain, AckLevel::All).await.unwrap();
    assert_eq!(drained.member.state.to_string(), "draining");
    as_otto.set_node_state("node-2", NodeStateChange::Undrain, AckLevel::All).await.unwrap();
    let err = as_otto.add_user("mallory", Role::Admin, AckLevel::All).await.unwrap_err();
    assert!(err.to_string().contains("AddUser needs the admin role"), "{err}");
    let err = as_otto.users(ReadAfter::Anything).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::PermissionDenied));

    // The admin writes a secret; users are listed without tokens.
    let definition = format!(
        r#"{{"name":"orders","spec":{{"kind":"jdbc","url":"jdbc:postgresql://127.0.0.1:1/orders","driver":"org.postgresql.Driver","user":"app","password":"{SECRET}"}}}}"#
    );
    admin.create_resource(definition.clone(), false, AckLevel::All).await.unwrap();
    // A replace is recorded as one, not as a create.
    admin.create_resource(definition, true, AckLevel::All).await.unwrap();
    let users = admin.users(ReadAfter::Anything).await.unwrap();
    let names: Vec<_> = users.0.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(names, ["otto", "vera"]);
    let raw = admin.get("users/vera", ReadAfter::Anything).await.unwrap();
    let raw = String::from_utf8(raw.value).unwrap();
    assert!(raw.contains(r#""token_hash":"***""#), "a raw read hides the hash: {raw}");

    // The audit log holds every write, with who, and never a secret or a token.
    let log = audit_until(&as_otto, |log| {
        has(log, "bootstrap", "AddUser", "vera", true)
            && has(log, "bootstrap", "AddUser", "vera", false)
            && has(log, "vera", "Put", "settings/colour", false)
            && has(log, "vera", "SetNodeState", "node-2", false)
            && has(log, "otto", "SetNodeState", "node-2", true)
            && has(log, "otto", "AddUser", "mallory", false)
            && has(log, "bootstrap", "CreateResource", "orders", true)
            && has(log, "bootstrap", "CreateResource(replace)", "orders", true)
    })
    .await;
    let denied = log.0.iter().find(|e| e.record.caller == "vera" && e.record.operation == "Put").unwrap();
    assert_eq!((denied.record.code.as_str(), denied.record.role), ("PermissionDenied", Role::Viewer));
    assert!(log.0.windows(2).all(|w| w[0].record.at_ms >= w[1].record.at_ms), "newest first");
    assert!(
        log.0.iter().all(|e| e.record.operation != "Get" && e.record.operation != "Status"),
        "reads are not audited"
    );
    let json = serde_json::to_string(&log).unwrap();
    for secret in [SECRET, BOOTSTRAP, vera.token.expose(), otto.token.expose()] {
        assert!(!json.contains(secret), "the audit log shows a secret: {json}");
    }
    let mine = as_otto
        .audit(&AuditQuery { user: Some("otto".into()), limit: Some(2), ..AuditQuery::default() })
        .await
        .unwrap();
    assert!(mine.0.len() <= 2 && mine.0.iter().all(|e| e.record.caller == "otto"), "{mine}");
    cluster.shutdown().await;
}

/// The raw reads (`Get`, `List`, `ListConflicts`, `Watch`) are a viewer's, yet
/// they show no more than the dedicated calls: the audit log's records need the
/// operator role (as `ListAudit`), users' records the admin role (as
/// `ListUsers`). A read inside those namespaces is refused naming the role; a
/// read across namespaces leaves their keys out; a watch never passes them on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_reads_show_a_viewer_neither_the_audit_log_nor_users_and_an_operator_no_users() {
    let (cluster, admin, vera, otto) = with_vera_and_otto("it-users-raw-reads").await;
    let balancer = cluster.balancer_addr();
    admin.put("settings/colour", "teal", AckLevel::All).await.unwrap();
    let as_vera = client(&balancer, vera.token.expose()).await;
    let as_otto = client(&balancer, otto.token.expose()).await;
    let audit = admin.list("audit/", ReadAfter::Anything).await.unwrap();
    let audit_key = audit.0.first().expect("the writes so far are audited").key.clone();

    let mut watched = as_vera.watch("", None);
    let events = tokio::spawn(async move {
        let mut keys = Vec::new();
        while keys.last().is_none_or(|k| k != "settings/last") {
            let next = tokio::time::timeout(REPLICATION_BOUND, watched.next()).await;
            keys.push(next.expect("an event in time").expect("the watch goes on").unwrap().key);
        }
        keys
    });
    for (reader, key, needed) in [
        (&as_vera, audit_key.as_str(), "operator"),
        (&as_vera, "users/vera", "admin"),
        (&as_otto, "users/otto", "admin"),
    ] {
        let err = reader.get(key, ReadAfter::Anything).await.unwrap_err();
        assert_eq!(err.code(), Some(Code::PermissionDenied), "{key}: {err}");
        assert!(err.to_string().contains(&format!("needs the {needed} role")), "{err}");
        let prefix = &key[..key.find('/').unwrap() + 1];
        let err = reader.list(prefix, ReadAfter::Anything).await.unwrap_err();
        assert_eq!(err.code(), Some(Code::PermissionDenied), "{prefix}: {err}");
        let err = reader.watch(prefix, None).next().await.unwrap().unwrap_err();
        assert_eq!(err.code(), Some(Code::PermissionDenied), "{prefix}: {err}");
    }
    let keys = |entries: spectrum::model::Entries| entries.0.into_iter().map(|e| e.key).collect::<Vec<_>>();
    let seen = keys(as_vera.list("", ReadAfter::Anything).await.unwrap());
    assert!(seen.contains(&"settings/colour".to_owned()), "{seen:?}");
    assert!(!seen.iter().any(|k| k.starts_with("audit/") || k.starts_with("users/")), "{seen:?}");
    let seen = keys(as_otto.list("", ReadAfter::Anything).await.unwrap());
    assert!(seen.iter().any(|k| k.starts_with("audit/")) && !seen.iter().any(|k| k.starts_with("users/")));
    as_otto.get(&audit_key, ReadAfter::Anything).await.unwrap();
    admin.get("users/vera", ReadAfter::Anything).await.unwrap();

    // The admin's writes meanwhile, each with its audit record, one of them a
    // user's: the viewer's watch of everything passes on the settings alone.
    admin.put("settings/size", "9", AckLevel::All).await.unwrap();
    admin.add_user("walt", Role::Viewer, AckLevel::All).await.unwrap();
    admin.put("settings/last", "1", AckLevel::All).await.unwrap();
    assert_eq!(events.await.unwrap(), ["settings/size", "settings/last"]);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_is_refused_by_every_node_within_a_sync_interval() {
    let cluster = secured("it-users-revoke", 3, BOOTSTRAP).await;
    let admin = client(&cluster.balancer_addr(), BOOTSTRAP).await;
    let added = admin.add_user("temp", Role::Viewer, AckLevel::All).await.unwrap();
    let token = added.token.expose().to_owned();
    for node in cluster.nodes() {
        client(node.addr(), &token).await.status().await.unwrap_or_else(|e| panic!("{}: {e}", node.id()));
    }

    // Revoked through one node, acknowledged by that node alone: the others learn
    // it by replication.
    let first = cluster.nodes().next().unwrap();
    client(first.addr(), BOOTSTRAP).await.revoke_user("temp", AckLevel::Local).await.unwrap();
    let mut addrs: Vec<PeerAddr> = cluster.nodes().map(|n| n.addr().clone()).collect();
    addrs.push(cluster.balancer_addr());
    let deadline = tokio::time::Instant::now() + REPLICATION_BOUND;
    for addr in &addrs {
        let as_temp = client(addr, &token).await;
        loop {
            match as_temp.status().await {
                Err(e) if e.code() == Some(Code::Unauthenticated) => {
                    assert!(e.to_string().contains("revoked"), "{e}");
                    break;
                }
                other => {
                    assert!(tokio::time::Instant::now() < deadline, "{addr} still accepts it: {other:?}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }
    let err = admin.rotate_user("temp", AckLevel::All).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::FailedPrecondition), "{err}");
    let listed = admin.users(ReadAfter::Anything).await.unwrap();
    assert!(listed.0.iter().any(|u| u.name == "temp" && u.revoked), "{listed}");

    // Rotation: the new token works, the old one is refused.
    let keeper = admin.add_user("keeper", Role::Admin, AckLevel::All).await.unwrap();
    let rotated = admin.rotate_user("keeper", AckLevel::All).await.unwrap();
    client(&cluster.balancer_addr(), rotated.token.expose()).await.status().await.unwrap();
    let err = client(&cluster.balancer_addr(), keeper.token.expose()).await.status().await.unwrap_err();
    assert_eq!(err.code(), Some(Code::Unauthenticated), "{err}");
    cluster.shutdown().await;
}

/// A watch opened with a token ends, with the refusal, at its first event
/// after the token is revoked or rotated: it never streams a change made
/// after that to a token every new call refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_watch_ends_once_its_token_is_revoked_or_rotated() {
    let (cluster, admin, vera, otto) = with_vera_and_otto("it-users-watch-revoked").await;
    let balancer = cluster.balancer_addr();
    let mut watches = Vec::new();
    for user in [&vera, &otto] {
        let mut watch = client(&balancer, user.token.expose()).await.watch("settings/", None);
        // Written until the watch (opened when first polled) has seen it.
        let key = format!("settings/before-{}", user.user.name);
        let mut seen = None;
        for _ in 0..20 {
            admin.put(&key, "seen", AckLevel::All).await.unwrap();
            if let Ok(event) = tokio::time::timeout(Duration::from_millis(500), watch.next()).await {
                seen = Some(event.expect("the watch goes on").expect("an event"));
                break;
            }
        }
        assert_eq!(seen.expect("an event in time").key, key);
        watches.push(watch);
    }
    admin.revoke_user("vera", AckLevel::All).await.unwrap();
    admin.rotate_user("otto", AckLevel::All).await.unwrap();
    // Every node knows before the change the watches must not carry.
    for node in cluster.nodes() {
        for (user, why) in [(&vera, "revoked"), (&otto, "invalid bearer token")] {
            let err = client(node.addr(), user.token.expose()).await.status().await.unwrap_err();
            assert!(err.to_string().contains(why), "{}: {err}", node.id());
        }
    }
    admin.put("settings/after", "secret", AckLevel::All).await.unwrap();
    for (mut watch, why) in watches.into_iter().zip(["it was revoked", "no longer any user's"]) {
        // Events sent before the revocation may still be on their way.
        let err = loop {
            let next =
                tokio::time::timeout(REPLICATION_BOUND, watch.next()).await.expect("an answer in time");
            match next.expect("the watch says why it ends") {
                Ok(event) => assert_ne!(event.key, "settings/after", "streamed after the revocation"),
                Err(err) => break err,
            }
        };
        assert_eq!(err.code(), Some(Code::Unauthenticated), "{err}");
        assert!(err.to_string().contains(why), "{err}");
        assert!(watch.next().await.is_none(), "the watch ended");
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_of_another_cluster_are_refused() {
    let east = secured("it-users-east", 1, "east-bootstrap").await;
    let west = secured("it-users-west", 1, "west-bootstrap").await;
    let west_admin = client(&west.balancer_addr(), "west-bootstrap").await;
    let west_user = west_admin.add_user("wanda", Role::Admin, AckLevel::All).await.unwrap();
    for token in ["west-bootstrap", west_user.token.expose()] {
        let err = client(&east.balancer_addr(), token).await.status().await.unwrap_err();
        assert_eq!(err.code(), Some(Code::Unauthenticated), "{err}");
        assert!(err.to_string().contains("invalid bearer token"), "{err}");
    }
    let no_token: Option<Token> = None;
    let err =
        AdminClient::connect(&east.balancer_addr(), no_token).await.unwrap().status().await.unwrap_err();
    assert!(err.to_string().contains("missing bearer token"), "{err}");
    east.shutdown().await;
    west.shutdown().await;
}
