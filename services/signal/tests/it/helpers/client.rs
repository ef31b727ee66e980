//! A native-protocol WebSocket client for tests: sends typed requests, receives typed
//! server messages, and every receive has a deadline.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use protocol::native::{Joined, PeerLeft, Relayed};
use protocol::{PeerId, ServerMsg};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const RECV_DEADLINE: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    peer: PeerId,
    pub node: String,
    /// The token that resumes this connection (welcome's, then each `resumed`'s).
    resume: Option<String>,
}

impl Client {
    pub async fn connect(addr: std::net::SocketAddr) -> Self {
        Self::try_connect(addr, "", None).await.expect("connect /ws")
    }

    /// Connects to `/ws{query}` with an optional bearer token; the HTTP status when the
    /// node refuses the upgrade.
    pub async fn try_connect(addr: std::net::SocketAddr, query: &str, bearer: Option<&str>) -> Result<Self, u16> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = format!("ws://{addr}/ws{query}").into_client_request().unwrap();
        if let Some(token) = bearer {
            request.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        let ws = match tokio_tungstenite::connect_async(request).await {
            Ok((ws, _)) => ws,
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => return Err(response.status().as_u16()),
            Err(e) => panic!("connect /ws: {e}"),
        };
        let mut client = Self { ws, peer: PeerId::parse("x.y").unwrap(), node: String::new(), resume: None };
        match client.recv().await {
            ServerMsg::Welcome(w) => {
                client.peer = w.peer;
                client.node = w.node.to_string();
                client.resume = w.resume;
            }
            other => panic!("expected welcome, got {other:?}"),
        }
        Ok(client)
    }

    pub fn peer(&self) -> &PeerId {
        &self.peer
    }

    /// The token that resumes this connection; panics if the node gave none.
    pub fn resume_token(&self) -> String {
        self.resume.clone().expect("the node gives a resume token")
    }

    /// Connects to `addr` and resumes with `token`: the client and its `resumed`, or the
    /// error the node answered.
    pub async fn resume(
        addr: std::net::SocketAddr,
        token: &str,
    ) -> Result<(Self, protocol::native::Resumed), protocol::native::ErrorMsg> {
        let mut client = Self::connect(addr).await;
        client.send(json!({"type": "resume", "token": token})).await;
        match client.recv().await {
            ServerMsg::Resumed(resumed) => {
                client.peer = resumed.peer.clone();
                client.resume = Some(resumed.resume.clone());
                Ok((client, resumed))
            }
            ServerMsg::Error(e) => Err(e),
            other => panic!("expected resumed or an error, got {other:?}"),
        }
    }

    /// The next server message, waiting as long as it takes; None once the socket is
    /// closed or failed. Cancel-safe (for select loops).
    pub async fn next_msg(&mut self) -> Option<ServerMsg> {
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Text(t))) => return ServerMsg::decode(t.as_str()).ok(),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                _ => return None,
            }
        }
    }

    /// Closes with `code` (1000: done for good, no resume), and returns what the node
    /// wrote until its own close: everything the client sent before has been handled.
    pub async fn close_with(mut self, code: u16) -> Vec<ServerMsg> {
        use tokio_tungstenite::tungstenite::protocol::CloseFrame;
        let frame = CloseFrame { code: code.into(), reason: "".into() };
        let _ = self.ws.close(Some(frame)).await;
        let mut last = Vec::new();
        while let Ok(Some(Ok(frame))) = tokio::time::timeout(RECV_DEADLINE, self.ws.next()).await {
            if let Message::Text(t) = frame {
                last.extend(ServerMsg::decode(t.as_str()).ok());
            }
        }
        last
    }

    /// Sends a close frame, with `code` or with no status code (a browser's
    /// `ws.close()`), and does not wait for the node's.
    pub async fn send_close(&mut self, code: Option<u16>) {
        use tokio_tungstenite::tungstenite::protocol::CloseFrame;
        let frame = code.map(|code| CloseFrame { code: code.into(), reason: "".into() });
        let _ = self.ws.close(frame).await;
    }

    pub async fn send_text(&mut self, text: impl Into<String>) {
        self.ws.send(Message::Text(text.into().into())).await.expect("send");
    }

    pub async fn send(&mut self, v: Value) {
        self.send_text(v.to_string()).await;
    }

    /// The next server message; panics readably after the deadline or on close.
    pub async fn recv(&mut self) -> ServerMsg {
        self.try_recv(RECV_DEADLINE).await.unwrap_or_else(|| panic!("no message within {RECV_DEADLINE:?}"))
    }

    /// The next server message, or None if none arrives within `wait`.
    pub async fn try_recv(&mut self, wait: Duration) -> Option<ServerMsg> {
        loop {
            let frame = tokio::time::timeout(wait, self.ws.next()).await.ok()?;
            match frame {
                Some(Ok(Message::Text(t))) => {
                    return Some(ServerMsg::decode(t.as_str()).unwrap_or_else(|e| panic!("bad server frame {t}: {e}")))
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("socket ended while waiting: {other:?}"),
            }
        }
    }

    /// The next server message, or `Err(close reason)` if the server closed instead.
    pub async fn recv_or_close(&mut self) -> Result<ServerMsg, String> {
        loop {
            match tokio::time::timeout(RECV_DEADLINE, self.ws.next()).await.expect("frame within deadline") {
                Some(Ok(Message::Text(t))) => return Ok(ServerMsg::decode(t.as_str()).expect("server frame")),
                Some(Ok(Message::Close(frame))) => return Err(frame.map(|f| f.reason.to_string()).unwrap_or_default()),
                Some(Ok(_)) => continue,
                other => panic!("socket failed instead of closing: {other:?}"),
            }
        }
    }

    /// Reads until the server's close frame, skipping other frames; returns its code
    /// and reason. Panics if the socket fails instead (a reset loses the close frame).
    pub async fn recv_close_frame(&mut self) -> (u16, String) {
        loop {
            match tokio::time::timeout(RECV_DEADLINE, self.ws.next()).await.expect("close within deadline") {
                Some(Ok(Message::Close(Some(frame)))) => return (frame.code.into(), frame.reason.to_string()),
                Some(Ok(Message::Close(None))) => panic!("close frame without a code"),
                Some(Ok(_)) => continue,
                other => panic!("socket failed instead of closing: {other:?}"),
            }
        }
    }

    /// `self` joins `room`, then `other` joins and is listed `self`; `self` hears
    /// `peer-joined` for `other`.
    pub async fn join_pair(&mut self, other: &mut Client, room: &str) {
        self.join(room).await;
        let joined = other.join(room).await;
        assert!(joined.peers.iter().any(|p| &p.peer == self.peer()), "{joined:?}");
        match self.recv().await {
            ServerMsg::PeerJoined(pj) => assert_eq!(&pj.peer.peer, other.peer()),
            msg => panic!("expected peer-joined, got {msg:?}"),
        }
    }

    pub async fn join(&mut self, room: &str) -> Joined {
        self.join_with(json!({"type": "join", "room": room, "name": "tester"})).await
    }

    pub async fn join_with(&mut self, request: Value) -> Joined {
        self.send(request).await;
        match self.recv().await {
            ServerMsg::Joined(j) => j,
            other => panic!("expected joined, got {other:?}"),
        }
    }

    pub async fn signal(&mut self, room: &str, to: &PeerId, kind: &str, data: Value) {
        self.send(json!({"type": "signal", "room": room, "to": to, "kind": kind, "data": data})).await;
    }

    pub async fn recv_signal(&mut self) -> Relayed {
        match self.recv().await {
            ServerMsg::Signal(s) => s,
            other => panic!("expected signal, got {other:?}"),
        }
    }

    pub async fn recv_peer_left(&mut self) -> PeerLeft {
        match self.recv().await {
            ServerMsg::PeerLeft(p) => p,
            other => panic!("expected peer-left, got {other:?}"),
        }
    }

    /// Expects an error frame with `code`; returns the whole message.
    pub async fn recv_error(&mut self, code: &str) -> protocol::native::ErrorMsg {
        match self.recv().await {
            ServerMsg::Error(e) if e.code.as_str() == code => e,
            other => panic!("expected error {code}, got {other:?}"),
        }
    }

    /// Asserts that nothing arrives for `wait`.
    pub async fn expect_silence(&mut self, wait: Duration) {
        if let Some(msg) = self.try_recv(wait).await {
            panic!("expected silence, got {msg:?}");
        }
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}
