//! One connection's state: its peer id, the rooms it is in, its rate limit and its
//! strikes for bad input. Handles decoded requests one at a time (which is what keeps
//! one sender's signals in order) and answers in dialect-free [`Reply`]s that the
//! transport renders.

use std::sync::Arc;
use std::time::{Duration, Instant};

use protocol::{Command, DecodeError, ErrorCode, MemberInfo, PeerId, Request, RequestId, RoomId};
use tracing::{debug, Instrument};

use auth::Identity;

use crate::core::{Core, CoreError, Event, JoinRequest, SessionHandle};

mod memberships;

use memberships::Memberships;

/// What a session tells its own client in answer to a request.
#[derive(Debug)]
pub enum Reply {
    Joined {
        room: RoomId,
        others: Vec<Arc<MemberInfo>>,
        /// The name recorded for the joiner (a token's claim wins over the one asked for).
        name: protocol::DisplayName,
        id: Option<RequestId>,
    },
    Left {
        room: RoomId,
        id: Option<RequestId>,
    },
    Updated {
        room: RoomId,
        id: Option<RequestId>,
    },
    /// The room's other members.
    Members {
        room: RoomId,
        members: Vec<Arc<MemberInfo>>,
        id: Option<RequestId>,
    },
    Pong {
        id: Option<RequestId>,
    },
    /// The room this client closed (its members, this client included, then hear
    /// `room-closed`).
    Closed {
        room: RoomId,
        id: Option<RequestId>,
    },
    /// A host command done (`remove`, `lock`).
    Done {
        room: RoomId,
        id: Option<RequestId>,
    },
    /// Who the connection is now (None: anonymous, which the node allows).
    Authenticated {
        identity: Option<Identity>,
        id: Option<RequestId>,
    },
    Error {
        code: ErrorCode,
        message: String,
        id: Option<RequestId>,
    },
    /// Events that belong right after a `joined` (they happened during the join).
    Events(Vec<Arc<Event>>),
    /// The connection resumed `peer`: back in these rooms (with its own record and the
    /// other members of each); `token` resumes it next time.
    Resumed {
        peer: PeerId,
        rooms: Vec<crate::core::ResumedRoom>,
        token: String,
        id: Option<RequestId>,
    },
}

/// What the connection showed its client that the session acts on once it is shown:
/// a room closing (or the client's removal from it), which the session then leaves.
/// Usually nothing, and then it holds no allocation.
#[derive(Debug, Default)]
pub struct Shown {
    closed: Vec<(RoomId, protocol::CloseReason)>,
}

impl Shown {
    /// Notes one event written to the client.
    pub fn note(&mut self, event: &Event) {
        if let Event::RoomClosed { room, reason, .. } = event {
            self.closed.push((room.clone(), *reason));
        }
    }

    /// Notes the events among a request's replies.
    pub fn note_replies(&mut self, replies: &[Reply]) {
        for reply in replies {
            if let Reply::Events(events) = reply {
                events.iter().for_each(|event| self.note(event));
            }
        }
    }

    pub fn append(&mut self, other: Shown) {
        self.closed.extend(other.closed);
    }

    pub fn is_empty(&self) -> bool {
        self.closed.is_empty()
    }
}

/// Session-level limits, from the node's configuration.
#[derive(Debug, Clone)]
pub struct SessionLimits {
    pub rate_per_sec: u32,
    pub rate_burst: u32,
    /// Bad frames tolerated per `strike_window` before the connection is closed.
    pub strikes: u32,
    pub strike_window: Duration,
    /// Joins per connection per minute (JOINS_PER_MINUTE).
    pub joins_per_minute: u32,
}

/// Seconds since the process started (a compact clock for per-connection windows).
fn process_secs() -> u32 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_secs() as u32
}

/// A token bucket: `rate` tokens a second, at most `burst` saved up.
struct Bucket {
    tokens: f64,
    rate: f64,
    burst: f64,
    last: Instant,
}

impl Bucket {
    fn new(rate: f64, burst: f64) -> Self {
        Self { tokens: burst, rate, burst, last: Instant::now() }
    }

    fn take(&mut self) -> bool {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

pub struct Session {
    core: Arc<Core>,
    handle: SessionHandle,
    /// The rooms this connection is in, and its member id in each.
    rooms: Memberships,
    rate: Bucket,
    strikes: Bucket,
    /// Who the client proved to be (a verified token); boxed so anonymous connections
    /// pay one pointer.
    identity: Option<Box<Identity>>,
    /// Joins in the current minute (a fixed window: 8 bytes a connection).
    join_window: u32,
    joins_in_window: u32,
    joins_per_minute: u32,
    /// Set on connections that may resume (a dialect whose clients can, with
    /// RESUME_GRACE_MS on): how to name the token its client holds.
    resume_key: Option<ResumeKey>,
    /// Whether the cluster holds a resumable record for it.
    recorded: bool,
    /// It sent signals without waiting for their publish (see `core::relay`'s
    /// publisher): whatever it does next waits until they are out.
    signals_queued: bool,
}

/// The token a resumable connection's client holds, kept small: a nonce while the
/// token is one this node issued (it is derived again when needed), the token itself
/// once a Socket.IO client resumed with it (it keeps it, and another node issued it).
enum ResumeKey {
    Nonce(u32),
    Kept(Box<str>),
}

/// Whether the connection may stay open after a request or a refusal.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Stay,
    /// The client keeps misbehaving: close the connection, giving this reason.
    Close(&'static str),
}

impl Session {
    pub fn new(
        core: Arc<Core>,
        handle: SessionHandle,
        limits: &SessionLimits,
        identity: Option<Identity>,
        resume_nonce: Option<u32>,
    ) -> Self {
        let strike_rate = f64::from(limits.strikes) / limits.strike_window.as_secs_f64();
        Self {
            core,
            handle,
            rooms: Memberships::default(),
            rate: Bucket::new(f64::from(limits.rate_per_sec), f64::from(limits.rate_burst)),
            strikes: Bucket::new(strike_rate, f64::from(limits.strikes)),
            identity: identity.map(Box::new),
            join_window: 0,
            joins_in_window: 0,
            joins_per_minute: limits.joins_per_minute,
            resume_key: resume_nonce.map(ResumeKey::Nonce),
            recorded: false,
            signals_queued: false,
        }
    }

    /// The token that resumes this connection, when it may resume.
    pub fn resume_token(&self) -> Option<String> {
        match self.resume_key.as_ref()? {
            ResumeKey::Nonce(nonce) => Some(self.core.resumes().token(&self.handle.peer, *nonce)),
            ResumeKey::Kept(token) => Some(token.to_string()),
        }
    }

    /// Whether the connection, ending now, may be resumed by its client: its member
    /// then stays in its rooms, away, for the grace.
    pub fn may_resume(&self) -> bool {
        self.resume_key.is_some() && self.recorded
    }

    pub fn peer(&self) -> &protocol::PeerId {
        &self.handle.peer
    }

    pub fn core(&self) -> &Core {
        &self.core
    }

    /// Handles one request; failures become `error` replies and the session stays,
    /// unless the client keeps exceeding its rate limit (each excess is a strike).
    pub async fn handle(&mut self, req: Request) -> (Vec<Reply>, Verdict) {
        let Request { id, command, traceparent } = req;
        if !self.rate.take() {
            self.core.metrics().client_error(ErrorCode::RateLimited);
            let reply =
                Reply::Error { code: ErrorCode::RateLimited, message: "too many messages; slow down".into(), id };
            return (vec![reply], self.strike("rate limit exceeded repeatedly"));
        }
        let traced = telemetry::traces::enabled()
            && !matches!(command, Command::Ping)
            && traceparent.as_ref().map_or_else(telemetry::traces::sample, |t| telemetry::traces::sampled(t.as_str()));
        let span = if traced {
            self.traced_command_span(&command, traceparent.as_ref())
        } else {
            tracing::debug_span!("command", kind = command.kind(), room = command.room().map(|r| r.as_str()))
        };
        let replies = match self.execute(command, id.clone()).instrument(span.clone()).await {
            Ok(replies) => replies,
            Err(e) => vec![span.in_scope(|| self.refused(e, id))],
        };
        (replies, Verdict::Stay)
    }

    /// The error reply for a refused command, counted and logged once.
    fn refused(&self, e: CoreError, id: Option<RequestId>) -> Reply {
        debug!(code = e.code().as_str(), error = %e, "command refused");
        self.core.metrics().client_error(e.code());
        Reply::Error { code: e.code(), message: e.to_string(), id }
    }

    /// A recorded command's span: the root of its own trace (or a child of the
    /// client's `traceparent`), linked to the connection's span (when that is recorded)
    /// rather than under it, so that a connection open for hours does not make one
    /// endless trace.
    fn traced_command_span(&self, command: &Command, traceparent: Option<&protocol::Traceparent>) -> tracing::Span {
        let kind = command.kind();
        let span = tracing::info_span!(
            target: telemetry::traces::TARGET,
            parent: None,
            "command",
            otel.name = kind,
            kind,
            room = command.room().map(|r| r.as_str()),
            peer = %self.handle.peer,
            node = %self.core.node(),
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
        );
        if let Some(parent) = traceparent {
            telemetry::traces::continue_from(&span, parent.as_str());
        }
        telemetry::traces::link_to(&span, &tracing::Span::current());
        telemetry::traces::record_ids(&span);
        span
    }

    fn strike(&mut self, reason: &'static str) -> Verdict {
        if self.strikes.take() {
            Verdict::Stay
        } else {
            Verdict::Close(reason)
        }
    }

    async fn execute(&mut self, command: Command, id: Option<RequestId>) -> Result<Vec<Reply>, CoreError> {
        let may_proceed =
            matches!(command, Command::Ping | Command::Authenticate { .. } | Command::AuthenticateThen { .. });
        if !may_proceed && self.identity.is_none() && self.core.admission().requires_identity() {
            return Err(CoreError::Unauthenticated(
                "a valid token is required: send it at the upgrade (Authorization: Bearer, access_token), in an auth message, or in the dialect's handshake".into(),
            ));
        }
        if self.signals_queued && !matches!(command, Command::Signal { .. } | Command::Ping) {
            // What it does next (a leave, a broadcast...) must not overtake its signals.
            Box::pin(self.core.signals_published()).await;
            self.signals_queued = false;
        }
        // Commands other than a relay are boxed: their futures are large (a join waits
        // on the store and its room channel), and every request's future, a signal's
        // too, is as large as the largest command it may run.
        match command {
            Command::Authenticate { token } => Box::pin(self.authenticate(token, id)).await,
            Command::AuthenticateThen { token, then } => Box::pin(self.authenticate_then(token, *then, id)).await,
            Command::Join { room, name, role, token, meta, member } => {
                Box::pin(self.join(JoinRequest { room, name, role, token, meta, member }, id)).await
            }
            Command::Leave { room } => Box::pin(self.leave(room, id)).await,
            Command::Signal { room, to, kind, data } => {
                // A signal with an id waits for its publish, so that an error answers it.
                self.signals_queued |= id.is_none();
                self.signal(room, to, kind, data, id.is_some()).await
            }
            Command::Broadcast { room, kind, data } => self.broadcast(room, kind, data).await,
            Command::Update { room, meta } => Box::pin(self.update(room, meta, id)).await,
            Command::Members { room } => self.members(room, id),
            Command::Close { room } => Box::pin(self.close_room(room, id)).await,
            Command::Remove { room, peer } => Box::pin(self.remove(room, peer, id)).await,
            Command::Lock { room, locked } => Box::pin(self.lock(room, locked, id)).await,
            Command::Resume { token, keep_token } => Box::pin(self.resume(&token, keep_token, id)).await,
            Command::Ping => Ok(vec![Reply::Pong { id }]),
        }
    }

    /// Verifies a token and becomes its identity; without a token, says who the
    /// connection is (refused where identity is required).
    async fn authenticate(&mut self, token: Option<String>, id: Option<RequestId>) -> Result<Vec<Reply>, CoreError> {
        let Some(token) = token else {
            if self.identity.is_none() && self.core.admission().requires_identity() {
                return Err(CoreError::Unauthenticated("a valid token is required".into()));
            }
            return Ok(vec![Reply::Authenticated { identity: self.identity.as_deref().cloned(), id }]);
        };
        let identity = self
            .core
            .admission()
            .verify(&token)
            .await
            .map_err(|e| CoreError::Unauthenticated(format!("token refused: {e}")))?;
        debug!(subject = %identity.subject, "authenticated");
        self.identity = Some(Box::new(identity.clone()));
        Ok(vec![Reply::Authenticated { identity: Some(identity), id }])
    }

    /// Verifies a token, then, only if it holds, runs the command that needed it: the
    /// authentication's answer followed by the command's own (or its refusal).
    async fn authenticate_then(
        &mut self,
        token: Option<String>,
        then: Command,
        id: Option<RequestId>,
    ) -> Result<Vec<Reply>, CoreError> {
        let mut replies = self.authenticate(token, id.clone()).await?;
        match Box::pin(self.execute(then, id.clone())).await {
            Ok(more) => replies.extend(more),
            Err(e) => replies.push(self.refused(e, id)),
        }
        Ok(replies)
    }

    /// Relays a signal to one member of a room it shares with the sender: no reply.
    async fn signal(
        &self,
        room: RoomId,
        to: PeerId,
        kind: protocol::SignalKind,
        data: protocol::Payload,
        wait: bool,
    ) -> Result<Vec<Reply>, CoreError> {
        self.core.signal(&self.member_in(&room), &room, &to, kind, data, wait).await?;
        Ok(Vec::new())
    }

    /// Sends to every other member of the room: no reply.
    async fn broadcast(
        &self,
        room: RoomId,
        kind: protocol::SignalKind,
        data: protocol::Payload,
    ) -> Result<Vec<Reply>, CoreError> {
        self.core.broadcast(&self.member_in(&room), &room, kind, data).await?;
        Ok(Vec::new())
    }

    /// Changes the member's metadata; the others hear `peer-updated`.
    async fn update(
        &self,
        room: RoomId,
        meta: protocol::Payload,
        id: Option<RequestId>,
    ) -> Result<Vec<Reply>, CoreError> {
        self.core.update(&self.member_in(&room), &room, meta).await?;
        Ok(vec![Reply::Updated { room, id }])
    }

    /// The room's other members.
    fn members(&self, room: RoomId, id: Option<RequestId>) -> Result<Vec<Reply>, CoreError> {
        let members = self.core.members(&self.member_in(&room), &room)?;
        Ok(vec![Reply::Members { room, members, id }])
    }

    /// A host closes the room: everyone in it hears `room-closed`.
    async fn close_room(&self, room: RoomId, id: Option<RequestId>) -> Result<Vec<Reply>, CoreError> {
        self.must_be_host(&room).await?;
        self.core.close_room(&room, protocol::CloseReason::Ended, false).await?;
        Ok(vec![Reply::Closed { room, id }])
    }

    /// A host removes a member from the room.
    async fn remove(&self, room: RoomId, peer: PeerId, id: Option<RequestId>) -> Result<Vec<Reply>, CoreError> {
        self.must_be_host(&room).await?;
        self.core.remove_from_room(&room, &peer).await?;
        Ok(vec![Reply::Done { room, id }])
    }

    /// A host locks or unlocks the room to new joins.
    async fn lock(&self, room: RoomId, locked: bool, id: Option<RequestId>) -> Result<Vec<Reply>, CoreError> {
        self.must_be_host(&room).await?;
        self.core.lock_room(&room, locked).await?;
        Ok(vec![Reply::Done { room, id }])
    }

    /// Joins a room (or, for a registration under a chosen id, resumes it): `joined`,
    /// then the room's events that happened during the join.
    async fn join(&mut self, req: JoinRequest, id: Option<RequestId>) -> Result<Vec<Reply>, CoreError> {
        self.count_join()?;
        let JoinRequest { room, name, role, token, meta, member } = req;
        // What a verified token says wins over what the client declares.
        let (name, role) = self.identity.as_deref().map_or((name.clone(), role.clone()), |who| {
            let claimed_name = who.name.as_deref().and_then(|n| {
                let shown: String = n.chars().take(protocol::DisplayName::DEFAULT_MAX_CHARS).collect();
                protocol::DisplayName::parse(&shown).ok()
            });
            let claimed_role = who.role.as_deref().and_then(|r| protocol::Role::parse(r).ok());
            (claimed_name.unwrap_or(name), claimed_role.unwrap_or(role))
        });
        let recorded = name.clone();
        if let Some(chosen) = &member {
            if let Some(resumed) = self.resume_registration(&room, chosen, token.as_deref(), &id).await? {
                return Ok(resumed);
            }
        }
        let req = JoinRequest { room: room.clone(), name, role, token, meta, member: member.clone() };
        // Recorded before the join: nothing may be awaited between the join and its
        // `joined` (the room's events would be written ahead of it). A room whose join
        // fails stays listed; a resume then finds no member there.
        if let Some(token) = self.resume_token() {
            self.core.note_resumable(&self.handle.peer, &token, &room).await;
            self.recorded = true;
        }
        let done = self.core.join(&self.handle, req, self.rooms.len()).await?;
        self.rooms.enter(room.clone(), member);
        let mut replies = vec![Reply::Joined { room, others: done.others, name: recorded, id }];
        if !done.backlog.is_empty() {
            replies.push(Reply::Events(done.backlog));
        }
        Ok(replies)
    }

    /// Leaves a room: `left`, and the others hear `peer-left` (reason `left`).
    async fn leave(&mut self, room: RoomId, id: Option<RequestId>) -> Result<Vec<Reply>, CoreError> {
        let result = self.core.leave(&self.member_in(&room), &room, protocol::LeftReason::Left).await;
        if !matches!(result, Err(CoreError::NotInRoom)) {
            self.rooms.leave(&room);
            if self.recorded {
                self.core.forget_resumable_room(&self.handle.peer, &room).await;
            }
        }
        result?;
        Ok(vec![Reply::Left { room, id }])
    }

    /// Becomes the peer `token` resumes, on this node, in its rooms (see
    /// `core::resume`). Only as the connection's first command. The next token is a
    /// new one, or the same with `keep_token`.
    async fn resume(&mut self, token: &str, keep_token: bool, id: Option<RequestId>) -> Result<Vec<Reply>, CoreError> {
        let core = self.core.clone();
        let started = Instant::now();
        if self.resume_key.is_none() {
            return Err(CoreError::ResumeFailed("resume is off on this node (RESUME_GRACE_MS=0) or in this dialect"));
        }
        if !self.rooms.is_empty() || self.recorded {
            return Err(CoreError::ResumeFailed("resume must be the connection's first command; join afresh"));
        }
        let failed = |e: CoreError| {
            core.metrics().resume.resumes.with_label_values(&["failed"]).inc();
            e
        };
        let peer = crate::core::Resumes::peer_of(token)
            .filter(|peer| !crate::core::Resumes::is_registration(peer))
            .ok_or_else(|| failed(CoreError::ResumeFailed("malformed resume token; join afresh")))?;
        let (next, key) = if keep_token {
            (token.to_owned(), ResumeKey::Kept(token.into()))
        } else {
            let nonce = rand::random::<u32>();
            (core.resumes().token(&peer, nonce), ResumeKey::Nonce(nonce))
        };
        let claimed = core
            .claim_resumable(&peer, &crate::core::token_hash(token), &crate::core::token_hash(&next))
            .await
            .map_err(failed)?
            .ok_or_else(|| failed(CoreError::ResumeFailed("unknown, used or expired resume token; join afresh")))?;
        self.take_over(peer, claimed, key, next, None, id, started).await.map_err(failed)
    }

    /// Becomes the member a claimed resumable record names, on this node, in its rooms:
    /// its `resumed` answer, then what was held for it.
    #[allow(clippy::too_many_arguments)]
    async fn take_over(
        &mut self,
        peer: PeerId,
        claimed: bus::Claimed,
        key: ResumeKey,
        next: String,
        chosen: Option<&PeerId>,
        id: Option<RequestId>,
        started: Instant,
    ) -> Result<Vec<Reply>, CoreError> {
        let core = self.core.clone();
        if claimed.node == *core.node() {
            core.take_over_here(&peer);
        }
        let resumed = self.handle.resumed_as(peer.clone(), claimed.rooms.iter().cloned());
        core.sessions().remove(&self.handle);
        core.sessions().insert(resumed.clone());
        self.handle = resumed;
        self.resume_key = Some(key);
        self.recorded = true;
        let rooms = core.resume(&self.handle, claimed, chosen).await?;
        self.rooms.resumed(rooms.iter().map(|r| r.room.clone()), chosen);
        debug!(%peer, rooms = self.rooms.len(), "resumed");
        let held = self.handle.hold().map(|h| h.open_forwarded()).unwrap_or_default();
        core.metrics().resume.resumes.with_label_values(&["resumed"]).inc();
        core.metrics().resume.seconds.observe(started.elapsed().as_secs_f64());
        let mut replies = vec![Reply::Resumed { peer, rooms, token: next, id }];
        if !held.is_empty() {
            replies.push(Reply::Events(held));
        }
        Ok(replies)
    }

    /// A registration under a member id its client chose (the plain dialect), as the
    /// connection's first join: its clients never see a token, so registering again as
    /// the same member of the same room, with the room's token or as the same verified
    /// subject, is what resumes it (`Resumes::of_registration`). Returns the resumed
    /// answer if it took a dropped (or still open) connection's place; otherwise sets
    /// the connection up so that this registration can be resumed later (without a room
    /// token or an identity it cannot: its member leaves when the connection ends).
    async fn resume_registration(
        &mut self,
        room: &RoomId,
        chosen: &PeerId,
        room_token: Option<&str>,
        id: &Option<RequestId>,
    ) -> Result<Option<Vec<Reply>>, CoreError> {
        // Also after a refused registration (recorded, renamed): a later one is another.
        if self.resume_key.is_none() || !self.rooms.is_empty() {
            return Ok(None);
        }
        let subject = self.identity.as_deref().map(|who| who.subject.as_str());
        if room_token.is_none() && subject.is_none() {
            self.resume_key = None;
            return Ok(None);
        }
        let core = self.core.clone();
        let started = Instant::now();
        let (peer, token) = crate::core::Resumes::of_registration(room, chosen, room_token, subject);
        let hash = crate::core::token_hash(&token);
        if let Some(claimed) = core.claim_resumable(&peer, &hash, &hash).await? {
            let key = ResumeKey::Kept(token.clone().into());
            let replies = self.take_over(peer, claimed, key, token, Some(chosen), id.clone(), started).await?;
            if !self.rooms.is_empty() {
                return Ok(Some(replies));
            }
            // Its room is gone (closed, or it was removed meanwhile): it joins afresh.
            return Ok(None);
        }
        if core.sessions().get(&peer).is_some() {
            // A connection here holds this registration without a record to claim (Redis
            // lost it): this one joins as any other and cannot be resumed.
            self.resume_key = None;
            return Ok(None);
        }
        let renamed = self.handle.renamed(peer);
        core.sessions().remove(&self.handle);
        core.sessions().insert(renamed.clone());
        self.handle = renamed;
        self.resume_key = Some(ResumeKey::Kept(token.into()));
        Ok(None)
    }

    /// The member id this connection has in `room` (its own id when not in the room:
    /// the core then refuses with `not-in-room`).
    fn member_in(&self, room: &RoomId) -> PeerId {
        self.rooms.member_in(room, &self.handle.peer)
    }

    /// One more join this minute, or a refusal (JOINS_PER_MINUTE).
    fn count_join(&mut self) -> Result<(), CoreError> {
        let minute = process_secs() / 60;
        if minute != self.join_window {
            self.join_window = minute;
            self.joins_in_window = 0;
        }
        if self.joins_in_window >= self.joins_per_minute {
            return Err(CoreError::TooManyJoins(self.joins_per_minute));
        }
        self.joins_in_window += 1;
        Ok(())
    }

    /// Host powers need a member of the room with a verified identity that is a host.
    async fn must_be_host(&self, room: &RoomId) -> Result<(), CoreError> {
        if !self.core.is_member(&self.member_in(room), room) {
            return Err(CoreError::NotInRoom);
        }
        let who = self.identity.as_deref().ok_or(CoreError::NotHost)?;
        if !self.core.is_host(who, room).await? {
            return Err(CoreError::NotHost);
        }
        Ok(())
    }

    /// Acts on what the client was just shown: it leaves each room it saw close.
    pub async fn after_shown(&mut self, shown: Shown) {
        for (room, reason) in shown.closed {
            self.room_closed(&room, reason).await;
        }
    }

    /// The room was closed while this client was in it, or a host removed the client:
    /// leave it (the others hear `peer-left` with reason `closed` or `removed`).
    async fn room_closed(&mut self, room: &RoomId, reason: protocol::CloseReason) {
        if !self.rooms.contains(room) {
            return;
        }
        let member = self.member_in(room);
        self.rooms.leave(room);
        if self.recorded {
            self.core.forget_resumable_room(&self.handle.peer, room).await;
        }
        let why = match reason {
            protocol::CloseReason::Removed => protocol::LeftReason::Removed,
            _ => protocol::LeftReason::Closed,
        };
        if let Err(e) = self.core.leave(&member, room, why).await {
            debug!(%room, error = %e, "leaving a closed room failed; the removal is owed and retried");
        }
    }

    /// A frame that could not be decoded: an error reply, and whether to hang up
    /// because the client keeps misbehaving.
    pub fn refuse(&mut self, err: DecodeError) -> (Reply, Verdict) {
        self.core.metrics().client_error(err.code);
        let verdict = self.strike("too many bad messages");
        (Reply::Error { code: err.code, message: err.message, id: err.id }, verdict)
    }

    /// The connection ended: leave every room (others hear `peer-left`, reason
    /// `disconnected`) and forget the peer.
    pub async fn close(&mut self) {
        if self.signals_queued {
            // Its `peer-left` must not overtake its last signals.
            self.core.signals_published().await;
        }
        let memberships = self.take_memberships();
        if self.recorded {
            self.core.end_resumable(&self.handle.peer).await;
        }
        self.core.disconnect(&self.handle, &memberships).await;
    }

    /// The connection dropped and its client may resume it: its member stays in its
    /// rooms, away, for `hold`, with `inbox` holding what arrives (see `core::resume`).
    pub fn go_away(&mut self, inbox: crate::core::SessionInbox, hold: crate::core::Hold) {
        let memberships = self.take_memberships();
        self.core.forget_incoming(&self.handle);
        self.core.go_away(self.handle.clone(), inbox, memberships, hold);
    }

    fn take_memberships(&mut self) -> Vec<(RoomId, PeerId)> {
        self.rooms.take_all(&self.handle.peer)
    }
}
