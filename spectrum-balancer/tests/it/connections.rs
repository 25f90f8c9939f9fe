//! Slow and idle clients: a connection that sends half a request, or nothing, is
//! closed by the balancer within its timeout, and serves nobody's turn meanwhile.

use std::time::{Duration, Instant};

use spectrum_balancer::BalancerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// Reads until the peer closes; the time it took, or `None` after `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    read.ok().map(|()| start.elapsed())
}

/// Sends `GET path` over HTTP/1.1 on a new connection; the first bytes of
/// the answer, or `None` when the connection closed without one (refused) or
/// none came within a second.
async fn plain_get(addr: std::net::SocketAddr, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(addr).await.ok()?;
    stream.write_all(format!("GET {path} HTTP/1.1\r\nhost: a\r\n\r\n").as_bytes()).await.ok()?;
    let mut buf = [0u8; 64];
    match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf)).await {
        Ok(Ok(n)) if n > 0 => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        _ => None,
    }
}

fn short_timeouts() -> BalancerConfig {
    BalancerConfig {
        header_read_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_millis(500),
        ..fast_config()
    }
}

/// Whether a connection to a balancer with `config` that sends only `sent`
/// is closed by the balancer within 5 s.
async fn closed_after_sending(config: BalancerConfig, sent: &[u8]) -> bool {
    let nodes = start_nodes(1).await;
    let balancer = balancer_with(config, &nodes, None).await;
    let mut slow = TcpStream::connect(balancer.local_addr()).await.unwrap();
    slow.write_all(sent).await.unwrap();
    let closed = closed_within(&mut slow, Duration::from_secs(5)).await.is_some();
    balancer.shutdown().await;
    closed
}

/// Short timeouts, with an idle timeout far longer than the tests wait: only
/// the header timeout can close a connection in time.
fn header_timeout_only() -> BalancerConfig {
    BalancerConfig { idle_timeout: Duration::from_secs(600), ..short_timeouts() }
}

#[tokio::test]
async fn half_a_request_line_is_closed_after_the_header_timeout() {
    let closed = closed_after_sending(short_timeouts(), b"GET /slow HT").await;
    assert!(closed, "a connection with half a request line stayed open");
}

#[tokio::test]
async fn half_an_http2_preface_is_closed_after_the_header_timeout() {
    let closed = closed_after_sending(header_timeout_only(), b"PRI * HTTP/2.0\r\n").await;
    assert!(closed, "a connection with half an HTTP/2 preface stayed open");
}

#[tokio::test]
async fn an_h2_client_that_resets_its_stream_cancels_the_call_to_the_node() {
    let nodes = start_nodes(1).await;
    let balancer = balancer_with(fast_config(), &nodes, None).await;
    let tcp = TcpStream::connect(balancer.local_addr()).await.unwrap();
    let (mut h2, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let held = http::Request::get("http://balancer/hold").body(()).unwrap();
    let (response, _) = h2.send_request(held, true).unwrap();
    wait_until("the held call is in flight", || balancer.stats()[0].in_flight == 1).await;
    // Dropping the response's handle resets the stream (RST_STREAM CANCEL);
    // the node would answer only after a minute.
    drop(response);
    wait_until("the call to the node is given up", || balancer.stats()[0].in_flight == 0).await;
    // The connection goes on serving.
    let asked = http::Request::get("http://balancer/after").body(()).unwrap();
    let (response, _) = h2.send_request(asked, true).unwrap();
    let response = within(response).await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    balancer.shutdown().await;
}

#[tokio::test]
async fn a_response_streaming_for_longer_than_the_idle_timeout_is_not_cut_off() {
    let nodes = start_nodes(1).await;
    // The stream takes about 1.2 s: past the idle timeout and its grace.
    let config = BalancerConfig { shutdown_grace: Duration::from_millis(200), ..short_timeouts() };
    let balancer = balancer_with(config, &nodes, None).await;
    let whole: String = (0..12).map(|i| format!("line {i}\n")).collect();
    let mut h2c = Client::h2c(balancer.local_addr()).await;
    let a = h2c.get("/trickle").await;
    assert_eq!(a.body, whole, "{a:?}");
    // Connected only now: an idle connection would be closed meanwhile, rightly.
    let mut http1 = Client::http1(balancer.local_addr()).await;
    let a = http1.get("/trickle").await;
    assert_eq!(a.body, whole, "{a:?}");
    balancer.shutdown().await;
}

#[tokio::test]
async fn a_connection_that_sends_nothing_or_goes_idle_is_closed() {
    let nodes = start_nodes(1).await;
    let balancer = balancer_with(short_timeouts(), &nodes, None).await;
    let mut silent = TcpStream::connect(balancer.local_addr()).await.unwrap();
    assert!(
        closed_within(&mut silent, Duration::from_secs(5)).await.is_some(),
        "a silent connection stayed open"
    );

    // A keep-alive connection that served a request and then went quiet.
    let mut idle = TcpStream::connect(balancer.local_addr()).await.unwrap();
    idle.write_all(b"GET /x HTTP/1.1\r\nhost: a\r\n\r\n").await.unwrap();
    assert!(
        closed_within(&mut idle, Duration::from_secs(5)).await.is_some(),
        "an idle connection stayed open"
    );
    balancer.shutdown().await;
}

#[tokio::test]
async fn slow_and_silent_connections_do_not_stop_others_from_being_served() {
    let nodes = start_nodes(2).await;
    let config = BalancerConfig { max_connections: 64, ..short_timeouts() };
    let balancer = balancer_with(config, &nodes, None).await;
    let mut hogs = Vec::new();
    for i in 0..60 {
        let mut s = TcpStream::connect(balancer.local_addr()).await.unwrap();
        if i % 2 == 0 {
            s.write_all(b"GET /hog HT").await.unwrap();
        }
        hogs.push(s);
    }
    let mut client = Client::http1(balancer.local_addr()).await;
    for _ in 0..10 {
        let a = within(client.get("/ok")).await;
        assert_eq!(a.status.as_u16(), 200, "{a:?}");
    }
    // Beyond the connection limit, newcomers are refused at once: closed, not
    // left waiting.
    let mut refused = Vec::new();
    for _ in 0..10 {
        refused.push(TcpStream::connect(balancer.local_addr()).await.unwrap());
    }
    let mut closed = 0;
    for stream in &mut refused {
        if closed_within(stream, Duration::from_millis(200)).await.is_some() {
            closed += 1;
        }
    }
    assert!(closed >= 6, "only {closed} of 10 connections over the limit were refused at once");
    let metrics = balancer.metrics_text();
    assert!(!metrics.contains("spectrum_balancer_connections_refused_total 0\n"), "{metrics}");
    // The hogs' header timeout frees room, and newcomers are served again.
    let mut served = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if plain_get(balancer.local_addr(), "/late")
            .await
            .is_some_and(|head| head.starts_with("HTTP/1.1 200"))
        {
            served = true;
            break;
        }
    }
    assert!(served, "no request was served once the silent connections timed out");
    drop((hogs, refused));
    balancer.shutdown().await;
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_the_header_timeout_not_the_idle_timeout() {
    let closed = closed_after_sending(header_timeout_only(), b"").await;
    assert!(closed, "a connection that sent nothing stayed open past the header timeout");
}

#[tokio::test]
async fn clients_that_never_read_a_large_stream_do_not_stall_others_on_that_node() {
    let nodes = start_nodes(1).await;
    let balancer = balancer_with(fast_config(), &nodes, None).await;
    let mut stuck = Vec::new();
    for _ in 0..12 {
        let mut s = TcpStream::connect(balancer.local_addr()).await.unwrap();
        s.write_all(b"GET /big HTTP/1.1\r\nhost: a\r\n\r\n").await.unwrap();
        stuck.push(s);
    }
    // Give the streams time to fill whatever windows they can.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut client = Client::h2c(balancer.local_addr()).await;
    for _ in 0..5 {
        let a = tokio::time::timeout(Duration::from_secs(3), client.get("/ok")).await;
        let a = a.expect("a request to the same node answered while others stall their streams");
        assert_eq!(a.status.as_u16(), 200, "{a:?}");
    }
    drop(stuck);
    balancer.shutdown().await;
}

/// The settings the server's first SETTINGS frame announces, after an HTTP/2
/// client preface sent on `stream`: `(identifier, value)` pairs.
async fn server_settings(stream: &mut TcpStream) -> Vec<(u16, u32)> {
    // Preface, then an empty SETTINGS frame (length 0, type 4, no flags, stream 0).
    stream.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0").await.unwrap();
    let read = async {
        loop {
            let mut header = [0u8; 9];
            stream.read_exact(&mut header).await.unwrap();
            let len = usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
            let mut payload = vec![0u8; len];
            stream.read_exact(&mut payload).await.unwrap();
            // A SETTINGS frame that is not an acknowledgement.
            if header[3] == 4 && header[4] & 1 == 0 {
                return payload
                    .chunks_exact(6)
                    .map(|c| (u16::from_be_bytes([c[0], c[1]]), u32::from_be_bytes([c[2], c[3], c[4], c[5]])))
                    .collect();
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read).await.expect("the server sent its SETTINGS")
}

#[tokio::test]
async fn an_h2_client_connection_is_told_how_many_streams_it_may_open() {
    const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
    let nodes = start_nodes(1).await;
    let config = BalancerConfig { max_concurrent_streams: 7, ..fast_config() };
    let balancer = balancer_with(config, &nodes, None).await;
    let mut stream = TcpStream::connect(balancer.local_addr()).await.unwrap();
    let settings = server_settings(&mut stream).await;
    assert!(settings.contains(&(SETTINGS_MAX_CONCURRENT_STREAMS, 7)), "{settings:?}");
    balancer.shutdown().await;
}
