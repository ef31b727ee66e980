//! The Socket.IO dialect (docs/dialects.md, the S1 clients' events) over Engine.IO's
//! WebSocket transport: `join-room` / `existing-users` / `user-joined` / `user-left`
//! and `offer` / `answer` / `ice-candidate`, as socket.io-client sends them. The
//! socket id the server gives in its `CONNECT` answer is the peer id others address.
//!
//! The server pings every 25 s; the reading half answers with a pong through the
//! writing half, which both halves share. The S1 events have no broadcast or update,
//! and signal kinds other than offer, answer and candidate: scenarios that need them
//! refuse it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::stream::{SplitSink, SplitStream};
use futures::SinkExt;
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;
use tokio_tungstenite::tungstenite::Message;

use super::ws::{self, Ws};
use super::{Command, CommandSink, Connection, Driver, DriverError, Event, EventStream};

#[derive(Default)]
pub struct SocketIoDriver;

/// The Engine.IO WebSocket URL for a node given as `ws://host:port` (or already as
/// the full Engine.IO URL).
pub fn engine_url(url: &str) -> String {
    if url.contains("/socket.io") {
        return url.to_owned();
    }
    format!("{}/socket.io/?EIO=4&transport=websocket", url.trim_end_matches('/'))
}

type Sink = Arc<tokio::sync::Mutex<SplitSink<Ws, Message>>>;

#[async_trait]
impl Driver for SocketIoDriver {
    async fn connect(&self, url: &str) -> Result<Connection, DriverError> {
        let (mut tx, mut rx) = ws::connect(&engine_url(url)).await?;
        let open = ws::next_text(&mut rx).await?;
        if !open.as_str().starts_with('0') {
            return Err(DriverError::BadFrame(format!("expected the Engine.IO open packet, got {open}")));
        }
        tx.send(Message::Text("40".into())).await.map_err(|e| DriverError::Io(e.to_string()))?;
        let connected = ws::next_text(&mut rx).await?;
        #[derive(Deserialize)]
        struct Sid {
            sid: String,
        }
        let peer = connected
            .as_str()
            .strip_prefix("40")
            .and_then(|json| serde_json::from_str::<Sid>(json).ok())
            .ok_or_else(|| DriverError::BadFrame(format!("expected the namespace CONNECT answer, got {connected}")))?
            .sid;
        let sink: Sink = Arc::new(tokio::sync::Mutex::new(tx));
        let rooms = Arc::new(Mutex::new(Rooms::default()));
        Ok(Connection {
            peer,
            tx: Box::new(SocketIoCommands { tx: sink.clone(), rooms: rooms.clone() }),
            rx: Box::new(SocketIoEvents { rx, tx: sink, rooms }),
            resume: None,
        })
    }
}

/// The rooms of one connection, shared by its halves: S1 events other than signals
/// do not name their room.
#[derive(Default)]
struct Rooms {
    /// Joins sent and not yet answered, in order.
    joining: VecDeque<String>,
    /// The room joined last.
    current: String,
}

struct SocketIoCommands {
    tx: Sink,
    rooms: Arc<Mutex<Rooms>>,
}

/// The Engine.IO frame one scenario command becomes.
pub fn encode(cmd: &Command) -> Result<String, DriverError> {
    Ok(match cmd {
        Command::Join { room, name, .. } => {
            event("join-room", &json!({"roomId": room, "userName": name, "userRole": "candidate"}).to_string())
        }
        Command::Leave { room } => event("leave-room", &json!({"roomId": room}).to_string()),
        Command::Signal { room, to, kind, data } => {
            let (name, field) = match *kind {
                "offer" => ("offer", "offer"),
                "answer" => ("answer", "answer"),
                "candidate" => ("ice-candidate", "candidate"),
                _ => return Err(DriverError::Unsupported("signal kinds other than offer, answer and candidate")),
            };
            event(name, &format!(r#"{{"targetUserId":{},"{field}":{data},"roomId":{}}}"#, quoted(to), quoted(room)))
        }
        Command::Broadcast { .. } => return Err(DriverError::Unsupported("broadcast")),
        Command::Update { .. } => return Err(DriverError::Unsupported("update")),
    })
}

fn event(name: &str, arg: &str) -> String {
    format!(r#"42["{name}",{arg}]"#)
}

fn quoted(text: &str) -> String {
    serde_json::to_string(text).expect("a string serialises")
}

#[async_trait]
impl CommandSink for SocketIoCommands {
    async fn feed(&mut self, cmd: &Command) -> Result<(), DriverError> {
        let frame = encode(cmd)?;
        if let Command::Join { room, .. } = cmd {
            self.rooms.lock().expect("not poisoned").joining.push_back(room.clone());
        }
        self.tx.lock().await.feed(Message::Text(frame.into())).await.map_err(|e| DriverError::Io(e.to_string()))
    }

    async fn flush(&mut self) -> Result<(), DriverError> {
        self.tx.lock().await.flush().await.map_err(|e| DriverError::Io(e.to_string()))
    }

    async fn close(&mut self) {
        let mut tx = self.tx.lock().await;
        let _ = tx.send(Message::Text("41".into())).await;
        let _ = tx.close().await;
    }
}

struct SocketIoEvents {
    rx: SplitStream<Ws>,
    tx: Sink,
    rooms: Arc<Mutex<Rooms>>,
}

/// The fields of an event argument the harness reads, borrowed from the frame.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Arg<'a> {
    #[serde(borrow)]
    from_user_id: Option<&'a str>,
    #[serde(borrow)]
    user_id: Option<&'a str>,
    #[serde(borrow)]
    room_id: Option<&'a str>,
    #[serde(borrow)]
    offer: Option<&'a RawValue>,
    #[serde(borrow)]
    answer: Option<&'a RawValue>,
    #[serde(borrow)]
    candidate: Option<&'a RawValue>,
    #[serde(borrow)]
    message: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    code: Option<&'a str>,
}

#[derive(Deserialize)]
struct User<'a> {
    #[serde(borrow)]
    id: &'a str,
}

impl SocketIoEvents {
    fn decode(&mut self, name: &str, arg: &RawValue) -> Result<Event, DriverError> {
        let bad = |e: serde_json::Error| DriverError::BadFrame(format!("{name}: {e}"));
        let current = || self.rooms.lock().expect("not poisoned").current.clone();
        Ok(match name {
            "existing-users" => {
                let users: Vec<User> = serde_json::from_str(arg.get()).map_err(bad)?;
                let mut rooms = self.rooms.lock().expect("not poisoned");
                let room = rooms.joining.pop_front().unwrap_or_default();
                rooms.current = room.clone();
                Event::Joined { room, peers: users.into_iter().map(|u| u.id.to_owned()).collect() }
            }
            "offer" | "answer" | "ice-candidate" => {
                let a: Arg = serde_json::from_str(arg.get()).map_err(bad)?;
                let kind = if name == "ice-candidate" { "candidate" } else { name };
                let data = a.offer.or(a.answer).or(a.candidate).map(|d| d.get().to_owned()).unwrap_or_default();
                Event::Signal {
                    room: a.room_id.map_or_else(current, str::to_owned),
                    from: a.from_user_id.unwrap_or_default().to_owned(),
                    kind: kind.to_owned(),
                    data,
                }
            }
            "user-joined" => {
                let a: Arg = serde_json::from_str(arg.get()).map_err(bad)?;
                Event::PeerJoined { room: current(), peer: a.user_id.unwrap_or_default().to_owned() }
            }
            "user-left" => {
                let a: Arg = serde_json::from_str(arg.get()).map_err(bad)?;
                Event::PeerLeft {
                    room: current(),
                    peer: a.user_id.unwrap_or_default().to_owned(),
                    reason: String::new(),
                }
            }
            "error" => {
                let a: Arg = serde_json::from_str(arg.get()).unwrap_or_default();
                Event::Error {
                    code: a.code.unwrap_or("error").to_owned(),
                    message: a.message.map(|m| m.into_owned()).unwrap_or_default(),
                }
            }
            _ => Event::Other,
        })
    }
}

#[async_trait]
impl EventStream for SocketIoEvents {
    async fn next(&mut self) -> Result<Event, DriverError> {
        loop {
            let text = ws::next_text(&mut self.rx).await?;
            let text = text.as_str();
            if text == "2" {
                let mut tx = self.tx.lock().await;
                tx.send(Message::Text("3".into())).await.map_err(|e| DriverError::Io(e.to_string()))?;
                continue;
            }
            let Some(payload) = text.strip_prefix("42") else { return Ok(Event::Other) };
            let (name, arg): (&str, &RawValue) =
                serde_json::from_str(payload).map_err(|e| DriverError::BadFrame(e.to_string()))?;
            return self.decode(name, arg);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_become_the_s1_events() {
        let signal =
            Command::Signal { room: "r".into(), to: "n1.b".into(), kind: "candidate", data: r#"{"s":1}"#.into() };
        assert_eq!(
            encode(&signal).unwrap(),
            r#"42["ice-candidate",{"targetUserId":"n1.b","candidate":{"s":1},"roomId":"r"}]"#
        );
        let join = encode(&Command::Join { room: "r".into(), name: "n".into(), meta: None }).unwrap();
        assert_eq!(join, r#"42["join-room",{"roomId":"r","userName":"n","userRole":"candidate"}]"#);
        assert!(matches!(
            encode(&Command::Update { room: "r".into(), meta: "{}".into() }),
            Err(DriverError::Unsupported(_))
        ));
        assert_eq!(engine_url("ws://h:1/"), "ws://h:1/socket.io/?EIO=4&transport=websocket");
    }
}
