//! The HTTP edge against real sockets: slow and idle connections cannot pin a node.
//! Headers that never finish, and keep-alive connections left idle, are closed within
//! HTTP_HEADER_TIMEOUT_MS; a body over HTTP_MAX_BODY_BYTES gets 413 with a JSON error;
//! at MAX_CONNECTIONS the node answers 503 with Retry-After, counts it, and serves again
//! once connections close. (Normal clients are the rest of the suite, which runs with
//! the default limits.)

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::helpers::nodes::InProcessNode;
use crate::helpers::{wait_until, Backend, Client};

/// Reads until the peer closes; how long that took, or None if it stayed open for `bound`.
async fn closed_within(stream: &mut TcpStream, bound: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    tokio::time::timeout(bound, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return started.elapsed(),
                Ok(_) => continue,
            }
        }
    })
    .await
    .ok()
}

/// One raw HTTP/1.1 exchange on a new connection: the status line and the rest.
async fn raw_request(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response)).await;
    String::from_utf8_lossy(&response).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_headers_and_idle_keep_alive_connections_are_closed() {
    let node = InProcessNode::start(&Backend::Memory, &[("HTTP_HEADER_TIMEOUT_MS", "500")]).await;
    let before = node.metric("signal_open_sockets").await;

    // 50 connections that send part of a WebSocket upgrade's head, then nothing.
    let mut slow = Vec::new();
    for _ in 0..50 {
        let mut stream = TcpStream::connect(node.addr).await.unwrap();
        stream.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        slow.push(stream);
    }
    for stream in &mut slow {
        let took = closed_within(stream, Duration::from_secs(5)).await;
        assert!(took.is_some(), "a connection with unfinished headers stayed open");
    }

    // A keep-alive connection that made one request and then stays idle.
    let mut idle = TcpStream::connect(node.addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut first = [0u8; 12];
    idle.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    assert!(
        closed_within(&mut idle, Duration::from_secs(5)).await.is_some(),
        "an idle keep-alive connection stayed open"
    );

    // Their places are given back.
    wait_until(Duration::from_secs(5), "the sockets to be counted out", || async {
        node.metric("signal_open_sockets").await <= before + 1.0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_gets_413_with_a_json_error() {
    let node = InProcessNode::start(&Backend::Memory, &[("HTTP_MAX_BODY_BYTES", "2048")]).await;
    let big = format!(r#"{{"roomId":"r","padding":"{}"}}"#, "x".repeat(4096));
    let request = format!(
        "POST /api/rooms HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{big}",
        big.len()
    );
    let response = raw_request(node.addr, request.as_bytes()).await;
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(response.to_ascii_lowercase().contains("content-type: application/json"), "{response}");
    assert!(response.contains(r#""error":"payload-too-large""#), "{response}");

    // A body within the limit is read as before.
    let small = r#"{"roomId":"small-room"}"#;
    let request = format!(
        "POST /api/rooms HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{small}",
        small.len()
    );
    let response = raw_request(node.addr, request.as_bytes()).await;
    assert!(!response.starts_with("HTTP/1.1 413"), "{response}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_its_connection_cap_the_node_refuses_with_503_and_recovers() {
    let node = InProcessNode::start(&Backend::Memory, &[("MAX_CONNECTIONS", "4")]).await;
    // Four WebSocket clients hold every place (their sockets keep them after the upgrade).
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(Client::connect(node.addr).await);
    }
    let response = raw_request(node.addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(response.starts_with("HTTP/1.1 503"), "{response}");
    assert!(response.to_ascii_lowercase().contains("retry-after: 5"), "{response}");
    assert!(response.contains(r#""error":"unavailable""#), "{response}");

    // One leaves: the node serves again, and counted the refusal. The answer that shows a free
    // place is the one read (a second request could race the first one's socket release).
    clients.pop().unwrap().close().await;
    let metrics = std::sync::Mutex::new(String::new());
    wait_until(Duration::from_secs(5), "a place to be free again", || async {
        let response = raw_request(node.addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
        let served = response.starts_with("HTTP/1.1 200");
        *metrics.lock().unwrap() = response;
        served
    })
    .await;
    let text = metrics.into_inner().unwrap();
    let refused =
        testkit::metric_sum(text.split("\r\n\r\n").nth(1).unwrap_or_default(), "signal_refused_connections_total");
    assert!(refused.is_some_and(|n| n >= 1.0), "{text}");
}
