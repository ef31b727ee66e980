//! Native protocol v1 over WebSocket (`/ws`): JSON text frames in, [`Request`]s to the
//! session; session replies and core events out, as [`ServerMsg`] JSON.
//!
//! The loop prefers, in order: the node draining (send `reconnect`, close), the
//! outbound queue overflowing (close with a reason), queued events (written in
//! batches, one flush per batch), then the client's next frame. Queued events keep
//! being written while a request is in flight. Every close the node initiates carries
//! a documented code and reason and is followed by a bounded linger, so the close frame
//! reaches the client instead of being lost to a TCP reset.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures::SinkExt;
use protocol::native::{Joined, PeerJoined, PeerLeft, Pong, Reconnect, Relayed, RoomReply, Welcome};
use protocol::{DecodeError, ErrorCode, Limits, Request, ServerMsg};
use tokio_util::sync::CancellationToken;
use tracing::{debug, Instrument};

use crate::core::{Core, Event, SessionHandle, SessionInbox};
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
        Event::Undeliverable { room, to } => ServerMsg::error(
            ErrorCode::PeerUnavailable,
            format!("signal to {to} in room {room} not delivered: the peer left"),
            None,
        ),
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

/// Why a connection ended, and the close frame the node sends for it.
#[derive(Debug)]
enum End {
    ClientLeft,
    SocketGone,
    Draining,
    TooSlow,
    Misbehaving(&'static str),
    Idle,
}

impl End {
    /// The close the node initiates; None when the client closed or the socket failed.
    fn close(&self) -> Option<(u16, &'static str)> {
        match self {
            End::ClientLeft | End::SocketGone => None,
            End::Draining => Some((close::GOING_AWAY, "draining")),
            End::TooSlow => Some((close::TRY_AGAIN, "too-slow: outbound queue full")),
            End::Misbehaving(reason) => Some((close::POLICY, reason)),
            End::Idle => Some((close::POLICY, "idle: no frame within twice heartbeat_ms")),
        }
    }
}

/// Longest wait to hand a close frame to a client that is not reading.
const CLOSE_SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a closing connection keeps reading (and discarding) for the client's own
/// close frame. Closing a TCP socket with unread input makes the kernel send a reset,
/// and a reset can destroy our close frame before the client has read it; reading until
/// the client's close (or EOF) lets the close frame arrive.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// Drives one WebSocket connection until the client leaves, the node drains or the
/// socket fails; then leaves the peer's rooms and, if the node ended it, closes with a
/// documented code and reason.
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
        // Leave the rooms first, so the others hear `peer-left` without waiting for
        // the close handshake.
        Box::pin(session.close()).await;
        if let Some((code, reason)) = end.close() {
            Box::pin(close_and_linger(&mut socket, code, reason)).await;
        }
    }
    .instrument(span)
    .await
}

async fn close_and_linger(socket: &mut WebSocket, code: u16, reason: &'static str) {
    match tokio::time::timeout(CLOSE_SEND_TIMEOUT, socket.send(close_frame(code, reason))).await {
        Ok(Ok(())) => {}
        _ => return,
    }
    let _ = tokio::time::timeout(CLOSE_LINGER, async {
        while let Some(Ok(msg)) = socket.recv().await {
            if matches!(msg, Message::Close(_)) {
                return;
            }
        }
    })
    .await;
}

async fn run(
    socket: &mut WebSocket,
    session: &mut Session,
    inbox: &mut SessionInbox,
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
            _ = inbox.too_slow.cancelled() => return End::TooSlow,
            Some(event) = inbox.rx.recv() => {
                if let Err(end) = Box::pin(write_events_unless_too_slow(socket, event, inbox)).await {
                    return end;
                }
            }
            _ = &mut idle => return End::Idle,
            frame = socket.recv() => {
                idle.as_mut().reset(tokio::time::Instant::now() + idle_limit);
                match frame {
                    None | Some(Ok(Message::Close(_))) => return End::ClientLeft,
                    Some(Err(e)) => {
                        debug!(error = %e, "socket error");
                        return End::SocketGone;
                    }
                    Some(Ok(Message::Text(t))) => {
                        if let Err(end) = Box::pin(on_text(socket, session, inbox, t.as_str(), &settings.limits)).await {
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

/// Writes queued events, unless the queue overflows meanwhile: a client that stops
/// reading blocks the write, and the overflow must still end the session.
async fn write_events_unless_too_slow(
    socket: &mut WebSocket,
    first: Arc<Event>,
    inbox: &mut SessionInbox,
) -> Result<(), End> {
    tokio::select! {
        biased;
        _ = inbox.too_slow.cancelled() => Err(End::TooSlow),
        written = write_events(socket, first, &mut inbox.rx) => written.map_err(|_| End::SocketGone),
    }
}

async fn on_text(
    socket: &mut WebSocket,
    session: &mut Session,
    inbox: &mut SessionInbox,
    text: &str,
    limits: &Limits,
) -> Result<(), End> {
    match Request::decode(text, limits) {
        Ok(req) => {
            let (replies, verdict) = handle_while_writing_events(socket, session, inbox, req).await?;
            for reply in replies {
                for msg in render_reply(reply) {
                    socket.feed(frame(&msg)).await.map_err(|_| End::SocketGone)?;
                }
            }
            socket.flush().await.map_err(|_| End::SocketGone)?;
            match verdict {
                Verdict::Stay => Ok(()),
                Verdict::Close(reason) => Err(End::Misbehaving(reason)),
            }
        }
        Err(err) => on_refusal(socket, session, err).await,
    }
}

/// Runs one request to completion while events queued for this client keep being
/// written: a join may wait seconds for its room channel, and a busy room must not
/// fill the queue meanwhile. The request itself is never cancelled (a join dropped
/// halfway would leave a half-registered member); if the queue overflows or the
/// socket fails, writing stops and the request still finishes first.
async fn handle_while_writing_events(
    socket: &mut WebSocket,
    session: &mut Session,
    inbox: &mut SessionInbox,
    req: Request,
) -> Result<(Vec<Reply>, Verdict), End> {
    let handling = session.handle(req);
    tokio::pin!(handling);
    let mut stopped: Option<End> = None;
    loop {
        tokio::select! {
            biased;
            handled = &mut handling => return stopped.map_or(Ok(handled), Err),
            Some(event) = inbox.rx.recv(), if stopped.is_none() => {
                if let Err(end) = write_events_unless_too_slow(socket, event, inbox).await {
                    stopped = Some(end);
                }
            }
        }
    }
}

async fn on_refusal(socket: &mut WebSocket, session: &mut Session, err: DecodeError) -> Result<(), End> {
    let (reply, verdict) = session.refuse(err);
    for msg in render_reply(reply) {
        socket.send(frame(&msg)).await.map_err(|_| End::SocketGone)?;
    }
    match verdict {
        Verdict::Stay => Ok(()),
        Verdict::Close(reason) => Err(End::Misbehaving(reason)),
    }
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
    let _ = tokio::time::timeout(CLOSE_SEND_TIMEOUT, socket.send(frame(&msg))).await;
    End::Draining
}
