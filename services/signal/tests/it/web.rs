//! The web client's files: the landing page at `/` (the plain dialect's path, for a
//! browser's plain GET), the meeting page, its scripts, the ICE configuration, the
//! Socket.IO client where a Socket.IO server serves it, and WEB_CLIENT=false.

use testkit::http_get;

use crate::helpers::{Backend, InProcessNode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_serves_its_web_client_and_tells_it_where_ice_servers_come_from() {
    let node = InProcessNode::start(
        &Backend::Memory,
        &[("WEB_ICE_URL", "https://turn.example.com/api/turn/config"), ("WEB_ICE_POLICY", "relay")],
    )
    .await;
    let (status, body) = http_get(node.addr, "/").await.expect("answer");
    assert_eq!(status, 200);
    assert!(body.contains("/app/landing.js"), "{body}");
    let (status, body) = http_get(node.addr, "/meeting/standup-42").await.expect("answer");
    assert_eq!(status, 200);
    assert!(body.contains("/app/meeting.js"), "{body}");
    for file in
        ["meeting.js", "mesh.js", "tiles.js", "signal-client.js", "style.css", "socketio.html", "socketio-call.js"]
    {
        let (status, body) = http_get(node.addr, &format!("/app/{file}")).await.expect("answer");
        assert!(status == 200 && body.len() > 300, "{file}: {status}");
    }
    assert_eq!(http_get(node.addr, "/app/nope.js").await.map(|a| a.0), Some(404));
    let (_, config) = http_get(node.addr, "/app/config.json").await.expect("answer");
    let config: serde_json::Value = serde_json::from_str(&config).unwrap();
    assert_eq!(config["iceUrl"], "https://turn.example.com/api/turn/config");
    assert_eq!(config["iceTransportPolicy"], "relay");
    let (status, body) = http_get(node.addr, "/socket.io/socket.io.js").await.expect("answer");
    assert!(status == 200 && body.contains("Socket.IO v4"), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_forbid_foreign_scripts_and_framing() {
    let node = InProcessNode::start(&Backend::Memory, &[]).await;
    let response = raw_get(node.addr, "/meeting/standup").await;
    let csp = response.lines().find(|l| l.to_ascii_lowercase().starts_with("content-security-policy:")).unwrap_or("");
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"), "{response}");
    assert!(response.to_ascii_lowercase().contains("x-content-type-options: nosniff"), "{response}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_client_false_serves_none_of_it() {
    let node = InProcessNode::start(&Backend::Memory, &[("WEB_CLIENT", "false")]).await;
    for path in ["/meeting/standup", "/app/meeting.js", "/app/config.json", "/socket.io/socket.io.js"] {
        assert_eq!(http_get(node.addr, path).await.map(|a| a.0), Some(404), "{path}");
    }
    let (_, body) = http_get(node.addr, "/").await.expect("answer");
    assert!(body.contains("plain-JSON WebSocket clients connect here"), "{body}");
}

/// The whole response head and body as text.
async fn raw_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(5), stream.read_to_end(&mut buf)).await.unwrap().unwrap();
    String::from_utf8_lossy(&buf).into_owned()
}
