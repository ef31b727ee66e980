//! The credential service's HTTP edge against real sockets: unfinished headers are
//! closed within HTTP_HEADER_TIMEOUT_MS, and at MAX_CONNECTIONS it answers 503 with
//! Retry-After, counts it, and serves again once connections close.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::Service;
use testkit::wait_until;

fn settings(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    let mut pairs = vec![
        ("TURN_SECRET", crate::helpers::SECRET),
        ("TURN_REALM", crate::helpers::REALM),
        ("TURN_HOST", "127.0.0.1"),
    ];
    pairs.extend_from_slice(extra);
    pairs
}

async fn raw(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response)).await;
    String::from_utf8_lossy(&response).into_owned()
}

#[tokio::test]
async fn unfinished_headers_are_closed_and_the_connection_cap_answers_503() {
    let service = Service::start(&settings(&[("HTTP_HEADER_TIMEOUT_MS", "500"), ("MAX_CONNECTIONS", "3")])).await;

    // Three connections that never finish their headers hold every place...
    let mut slow = Vec::new();
    for _ in 0..3 {
        let mut stream = TcpStream::connect(service.addr()).await.unwrap();
        stream.write_all(b"GET /turn-credentials HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        slow.push(stream);
    }
    // ...until the header timeout closes them (a fourth is refused meanwhile, or served
    // once they are gone).
    let refused = raw(service.addr(), b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.to_ascii_lowercase().contains("retry-after:"), "{refused}");
    for stream in &mut slow {
        let mut buf = [0u8; 64];
        let closed = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => continue,
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "a connection with unfinished headers stayed open");
    }
    wait_until(Duration::from_secs(5), "the service to serve again", || async {
        raw(service.addr(), b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .starts_with("HTTP/1.1 200")
    })
    .await;
    let (_, metrics) = service.text("/metrics").await;
    assert!(
        testkit::metric_sum(&metrics, "credentials_refused_connections_total").is_some_and(|n| n >= 1.0),
        "{metrics}"
    );
}
