//! Socket.IO v4 (Engine.IO v4) at `/socket.io/`, for clients written for the Node.js
//! servers we replace: the S1 interview rooms on namespace `/` ([`rooms`]) and the S3
//! meetings gateway on `/meetings` ([`meetings`]). docs/dialects.md documents every
//! event.
//!
//! The codec frames Engine.IO and Socket.IO itself (`protocol::socketio`); the
//! connection driver, the session and the core are the same as every other dialect's.
//! Every event of a socket goes through the session one at a time, so one sender's
//! signals stay in order. Over WebSocket one frame is one Engine.IO packet; HTTP
//! long-polling ([`super::polling`]) delivers the same packets through channels.
//!
//! A connection may join both namespaces; its socket id is its peer id in both (a
//! room is joined from one namespace at a time), which is also the `userId` /
//! `participantId` every other member sees.
//!
//! Connection state recovery follows Socket.IO's own (v4.6+): with RESUME_GRACE_MS on,
//! the namespace CONNECT answer carries a private session id (`pid`, the connection's
//! resume token). A transport that ends without a Socket.IO DISCONNECT leaves the
//! member away, its events held, as in every resumable dialect; the client's next
//! CONNECT carries `{pid, offset}`, and the node resumes the session (on any node): same
//! socket id, same rooms in the same namespaces, the S3 participant state back from its
//! record, then everything held, in order. The answer repeats the `pid`, so the
//! client's `socket.recovered` is true. The `pid` stays the same for the session's
//! life, as in Socket.IO, so the client can recover again later. An unknown or expired
//! `pid` gets a fresh session (a new socket id), never an error. `offset` is not
//! needed: the node replays from its own hold, not from a log.

mod fields;
mod meetings;
mod rooms;

use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use protocol::socketio::{encode_sio, EioPacket, SioPacket, SioType};
use protocol::{Command, DecodeError, ErrorCode, Limits, PeerId, Request, RoomId};

use super::{Decoded, Dialect, Greeting, Keepalive, Ping, Refused, Rendering};
use crate::core::Event;
use crate::session::Reply;
use fields::{ack_frame, event_frame, quoted};

/// Engine.IO timing, as the Node.js servers we replace configured it: the server
/// pings every 25 s and gives up on a client silent for 25 + 60 s.
pub const PING_INTERVAL: Duration = Duration::from_secs(25);
pub const PING_TIMEOUT: Duration = Duration::from_secs(60);

/// The largest Engine.IO packet (and long-polling body) accepted, in bytes. Events
/// are also held to the node's frame limit (FRAME_BYTES), like every dialect's.
pub const MAX_PAYLOAD: usize = 1_000_000;

/// The namespaces served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ns {
    /// `/`: S1 interview rooms.
    Rooms,
    /// `/meetings`: the S3 meetings gateway.
    Meetings,
}

impl Ns {
    fn parse(path: &str) -> Option<Ns> {
        match path {
            "/" => Some(Ns::Rooms),
            "/meetings" => Some(Ns::Meetings),
            _ => None,
        }
    }

    fn path(self) -> &'static str {
        match self {
            Ns::Rooms => "/",
            Ns::Meetings => "/meetings",
        }
    }

    fn bit(self) -> u8 {
        match self {
            Ns::Rooms => 1,
            Ns::Meetings => 2,
        }
    }
}

/// One connection's codec.
#[derive(Default)]
pub struct SocketIo {
    /// The connection's peer id: its socket id in every namespace. Set by `welcome`.
    peer: Option<PeerId>,
    /// The Engine.IO session id of a long-polling session (which may upgrade); a
    /// WebSocket-only session uses the peer id.
    polling_sid: Option<Box<str>>,
    /// Namespaces connected, as bits of [`Ns::bit`].
    connected: u8,
    /// Rooms joined, with the namespace that joined them (events are shown there).
    rooms: Vec<(RoomId, Ns)>,
    /// This participant's own state in each meeting it joined.
    meetings: Vec<meetings::Me>,
    /// The private session id its client recovers the session with (the connection's
    /// resume token), when resume is on.
    pid: Option<Box<str>>,
    /// Numbers this connection's chat messages.
    chats_sent: u64,
    /// S2's calls: the other side of this socket's last `call-offer` or `call-answer`,
    /// sent or received, where a bare `ice-candidate` goes. Set while rendering a
    /// received call (rendering does not take the codec mutably); boxed, so sockets
    /// that never call pay one pointer.
    call_partner: std::sync::Mutex<Option<Box<PeerId>>>,
}

/// A packet being handled: how to answer it when its replies come (the dialect's
/// context for a request).
#[derive(Debug)]
pub struct InFlight {
    ns: Ns,
    ack: Option<u64>,
    action: Action,
}

impl InFlight {
    fn new(ns: Ns, ack: Option<u64>, action: Action) -> Box<Self> {
        Box::new(InFlight { ns, ack, action })
    }
}

/// What to show when an event's replies come back.
#[derive(Debug)]
enum Action {
    /// Acknowledge only.
    Plain,
    /// A namespace CONNECT: answered with the socket id, or CONNECT_ERROR. One that
    /// recovers the client's `pid` (a resume after the authentication) is answered with
    /// the resumed socket id, or, when only the resume fails, with a fresh one.
    Connect,
    /// A join of a room (or meeting) the socket is already in, as a client re-emits it
    /// after a recovered reconnect: answered as a join, with no second membership.
    Rejoin,
    JoinRoom,
    JoinMeeting(meetings::Me),
    /// A signal to `target` in `room` (a refusal names them).
    Signal {
        room: RoomId,
        target: String,
    },
    /// The participant's new state, kept once the node confirms it.
    UpdateMeeting(meetings::Me),
    /// A chat message, echoed to its sender once sent.
    Chat {
        message: String,
    },
}

fn bad(message: impl Into<String>) -> DecodeError {
    DecodeError::bad(message, None)
}

/// What a CONNECT's payload carries: the handshake's `auth` (`{"token": "..."}`), and
/// the `pid` of the session a reconnecting client wants to recover.
#[derive(Default)]
struct Handshake {
    token: Option<String>,
    pid: Option<String>,
}

fn handshake(payload: &serde_json::value::RawValue) -> Result<Handshake, DecodeError> {
    #[derive(serde::Deserialize)]
    struct Auth {
        token: Option<String>,
        pid: Option<serde_json::Value>,
    }
    let auth: Auth = serde_json::from_str(payload.get()).map_err(|_| bad("auth must be an object"))?;
    let token = match auth.token.filter(|t| !t.is_empty()) {
        Some(token) if token.len() > protocol::native::AUTH_TOKEN_MAX_BYTES => {
            return Err(bad("the auth token is too long"))
        }
        token => token,
    };
    // As in Socket.IO, a pid that cannot be a session's only means no recovery.
    let pid = auth
        .pid
        .and_then(|pid| pid.as_str().map(str::to_owned))
        .filter(|pid| !pid.is_empty() && pid.len() <= protocol::native::RESUME_TOKEN_MAX_BYTES);
    Ok(Handshake { token, pid })
}

impl SocketIo {
    /// A session reached over WebSocket from the start.
    pub fn over_websocket() -> Self {
        Self::default()
    }

    /// A long-polling session known by `sid`, which may upgrade to WebSocket.
    pub fn over_polling(sid: &str) -> Self {
        Self { polling_sid: Some(sid.into()), ..Self::default() }
    }

    fn peer(&self) -> &PeerId {
        self.peer.as_ref().expect("welcome runs before any frame is decoded")
    }

    fn is_connected(&self, ns: Ns) -> bool {
        self.connected & ns.bit() != 0
    }

    fn namespace_of(&self, room: &RoomId) -> Option<Ns> {
        self.rooms.iter().find(|(r, _)| r == room).map(|(_, ns)| *ns)
    }

    /// The one room of `ns` this socket is in, for events that do not name it.
    fn only_room(&self, ns: Ns) -> Option<&RoomId> {
        let mut rooms = self.rooms.iter().filter(|(_, n)| *n == ns);
        match (rooms.next(), rooms.next()) {
            (Some((room, _)), None) => Some(room),
            _ => None,
        }
    }

    /// The other side of this socket's current S2 call.
    fn call_partner(&self) -> Option<PeerId> {
        self.call_partner.lock().unwrap_or_else(|e| e.into_inner()).as_deref().cloned()
    }

    /// Notes a call event sent to or received from `other`: an offer or an answer makes
    /// it the call partner, an end from or to it ends the call.
    /// Any other signal costs a comparison, no lock.
    fn note_call(&self, kind: &str, other: &PeerId) {
        let calls = || self.call_partner.lock().unwrap_or_else(|e| e.into_inner());
        match kind {
            rooms::CALL_OFFER | rooms::CALL_ANSWER => *calls() = Some(Box::new(other.clone())),
            rooms::CALL_END => {
                let mut partner = calls();
                if partner.as_deref() == Some(other) {
                    *partner = None;
                }
            }
            _ => {}
        }
    }

    fn meeting(&self, room: &RoomId) -> Option<&meetings::Me> {
        self.meetings.iter().find(|m| &m.room == room)
    }

    fn decode_message(
        &mut self,
        text: &str,
        limits: &Limits,
    ) -> Result<Decoded<Box<InFlight>>, Refused<Box<InFlight>>> {
        if text.len() > limits.frame_bytes {
            return Err(DecodeError::too_large(limits.frame_bytes).into());
        }
        let packet = SioPacket::decode(text).map_err(|e| bad(e.0))?;
        let Some(ns) = Ns::parse(packet.namespace) else {
            if packet.ty == SioType::Connect {
                let refusal = encode_sio(
                    SioType::ConnectError,
                    packet.namespace,
                    None,
                    Some(r#"{"message":"Invalid namespace"}"#),
                );
                return Ok(Decoded::Answer(Utf8Bytes::from(format!("4{refusal}"))));
            }
            return Err(bad(format!("unknown namespace {}", fields::shown(packet.namespace, 64))).into());
        };
        match packet.ty {
            SioType::Connect => {
                // The session decides: a token in the handshake's `auth` is verified,
                // and without one the connection proceeds only if the node allows it.
                let connect = || InFlight::new(ns, None, Action::Connect);
                let Handshake { token, pid } = match packet.payload {
                    None => Handshake::default(),
                    Some(payload) => handshake(payload).map_err(|error| Refused { error, context: Some(connect()) })?,
                };
                // The client's pid asks to recover a dropped session, unless it is
                // this connection's own: then a second namespace joins the session
                // recovered here.
                let command = match pid.filter(|pid| self.pid.as_deref().is_some_and(|own| own != pid)) {
                    Some(pid) => {
                        let resume = Command::Resume { token: pid, keep_token: true };
                        Command::AuthenticateThen { token, then: Box::new(resume) }
                    }
                    None => Command::Authenticate { token },
                };
                Ok(Decoded::Request(Request::new(None, command), connect()))
            }
            SioType::Disconnect => {
                self.connected &= !ns.bit();
                let leaves: Vec<(Request, Box<InFlight>)> = self
                    .rooms
                    .iter()
                    .filter(|(_, n)| *n == ns)
                    .map(|(room, _)| {
                        (
                            Request::new(None, Command::Leave { room: room.clone() }),
                            InFlight::new(ns, None, Action::Plain),
                        )
                    })
                    .collect();
                Ok(if leaves.is_empty() { Decoded::Nothing } else { Decoded::Requests(leaves) })
            }
            SioType::Event => {
                let mut flight = InFlight::new(ns, packet.ack, Action::Plain);
                match self.decode_event(ns, &packet, &mut flight.action, limits) {
                    Ok(command) => Ok(Decoded::Request(Request::new(None, command), flight)),
                    Err(error) => Err(Refused { error, context: Some(flight) }),
                }
            }
            // The node never asks for acknowledgements.
            SioType::Ack => Ok(Decoded::Nothing),
            SioType::ConnectError => Err(bad("a client may not send CONNECT_ERROR").into()),
        }
    }

    /// An EVENT packet's command; `action` is set to how its outcome is shown as soon as
    /// that is known, so a refusal after that point is shown that way too.
    fn decode_event(
        &mut self,
        ns: Ns,
        packet: &SioPacket<'_>,
        action: &mut Action,
        limits: &Limits,
    ) -> Result<Command, DecodeError> {
        if !self.is_connected(ns) {
            return Err(bad(format!("namespace {} is not connected", ns.path())));
        }
        let (name, args) = packet.event().map_err(|e| bad(e.0))?;
        let arg = args.first().copied();
        match ns {
            Ns::Rooms => rooms::decode(self, action, &name, arg, limits),
            Ns::Meetings => meetings::decode(self, action, &name, arg, limits),
        }
    }

    /// The answer to a namespace CONNECT: the socket id, and the pid that recovers the
    /// session when resume is on.
    fn connect_ack(&self, ns: Ns) -> Utf8Bytes {
        let sid = quoted(self.peer().as_str());
        let reply = match &self.pid {
            Some(pid) => format!(r#"{{"sid":{sid},"pid":{}}}"#, quoted(pid)),
            None => format!(r#"{{"sid":{sid}}}"#),
        };
        Utf8Bytes::from(format!("4{}", encode_sio(SioType::Connect, ns.path(), None, Some(&reply))))
    }

    /// Takes back a recovered session's state: its socket id and pid, and each room in
    /// the namespace that joined it (a room whose record holds an S3 participant's
    /// state was joined from `/meetings`).
    fn recovered(&mut self, peer: PeerId, rooms: Vec<crate::core::ResumedRoom>, pid: String) {
        self.peer = Some(peer);
        self.pid = Some(pid.into());
        for resumed in rooms {
            match meetings::Me::from_record(&resumed.room, &resumed.me) {
                Some(me) => {
                    self.rooms.push((resumed.room, Ns::Meetings));
                    self.meetings.push(me);
                }
                None => self.rooms.push((resumed.room, Ns::Rooms)),
            }
        }
    }

    /// The refusal of an event, in the namespace's own way, and the ack's error.
    fn render_failure(&self, flight: Option<&InFlight>, code: ErrorCode, message: &str, out: &mut Vec<Utf8Bytes>) {
        if let Some(InFlight { ns, action: Action::Connect, .. }) = flight {
            // What a Socket.IO server middleware's `next(new Error(...))` sends.
            let error = format!(r#"{{"message":{}}}"#, quoted(message));
            out.push(Utf8Bytes::from(format!("4{}", encode_sio(SioType::ConnectError, ns.path(), None, Some(&error)))));
            return;
        }
        let ns = flight.map(|f| f.ns).unwrap_or(if self.is_connected(Ns::Meetings) && !self.is_connected(Ns::Rooms) {
            Ns::Meetings
        } else {
            Ns::Rooms
        });
        let action = flight.map(|f| &f.action);
        out.push(match ns {
            Ns::Rooms => rooms::error_frame(code, message, action),
            Ns::Meetings => meetings::error_frame(code, message, action),
        });
        if let Some(ack) = flight.and_then(|f| f.ack) {
            let arg = format!(r#"{{"error":{},"code":{}}}"#, quoted(message), quoted(code.as_str()));
            out.push(ack_frame(ns.path(), ack, &arg));
        }
    }
}

impl Dialect for SocketIo {
    const NAME: &'static str = "socketio";
    const RESUMABLE: bool = true;

    type Context = Box<InFlight>;

    /// The Engine.IO handshake.
    fn welcome(&mut self, greeting: &Greeting<'_>) -> Option<Utf8Bytes> {
        self.peer = Some(greeting.peer.clone());
        self.pid = greeting.resume.map(Into::into);
        let (sid, upgrades) = match &self.polling_sid {
            Some(sid) => (&**sid, r#"["websocket"]"#),
            None => (greeting.peer.as_str(), "[]"),
        };
        let open = format!(
            r#"{{"sid":{},"upgrades":{upgrades},"pingInterval":{},"pingTimeout":{},"maxPayload":{MAX_PAYLOAD}}}"#,
            quoted(sid),
            PING_INTERVAL.as_millis(),
            PING_TIMEOUT.as_millis(),
        );
        Some(Utf8Bytes::from(EioPacket::Open(&open).encode()))
    }

    fn decode(&mut self, text: &str, limits: &Limits) -> Result<Decoded<Box<InFlight>>, Refused<Box<InFlight>>> {
        if text.len() > MAX_PAYLOAD {
            return Err(DecodeError::too_large(MAX_PAYLOAD).into());
        }
        match EioPacket::decode(text).map_err(|e| bad(e.0))? {
            EioPacket::Message(message) => self.decode_message(message, limits),
            EioPacket::Ping(data) => Ok(Decoded::Answer(Utf8Bytes::from(EioPacket::Pong(data).encode()))),
            EioPacket::Pong(_) | EioPacket::Noop | EioPacket::Upgrade => Ok(Decoded::Nothing),
            EioPacket::Close => Ok(Decoded::Goodbye),
            EioPacket::Open(_) => Err(bad("a client may not send an Engine.IO open packet").into()),
        }
    }

    fn render_replies(&mut self, flight: Option<Box<InFlight>>, replies: Vec<Reply>, out: &mut Vec<Utf8Bytes>) {
        let mut failure = None;
        // Set once a connect that recovers a session is authenticated: the namespace.
        let mut recovering = None;
        let mut replies = replies.into_iter().peekable();
        while let Some(reply) = replies.next() {
            match reply {
                Reply::Joined { room, others, name, .. } => {
                    let Some(flight) = flight.as_deref() else { continue };
                    self.rooms.push((room.clone(), flight.ns));
                    match &flight.action {
                        Action::JoinMeeting(me) => {
                            let me = me.recorded_as(name);
                            meetings::render_joined(&me, self.peer(), &others, true, out);
                            self.meetings.push(me);
                        }
                        _ => out.push(rooms::existing_users(&others)),
                    }
                }
                Reply::Events(events) => out.extend(events.iter().filter_map(|e| self.render_event(e))),
                Reply::Left { room, .. } => {
                    self.rooms.retain(|(r, _)| r != &room);
                    self.meetings.retain(|m| m.room != room);
                }
                Reply::Updated { room, .. } => {
                    if let Some(Action::UpdateMeeting(me)) = flight.as_deref().map(|f| &f.action) {
                        if let Some(kept) = self.meetings.iter_mut().find(|m| m.room == room) {
                            *kept = me.clone();
                        }
                    }
                }
                Reply::Error { code, message, .. } => {
                    if let Some(ns) = recovering {
                        // Authenticated, but nothing to recover (unknown, used or
                        // expired): a fresh session, as Socket.IO answers a pid it does
                        // not know.
                        tracing::debug!(reason = message, "socket.io session not recovered; connected afresh");
                        return out.push(self.connect_ack(ns));
                    }
                    failure = Some((code, message));
                }
                Reply::Authenticated { .. } => {
                    let Some(connecting) = flight.as_deref() else { continue };
                    self.connected |= connecting.ns.bit();
                    // A connect that recovers is answered once its resume is done.
                    if replies.peek().is_some() {
                        recovering = Some(connecting.ns);
                    } else {
                        out.push(self.connect_ack(connecting.ns));
                    }
                }
                Reply::Resumed { peer, rooms, token, .. } => {
                    self.recovered(peer, rooms, token);
                    if let Some(flight) = flight.as_deref() {
                        out.push(self.connect_ack(flight.ns));
                    }
                }
                Reply::Members { room, members, .. } => {
                    let Some(InFlight { ns, action: Action::Rejoin, .. }) = flight.as_deref() else { continue };
                    match ns {
                        Ns::Rooms => out.push(rooms::existing_users(&members)),
                        Ns::Meetings => {
                            if let Some(me) = self.meeting(&room) {
                                meetings::render_joined(me, self.peer(), &members, false, out);
                            }
                        }
                    }
                }
                Reply::Pong { .. } | Reply::Closed { .. } | Reply::Done { .. } => {}
            }
        }
        if let Some((code, message)) = failure {
            return self.render_failure(flight.as_deref(), code, &message, out);
        }
        let Some(flight) = flight else { return };
        if let Action::Chat { message } = &flight.action {
            out.push(event_frame(flight.ns.path(), "chat-message", message));
        }
        if let Some(ack) = flight.ack {
            let arg = match &flight.action {
                Action::JoinMeeting(_) | Action::JoinRoom | Action::Rejoin => {
                    format!(r#"{{"ok":true,"id":{}}}"#, quoted(self.peer().as_str()))
                }
                Action::Chat { message } => format!(r#"{{"ok":true,"message":{message}}}"#),
                _ => r#"{"ok":true}"#.to_owned(),
            };
            out.push(ack_frame(flight.ns.path(), ack, &arg));
        }
    }

    fn render_event(&self, event: &Event) -> Option<Utf8Bytes> {
        if let Event::Signal { from, kind, .. } = event {
            self.note_call(kind.as_str(), from);
        }
        match self.namespace_of(event.room())? {
            Ns::Rooms => event.frame(Rendering::SocketIoRooms.slot(), rooms::render_event),
            Ns::Meetings => event.frame(Rendering::SocketIoMeetings.slot(), meetings::render_event),
        }
    }

    fn render_room_closed(&self, event: &Event) -> Vec<Utf8Bytes> {
        match self.namespace_of(event.room()) {
            Some(Ns::Rooms) => rooms::render_room_closed(event, self.peer()),
            _ => Vec::new(),
        }
    }

    /// A Socket.IO client reconnects by itself when its transport closes (the node's
    /// close follows); a Socket.IO `disconnect` would stop it from reconnecting.
    fn reconnect(&self, _after: Duration) -> Option<Utf8Bytes> {
        None
    }

    fn keepalive(&self, _heartbeat: Duration) -> Keepalive {
        Keepalive {
            ping: Some((PING_INTERVAL, Ping::Frame(Utf8Bytes::from_static("2")))),
            idle_after: PING_INTERVAL + PING_TIMEOUT,
        }
    }
}

#[cfg(test)]
mod tests;
