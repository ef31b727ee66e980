//! The WebSocket upgrade, as every dialect's route shares it: browser origins are
//! checked against ALLOWED_ORIGINS, and clients without an Origin (bots, servers) pass.

use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Error;

use crate::helpers::{Backend, Client, TestCluster};

async fn connect_from(addr: std::net::SocketAddr, origin: &str) -> Result<(), u16> {
    let mut request = format!("ws://{addr}/ws").into_client_request().unwrap();
    request.headers_mut().insert("origin", HeaderValue::from_str(origin).unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Ok(_) => Ok(()),
        Err(Error::Http(response)) => Err(response.status().as_u16()),
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_allowed_browser_origins_may_open_a_connection() {
    let allowed = [("ALLOWED_ORIGINS", "https://meet.example.org, https://app.example.org/")];
    let cluster = TestCluster::start_with(&Backend::Memory, 1, &allowed).await;
    let addr = cluster.nodes[0].addr;
    assert_eq!(connect_from(addr, "https://meet.example.org").await, Ok(()));
    assert_eq!(
        connect_from(addr, "https://app.example.org").await,
        Ok(()),
        "a trailing slash in the setting is ignored"
    );
    assert_eq!(connect_from(addr, "https://evil.example.com").await, Err(403));
    // No Origin header: not a browser, allowed.
    let mut bot = Client::connect(addr).await;
    bot.send(serde_json::json!({"type": "ping"})).await;
    assert!(matches!(bot.recv().await, protocol::ServerMsg::Pong(_)));
}
