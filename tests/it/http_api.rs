//! The HTTP/JSON management API (`/api/v1/…`) through the balancer: the same
//! callers, roles, audit log and messages as the gRPC API; bad input as JSON
//! errors; its OpenAPI document; the console's pages.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use spectrum::Cluster;
use spectrum::client::{AckLevel, AdminClient};

const BOOTSTRAP: &str = "it-http-api-bootstrap-token";

/// One HTTP/1.1 answer.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) headers: http::HeaderMap,
    pub(crate) body: Bytes,
}

impl Answer {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// The error's `(code, message)`.
    pub(crate) fn error(&self) -> (String, String) {
        let v = self.json();
        let code = v["error"]["code"].as_str().unwrap_or_else(|| panic!("no error code: {v}")).to_owned();
        (code, v["error"]["message"].as_str().unwrap().to_owned())
    }
}

/// Sends `method path` with `body` to `base` (`http://host:port`) over a fresh
/// HTTP/1.1 connection, with `token` as the bearer token.
pub(crate) async fn call(base: &str, method: &str, path: &str, token: Option<&str>, body: &[u8]) -> Answer {
    call_with(base, method, path, token, &[], body).await
}

/// [`call`], with `headers` added (a name given twice is sent twice).
pub(crate) async fn call_with(
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    let authority = base.strip_prefix("http://").expect("an http:// address");
    let stream = tokio::net::TcpStream::connect(authority).await.expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("handshake");
    tokio::spawn(conn);
    let mut request = http::Request::builder().method(method).uri(path).header("host", authority);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(Bytes::copy_from_slice(body))).unwrap();
    let response = sender.send_request(request).await.expect("an answer");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("the body").to_bytes();
    Answer { status: parts.status.as_u16(), headers: parts.headers, body }
}

async fn secured(name: &str) -> Cluster {
    let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("warn").try_init();
    Cluster::builder(name.parse().unwrap())
        .size(3)
        .management_token(BOOTSTRAP.parse().unwrap())
        .start()
        .await
        .expect("cluster starts")
}

/// Adds a user through the API; returns its token.
async fn add_user(base: &str, name: &str, role: &str) -> String {
    let body = json!({"name": name, "role": role}).to_string();
    let added = call(base, "POST", "/api/v1/users?ack=all", Some(BOOTSTRAP), body.as_bytes()).await;
    assert_eq!(added.status, 201, "{:?}", added.body);
    added.json()["token"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_need_a_token_and_the_role_of_the_grpc_call_and_every_write_is_audited() {
    let cluster = secured("it-http-roles").await;
    let base = cluster.balancer_url();

    let none = call(&base, "GET", "/api/v1/status", None, b"").await;
    assert_eq!(none.status, 401);
    assert_eq!(none.headers["www-authenticate"], "Bearer");
    assert!(none.headers.contains_key("spectrum-served-by"), "a refusal names its node too");
    assert_eq!(none.error().0, "unauthenticated");
    assert!(none.error().1.contains("missing bearer token"), "{:?}", none.error());
    let wrong = call(&base, "GET", "/api/v1/status", Some("not-the-token"), b"").await;
    assert_eq!((wrong.status, wrong.error().1.as_str()), (401, "invalid bearer token"));

    let vera = add_user(&base, "vera", "viewer").await;
    let otto = add_user(&base, "otto", "operator").await;

    let status = call(&base, "GET", "/api/v1/status", Some(&vera), b"").await;
    assert_eq!(status.status, 200);
    assert_eq!(status.json()["members"].as_array().unwrap().len(), 3);
    assert!(status.headers.contains_key("spectrum-served-by"));
    assert_eq!(status.json()["conflicts"], 0);
    let conflicts = call(&base, "GET", "/api/v1/conflicts?prefix=settings/", Some(&vera), b"").await;
    assert_eq!((conflicts.status, conflicts.json()), (200, json!([])), "viewers list conflicts");
    let unknown = call(&base, "GET", "/api/v1/conflicts?prefx=settings/", Some(&vera), b"").await;
    assert_eq!(unknown.status, 400, "an unknown parameter is refused: {:?}", unknown.body);

    let put = call(&base, "PUT", "/api/v1/config/settings/greeting", Some(&vera), b"hello").await;
    assert_eq!(put.status, 403);
    assert_eq!(
        put.error(),
        ("permission_denied".into(), "Put needs the admin role; user \"vera\" is a viewer".into())
    );

    let drain = call(&base, "POST", "/api/v1/nodes/node-2/drain?ack=all", Some(&otto), b"").await;
    assert_eq!(drain.status, 200, "{:?}", drain.body);
    assert_eq!(
        (drain.json()["node"].as_str(), drain.json()["state"].as_str()),
        (Some("node-2"), Some("draining"))
    );
    let undrain = call(&base, "POST", "/api/v1/nodes/node-2/undrain?ack=all", Some(&otto), b"").await;
    assert_eq!(undrain.json()["state"], "active");
    let remove = call(&base, "POST", "/api/v1/nodes/node-2/remove", Some(&otto), b"").await;
    assert_eq!(remove.status, 403);
    assert!(remove.error().1.contains("needs the admin role"), "{:?}", remove.error());

    let put = call(&base, "PUT", "/api/v1/config/settings/greeting?ack=all", Some(BOOTSTRAP), b"hello").await;
    assert_eq!(put.status, 200, "{:?}", put.body);
    let version = put.json()["version"].as_str().unwrap().to_owned();
    for node in cluster.nodes() {
        let path = format!("/api/v1/config/settings/greeting?min_version={version}");
        let got = call(node.url(), "GET", &path, Some(&vera), b"").await;
        assert_eq!((got.status, got.json()["value"].as_str()), (200, Some("hello")));
        assert_eq!(got.headers["spectrum-served-by"], node.id().as_str());
    }

    // The audit log, read over gRPC, holds the HTTP writes as it holds gRPC ones.
    let grpc = AdminClient::connect(&cluster.balancer_addr(), Some(otto.parse().unwrap())).await.unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let log = grpc.audit(&spectrum::model::AuditQuery::default()).await.unwrap();
        let has = |caller: &str, op: &str, ok: bool, code: &str| {
            log.0.iter().any(|e| {
                let r = &e.record;
                r.caller == caller && r.operation == op && r.ok == ok && r.code == code
            })
        };
        if has("vera", "Put", false, "PermissionDenied")
            && has("bootstrap", "Put", true, "Ok")
            && has("otto", "SetNodeState", true, "Ok")
            && has("otto", "SetNodeState(REMOVED)", false, "PermissionDenied")
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "audit log lacks the HTTP writes: {log}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let audit = call(&base, "GET", "/api/v1/audit?limit=5", Some(&vera), b"").await;
    assert_eq!(audit.status, 403, "viewers do not read the audit log");
    let audit = call(&base, "GET", "/api/v1/audit?limit=5", Some(&otto), b"").await;
    assert_eq!(audit.json().as_array().unwrap().len(), 5);
    // Nor through the raw reads: refused inside the namespace, left out across.
    for path in ["/api/v1/config?prefix=audit/", "/api/v1/config/users/vera", "/api/v1/watch?prefix=users/"] {
        assert_eq!(call(&base, "GET", path, Some(&vera), b"").await.status, 403, "{path}");
    }
    let all = call(&base, "GET", "/api/v1/config", Some(&vera), b"").await.json();
    let keys: Vec<&str> = all.as_array().unwrap().iter().map(|e| e["key"].as_str().unwrap()).collect();
    assert!(
        !keys.is_empty() && !keys.iter().any(|k| k.starts_with("audit/") || k.starts_with("users/")),
        "{keys:?}"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_json_error_naming_what_is_wrong_with_the_grpc_message() {
    let cluster = secured("it-http-bad-input").await;
    let base = cluster.balancer_url();
    let admin = Some(BOOTSTRAP);

    let bad_url =
        br#"{"name": "orders", "spec": {"kind": "jdbc", "url": "", "driver": "org.postgresql.Driver"}}"#;
    let refused = call(&base, "POST", "/api/v1/resources", admin, bad_url).await;
    assert_eq!(refused.status, 400);
    let (code, message) = refused.error();
    assert_eq!(code, "invalid_argument");
    assert!(message.starts_with("invalid resource definition: spec.url: "), "{message}");
    let grpc =
        AdminClient::connect(&cluster.balancer_addr(), Some(BOOTSTRAP.parse().unwrap())).await.unwrap();
    let grpc_error = grpc.create_resource(bad_url.to_vec(), false, AckLevel::All).await.unwrap_err();
    assert_eq!(grpc_error.to_string(), format!("{message} (InvalidArgument)"), "the same message as gRPC");

    for (method, path, body, needle) in [
        ("POST", "/api/v1/resources", &b"{\"name\": "[..], "malformed"),
        ("POST", "/api/v1/users", &b"{\"name\": \"x\", "[..], "malformed JSON body"),
        ("POST", "/api/v1/users", &b""[..], "missing JSON body"),
        ("POST", "/api/v1/users", &br#"{"name": "x", "role": "root"}"#[..], "unknown variant `root`"),
        ("PUT", "/api/v1/dataflows/flow", &b"[1, 2"[..], ""),
        ("PUT", "/api/v1/config/settings/a?ack=sometimes", &b"v"[..], "sometimes"),
        ("PUT", "/api/v1/dataflows/flow?replce=true", &b"{}"[..], "replce"),
        ("POST", "/api/v1/nodes/not%20an%20id/drain", &b""[..], "invalid node id"),
        ("GET", "/api/v1/config/settings/a?min_version=garbage", &b""[..], ""),
    ] {
        let answer = call(&base, method, path, admin, body).await;
        assert_eq!(answer.status, 400, "{method} {path}: {:?}", answer.body);
        let (code, message) = answer.error();
        assert_eq!(code, "invalid_argument", "{method} {path}");
        assert!(message.contains(needle), "{method} {path}: {message}");
    }

    let node = cluster.nodes().next().unwrap().url().to_owned();
    let huge = vec![b'x'; spectrum::core::transport::DEFAULT_MAX_MESSAGE_BYTES + 1];
    let too_large = call(&node, "PUT", "/api/v1/config/settings/big", admin, &huge).await;
    assert_eq!((too_large.status, too_large.error().0.as_str()), (413, "payload_too_large"));

    let nowhere = call(&base, "GET", "/api/v1/nowhere", admin, b"").await;
    assert_eq!(nowhere.error(), ("not_found".to_owned(), "no such API path: /api/v1/nowhere".to_owned()));
    assert_eq!(nowhere.status, 404);
    let wrong_method = call(&base, "DELETE", "/api/v1/status", admin, b"").await;
    assert_eq!((wrong_method.status, wrong_method.error().0.as_str()), (405, "method_not_allowed"));
    let missing = call(&base, "GET", "/api/v1/dataflows/none", admin, b"").await;
    assert_eq!((missing.status, missing.error().0.as_str()), (404, "not_found"));
    // Outside the API, a path nothing serves is a plain 404 (not a 200 with a
    // gRPC status), on a node and through the balancer; a gRPC call to a method
    // nothing serves is still UNIMPLEMENTED.
    for at in [&node, &base] {
        let elsewhere = call(at, "GET", "/nonexistent", admin, b"").await;
        assert_eq!(elsewhere.status, 404, "{}", String::from_utf8_lossy(&elsewhere.body));
        assert!(elsewhere.headers.get("grpc-status").is_none(), "{:?}", elsewhere.headers);
    }
    let grpc = [("content-type", "application/grpc"), ("te", "trailers")];
    let unknown = call_with(&node, "POST", "/no.such.Service/Method", admin, &grpc, b"").await;
    assert_eq!(unknown.status, 200, "{:?}", unknown.headers);
    assert_eq!(unknown.headers["grpc-status"], "12", "{:?}", unknown.headers);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_write_only_and_definitions_round_trip_through_export_and_import() {
    let cluster = secured("it-http-secrets").await;
    let base = cluster.balancer_url();
    let admin = Some(BOOTSTRAP);
    let orders = json!({"name": "orders", "description": "orders database", "spec": {"kind": "jdbc",
        "url": "jdbc:postgresql://127.0.0.1:5432/orders", "driver": "org.postgresql.Driver",
        "user": "app", "password": "hunter2-secret"}});
    let created =
        call(&base, "POST", "/api/v1/resources?ack=all", admin, orders.to_string().as_bytes()).await;
    assert_eq!(created.status, 200, "{:?}", created.body);
    assert_eq!(created.json()["resource"]["has_secret"], true);
    let again = call(&base, "POST", "/api/v1/resources", admin, orders.to_string().as_bytes()).await;
    assert_eq!((again.status, again.error().0.as_str()), (409, "already_exists"));
    let replaced =
        call(&base, "POST", "/api/v1/resources?replace=true&ack=all", admin, orders.to_string().as_bytes())
            .await;
    assert_eq!(replaced.status, 200);

    for path in ["/api/v1/resources", "/api/v1/resources/orders", "/api/v1/config?prefix=resources/"] {
        let answer = call(&base, "GET", path, admin, b"").await;
        assert_eq!(answer.status, 200, "{path}");
        assert!(!String::from_utf8_lossy(&answer.body).contains("hunter2"), "{path} shows the secret");
    }
    let flow = br#"{"steps": ["trim"], "resource": "orders"}"#;
    assert_eq!(call(&base, "PUT", "/api/v1/dataflows/clean?ack=all", admin, flow).await.status, 200);
    let export = call(&base, "GET", "/api/v1/export/config", admin, b"").await;
    assert_eq!(export.status, 200);
    assert!(!String::from_utf8_lossy(&export.body).contains("hunter2"));
    let plan = call(&base, "POST", "/api/v1/import/config?dry_run=true", admin, &export.body).await;
    assert_eq!(plan.status, 200, "{:?}", plan.body);
    assert_eq!(
        (plan.json()["dry_run"].as_bool(), plan.json()["applied"].as_bool()),
        (Some(true), Some(false))
    );
    assert_eq!(call(&base, "DELETE", "/api/v1/dataflows/clean?ack=all", admin, b"").await.status, 200);
    let flows = call(&base, "GET", "/api/v1/dataflows", admin, b"").await;
    assert_eq!(flows.json(), json!([]));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_and_the_console_are_served_by_every_node_without_a_token() {
    let cluster = secured("it-http-openapi").await;
    let base = cluster.balancer_url();
    let doc = call(&base, "GET", "/api/v1/openapi.json", None, b"").await;
    assert_eq!(doc.status, 200);
    let doc = doc.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{}", doc["openapi"]);
    for path in [
        "/api/v1/status",
        "/api/v1/config/{key}",
        "/api/v1/licenses/{name}",
        "/api/v1/dataflows/{name}",
        "/api/v1/resources",
        "/api/v1/resource-checks",
        "/api/v1/nodes/{id}/drain",
        "/api/v1/users/{name}/rotate",
        "/api/v1/audit",
        "/api/v1/export/config",
        "/api/v1/import/resources",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} is not documented");
    }
    for schema in
        ["ErrorBody", "NodeStatus", "ResourceStored", "Member", "Liveness", "UserToken", "AuditEntry"]
    {
        assert!(doc["components"]["schemas"].get(schema).is_some(), "{schema} has no schema");
    }
    assert!(doc["components"]["securitySchemes"].get("bearer").is_some());

    for node in cluster.nodes().map(|n| n.url().to_owned()).chain([base]) {
        let page = call(&node, "GET", "/console", None, b"").await;
        assert_eq!(page.status, 200);
        assert!(page.headers["content-type"].to_str().unwrap().starts_with("text/html"));
        assert!(page.headers["content-security-policy"].to_str().unwrap().contains("default-src 'self'"));
        let script = call(&node, "GET", "/console/app.js", None, b"").await;
        assert_eq!(script.status, 200);
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_balancer_settings_are_shown_set_and_cleared_over_http_by_the_roles_of_the_grpc_calls() {
    let cluster = secured("it-http-balancer").await;
    let base = cluster.balancer_url();
    let viewer = add_user(&base, "watcher", "viewer").await;
    let strategy = br#"{"name":"consistent_hash","hash_key":"x-tenant","load_factor":1.5}"#;

    let refused = call(&base, "PUT", "/api/v1/balancer/strategy", Some(&viewer), strategy).await;
    assert_eq!(refused.status, 403, "{:?}", refused.body);
    assert!(refused.error().1.contains("admin"), "{:?}", refused.error());
    let bad = call(
        &base,
        "PUT",
        "/api/v1/balancer/strategy",
        Some(BOOTSTRAP),
        br#"{"name":"random","load_factor":2}"#,
    )
    .await;
    assert_eq!((bad.status, bad.error().0.as_str()), (400, "invalid_argument"), "{:?}", bad.body);
    assert!(bad.error().1.contains("load_factor"), "{:?}", bad.error());

    let set = call(&base, "PUT", "/api/v1/balancer/strategy?ack=all", Some(BOOTSTRAP), strategy).await;
    assert_eq!(set.status, 200, "{:?}", set.body);
    let weight =
        call(&base, "PUT", "/api/v1/balancer/weights/node-2?ack=all", Some(BOOTSTRAP), br#"{"weight":0}"#)
            .await;
    assert_eq!(weight.status, 200, "{:?}", weight.body);
    let unknown =
        call(&base, "PUT", "/api/v1/balancer/weights/node-9", Some(BOOTSTRAP), br#"{"weight":1}"#).await;
    assert_eq!(unknown.status, 404, "{:?}", unknown.body);

    let shown = call(&base, "GET", "/api/v1/balancer", Some(&viewer), b"").await.json();
    assert_eq!(shown["strategy"]["name"], "consistent_hash", "{shown}");
    assert_eq!(shown["weights"][0]["node"], "node-2", "{shown}");
    assert_eq!(shown["weights"][0]["weight"], 0, "{shown}");

    let cleared = call(&base, "DELETE", "/api/v1/balancer/strategy?ack=all", Some(BOOTSTRAP), b"").await;
    assert_eq!(cleared.status, 200, "{:?}", cleared.body);
    let cleared =
        call(&base, "DELETE", "/api/v1/balancer/weights/node-2?ack=all", Some(BOOTSTRAP), b"").await;
    assert_eq!(cleared.status, 200, "{:?}", cleared.body);
    let shown = call(&base, "GET", "/api/v1/balancer", Some(&viewer), b"").await.json();
    assert!(shown["strategy"].is_null() && shown["weights"] == json!([]), "{shown}");
    cluster.shutdown().await;
}
