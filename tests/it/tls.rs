//! A cluster over TLS, with certificates made by `spectrum::cert`: nodes replicate
//! over mutual TLS, clients connect with the CA alone, and neither a certificate
//! from another CA nor one naming another node gets a peer in.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use spectrum::balancer::{BackendConfig, Balancer, BalancerConfig, BalancerHandle};
use spectrum::cert::CertificateAuthority;
use spectrum::client::{AckLevel, AdminClient};
use spectrum::core::tls::{ClientAuth, TlsConfig};
use spectrum::core::{PeerAddr, TransportConfig, transport};
use spectrum::{Node, NodeBuilder};

const CLUSTER: &str = "it-tls";
const HOSTS: [&str; 2] = ["127.0.0.1", "localhost"];

fn hosts() -> Vec<String> {
    HOSTS.iter().map(|h| (*h).to_owned()).collect()
}

fn node_tls(ca: &CertificateAuthority, cert_for: &str) -> TlsConfig {
    let cert = ca.issue(&cert_for.parse().unwrap(), &hosts()).unwrap();
    TlsConfig::from_pem(ca.cert_pem(), cert.cert_pem, cert.key_pem).unwrap()
}

fn node(id: &str) -> NodeBuilder {
    let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("warn").try_init();
    NodeBuilder::new(id.parse().unwrap(), CLUSTER.parse().unwrap())
        .in_memory()
        .drain_grace(Duration::ZERO)
        .sync_interval(Duration::from_millis(100))
}

/// A client trusting `ca` and holding no certificate of its own.
async fn client(ca: &CertificateAuthority, node: &Node) -> AdminClient {
    let transport = TransportConfig::default().with_tls(TlsConfig::from_ca_pem(ca.cert_pem()).unwrap());
    AdminClient::connect_with(node.addr(), None, &transport).await.expect("a TLS client connects")
}

/// Three nodes of one CA, each with its own certificate, seeded with each other.
async fn tls_cluster(ca: &CertificateAuthority) -> Vec<Node> {
    let mut listeners = Vec::new();
    for _ in 0..3 {
        listeners.push(transport::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap());
    }
    let addrs: Vec<PeerAddr> = listeners.iter().map(transport::Listener::addr).collect();
    let starts = listeners.into_iter().enumerate().map(|(i, listener)| {
        let id = format!("node-{}", i + 1);
        let seeds: Vec<PeerAddr> = addrs.iter().filter(|a| **a != addrs[i]).cloned().collect();
        node(&id).tls(node_tls(ca, &id)).listener(listener).seeds(seeds).start()
    });
    futures::future::try_join_all(starts).await.expect("TLS nodes start")
}

/// Waits (up to 10 s) until `node`'s own store holds `key` with `value`.
async fn wait_for_value(node: &Node, key: &str, value: &[u8]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let held = node.store().get(key).await.unwrap().and_then(|r| r.value.map(|v| v.to_vec()));
        if held.as_deref() == Some(value) {
            return;
        }
        assert!(Instant::now() < deadline, "{} never held {key} = {value:?} (holds {held:?})", node.id());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_replicate_over_mutual_tls_and_a_write_on_any_node_reaches_every_node() {
    let ca = CertificateAuthority::generate().unwrap();
    let nodes = tls_cluster(&ca).await;
    for (i, writer) in nodes.iter().enumerate() {
        let key = format!("settings/written-on-{}", i + 1);
        let admin = client(&ca, writer).await;
        admin.put(&key, b"over tls".to_vec(), AckLevel::All).await.expect("acknowledged by all over TLS");
        for n in &nodes {
            wait_for_value(n, &key, b"over tls").await;
        }
    }
    let status = client(&ca, &nodes[2]).await.status().await.unwrap();
    assert_eq!(status.members.len(), 3, "{:?}", status.members);
    for n in nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_port_over_tls_refuses_plaintext_clients_and_clients_of_another_ca() {
    let ca = CertificateAuthority::generate().unwrap();
    let n = node("node-1").tls(node_tls(&ca, "node-1")).start().await.unwrap();
    let plain = TransportConfig { connect_timeout: Duration::from_secs(1), ..TransportConfig::default() };
    let refused = match AdminClient::connect_with(n.addr(), None, &plain).await {
        Ok(c) => c.status().await.map(drop).unwrap_err().to_string(),
        Err(e) => e.to_string(),
    };
    // A plaintext HTTP/2 (gRPC) client reads why in the port's GOAWAY, and
    // the typed client says just that.
    assert!(refused.starts_with(spectrum_core::tls_accept::REASON), "{refused}");
    assert!(!refused.contains("h2 protocol error"), "{refused}");
    // Plaintext HTTP/1.1 is told, in HTTP/1.1, that the port speaks TLS.
    let answer = plaintext_get(n.local_addr()).await;
    assert!(answer.starts_with("HTTP/1.1 400 Bad Request"), "{answer}");
    assert!(answer.contains("this port speaks TLS"), "{answer}");

    let foreign = CertificateAuthority::generate().unwrap();
    let stranger = TransportConfig::default().with_tls(TlsConfig::from_ca_pem(foreign.cert_pem()).unwrap());
    assert!(
        AdminClient::connect_with(n.addr(), None, &stranger).await.is_err(),
        "a client trusting another CA does not accept the node's certificate"
    );

    // A client trusting the right CA but presenting a certificate of another CA is
    // refused at the handshake.
    let foreign_cert = foreign.issue(&"node-2".parse().unwrap(), &hosts()).unwrap();
    let mixed = TransportConfig::default()
        .with_tls(TlsConfig::from_pem(ca.cert_pem(), foreign_cert.cert_pem, foreign_cert.key_pem).unwrap());
    let refused = match AdminClient::connect_with(n.addr(), None, &mixed).await {
        Ok(c) => c.status().await.is_err(),
        Err(_) => true,
    };
    assert!(refused, "a client certificate of a foreign CA is refused");

    // HTTP/1.1 over TLS reaches /healthz and /readyz on the node's port.
    let (alpn, response) = https1_get(&ca, n.local_addr(), "/healthz", &[]).await;
    assert_eq!(alpn, None);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let (alpn, response) = https1_get(&ca, n.local_addr(), "/readyz", &[b"http/1.1"]).await;
    assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]), "a node offers ALPN http/1.1 beside h2");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    n.shutdown().await;
}

/// Checks, with `intruder` started and seeded with the cluster, that it neither
/// became a member nor read what the cluster holds.
async fn assert_kept_out(ca: &CertificateAuthority, nodes: &[Node], intruder: Node) {
    let admin = client(ca, &nodes[0]).await;
    admin.put("settings/members-only", b"members only".to_vec(), AckLevel::All).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for n in nodes {
        let record = n.store().get(&format!("membership/{}", intruder.id())).await.unwrap();
        assert!(record.is_none(), "{} lists the intruder as a member", n.id());
    }
    let read = intruder.store().get("settings/members-only").await.unwrap();
    assert!(read.is_none(), "the intruder read the cluster's data");
    intruder.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_with_a_certificate_of_a_foreign_ca_is_refused_at_the_handshake() {
    let ca = CertificateAuthority::generate().unwrap();
    let nodes = tls_cluster(&ca).await;
    // The intruder trusts the cluster's CA (it knows the public certificate) but its
    // own certificate, naming its own id, is signed by a CA of its own.
    let foreign = CertificateAuthority::generate().unwrap();
    let cert = foreign.issue(&"node-9".parse().unwrap(), &hosts()).unwrap();
    let tls = TlsConfig::from_pem(ca.cert_pem(), cert.cert_pem, cert.key_pem).unwrap();
    let intruder = node("node-9").tls(tls).seeds([nodes[0].addr().clone()]).start().await.unwrap();
    // Its /readyz (over its own certificate's CA) says why, in the TLS
    // layer's words, not as a bare `transport error`.
    let deadline = Instant::now() + Duration::from_secs(20);
    // (hyper drops the reason when the connection ends before its request
    // left, as it may: the node probes its seed again, and reads it then.)
    loop {
        let (_, response) = https1_get(&foreign, intruder.local_addr(), "/readyz", &[b"http/1.1"]).await;
        if let Some(at) = response.find("peer_errors")
            && response[at..].contains("received fatal alert")
            && response[at..].contains("the peer refused the TLS handshake")
        {
            break;
        }
        assert!(Instant::now() < deadline, "never said why it is not joined: {response}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_kept_out(&ca, &nodes, intruder).await;
    for n in nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_certificate_claiming_another_node_s_id_is_unauthenticated() {
    let ca = CertificateAuthority::generate().unwrap();
    let nodes = tls_cluster(&ca).await;
    // A genuine certificate of this CA, for node-2, used by a process that calls
    // itself node-9: every replication call it makes claims node-9.
    let intruder = node("node-9").tls(node_tls(&ca, "node-2")).seeds([nodes[0].addr().clone()]).start().await;
    let intruder = intruder.unwrap();
    assert_kept_out(&ca, &nodes, intruder).await;
    for n in nodes {
        n.shutdown().await;
    }
}

/// A balancer over `nodes` with TLS on both sides: its own server-only certificate
/// for clients, the cluster CA towards the nodes.
async fn tls_balancer(ca: &CertificateAuthority, nodes: &[Node]) -> BalancerHandle {
    let cert = ca.issue_server("balancer", &hosts()).unwrap();
    let tls = TlsConfig::from_pem(ca.cert_pem(), cert.cert_pem, cert.key_pem).unwrap();
    let config = BalancerConfig {
        health_interval: Duration::from_millis(100),
        tls: Some(tls.client_auth(ClientAuth::Optional)),
        upstream_tls: Some(TlsConfig::from_ca_pem(ca.cert_pem()).unwrap()),
        ..BalancerConfig::default()
    };
    let backends = nodes.iter().map(|n| BackendConfig::new(n.id().clone(), n.local_addr())).collect();
    Balancer::builder(config).backends(backends).start().await.expect("a TLS balancer starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_balancer_terminates_tls_checks_nodes_over_tls_and_a_write_through_it_reaches_every_node() {
    let ca = CertificateAuthority::generate().unwrap();
    let nodes = tls_cluster(&ca).await;
    let balancer = tls_balancer(&ca, &nodes).await;
    assert!(balancer.url().starts_with("https://127.0.0.1:"), "{}", balancer.url());

    let deadline = Instant::now() + Duration::from_secs(10);
    while !balancer.stats().iter().all(|b| b.healthy) {
        assert!(Instant::now() < deadline, "health checks over TLS never passed: {:?}", balancer.stats());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let transport = TransportConfig::default().with_tls(TlsConfig::from_ca_pem(ca.cert_pem()).unwrap());
    let addr: PeerAddr = balancer.local_addr().into();
    let admin =
        AdminClient::connect_with(&addr, None, &transport).await.expect("gRPC over TLS to the balancer");
    for i in 0..6 {
        let key = format!("settings/through-balancer-{i}");
        admin
            .put(&key, b"tls end to end".to_vec(), AckLevel::All)
            .await
            .expect("a write through the balancer");
        for n in &nodes {
            wait_for_value(n, &key, b"tls end to end").await;
        }
    }
    let served: u64 = balancer.stats().iter().map(|b| b.requests).sum();
    assert!(served >= 6, "{:?}", balancer.stats());

    // HTTP/1.1 over TLS on the same port (ALPN http/1.1), proxied to a node.
    let (alpn, response) = https1_get(&ca, balancer.local_addr(), "/healthz", &[b"http/1.1"]).await;
    assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");

    // Plaintext HTTP/1.1 is told, in HTTP/1.1, that the port speaks TLS.
    let answer = plaintext_get(balancer.local_addr()).await;
    assert!(answer.starts_with("HTTP/1.1 400 Bad Request"), "{answer}");
    assert!(answer.contains("this port speaks TLS"), "{answer}");

    // A client that trusts another CA does not accept the balancer.
    let foreign = CertificateAuthority::generate().unwrap();
    let stranger = TransportConfig::default().with_tls(TlsConfig::from_ca_pem(foreign.cert_pem()).unwrap());
    assert!(AdminClient::connect_with(&addr, None, &stranger).await.is_err());

    balancer.shutdown().await;
    for n in nodes {
        n.shutdown().await;
    }
}

/// `GET /healthz` over plaintext HTTP/1.1 to `addr`: the whole answer (within 5 s).
async fn plaintext_get(addr: SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "no answer within 5 s: {}", String::from_utf8_lossy(&answer));
    String::from_utf8_lossy(&answer).into_owned()
}

/// `GET path` over HTTP/1.1 and TLS, offering `alpn`: the negotiated protocol and
/// the whole response.
async fn https1_get(
    ca: &CertificateAuthority,
    addr: SocketAddr,
    path: &str,
    alpn: &[&[u8]],
) -> (Option<Vec<u8>>, String) {
    use rustls_pki_types::pem::PemObject;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls;

    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(ca.cert_pem().as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::IpAddress(addr.ip().into());
    let mut tls = connector.connect(name, tcp).await.expect("TLS handshake with the balancer");
    let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let _ = tls.read_to_end(&mut response).await;
    (alpn, String::from_utf8_lossy(&response).into_owned())
}

/// The leaf certificate (DER) the TLS server at `addr` presents now.
async fn served_certificate(ca: &str, addr: SocketAddr) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject;
    use tokio_rustls::rustls;

    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::IpAddress(addr.ip().into());
    let tls = connector.connect(name, tcp).await.expect("TLS handshake");
    tls.get_ref().1.peer_certificates().expect("a server certificate")[0].to_vec()
}

fn pem_to_der(pem: &[u8]) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::from_pem_slice(pem).unwrap().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_serves_its_rotated_certificate_after_reload_without_dropping_open_connections() {
    let dir = tempfile::tempdir().unwrap();
    let ca = spectrum::cert::init_dir(dir.path()).unwrap();
    let id = "node-1".parse().unwrap();
    let first = spectrum::cert::issue_in_dir(dir.path(), &id, &hosts()).unwrap();
    let tls = TlsConfig::from_files(&ca.cert, &first.cert, &first.key).unwrap();
    let n = node("node-1").tls(tls).start().await.unwrap();
    let ca_pem = std::fs::read_to_string(&ca.cert).unwrap();
    let old = std::fs::read(&first.cert).unwrap();
    assert_eq!(served_certificate(&ca_pem, n.local_addr()).await, pem_to_der(&old));

    let transport = TransportConfig::default().with_tls(TlsConfig::from_ca_pem(ca_pem.clone()).unwrap());
    let open = AdminClient::connect_with(n.addr(), None, &transport).await.unwrap();
    open.put("settings/before", b"1".to_vec(), AckLevel::Local).await.unwrap();

    std::fs::remove_file(&first.cert).unwrap();
    std::fs::remove_file(&first.key).unwrap();
    let second = spectrum::cert::issue_in_dir(dir.path(), &id, &hosts()).unwrap();
    assert!(n.reload_tls().expect("the new files load"), "TLS from files reloads");
    let new = std::fs::read(&second.cert).unwrap();
    assert_ne!(old, new);
    assert_eq!(served_certificate(&ca_pem, n.local_addr()).await, pem_to_der(&new), "new connections");
    open.put("settings/after", b"2".to_vec(), AckLevel::Local)
        .await
        .expect("the open connection still works");

    // A bad file is refused and the current certificate stays.
    std::fs::write(&second.key, "not a key").unwrap();
    assert!(n.reload_tls().is_err());
    assert_eq!(served_certificate(&ca_pem, n.local_addr()).await, pem_to_der(&new));
    n.shutdown().await;
}

/// A TLS server on loopback that demands a client certificate from `ca`, sends
/// the leaf of every one it is shown to the returned receiver, and hangs up, so
/// that every call to it opens a new connection.
async fn certificate_recorder(
    ca: &CertificateAuthority,
) -> (PeerAddr, tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>) {
    use rustls_pki_types::pem::PemObject;
    use tokio_rustls::rustls;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls_pki_types::CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).unwrap()).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider.clone())
            .build()
            .unwrap();
    let own = ca.issue_server("recorder", &hosts()).unwrap();
    let chain = vec![rustls_pki_types::CertificateDer::from_pem_slice(own.cert_pem.as_bytes()).unwrap()];
    let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(own.key_pem.as_bytes()).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: PeerAddr = format!("http://{}", listener.local_addr().unwrap()).parse().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            if let Ok(tls) = acceptor.accept(tcp).await
                && let Some(certs) = tls.get_ref().1.peer_certificates()
                && tx.send(certs[0].to_vec()).is_err()
            {
                return;
            }
        }
    });
    (addr, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_presents_its_rotated_certificate_to_peers_after_reload() {
    let dir = tempfile::tempdir().unwrap();
    let ca_paths = spectrum::cert::init_dir(dir.path()).unwrap();
    let ca = CertificateAuthority::from_pem(
        std::fs::read_to_string(&ca_paths.cert).unwrap(),
        &std::fs::read_to_string(&ca_paths.key).unwrap(),
    )
    .unwrap();
    let (seed, mut shown) = certificate_recorder(&ca).await;
    let id = "node-1".parse().unwrap();
    let first = spectrum::cert::issue_in_dir(dir.path(), &id, &hosts()).unwrap();
    let tls = TlsConfig::from_files(&ca_paths.cert, &first.cert, &first.key).unwrap();
    let n = node("node-1").tls(tls).seeds(vec![seed]).start().await.unwrap();
    let old = pem_to_der(&std::fs::read(&first.cert).unwrap());
    let first_shown = tokio::time::timeout(Duration::from_secs(10), shown.recv()).await.unwrap().unwrap();
    assert_eq!(first_shown, old, "the node calls its peers with its certificate");

    std::fs::remove_file(&first.cert).unwrap();
    std::fs::remove_file(&first.key).unwrap();
    let second = spectrum::cert::issue_in_dir(dir.path(), &id, &hosts()).unwrap();
    assert!(n.reload_tls().unwrap());
    let new = pem_to_der(&std::fs::read(&second.cert).unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let presented = tokio::time::timeout(left, shown.recv())
            .await
            .expect("the node never presented its new certificate to a peer")
            .unwrap();
        if presented == new {
            break;
        }
        assert_eq!(presented, old, "only the old or the new certificate is ever presented");
    }
    n.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_balancer_s_server_only_certificate_does_not_pass_for_a_node() {
    let ca = CertificateAuthority::generate().unwrap();
    let nodes = tls_cluster(&ca).await;
    let cert = ca.issue_server("balancer", &hosts()).unwrap();
    let tls = TlsConfig::from_pem(ca.cert_pem(), cert.cert_pem, cert.key_pem).unwrap();
    let intruder = node("balancer").tls(tls).seeds([nodes[0].addr().clone()]).start().await.unwrap();
    assert_kept_out(&ca, &nodes, intruder).await;
    for n in nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_balancer_requiring_client_certificates_refuses_clients_the_cluster_did_not_issue() {
    let ca = CertificateAuthority::generate().unwrap();
    let nodes = tls_cluster(&ca).await;
    let cert = ca.issue_server("balancer", &hosts()).unwrap();
    let config = BalancerConfig {
        tls: Some(TlsConfig::from_pem(ca.cert_pem(), cert.cert_pem, cert.key_pem).unwrap()),
        upstream_tls: Some(TlsConfig::from_ca_pem(ca.cert_pem()).unwrap()),
        ..BalancerConfig::default()
    };
    assert!(config.tls.as_ref().unwrap().requires_client_auth(), "required by default");
    let backends = nodes.iter().map(|n| BackendConfig::new(n.id().clone(), n.local_addr())).collect();
    let balancer = Balancer::builder(config).backends(backends).start().await.unwrap();
    let addr: PeerAddr = balancer.local_addr().into();
    let works = |transport: TransportConfig| {
        let addr = addr.clone();
        async move {
            match AdminClient::connect_with(&addr, None, &transport).await {
                Ok(c) => c.status().await.is_ok(),
                Err(_) => false,
            }
        }
    };

    let no_cert = TransportConfig::default().with_tls(TlsConfig::from_ca_pem(ca.cert_pem()).unwrap());
    assert!(!works(no_cert).await, "a client without a certificate is refused");
    let foreign = CertificateAuthority::generate().unwrap();
    let theirs = foreign.issue(&"ops".parse().unwrap(), &[]).unwrap();
    let foreign_cert = TransportConfig::default()
        .with_tls(TlsConfig::from_pem(ca.cert_pem(), theirs.cert_pem, theirs.key_pem).unwrap());
    assert!(!works(foreign_cert).await, "a certificate of another CA is refused");
    let ours = ca.issue(&"ops".parse().unwrap(), &[]).unwrap();
    let issued = TransportConfig::default()
        .with_tls(TlsConfig::from_pem(ca.cert_pem(), ours.cert_pem, ours.key_pem).unwrap());
    assert!(works(issued).await, "a certificate of the cluster's CA is accepted");

    balancer.shutdown().await;
    for n in nodes {
        n.shutdown().await;
    }
}
