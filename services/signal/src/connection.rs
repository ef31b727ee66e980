//! Drives one client connection, in any dialect over any transport, from welcome to
//! close: the one place that decides what a connection does when.
//!
//! The loop prefers, in order: the node draining (send `reconnect`, close), the
//! outbound queue overflowing (close with a reason), queued events (written in
//! batches, one flush per batch), then the client's next frame. The first two are
//! alarms on the connection's own queue (`core::outbox`), not tokens shared with other
//! connections. Queued events keep
//! being written while a request is in flight. Every close the node initiates carries
//! a documented code and reason, and goes out after the peer has left its rooms.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use auth::Identity;
use axum::extract::ws::Utf8Bytes;
use protocol::{DecodeError, ErrorCode, Limits, PeerId};
use tokio::time::Instant;
use tracing::{debug, Instrument};

use crate::core::{Core, Event, SessionHandle, SessionInbox};
use crate::session::{Session, SessionLimits, Shown, Verdict};
use crate::transport::{Decoded, Dialect, Gone, Greeting, Hold, Incoming, Keepalive, Ping, Refused, Transport};

/// Most queued events written before one flush.
const WRITE_BATCH: usize = 64;

/// Longest wait to hand the `reconnect` notice to a client that is not reading.
const RECONNECT_SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a draining connection that may resume is still served after `reconnect`:
/// its client closes it once it has sent what it had, then resumes elsewhere.
const RECONNECT_LINGER: Duration = Duration::from_secs(5);

/// WebSocket close codes used by the node (other transports map them to their own).
pub mod close {
    pub const POLICY: u16 = 1008;
    pub const GOING_AWAY: u16 = 1001;
    pub const TRY_AGAIN: u16 = 1013;
}

/// Per-connection settings, the same for every dialect.
#[derive(Debug, Clone)]
pub struct ConnectionSettings {
    pub limits: Limits,
    pub session: SessionLimits,
    pub outbound_queue: usize,
    pub client_heartbeat: Duration,
    pub reconnect_after: Duration,
    /// DRAIN_SPREAD_MS: the window over which draining connections say `reconnect`.
    pub drain_spread: Duration,
}

/// Why a connection ended, and the close the node sends for it.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// The client said goodbye (docs/protocol.md, "Closing"): it leaves at once.
    Goodbye,
    /// The client closed in order to come back (close code 4000-4999).
    ClientClosed(Hold),
    /// The connection failed or ended without a goodbye.
    SocketGone,
    Draining,
    TooSlow,
    Misbehaving(&'static str),
    Idle,
    /// Its client resumed it on another connection.
    TakenOver,
}

impl End {
    /// The `reason` label of `signal_disconnects_total`.
    fn label(&self) -> &'static str {
        match self {
            End::Goodbye | End::ClientClosed(_) => "client",
            End::SocketGone => "socket",
            End::Draining => "draining",
            End::TooSlow => "too-slow",
            End::Misbehaving(_) => "misbehaving",
            End::Idle => "idle",
            End::TakenOver => "taken-over",
        }
    }

    /// How long its member is held for its client to resume it, if at all: a
    /// connection lost without a goodbye, or closed by the node for a reason that is
    /// not the client's fault. Not after a goodbye; not when the node cut the client
    /// off for its behaviour; not after its queue overflowed (what overflowed is gone,
    /// so a resume could not deliver everything).
    fn hold(&self) -> Option<Hold> {
        match self {
            End::ClientClosed(hold) => Some(*hold),
            End::SocketGone | End::Draining | End::Idle | End::TakenOver => Some(Hold::Grace),
            End::Goodbye | End::TooSlow | End::Misbehaving(_) => None,
        }
    }

    /// The close the node initiates; None when the client closed or the socket failed.
    fn close(&self) -> Option<(u16, &'static str)> {
        match self {
            End::Goodbye | End::ClientClosed(_) | End::SocketGone => None,
            End::TakenOver => Some((close::POLICY, "resumed on another connection")),
            End::Draining => Some((close::GOING_AWAY, "draining")),
            End::TooSlow => Some((close::TRY_AGAIN, "too-slow: outbound queue full")),
            End::Misbehaving(reason) => Some((close::POLICY, reason)),
            End::Idle => Some((close::POLICY, "idle: no frame within twice heartbeat_ms")),
        }
    }
}

impl From<Gone> for End {
    fn from(_: Gone) -> Self {
        End::SocketGone
    }
}

/// One connection's parts, borrowed by every step of the loop.
struct Connection<T, D> {
    io: T,
    dialect: D,
    session: Session,
    inbox: SessionInbox,
    settings: Arc<ConnectionSettings>,
    /// The connection's place under its address's cap, given back when it ends.
    _held: Option<edge::Held>,
}

/// Serves one connection until the client leaves, the node drains or the transport
/// fails; then leaves the peer's rooms (the others hear `peer-left`) and, if the node
/// ended it, closes with a documented code and reason.
///
/// The set-up runs here, before the returned future exists, and everything is taken by
/// value: the future is then the connection's task as it is, holding each part once. A
/// future that captured the socket and then moved it into another value would hold it
/// twice for the whole connection (8.66 instead of 7.57 KiB per idle connection,
/// measured).
pub fn serve<T: Transport, D: Dialect>(
    io: T,
    mut dialect: D,
    core: Arc<Core>,
    settings: Arc<ConnectionSettings>,
    identity: Option<Identity>,
    held: Option<edge::Held>,
) -> impl Future<Output = ()> + Send {
    let peer = PeerId::new_on(core.node());
    let span = if telemetry::traces::sample() {
        let span = tracing::info_span!(
            target: telemetry::traces::TARGET,
            "connection",
            peer = %peer,
            node = %core.node(),
            dialect = D::NAME,
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
        );
        telemetry::traces::record_ids(&span);
        span
    } else {
        tracing::info_span!("connection", peer = %peer, node = %core.node(), dialect = D::NAME)
    };
    let resume_nonce = (D::RESUMABLE && core.resumes().enabled()).then(rand::random::<u32>);
    let token = resume_nonce.map(|nonce| core.resumes().token(&peer, nonce));
    let welcome = dialect.welcome(&Greeting {
        peer: &peer,
        node: core.node(),
        heartbeat: settings.client_heartbeat,
        resume: token.as_deref(),
    });
    drop(token);
    let (handle, inbox) = SessionHandle::new(peer, settings.outbound_queue);
    core.sessions().insert(handle.clone());
    core.metrics().connection_opened(D::NAME);
    let session = Session::new(core, handle, &settings.session, identity, resume_nonce);
    Connection { io, dialect, session, inbox, settings, _held: held }.serve(welcome).instrument(span)
}

impl<T: Transport, D: Dialect> Connection<T, D> {
    async fn serve(mut self, welcome: Option<Utf8Bytes>) {
        let welcomed = match welcome {
            Some(welcome) => self.send(welcome).await,
            None => Ok(()),
        };
        let end = match welcomed {
            Ok(()) => self.run().await,
            Err(Gone) => End::SocketGone,
        };
        let end = match end {
            End::TooSlow if self.session.core().resumes().taken_over(self.session.peer()) => End::TakenOver,
            end => end,
        };
        debug!(?end, "connection ended");
        self.session.core().metrics().connection_closed(D::NAME);
        self.session.core().metrics().disconnected(end.label());
        // Fields are taken in place rather than destructured: new locals would get
        // their own room in this future, held by every idle connection.
        if let Some(hold) = end.hold().filter(|_| self.session.may_resume()) {
            let inbox = std::mem::replace(&mut self.inbox, SessionInbox::ended());
            self.session.go_away(inbox, hold);
        } else {
            Box::pin(self.session.close()).await;
        }
        if let Some((code, reason)) = end.close() {
            Box::pin(self.io.close(code, reason)).await;
        }
    }

    async fn run(&mut self) -> End {
        // One timer for both jobs: it fires at the next ping or at the moment the
        // client would be idle, whichever is first. A frame from the client only moves
        // `last_seen` (cheaper than re-arming the timer on every frame). The keep-alive
        // policy is asked of the dialect when needed rather than kept: every byte held
        // across this loop's awaits is held by every idle connection.
        let mut last_seen = Instant::now();
        let mut next_ping = self.keepalive().ping.map(|(every, _)| last_seen + every);
        // Set when the node drains: this connection's moment, within DRAIN_SPREAD_MS, to
        // tell its client to reconnect (it is served as usual until then).
        let mut reconnect_at: Option<Instant> = None;
        // Set once a connection that may resume was told to reconnect: it is closed at
        // this moment unless its client closed it first.
        let mut close_at: Option<Instant> = None;
        let timer = tokio::time::sleep_until(self.wake_at(last_seen, next_ping));
        tokio::pin!(timer);
        loop {
            tokio::select! {
                biased;
                _ = self.inbox.drain_asked(), if reconnect_at.is_none() && close_at.is_none() => {
                    let spread = self.settings.drain_spread;
                    if spread.is_zero() && !self.session.may_resume() {
                        let notice = self.dialect.reconnect(self.settings.reconnect_after);
                        return Box::pin(self.say_reconnect(notice)).await;
                    }
                    let at = Instant::now() + spread.mul_f64(rand::random::<f64>());
                    reconnect_at = Some(at);
                    timer.as_mut().reset(self.wake_at(last_seen, next_ping).min(at));
                }
                _ = self.inbox.too_slow() => return End::TooSlow,
                event = self.inbox.recv() => {
                    let depth = self.inbox.len() + 1;
                    self.session.core().metrics().outbound_queue.observe(depth as f64);
                    match Box::pin(self.write_events_unless_too_slow(event)).await {
                        Ok(shown) => self.after_shown(shown).await,
                        Err(end) => return end,
                    }
                }
                _ = &mut timer => {
                    let now = Instant::now();
                    if close_at.is_some_and(|at| now >= at) {
                        return End::Draining;
                    }
                    if reconnect_at.is_some_and(|at| now >= at) {
                        let notice = self.dialect.reconnect(self.settings.reconnect_after);
                        // A dialect with no notice (Socket.IO) is told by the close
                        // itself: its client reconnects when the transport closes.
                        if !self.session.may_resume() || notice.is_none() {
                            return Box::pin(self.say_reconnect(notice)).await;
                        }
                        // Served on until its client closes: what it sends meanwhile is
                        // handled, and nothing is lost between here and its resume.
                        if Box::pin(self.tell_reconnect(notice)).await.is_err() {
                            return End::SocketGone;
                        }
                        reconnect_at = None;
                        close_at = Some(now + RECONNECT_LINGER);
                    }
                    let keepalive = self.keepalive();
                    if now >= last_seen + keepalive.idle_after {
                        return End::Idle;
                    }
                    if let (Some(at), Some((every, ping))) = (next_ping, keepalive.ping) {
                        if now >= at {
                            if Box::pin(self.ping(ping)).await.is_err() {
                                return End::SocketGone;
                            }
                            next_ping = Some(now + every);
                        }
                    }
                    let wake = self.wake_at(last_seen, next_ping);
                    let drain = reconnect_at.or(close_at);
                    timer.as_mut().reset(drain.map_or(wake, |at| wake.min(at)));
                }
                incoming = self.io.recv() => {
                    last_seen = Instant::now();
                    if let Err(end) = Box::pin(self.on_incoming(incoming)).await {
                        return end;
                    }
                }
            }
        }
    }

    fn keepalive(&self) -> Keepalive {
        self.dialect.keepalive(self.settings.client_heartbeat)
    }

    /// When the keep-alive timer must next fire.
    fn wake_at(&self, last_seen: Instant, next_ping: Option<Instant>) -> Instant {
        let idle_at = last_seen + self.keepalive().idle_after;
        next_ping.map_or(idle_at, |ping| ping.min(idle_at))
    }

    async fn ping(&mut self, ping: Ping) -> Result<(), Gone> {
        match ping {
            Ping::Transport => self.io.ping().await,
            Ping::Frame(frame) => self.send(frame).await,
        }
    }

    async fn on_incoming(&mut self, incoming: Incoming) -> Result<(), End> {
        match incoming {
            Incoming::Goodbye => Err(End::Goodbye),
            Incoming::Closed(hold) => Err(End::ClientClosed(hold)),
            Incoming::Failed => Err(End::SocketGone),
            Incoming::KeepAlive => Ok(()),
            Incoming::Binary => {
                let message = "binary frames are not supported; send JSON text";
                self.on_refusal(DecodeError { code: ErrorCode::BadRequest, message: message.into(), id: None }, None)
                    .await
            }
            Incoming::Text(text) => {
                let started = Instant::now();
                let handled = self.on_text(text).await;
                self.session.core().metrics().frame_handling.observe(started.elapsed().as_secs_f64());
                handled
            }
        }
    }

    async fn on_text(&mut self, text: Utf8Bytes) -> Result<(), End> {
        match self.dialect.decode(text.as_str(), &self.settings.limits) {
            Ok(Decoded::Request(req, context)) => self.on_request(req, context).await.map(drop),
            Ok(Decoded::Requests(reqs)) => {
                // In order, stopping at the first refused one (a refused token
                // must not let the registration that follows it run).
                for (req, context) in reqs {
                    if !self.on_request(req, context).await? {
                        break;
                    }
                }
                Ok(())
            }
            Ok(Decoded::Answer(frame)) => Ok(self.send(frame).await?),
            Ok(Decoded::Nothing) => Ok(()),
            Ok(Decoded::Goodbye) => Err(End::Goodbye),
            Err(Refused { error, context }) => self.on_refusal(error, context).await,
        }
    }

    /// Handles one request and writes its answer; whether it was accepted (no error).
    async fn on_request(&mut self, req: protocol::Request, context: D::Context) -> Result<bool, End> {
        let (replies, verdict, mut shown) = self.handle_while_writing_events(req).await?;
        let accepted = !replies.iter().any(|r| matches!(r, crate::session::Reply::Error { .. }));
        shown.note_replies(&replies);
        // Local, not kept between requests: an idle connection must hold no buffer (a
        // signal has no reply, and an empty Vec does not allocate).
        let mut out = Vec::new();
        self.dialect.render_replies(Some(context), replies, &mut out);
        self.write_all(out).await?;
        self.after_shown(shown).await;
        stay_unless_closed(verdict).map(|()| accepted)
    }

    /// Hands the session what its client was just shown, when there is something it
    /// acts on (rare: a room closing). Its future is large: boxed, so that the futures
    /// of the common paths that may call it stay small.
    async fn after_shown(&mut self, shown: Shown) {
        if !shown.is_empty() {
            Box::pin(self.session.after_shown(shown)).await;
        }
    }

    /// Runs one request to completion while events queued for this client keep being
    /// written: a join may wait seconds for its room channel, and a busy room must not
    /// fill the queue meanwhile. The request itself is never cancelled (a join dropped
    /// halfway would leave a half-registered member); if the queue overflows or the
    /// transport fails, writing stops and the request still finishes first.
    async fn handle_while_writing_events(
        &mut self,
        req: protocol::Request,
    ) -> Result<(Vec<crate::session::Reply>, Verdict, Shown), End> {
        let Connection { io, dialect, session, inbox, .. } = self;
        let handling = session.handle(req);
        tokio::pin!(handling);
        let mut stopped: Option<End> = None;
        // What was shown meanwhile is acted on once the request is done (the session
        // is busy).
        let mut shown = Shown::default();
        loop {
            tokio::select! {
                biased;
                handled = &mut handling => {
                    let (replies, verdict) = handled;
                    return stopped.map_or(Ok((replies, verdict, shown)), Err);
                }
                event = inbox.recv(), if stopped.is_none() => {
                    match write_events_unless_too_slow(io, dialect, inbox, event).await {
                        Ok(more) => shown.append(more),
                        Err(end) => stopped = Some(end),
                    }
                }
            }
        }
    }

    async fn on_refusal(&mut self, err: DecodeError, context: Option<D::Context>) -> Result<(), End> {
        let (reply, verdict) = self.session.refuse(err);
        let mut out = Vec::new();
        self.dialect.render_replies(context, vec![reply], &mut out);
        self.write_all(out).await?;
        stay_unless_closed(verdict)
    }

    async fn write_events_unless_too_slow(&mut self, first: Arc<Event>) -> Result<Shown, End> {
        write_events_unless_too_slow(&mut self.io, &self.dialect, &self.inbox, first).await
    }

    /// Writes and flushes `frames`.
    async fn write_all(&mut self, frames: Vec<Utf8Bytes>) -> Result<(), End> {
        for frame in frames {
            self.io.feed(frame).await?;
        }
        Ok(self.io.flush().await?)
    }

    async fn send(&mut self, frame: Utf8Bytes) -> Result<(), Gone> {
        self.io.feed(frame).await?;
        self.io.flush().await
    }

    async fn say_reconnect(&mut self, notice: Option<Utf8Bytes>) -> End {
        let _ = self.tell_reconnect(notice).await;
        End::Draining
    }

    /// Sends the dialect's `reconnect` notice, if it has one, waiting a bounded time
    /// for a client that is not reading.
    async fn tell_reconnect(&mut self, notice: Option<Utf8Bytes>) -> Result<(), Gone> {
        if let Some(notice) = notice {
            if let Ok(sent) = tokio::time::timeout(RECONNECT_SEND_TIMEOUT, self.send(notice)).await {
                return sent;
            }
        }
        Ok(())
    }
}

/// The session's verdict on a misbehaving client, as the loop's continuation.
fn stay_unless_closed(verdict: Verdict) -> Result<(), End> {
    match verdict {
        Verdict::Stay => Ok(()),
        Verdict::Close(reason) => Err(End::Misbehaving(reason)),
    }
}

/// Writes queued events, unless the queue overflows meanwhile: a client that stops
/// reading blocks the write, and the overflow must still end the session.
async fn write_events_unless_too_slow<T: Transport, D: Dialect>(
    io: &mut T,
    dialect: &D,
    inbox: &SessionInbox,
    first: Arc<Event>,
) -> Result<Shown, End> {
    tokio::select! {
        biased;
        _ = inbox.too_slow() => Err(End::TooSlow),
        written = write_events(io, dialect, first, inbox) => Ok(written?),
    }
}

/// Writes one event and whatever else is already queued, then flushes once. Returns
/// what of it the session acts on (usually nothing).
async fn write_events<T: Transport, D: Dialect>(
    io: &mut T,
    dialect: &D,
    first: Arc<Event>,
    inbox: &SessionInbox,
) -> Result<Shown, Gone> {
    let mut shown = Shown::default();
    let mut next = Some(first);
    for _ in 0..WRITE_BATCH {
        let Some(event) = next.take().or_else(|| inbox.try_pop()) else { break };
        if let Some(frame) = dialect.render_event(&event) {
            io.feed(frame).await?;
        }
        if matches!(*event, Event::RoomClosed { .. }) {
            for frame in dialect.render_room_closed(&event) {
                io.feed(frame).await?;
            }
        }
        shown.note(&event);
    }
    io.flush().await?;
    Ok(shown)
}

#[cfg(test)]
mod tests;
