//! The two seams every client connection goes through, whatever protocol it speaks:
//! a [`Transport`] moves text frames (a WebSocket, or channels in tests), and a
//! [`Dialect`] translates between those frames and the dialect-free session: it decodes
//! a frame into a [`Request`] and renders replies and core events as frames.
//! [`crate::connection`] drives one connection over any pair of them, so origin checks,
//! size limits, rate limits, draining, ordering and closing behave the same in every
//! dialect.
//!
//! One request, one outcome: `decode` hands each request over with the dialect's own
//! context for it (what to acknowledge, what the client will be shown), and
//! `render_replies` gets that context back with the request's replies, so no dialect
//! keeps a request in flight between the two.
//!
//! - [`native`]: protocol v1 at `/ws`.
//! - [`plain`]: the plain-JSON dialect of the S4 server (`PLAIN_PATH`, default `/`).
//! - [`socketio`]: Socket.IO v4 at `/socket.io/` (the S1 events on `/`, the S3
//!   meetings gateway on `/meetings`).
//! - [`ws`]: the WebSocket transport (axum).
//! - [`polling`]: Engine.IO's HTTP long-polling transport (Socket.IO only).

pub mod native;
pub mod plain;
pub mod polling;
pub mod socketio;
pub mod ws;

use std::future::Future;
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use protocol::{DecodeError, Limits, NodeId, PeerId, Request};

use crate::core::Event;
pub use crate::core::Hold;
use crate::session::Reply;

/// What a transport received from the client.
#[derive(Debug)]
pub enum Incoming {
    Text(Utf8Bytes),
    /// A binary frame: no dialect here accepts one; it is refused, the connection stays.
    Binary,
    /// A keep-alive of the transport itself (WebSocket ping or pong): it only proves
    /// the client is there.
    KeepAlive,
    /// The client said goodbye (a WebSocket close with 1000, 1001, no code, or any
    /// code outside 4000-4999): its member leaves its rooms at once.
    Goodbye,
    /// The client closed in order to come back (a WebSocket close code in 4000-4999):
    /// its member is held for its resume.
    Closed(Hold),
    /// The connection failed or ended without a goodbye (a reset, an end of stream):
    /// its member is held for its resume.
    Failed,
}

impl Incoming {
    /// Whether nothing more comes from the client after this.
    pub fn ends_connection(&self) -> bool {
        matches!(self, Incoming::Goodbye | Incoming::Closed(_) | Incoming::Failed)
    }
}

/// The WebSocket close codes a client sends to be held rather than leave.
pub mod close_code {
    use crate::core::Hold;

    /// The client moves to another connection (after `reconnect`, or a network switch).
    pub const MOVING: u16 = 4000;
    /// The client's page is unloading; it resumes at once if it is a reload.
    pub const RELOADING: u16 = 4001;

    /// What a client's WebSocket close code asks for: held, or a goodbye.
    pub fn hold(code: Option<u16>) -> Option<Hold> {
        match code {
            Some(RELOADING) => Some(Hold::Reload),
            Some(4000..=4999) => Some(Hold::Grace),
            _ => None,
        }
    }
}

/// The socket is gone: nothing more can be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gone;

/// Moves text frames between the node and one client.
pub trait Transport: Send {
    /// The next thing the client sent. Must be cancel-safe: the connection races it
    /// against its outbound queue and the node's drain.
    fn recv(&mut self) -> impl Future<Output = Incoming> + Send;

    /// Queues one frame without flushing.
    fn feed(&mut self, frame: Utf8Bytes) -> impl Future<Output = Result<(), Gone>> + Send;

    fn flush(&mut self) -> impl Future<Output = Result<(), Gone>> + Send;

    /// Ends the connection from the node's side with a code and reason the client can
    /// read, waiting a bounded time for the client to take it.
    fn close(&mut self, code: u16, reason: &'static str) -> impl Future<Output = ()> + Send;

    /// Asks the client for a sign of life at the transport level (a WebSocket ping,
    /// which browsers answer by themselves).
    fn ping(&mut self) -> impl Future<Output = Result<(), Gone>> + Send;
}

/// What a dialect needs to greet a new connection.
pub struct Greeting<'a> {
    pub peer: &'a PeerId,
    pub node: &'a NodeId,
    pub heartbeat: Duration,
    /// The token that resumes the connection, when it may resume.
    pub resume: Option<&'a str>,
}

/// What one client frame asks of the connection; `C` is the dialect's context for a
/// request ([`Dialect::Context`]).
#[derive(Debug)]
pub enum Decoded<C> {
    /// A request for the session.
    Request(Request, C),
    /// Several independent requests, run in order, stopping at the first refused one
    /// (a Socket.IO namespace disconnect leaves each of the namespace's rooms). A flow
    /// whose steps depend on each other is one request
    /// ([`protocol::Command::AuthenticateThen`]).
    Requests(Vec<(Request, C)>),
    /// The dialect answers by itself, without the session (a Socket.IO namespace
    /// connect).
    Answer(Utf8Bytes),
    /// Nothing to do but note the client is there (a keep-alive in the dialect's own
    /// framing).
    Nothing,
    /// The client says goodbye in the dialect's own framing (an Engine.IO `close`,
    /// which is also how a polling client ends its session): its member leaves at once.
    Goodbye,
}

/// A frame the dialect refused, with its context when it knew which request the frame
/// was (a Socket.IO event with an ack is refused through its ack).
#[derive(Debug)]
pub struct Refused<C> {
    pub error: DecodeError,
    pub context: Option<C>,
}

impl<C> From<DecodeError> for Refused<C> {
    fn from(error: DecodeError) -> Self {
        Refused { error, context: None }
    }
}

/// How a connection proves its client is still there.
#[derive(Debug, Clone)]
pub struct Keepalive {
    /// What the node sends, how often, whether or not the client is busy.
    pub ping: Option<(Duration, Ping)>,
    /// A client that sends nothing at all (pongs included) for this long is gone.
    pub idle_after: Duration,
}

#[derive(Debug, Clone)]
pub enum Ping {
    /// A transport-level ping (WebSocket), which the client answers by itself.
    Transport,
    /// A frame of the dialect (Engine.IO `2`), which the client answers with a frame.
    Frame(Utf8Bytes),
}

/// The ways a dialect renders room-wide events, each the same for every recipient: a
/// room-wide event is rendered once per way and shared ([`crate::core::Frames`]).
#[derive(Debug, Clone, Copy)]
pub enum Rendering {
    Native,
    Plain,
    SocketIoRooms,
    SocketIoMeetings,
}

impl Rendering {
    /// Its slot in an event's frames.
    pub fn slot(self) -> usize {
        self as usize
    }
}

const _: () = assert!(Rendering::SocketIoMeetings as usize + 1 == crate::core::RENDERINGS);

/// Translates between one protocol's frames and the session. One value per connection,
/// so a dialect may remember what its client told it (the plain dialect's registered
/// id, for instance).
pub trait Dialect: Send + Sync + 'static {
    /// The dialect's name in metrics (`native`, `plain`, `socketio`).
    const NAME: &'static str;

    /// Whether its clients can resume a dropped connection (`resume`); the others'
    /// members leave as soon as their connection ends.
    const RESUMABLE: bool = false;

    /// What the dialect needs to know about one request to render its outcome: handed
    /// out with the request by `decode`, handed back with its replies.
    type Context: Send + 'static;

    /// The frame sent when the connection opens, if the dialect has one. Runs once,
    /// before any frame is decoded.
    fn welcome(&mut self, greeting: &Greeting<'_>) -> Option<Utf8Bytes>;

    /// Decodes and validates one text frame.
    fn decode(&mut self, text: &str, limits: &Limits) -> Result<Decoded<Self::Context>, Refused<Self::Context>>;

    /// The frames that answer one request: called once per request (or refused frame)
    /// with its context (None for a frame refused before the dialect knew what it was)
    /// and all its replies, also when there are none (a signal), so a dialect that
    /// acknowledges every request can.
    fn render_replies(&mut self, context: Option<Self::Context>, replies: Vec<Reply>, out: &mut Vec<Utf8Bytes>);

    /// The frame that tells the client of a core event, if the dialect shows it. A
    /// room-wide event's frame is rendered through `Event::frame` with the dialect's
    /// [`Rendering`], so that the members of a room share it.
    fn render_event(&self, event: &Event) -> Option<Utf8Bytes>;

    /// Frames that follow `render_event`'s for a room closing, for dialects that show it
    /// as several messages (S1: one `user-left` per member, then an `error`).
    fn render_room_closed(&self, _event: &Event) -> Vec<Utf8Bytes> {
        Vec::new()
    }

    /// The frame that asks the client to reconnect elsewhere (the node is draining).
    fn reconnect(&self, after: Duration) -> Option<Utf8Bytes>;

    /// How the connection tells a present client from a gone one. By default the
    /// client keeps itself alive (native clients ping every heartbeat) and is gone
    /// after two heartbeats of silence.
    fn keepalive(&self, heartbeat: Duration) -> Keepalive {
        Keepalive { ping: None, idle_after: heartbeat * 2 }
    }
}
