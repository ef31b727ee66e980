//! The plain-JSON dialect (docs/dialects.md, the S4 server's clients) over
//! tokio-tungstenite. The client chooses its peer id when it connects; `Join` registers
//! it and asks for the room's members at once, and that answer stands for the native
//! `joined`. Signals travel as whole plain messages that carry the scenario's data in
//! `data`. The dialect has one room per connection and no leave, broadcast or update:
//! scenarios that need them refuse it.

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
pub struct PlainDriver;

#[async_trait]
impl Driver for PlainDriver {
    async fn connect(&self, url: &str) -> Result<Connection, DriverError> {
        let (tx, rx) = ws::connect(url).await?;
        let peer = format!("lt-{:016x}", rand::random::<u64>());
        Ok(Connection {
            peer: peer.clone(),
            tx: Box::new(PlainCommands { tx, peer }),
            rx: Box::new(PlainEvents { rx, room: String::new() }),
            resume: None,
        })
    }
}

struct PlainCommands {
    tx: SplitSink<Ws, Message>,
    peer: String,
}

/// The frames one scenario command becomes.
pub fn encode(me: &str, cmd: &Command) -> Result<Vec<String>, DriverError> {
    match cmd {
        Command::Join { room, .. } => Ok(vec![
            json!({"type": "register", "peer_id": me, "room_id": room, "token": "loadtest"}).to_string(),
            json!({"type": "query"}).to_string(),
        ]),
        Command::Signal { to, kind, data, .. } => {
            let (kind_q, me_q, to_q) = (quoted(kind), quoted(me), quoted(to));
            Ok(vec![format!(r#"{{"type":{kind_q},"sender":{me_q},"target":{to_q},"data":{data}}}"#)])
        }
        Command::Leave { .. } => Err(DriverError::Unsupported("leave")),
        Command::Broadcast { .. } => Err(DriverError::Unsupported("broadcast")),
        Command::Update { .. } => Err(DriverError::Unsupported("update")),
    }
}

fn quoted(text: &str) -> String {
    serde_json::to_string(text).expect("a string serialises")
}

#[async_trait]
impl CommandSink for PlainCommands {
    async fn feed(&mut self, cmd: &Command) -> Result<(), DriverError> {
        for frame in encode(&self.peer, cmd)? {
            self.tx.feed(Message::Text(frame.into())).await.map_err(|e| DriverError::Io(e.to_string()))?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), DriverError> {
        self.tx.flush().await.map_err(|e| DriverError::Io(e.to_string()))
    }

    async fn close(&mut self) {
        let _ = self.tx.close().await;
    }
}

struct PlainEvents {
    rx: SplitStream<Ws>,
    /// The connection's room, from `registered_auth` (plain messages do not name it).
    room: String,
}

/// The fields the harness reads, borrowed from the frame.
#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type")]
    ty: &'a str,
    #[serde(default)]
    room_id: Option<&'a str>,
    #[serde(default)]
    peer_id: Option<&'a str>,
    #[serde(default)]
    sender: Option<&'a str>,
    #[serde(default)]
    reason: Option<&'a str>,
    #[serde(default)]
    peers: Option<Vec<&'a str>>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
}

impl PlainEvents {
    fn decode(&mut self, text: &str) -> Result<Event, DriverError> {
        let frame: Frame = serde_json::from_str(text).map_err(|e| DriverError::BadFrame(e.to_string()))?;
        let owned = |s: Option<&str>| s.unwrap_or_default().to_owned();
        Ok(match frame.ty {
            "registered_auth" => {
                self.room = owned(frame.room_id);
                Event::Other
            }
            "available_peers" => Event::Joined {
                room: self.room.clone(),
                peers: frame.peers.unwrap_or_default().into_iter().map(str::to_owned).collect(),
            },
            "peer_joined" => Event::PeerJoined { room: owned(frame.room_id), peer: owned(frame.peer_id) },
            "peer_left" => {
                Event::PeerLeft { room: owned(frame.room_id), peer: owned(frame.peer_id), reason: owned(frame.reason) }
            }
            "offer" | "answer" | "candidate" => Event::Signal {
                room: self.room.clone(),
                from: owned(frame.sender),
                kind: frame.ty.to_owned(),
                data: frame.data.map(|d| d.get().to_owned()).unwrap_or_default(),
            },
            "error" => Event::Error { code: "error".into(), message: owned(frame.reason) },
            "reconnect" => Event::Reconnect,
            _ => Event::Other,
        })
    }
}

#[async_trait]
impl EventStream for PlainEvents {
    async fn next(&mut self) -> Result<Event, DriverError> {
        let text = ws::next_text(&mut self.rx).await?;
        self.decode(text.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signal_is_a_whole_plain_message_and_comes_back_as_the_scenarios_data() {
        let cmd = Command::Signal { room: "r".into(), to: "lt-2".into(), kind: "offer", data: r#"{"s":1}"#.into() };
        let frames = encode("lt-1", &cmd).unwrap();
        assert_eq!(frames, vec![r#"{"type":"offer","sender":"lt-1","target":"lt-2","data":{"s":1}}"#.to_owned()]);
    }

    #[test]
    fn join_registers_and_asks_for_the_members() {
        let frames = encode("lt-1", &Command::Join { room: "r".into(), name: "n".into(), meta: None }).unwrap();
        assert!(frames[0].contains(r#""type":"register""#) && frames[0].contains(r#""peer_id":"lt-1""#));
        assert_eq!(frames[1], r#"{"type":"query"}"#);
        assert!(matches!(encode("lt-1", &Command::Leave { room: "r".into() }), Err(DriverError::Unsupported("leave"))));
    }
}
