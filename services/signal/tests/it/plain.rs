//! The plain-JSON dialect (S4's clients) end to end, with plain WebSocket clients
//! against real nodes: register, whole messages forwarded both ways across nodes,
//! duplicate ids, spoofed senders, bad input, query, and a room shared with native
//! clients.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use protocol::{LeftReason, ServerMsg};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::helpers::client::RECV_DEADLINE;
use crate::helpers::nodes::http_get;
use crate::helpers::{Backend, Client, TestCluster, TestRedis};

/// An S4 client: connects to the node's root URL and speaks raw JSON.
pub(crate) struct PlainClient {
    pub(crate) ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl PlainClient {
    pub(crate) async fn connect(addr: std::net::SocketAddr) -> Self {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/")).await.expect("connect /");
        Self { ws }
    }

    pub(crate) async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::Text(text.into())).await.expect("send");
    }

    pub(crate) async fn send(&mut self, v: Value) {
        self.send_text(&v.to_string()).await;
    }

    /// The next text frame, as sent.
    pub(crate) async fn recv_text(&mut self) -> String {
        loop {
            let frame = tokio::time::timeout(RECV_DEADLINE, self.ws.next()).await.expect("a frame in time");
            match frame {
                Some(Ok(Message::Text(t))) => return t.to_string(),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("socket ended: {other:?}"),
            }
        }
    }

    /// The next message within `wait`, if any (keep-alives skipped).
    pub(crate) async fn try_recv(&mut self, wait: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await.ok()? {
                Some(Ok(Message::Text(t))) => return Some(serde_json::from_str(&t).expect("JSON")),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("socket ended: {other:?}"),
            }
        }
    }

    pub(crate) async fn recv(&mut self) -> Value {
        serde_json::from_str(&self.recv_text().await).expect("JSON")
    }

    pub(crate) async fn register(&mut self, peer: &str, room: &str) {
        self.send(json!({"type":"register","peer_id":peer,"room_id":room,"token":"tok"})).await;
        assert_eq!(self.recv().await, json!({"type":"registered_auth","room_id":room,"token":"tok","peer_id":peer}));
    }

    pub(crate) async fn recv_error(&mut self) -> String {
        let msg = self.recv().await;
        assert_eq!(msg["type"], "error", "{msg}");
        msg["reason"].as_str().unwrap().to_owned()
    }
}

async fn two_nodes() -> (TestRedis, TestCluster) {
    let redis = TestRedis::start().await;
    let cluster = TestCluster::start(&Backend::Redis(redis.url()), 2).await;
    (redis, cluster)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registered_peers_exchange_whole_messages_both_ways_across_nodes() {
    let (_redis, cluster) = two_nodes().await;
    let mut a = PlainClient::connect(cluster.nodes[0].addr).await;
    let mut b = PlainClient::connect(cluster.nodes[1].addr).await;
    a.register("Worker-1", "room-1").await;
    b.register("Worker-2", "room-1").await;
    assert_eq!(a.recv().await, json!({"type":"peer_joined","room_id":"room-1","peer_id":"Worker-2"}));

    // Odd spacing and extra fields arrive exactly as sent.
    let offer = r#"{"type":"offer", "sender":"Worker-1","target":"Worker-2","sdp":"v=0\r\n","n":1.50}"#;
    a.send_text(offer).await;
    assert_eq!(b.recv_text().await, offer);
    let answer = r#"{"type":"answer","sender":"Worker-2","target":"Worker-1","sdp":"v=0"}"#;
    b.send_text(answer).await;
    assert_eq!(a.recv_text().await, answer);
    let candidate = r#"{"type":"candidate","sender":"Worker-1","target":"Worker-2","candidate":{"sdpMid":"0"}}"#;
    a.send_text(candidate).await;
    assert_eq!(b.recv_text().await, candidate);

    a.send(json!({"type":"query"})).await;
    assert_eq!(a.recv().await, json!({"type":"available_peers","peers":["Worker-2"]}));

    drop(b);
    let left = a.recv().await;
    assert_eq!((left["type"].as_str(), left["peer_id"].as_str()), (Some("peer_left"), Some("Worker-2")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_id_is_unique_in_its_room_and_free_in_others() {
    let (_redis, cluster) = two_nodes().await;
    let mut a = PlainClient::connect(cluster.nodes[0].addr).await;
    a.register("Worker-1", "room-1").await;
    // The same id on the other node, in the same room: refused, and the connection may
    // register another id.
    let mut b = PlainClient::connect(cluster.nodes[1].addr).await;
    b.send(json!({"type":"register","peer_id":"Worker-1","room_id":"room-1","token":"tok"})).await;
    assert!(b.recv_error().await.contains("already taken"));
    b.register("Worker-3", "room-1").await;
    // The same id in another room: fine.
    let mut c = PlainClient::connect(cluster.nodes[1].addr).await;
    c.register("Worker-1", "room-2").await;
    // And once its holder leaves, the id is free again.
    drop(a);
    let left = b.recv().await;
    assert_eq!(left["type"], "peer_left");
    let mut d = PlainClient::connect(cluster.nodes[0].addr).await;
    d.register("Worker-1", "room-1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_answered_and_the_connection_survives() {
    let (_redis, cluster) = two_nodes().await;
    let mut a = PlainClient::connect(cluster.nodes[0].addr).await;
    a.send_text("{not json").await;
    assert_eq!(a.recv_error().await, "Invalid JSON.");
    a.send(json!({"type":"offer","sender":"Worker-1","target":"Worker-2"})).await;
    assert!(a.recv_error().await.starts_with("Not registered"));
    a.send(json!({"type":"register","room_id":"room-1"})).await;
    assert_eq!(a.recv_error().await, "Missing required fields during registration.");
    a.register("Worker-1", "room-1").await;
    a.send(json!({"type":"offer","sender":"Worker-9","target":"Worker-2"})).await;
    assert_eq!(a.recv_error().await, "Sender does not match the registered peer_id.");
    a.send(json!({"type":"offer","sender":"Worker-1","target":"Nobody"})).await;
    assert!(!a.recv_error().await.is_empty());
    a.send(json!({"type":"teleport"})).await;
    assert!(a.recv_error().await.starts_with("Unknown message type"));
    a.send(json!({"type":"query"})).await;
    assert_eq!(a.recv().await, json!({"type":"available_peers","peers":[]}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_and_plain_members_share_a_room_each_in_its_own_dialect() {
    let (_redis, cluster) = two_nodes().await;
    let mut native = Client::connect(cluster.nodes[0].addr).await;
    native.join("mixed").await;
    let mut plain = PlainClient::connect(cluster.nodes[1].addr).await;
    plain.register("Worker-7", "mixed").await;
    match native.recv().await {
        ServerMsg::PeerJoined(pj) => {
            assert_eq!((pj.peer.peer.as_str(), pj.peer.name.as_str()), ("Worker-7", "Worker-7"))
        }
        other => panic!("{other:?}"),
    }

    // native -> plain: wrapped with the plain addressing fields.
    native.signal("mixed", &protocol::PeerId::parse("Worker-7").unwrap(), "offer", json!({"sdp":"v=0"})).await;
    assert_eq!(
        plain.recv().await,
        json!({"type":"offer","sender":native.peer().as_str(),"target":"Worker-7","data":{"sdp":"v=0"}})
    );
    // plain -> native: the plain message whole, as the signal's data.
    let answer = format!(r#"{{"type":"answer","sender":"Worker-7","target":"{}","sdp":"v=1"}}"#, native.peer());
    plain.send_text(&answer).await;
    let got = native.recv_signal().await;
    assert_eq!((got.from.as_str(), got.kind.as_str(), got.data.get()), ("Worker-7", "answer", answer.as_str()));

    // The native member leaves: the plain one is told.
    native.send(json!({"type":"leave","room":"mixed"})).await;
    assert!(matches!(native.recv().await, ServerMsg::Left(_)));
    let left = plain.recv().await;
    assert_eq!(left, json!({"type":"peer_left","room_id":"mixed","peer_id":native.peer().as_str(),"reason":"left"}));
    // And a native member hears a plain one leave. (The plain member's room token
    // locked the room: a native member presents it too.)
    let mut other = Client::connect(cluster.nodes[0].addr).await;
    other.join_with(json!({"type": "join", "room": "mixed", "name": "tester", "token": "tok"})).await;
    assert_eq!(plain.recv().await["type"], "peer_joined");
    drop(plain);
    let left = other.recv_peer_left().await;
    assert_eq!((left.peer.as_str(), left.reason), ("Worker-7", LeftReason::Disconnected));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_get_on_the_root_still_answers_and_a_silent_client_is_kept_by_pings() {
    let cluster = TestCluster::start_with(&Backend::Memory, 1, &[("CLIENT_HEARTBEAT_MS", "1000")]).await;
    let (status, body) = http_get(cluster.nodes[0].addr, "/").await.expect("answer");
    assert_eq!(status, 200, "{body}");
    let mut a = PlainClient::connect(cluster.nodes[0].addr).await;
    a.register("Quiet", "room").await;
    // Three heartbeats without a word from the client: it answers the node's pings
    // (while it reads), so it stays.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < deadline {
        match tokio::time::timeout_at(deadline, a.ws.next()).await {
            Err(_) => break,
            Ok(Some(Ok(Message::Ping(_)))) => continue,
            Ok(other) => panic!("expected only pings, got {other:?}"),
        }
    }
    a.send(json!({"type":"query"})).await;
    assert_eq!(a.recv().await["type"], "available_peers");
}
