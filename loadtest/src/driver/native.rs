//! Native protocol v1 (docs/protocol.md) over tokio-tungstenite. Signal and broadcast
//! frames, the hot path, are read in one borrowed pass; everything else goes through
//! the protocol crate's own `ServerMsg::decode`, so the harness reads the wire exactly
//! as the node writes it.

use async_trait::async_trait;
use futures::stream::{SplitSink, SplitStream};
use futures::SinkExt;
use protocol::ServerMsg;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

use super::ws::{self, Ws};
use super::{Command, CommandSink, Connection, Driver, DriverError, Event, EventStream};

#[derive(Default)]
pub struct NativeDriver;

#[async_trait]
impl Driver for NativeDriver {
    async fn connect(&self, url: &str) -> Result<Connection, DriverError> {
        let fail = |reason: String| DriverError::Connect { url: url.to_owned(), reason };
        let (tx, mut rx) = ws::connect(url).await?;
        let first = ws::next_text(&mut rx).await.map_err(|e| fail(e.to_string()))?;
        let (peer, resume) = match ServerMsg::decode(first.as_str()) {
            Ok(ServerMsg::Welcome(w)) => (w.peer.to_string(), w.resume),
            other => return Err(fail(format!("expected welcome, got {other:?}"))),
        };
        Ok(Connection { peer, tx: Box::new(NativeCommands { tx }), rx: Box::new(NativeEvents { rx }), resume })
    }

    async fn resume(&self, url: &str, token: &str) -> Result<Connection, DriverError> {
        let fail = |reason: String| DriverError::Connect { url: url.to_owned(), reason };
        let (mut tx, mut rx) = ws::connect(url).await?;
        let welcome = ws::next_text(&mut rx).await.map_err(|e| fail(e.to_string()))?;
        if !matches!(ServerMsg::decode(welcome.as_str()), Ok(ServerMsg::Welcome(_))) {
            return Err(fail(format!("expected welcome, got {welcome}")));
        }
        let request = serde_json::json!({"type": "resume", "token": token}).to_string();
        tx.send(Message::Text(request.into())).await.map_err(|e| DriverError::Io(e.to_string()))?;
        let answer = ws::next_text(&mut rx).await?;
        match ServerMsg::decode(answer.as_str()) {
            Ok(ServerMsg::Resumed(r)) => Ok(Connection {
                peer: r.peer.to_string(),
                tx: Box::new(NativeCommands { tx }),
                rx: Box::new(NativeEvents { rx }),
                resume: Some(r.resume),
            }),
            Ok(ServerMsg::Error(e)) => Err(fail(format!("resume refused: {}: {}", e.code.as_str(), e.message))),
            other => Err(fail(format!("expected resumed, got {other:?}"))),
        }
    }
}

struct NativeCommands {
    tx: SplitSink<Ws, Message>,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
enum Wire<'a> {
    Join {
        room: &'a str,
        name: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        meta: Option<&'a RawValue>,
    },
    Leave {
        room: &'a str,
    },
    Signal {
        room: &'a str,
        to: &'a str,
        kind: &'a str,
        data: &'a RawValue,
    },
    Broadcast {
        room: &'a str,
        kind: &'a str,
        data: &'a RawValue,
    },
    Update {
        room: &'a str,
        meta: &'a RawValue,
    },
}

fn raw(text: &str) -> Result<&RawValue, DriverError> {
    serde_json::from_str(text).map_err(|e| DriverError::BadFrame(format!("scenario built invalid JSON: {e}")))
}

pub fn encode(cmd: &Command) -> Result<String, DriverError> {
    let wire = match cmd {
        Command::Join { room, name, meta } => Wire::Join { room, name, meta: meta.as_deref().map(raw).transpose()? },
        Command::Leave { room } => Wire::Leave { room },
        Command::Signal { room, to, kind, data } => Wire::Signal { room, to, kind, data: raw(data)? },
        Command::Broadcast { room, kind, data } => Wire::Broadcast { room, kind, data: raw(data)? },
        Command::Update { room, meta } => Wire::Update { room, meta: raw(meta)? },
    };
    Ok(serde_json::to_string(&wire).expect("wire commands serialise"))
}

#[async_trait]
impl CommandSink for NativeCommands {
    async fn feed(&mut self, cmd: &Command) -> Result<(), DriverError> {
        let text = encode(cmd)?;
        self.tx.feed(Message::Text(text.into())).await.map_err(|e| DriverError::Io(e.to_string()))
    }

    async fn flush(&mut self) -> Result<(), DriverError> {
        self.tx.flush().await.map_err(|e| DriverError::Io(e.to_string()))
    }

    async fn close(&mut self) {
        self.close_with(CloseCode::Normal).await;
    }

    async fn close_to_resume(&mut self) {
        self.close_with(CloseCode::Library(4000)).await;
    }
}

impl NativeCommands {
    async fn close_with(&mut self, code: CloseCode) {
        let frame = CloseFrame { code, reason: "".into() };
        let _ = self.tx.send(Message::Close(Some(frame))).await;
        let _ = self.tx.close().await;
    }
}

struct NativeEvents {
    rx: SplitStream<Ws>,
}

/// The fields of `signal` and `broadcast`, borrowed from the frame.
#[derive(Deserialize)]
struct RelayedFrame<'a> {
    #[serde(rename = "type")]
    ty: &'a str,
    #[serde(default)]
    room: Option<&'a str>,
    #[serde(default)]
    from: Option<&'a str>,
    #[serde(default)]
    kind: Option<&'a str>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
}

pub fn decode(text: &str) -> Result<Event, DriverError> {
    let bad = |e: serde_json::Error| DriverError::BadFrame(format!("{e}: {}", truncate(text)));
    let frame: RelayedFrame = serde_json::from_str(text).map_err(bad)?;
    if let ("signal" | "broadcast", Some(room), Some(from), Some(kind), Some(data)) =
        (frame.ty, frame.room, frame.from, frame.kind, frame.data)
    {
        let (room, from, kind, data) = (room.to_owned(), from.to_owned(), kind.to_owned(), data.get().to_owned());
        return Ok(if frame.ty == "signal" {
            Event::Signal { room, from, kind, data }
        } else {
            Event::Broadcast { room, from, kind, data }
        });
    }
    Ok(match ServerMsg::decode(text).map_err(bad)? {
        ServerMsg::Joined(j) => {
            Event::Joined { room: j.room.to_string(), peers: j.peers.iter().map(|m| m.peer.to_string()).collect() }
        }
        ServerMsg::PeerJoined(p) => Event::PeerJoined { room: p.room.to_string(), peer: p.peer.peer.to_string() },
        ServerMsg::PeerUpdated(p) => Event::PeerUpdated { room: p.room.to_string(), peer: p.peer.peer.to_string() },
        ServerMsg::PeerLeft(p) => Event::PeerLeft {
            room: p.room.to_string(),
            peer: p.peer.to_string(),
            reason: serde_json::to_value(p.reason).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default(),
        },
        ServerMsg::Left(r) => Event::Left { room: r.room.to_string() },
        ServerMsg::Updated(r) => Event::Updated { room: r.room.to_string() },
        ServerMsg::Error(e) => Event::Error { code: e.code.as_str().to_owned(), message: e.message },
        ServerMsg::Reconnect(_) => Event::Reconnect,
        ServerMsg::Welcome(_)
        | ServerMsg::Pong(_)
        | ServerMsg::Authenticated(_)
        | ServerMsg::RoomClosed(_)
        | ServerMsg::Closed(_)
        | ServerMsg::Done(_)
        | ServerMsg::Signal(_)
        | ServerMsg::Broadcast(_)
        | ServerMsg::Members(_)
        | ServerMsg::Resumed(_) => Event::Other,
    })
}

fn truncate(text: &str) -> &str {
    let end = text.char_indices().nth(120).map(|(i, _)| i).unwrap_or(text.len());
    &text[..end]
}

#[async_trait]
impl EventStream for NativeEvents {
    async fn next(&mut self) -> Result<Event, DriverError> {
        decode(ws::next_text(&mut self.rx).await?.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_frames_keep_their_data_text() {
        let text = r#"{"type":"signal","room":"r","from":"n.abc","kind":"offer","data":{"b":1, "a":[2]}}"#;
        assert_eq!(
            decode(text).unwrap(),
            Event::Signal {
                room: "r".into(),
                from: "n.abc".into(),
                kind: "offer".into(),
                data: r#"{"b":1, "a":[2]}"#.into()
            }
        );
    }

    #[test]
    fn commands_encode_to_native_v1() {
        let cmd = Command::Signal { room: "r".into(), to: "n.x".into(), kind: "candidate", data: r#"{"c":1}"#.into() };
        assert_eq!(
            encode(&cmd).unwrap(),
            r#"{"type":"signal","room":"r","to":"n.x","kind":"candidate","data":{"c":1}}"#
        );
        let join = Command::Join { room: "r".into(), name: "a".into(), meta: None };
        assert_eq!(encode(&join).unwrap(), r#"{"type":"join","room":"r","name":"a"}"#);
    }

    #[test]
    fn errors_and_membership_decode() {
        let e = decode(r#"{"type":"error","code":"peer-unavailable","message":"gone"}"#).unwrap();
        assert_eq!(e, Event::Error { code: "peer-unavailable".into(), message: "gone".into() });
        let left = decode(r#"{"type":"peer-left","room":"r","peer":"n.abc","reason":"node-lost"}"#).unwrap();
        assert_eq!(left, Event::PeerLeft { room: "r".into(), peer: "n.abc".into(), reason: "node-lost".into() });
        assert!(decode("{not json").is_err());
    }
}
