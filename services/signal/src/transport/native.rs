//! Native protocol v1 over WebSocket (`/ws`): JSON text frames in, [`Request`]s to the
//! session; session replies and core events out, as [`ServerMsg`] JSON.
//!
//! The loop prefers, in order: the node draining (send `reconnect`, close), the
//! outbound queue overflowing (close with a reason), queued events (written in
//! batches, one flush per batch), then the client's next frame.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures::SinkExt;
use protocol::native::{Joined, PeerJoined, PeerLeft, Pong, Reconnect, Relayed, RoomReply, Welcome};
use protocol::{DecodeError, Limits, Request, ServerMsg};
use tokio_util::sync::CancellationToken;
use tracing::{debug, Instrument};

use crate::core::{Core, Event, SessionHandle};
use crate::session::{Reply, Session, SessionLimits, Verdict};

/// Most queued events written before one flush.
const WRITE_BATCH: usize = 64;

/// WebSocket close codes used by the node.
mod close {
    pub const POLICY: u16 = 1008;
    pub const GOING_AWAY: u16 = 1001;
    pub const TRY_AGAIN: u16 = 1013;
}

/// Per-connection settings handed to each session.
#[derive(Debug, Clone)]
pub struct NativeSettings {
    pub limits: Limits,
    pub session: SessionLimits,
    pub outbound_queue: usize,
    pub client_heartbeat: Duration,
    pub reconnect_after: Duration,
}

pub fn render(event: &Event) -> ServerMsg {
    match event {
        Event::PeerJoined { room, member } => {
            ServerMsg::PeerJoined(PeerJoined { room: room.clone(), peer: (**member).clone() })
        }
        Event::PeerUpdated { room, member } => {
            ServerMsg::PeerUpdated(PeerJoined { room: room.clone(), peer: (**member).clone() })
        }
        Event::PeerLeft { room, peer, reason } => {
            ServerMsg::PeerLeft(PeerLeft { room: room.clone(), peer: peer.clone(), reason: *reason })
        }
        Event::Signal { room, from, kind, data } => ServerMsg::Signal(Relayed {
            room: room.clone(),
            from: from.clone(),
            kind: kind.clone(),
            data: data.clone(),
        }),
        Event::Broadcast { room, from, kind, data } => ServerMsg::Broadcast(Relayed {
            room: room.clone(),
            from: from.clone(),
            kind: kind.clone(),
            data: data.clone(),
        }),
    }
}

fn render_reply(reply: Reply) -> Vec<ServerMsg> {
    match reply {
        Reply::Joined { room, others, id } => {
            vec![ServerMsg::Joined(Joined { room, peers: others.iter().map(|m| (**m).clone()).collect(), id })]
        }
        Reply::Left { room, id } => vec![ServerMsg::Left(RoomReply { room, id })],
        Reply::Updated { room, id } => vec![ServerMsg::Updated(RoomReply { room, id })],
        Reply::Pong { id } => vec![ServerMsg::Pong(Pong { id })],
        Reply::Error { code, message, id } => vec![ServerMsg::error(code, message, id)],
        Reply::Events(events) => events.iter().map(|e| render(e)).collect(),
    }
}

fn frame(msg: &ServerMsg) -> Message {
    Message::Text(Utf8Bytes::from(msg.to_json()))
}

fn close_frame(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame { code, reason: Utf8Bytes::from_static(reason) }))
}

/// Why a connection ended (for logs).
#[derive(Debug)]
enum End {
    ClientLeft,
    SocketGone,
    Draining,
    TooSlow,
    Misbehaving,
    Idle,
}

/// Drives one WebSocket connection until the client leaves, the node drains or the
/// socket fails; then leaves the peer's rooms.
pub async fn serve(mut socket: WebSocket, core: Arc<Core>, settings: Arc<NativeSettings>, stop: CancellationToken) {
    let peer = protocol::PeerId::new_on(core.node());
    let span = tracing::info_span!("connection", peer = %peer, node = %core.node());
    async move {
        let (handle, mut inbox) = SessionHandle::new(peer.clone(), settings.outbound_queue);
        core.sessions.insert(handle.clone());
        let mut session = Session::new(core.clone(), handle, &settings.session);
        let welcome = ServerMsg::Welcome(Welcome {
            peer: peer.clone(),
            node: core.node().clone(),
            heartbeat_ms: settings.client_heartbeat.as_millis() as u64,
        });
        let end = if socket.send(frame(&welcome)).await.is_err() {
            End::SocketGone
        } else {
            run(&mut socket, &mut session, &mut inbox, &settings, &stop).await
        };
        debug!(?end, "connection ended");
        Box::pin(session.close()).await;
    }
    .instrument(span)
    .await
}

async fn run(
    socket: &mut WebSocket,
    session: &mut Session,
    inbox: &mut crate::core::SessionInbox,
    settings: &NativeSettings,
    stop: &CancellationToken,
) -> End {
    let idle_limit = settings.client_heartbeat * 2;
    let idle = tokio::time::sleep(idle_limit);
    tokio::pin!(idle);
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => return Box::pin(say_reconnect(socket, settings)).await,
            _ = inbox.too_slow.cancelled() => {
                let _ = socket.send(close_frame(close::TRY_AGAIN, "too-slow: outbound queue full")).await;
                return End::TooSlow;
            }
            Some(event) = inbox.rx.recv() => {
                // A client that stops reading blocks this write; the overflow of its
                // queue must still end the session, so the two race.
                tokio::select! {
                    biased;
                    _ = inbox.too_slow.cancelled() => return End::TooSlow,
                    written = write_events(socket, event, &mut inbox.rx) => if written.is_err() {
                        return End::SocketGone;
                    },
                }
            }
            _ = &mut idle => {
                let _ = socket.send(close_frame(close::POLICY, "idle: no frame within twice heartbeat_ms")).await;
                return End::Idle;
            }
            frame = socket.recv() => {
                idle.as_mut().reset(tokio::time::Instant::now() + idle_limit);
                match frame {
                    None | Some(Ok(Message::Close(_))) => return End::ClientLeft,
                    Some(Err(e)) => {
                        debug!(error = %e, "socket error");
                        return End::SocketGone;
                    }
                    Some(Ok(Message::Text(t))) => {
                        if let Err(end) = Box::pin(on_text(socket, session, t.as_str(), &settings.limits)).await {
                            return end;
                        }
                    }
                    Some(Ok(Message::Binary(_))) => {
                        let err = DecodeError { code: protocol::ErrorCode::BadRequest, message: "binary frames are not supported; send JSON text".into(), id: None };
                        if let Err(end) = Box::pin(on_refusal(socket, session, err)).await {
                            return end;
                        }
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                }
            }
        }
    }
}

async fn on_text(socket: &mut WebSocket, session: &mut Session, text: &str, limits: &Limits) -> Result<(), End> {
    match Request::decode(text, limits) {
        Ok(req) => {
            for reply in session.handle(req).await {
                for msg in render_reply(reply) {
                    socket.feed(frame(&msg)).await.map_err(|_| End::SocketGone)?;
                }
            }
            socket.flush().await.map_err(|_| End::SocketGone)
        }
        Err(err) => on_refusal(socket, session, err).await,
    }
}

async fn on_refusal(socket: &mut WebSocket, session: &mut Session, err: DecodeError) -> Result<(), End> {
    let (reply, verdict) = session.refuse(err);
    for msg in render_reply(reply) {
        socket.send(frame(&msg)).await.map_err(|_| End::SocketGone)?;
    }
    if verdict == Verdict::Close {
        let _ = socket.send(close_frame(close::POLICY, "too many bad messages")).await;
        return Err(End::Misbehaving);
    }
    Ok(())
}

/// Writes one event and whatever else is already queued, then flushes once.
async fn write_events(
    socket: &mut WebSocket,
    first: Arc<Event>,
    rx: &mut tokio::sync::mpsc::Receiver<Arc<Event>>,
) -> Result<(), axum::Error> {
    socket.feed(frame(&render(&first))).await?;
    for _ in 1..WRITE_BATCH {
        match rx.try_recv() {
            Ok(event) => socket.feed(frame(&render(&event))).await?,
            Err(_) => break,
        }
    }
    socket.flush().await
}

async fn say_reconnect(socket: &mut WebSocket, settings: &NativeSettings) -> End {
    let msg = ServerMsg::Reconnect(Reconnect {
        after_ms: settings.reconnect_after.as_millis() as u64,
        reason: "draining".into(),
    });
    let _ = socket.send(frame(&msg)).await;
    let _ = socket.send(close_frame(close::GOING_AWAY, "draining")).await;
    End::Draining
}
