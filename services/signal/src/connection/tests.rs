//! The connection driver over in-memory channels: no socket, no Redis. A real core on
//! the embedded backend, the native dialect, and a transport made of two channels.

use std::sync::Arc;
use std::time::Duration;

use bus::MemoryBackend;
use protocol::NodeId;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::*;
use crate::core::CoreSettings;
use crate::transport::native::Native;

/// What the node wrote to the client.
#[derive(Debug)]
enum Out {
    Frame(Value),
    Close(u16, &'static str),
}

struct ChannelTransport {
    from_client: mpsc::Receiver<Incoming>,
    to_client: mpsc::Sender<Out>,
}

impl Transport for ChannelTransport {
    async fn recv(&mut self) -> Incoming {
        self.from_client.recv().await.unwrap_or(Incoming::Failed)
    }

    async fn feed(&mut self, frame: Utf8Bytes) -> Result<(), Gone> {
        let value = serde_json::from_str(frame.as_str()).expect("the node writes JSON");
        self.to_client.send(Out::Frame(value)).await.map_err(|_| Gone)
    }

    async fn flush(&mut self) -> Result<(), Gone> {
        Ok(())
    }

    async fn close(&mut self, code: u16, reason: &'static str) {
        let _ = self.to_client.send(Out::Close(code, reason)).await;
    }

    async fn ping(&mut self) -> Result<(), Gone> {
        Ok(())
    }
}

/// The client's ends of the two channels.
struct TestClient {
    to_node: mpsc::Sender<Incoming>,
    from_node: mpsc::Receiver<Out>,
}

const DEADLINE: Duration = Duration::from_secs(5);

impl TestClient {
    async fn send(&self, frame: Value) {
        self.to_node.send(Incoming::Text(Utf8Bytes::from(frame.to_string()))).await.expect("connection is running");
    }

    async fn next(&mut self) -> Out {
        tokio::time::timeout(DEADLINE, self.from_node.recv()).await.expect("an answer in time").expect("open")
    }

    async fn frame(&mut self) -> Value {
        match self.next().await {
            Out::Frame(v) => v,
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    /// Skips frames until the close; returns its code and reason.
    async fn close_frame(&mut self) -> (u16, &'static str) {
        loop {
            if let Out::Close(code, reason) = self.next().await {
                return (code, reason);
            }
        }
    }
}

fn settings() -> ConnectionSettings {
    ConnectionSettings {
        limits: Limits::default(),
        session: SessionLimits {
            rate_per_sec: 1000,
            rate_burst: 1000,
            strikes: 3,
            strike_window: Duration::from_secs(10),
            joins_per_minute: 100,
        },
        outbound_queue: 8,
        client_heartbeat: Duration::from_secs(30),
        reconnect_after: Duration::from_millis(500),
        drain_spread: Duration::ZERO,
    }
}

/// A core on the embedded backend with its dispatcher running.
async fn core() -> Arc<Core> {
    let settings = CoreSettings {
        room_capacity: 100,
        presence_limit: 100,
        rooms_per_peer: 4,
        heartbeat_interval: Duration::from_secs(1),
        node_ttl: Duration::from_secs(3),
        join_timeout: Duration::from_secs(2),
        resume_grace: Duration::ZERO,
        reload_grace: Duration::ZERO,
        admission: Arc::new(crate::admission::Admission::open()),
    };
    let core = Core::new(NodeId::parse("unit").unwrap(), Arc::new(MemoryBackend::new()), settings);
    // The tasks stop with the test's runtime.
    core.start(&TaskTracker::new(), CancellationToken::new()).await.unwrap();
    core
}

/// Starts a connection; `client_buffer` is how many frames the client's side holds
/// before the node's writes wait.
fn connect(core: &Arc<Core>, settings: ConnectionSettings, client_buffer: usize) -> TestClient {
    connect_with(Native, core, settings, client_buffer)
}

fn connect_with<D: Dialect>(
    dialect: D,
    core: &Arc<Core>,
    settings: ConnectionSettings,
    client_buffer: usize,
) -> TestClient {
    let (to_node, from_client) = mpsc::channel(16);
    let (to_client, from_node) = mpsc::channel(client_buffer);
    let core = core.clone();
    tokio::spawn(serve(ChannelTransport { from_client, to_client }, dialect, core, Arc::new(settings), None, None));
    TestClient { to_node, from_node }
}

async fn welcomed(client: &mut TestClient) -> String {
    let welcome = client.frame().await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    welcome["peer"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_connection_is_welcomed_and_answers_requests_with_their_id() {
    let core = core().await;
    let mut a = connect(&core, settings(), 64);
    let peer = welcomed(&mut a).await;
    assert!(peer.starts_with("unit."), "{peer}");
    a.send(json!({"type": "ping", "id": "p1"})).await;
    assert_eq!(a.frame().await, json!({"type": "pong", "id": "p1"}));
}

#[tokio::test]
async fn two_connections_meet_in_a_room_and_relay_a_signal_byte_for_byte() {
    let core = core().await;
    let mut a = connect(&core, settings(), 64);
    let mut b = connect(&core, settings(), 64);
    let a_peer = welcomed(&mut a).await;
    let b_peer = welcomed(&mut b).await;
    a.send(json!({"type": "join", "room": "r", "name": "Ada"})).await;
    assert_eq!(a.frame().await["type"], "joined");
    b.send(json!({"type": "join", "room": "r", "name": "Bob"})).await;
    let joined = b.frame().await;
    assert_eq!(joined["peers"][0]["peer"], a_peer.as_str());
    assert_eq!(a.frame().await["peer"]["name"], "Bob");

    let text =
        format!(r#"{{"type":"signal","room":"r","to":"{b_peer}","kind":"offer","data":{{"sdp":"v=0","z":1.50}}}}"#);
    a.to_node.send(Incoming::Text(Utf8Bytes::from(text))).await.unwrap();
    let got = b.frame().await;
    assert_eq!((got["type"].as_str(), got["from"].as_str()), (Some("signal"), Some(a_peer.as_str())));
    assert_eq!(got["data"]["sdp"], "v=0");

    // b goes away: a hears it left.
    drop(b);
    let left = a.frame().await;
    assert_eq!((left["type"].as_str(), left["reason"].as_str()), (Some("peer-left"), Some("disconnected")));
}

#[tokio::test]
async fn bad_frames_get_errors_and_too_many_close_the_connection_with_a_reason() {
    let core = core().await;
    let mut a = connect(&core, settings(), 64);
    welcomed(&mut a).await;
    a.to_node.send(Incoming::Binary).await.unwrap();
    assert_eq!(a.frame().await["code"], "bad-request");
    for _ in 0..3 {
        a.send(json!({"type": "teleport", "id": 9})).await;
    }
    assert_eq!(a.frame().await["id"], 9);
    assert_eq!(a.frame().await["id"], 9);
    // The fourth bad frame within the window (strikes: 3) ends it.
    assert_eq!(a.frame().await["code"], "bad-request");
    assert_eq!(a.close_frame().await, (close::POLICY, "too many bad messages"));
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_as_too_slow_and_the_others_hear_it_left() {
    let core = core().await;
    let mut a = connect(&core, settings(), 64);
    // b's side holds 2 frames, and the test reads none while a floods the room.
    let mut b = connect(&core, settings(), 2);
    welcomed(&mut a).await;
    let b_peer = welcomed(&mut b).await;
    a.send(json!({"type": "join", "room": "r"})).await;
    assert_eq!(a.frame().await["type"], "joined");
    b.send(json!({"type": "join", "room": "r"})).await;
    assert_eq!(a.frame().await["type"], "peer-joined");
    for i in 0..50 {
        a.send(json!({"type": "broadcast", "room": "r", "kind": "chat", "data": i})).await;
    }
    let left = a.frame().await;
    assert_eq!((left["type"].as_str(), left["peer"].as_str()), (Some("peer-left"), Some(b_peer.as_str())));
    assert_eq!(b.close_frame().await, (close::TRY_AGAIN, "too-slow: outbound queue full"));
}

#[tokio::test]
async fn a_draining_node_sends_reconnect_then_closes_going_away() {
    let core = core().await;
    let mut a = connect(&core, settings(), 64);
    welcomed(&mut a).await;
    core.sessions().drain();
    assert_eq!(a.frame().await, json!({"type": "reconnect", "after_ms": 500, "reason": "draining"}));
    assert_eq!(a.close_frame().await, (close::GOING_AWAY, "draining"));
}

#[tokio::test]
async fn a_silent_client_is_closed_as_idle_after_twice_the_heartbeat() {
    let core = core().await;
    let quick = ConnectionSettings { client_heartbeat: Duration::from_millis(50), ..settings() };
    let mut a = connect(&core, quick, 64);
    welcomed(&mut a).await;
    let (code, reason) = a.close_frame().await;
    assert_eq!(code, close::POLICY);
    assert!(reason.starts_with("idle"), "{reason}");
}

/// The native dialect with a keep-alive of its own, as Socket.IO has: a ping frame every
/// 40 ms, and idle after 300 ms without a frame from the client.
struct PingingNative;

impl Dialect for PingingNative {
    const NAME: &'static str = "native";
    type Context = ();

    fn welcome(&mut self, greeting: &Greeting<'_>) -> Option<Utf8Bytes> {
        Native.welcome(greeting)
    }
    fn decode(&mut self, text: &str, limits: &Limits) -> Result<Decoded<()>, Refused<()>> {
        Native.decode(text, limits)
    }
    fn render_replies(&mut self, context: Option<()>, replies: Vec<crate::session::Reply>, out: &mut Vec<Utf8Bytes>) {
        Native.render_replies(context, replies, out)
    }
    fn render_event(&self, event: &Event) -> Option<Utf8Bytes> {
        Native.render_event(event)
    }
    fn reconnect(&self, after: Duration) -> Option<Utf8Bytes> {
        Native.reconnect(after)
    }
    fn keepalive(&self, _heartbeat: Duration) -> crate::transport::Keepalive {
        let ping = Utf8Bytes::from_static(r#"{"type":"server-ping"}"#);
        crate::transport::Keepalive {
            ping: Some((Duration::from_millis(40), Ping::Frame(ping))),
            idle_after: Duration::from_millis(300),
        }
    }
}

#[tokio::test]
async fn a_dialect_ping_goes_out_on_schedule_even_to_a_busy_client_and_silence_still_closes() {
    let core = core().await;
    let mut a = connect_with(PingingNative, &core, settings(), 64);
    welcomed(&mut a).await;
    // The client talks all the time; the node's pings must not wait for a silence
    // (Socket.IO clients close a connection whose pings stop).
    let (mut pings, mut pongs) = (0, 0);
    while pings < 3 {
        a.send(json!({"type": "ping"})).await;
        match a.frame().await["type"].as_str() {
            Some("server-ping") => pings += 1,
            Some("pong") => pongs += 1,
            other => panic!("unexpected {other:?}"),
        }
        assert!(pongs < 2_000, "no ping in {pongs} requests");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Then silence: closed as idle, after more pings.
    let (code, reason) = a.close_frame().await;
    assert_eq!(code, close::POLICY);
    assert!(reason.starts_with("idle"), "{reason}");
}
