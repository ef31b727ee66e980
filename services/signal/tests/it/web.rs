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

/// A built single-page app: its index, a fingerprinted bundle, a plain file.
fn built_app() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("index.html"), "<!doctype html><title>customer app</title>").unwrap();
    std::fs::create_dir(dir.path().join("assets")).unwrap();
    let bundle = "console.log('the customer app');\n".repeat(200);
    std::fs::write(dir.path().join("assets/index-3f2a9c.js"), bundle).unwrap();
    std::fs::write(dir.path().join("robots.txt"), "User-agent: *\n").unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_dir_serves_a_single_page_app_with_its_routes_compression_and_caching() {
    let app = built_app();
    let dir = app.path().to_str().unwrap();
    let node = InProcessNode::start(&Backend::Memory, &[("STATIC_DIR", dir)]).await;
    let base = format!("http://{}", node.addr);
    let http = reqwest::Client::new();
    let get = |path: &str, encoding: Option<&str>| {
        let mut request = http.get(format!("{base}{path}"));
        if let Some(encoding) = encoding {
            request = request.header("accept-encoding", encoding);
        }
        request.send()
    };
    let header = |r: &reqwest::Response, name: &str| {
        r.headers().get(name).map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default()
    };

    // The index at `/` (the plain dialect's path, for a plain GET) and for client-side routes.
    for path in ["/", "/rooms/standup", "/meeting/abc"] {
        let page = get(path, None).await.unwrap();
        assert_eq!(page.status().as_u16(), 200, "{path}");
        assert_eq!(header(&page, "cache-control"), "no-cache", "{path}: HTML is revalidated");
        assert!(page.text().await.unwrap().contains("customer app"), "{path}");
    }
    // Fingerprinted build output, compressed as the client asks and kept for a year.
    let bundle = get("/assets/index-3f2a9c.js", Some("br")).await.unwrap();
    assert_eq!(bundle.status().as_u16(), 200);
    assert_eq!(header(&bundle, "content-encoding"), "br");
    assert_eq!(header(&bundle, "cache-control"), "public, max-age=31536000, immutable");
    let gzipped = get("/assets/index-3f2a9c.js", Some("gzip")).await.unwrap();
    assert_eq!(header(&gzipped, "content-encoding"), "gzip");
    assert!(gzipped.bytes().await.unwrap().len() < 6_600 / 4, "compressed");
    let plain_file = get("/robots.txt", None).await.unwrap();
    assert_eq!(header(&plain_file, "cache-control"), "public, max-age=3600");
    assert_eq!(plain_file.text().await.unwrap(), "User-agent: *\n");
    // A missing asset is missing, not the index; the node's own routes are its own.
    assert_eq!(get("/assets/gone-123.js", None).await.unwrap().status().as_u16(), 404);
    let api = get("/api/nope", None).await.unwrap();
    assert_eq!(api.status().as_u16(), 404);
    assert_eq!(api.json::<serde_json::Value>().await.unwrap()["error"], "API endpoint not found");
    assert_eq!(get("/healthz", None).await.unwrap().json::<serde_json::Value>().await.unwrap()["status"], "ok");
    assert_eq!(get("/socket.io/socket.io.js", None).await.unwrap().status().as_u16(), 200);
    // The plain dialect still answers WebSockets at `/`.
    let mut plain = crate::plain::PlainClient::connect(node.addr).await;
    plain.register("Worker-1", "spa-room").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_dir_without_an_index_is_refused_at_start() {
    let empty = tempfile::tempdir().unwrap();
    let err = signal::SignalConfig::from_pairs(&[("STATIC_DIR", empty.path().to_str().unwrap())]).unwrap_err();
    assert!(err.to_string().contains("STATIC_DIR"), "{err}");
}
