//! Rooms, authorization and routing, with no sockets and no JSON: sessions call in
//! with ids and payloads, and the core answers or pushes [`Event`]s to sessions.
//!
//! A signal to a peer on this node is delivered locally; to a peer elsewhere it is one
//! publish to the inbox of the node named in the peer id. Room-wide events are one
//! publish to the room channel, which every node with members there follows.
//!
//! `Core` is a front over parts that own their state (docs/architecture.md, "The
//! core's parts"): `directory` (room membership), `relay` (signals and
//! broadcasts), `liveness` (heartbeat, probes, the reaper) and `resume` (members
//! held away and hand-overs). The core keeps the rules, the bus dispatcher and the
//! heartbeat tick (`upkeep`), and starts every task on the tracker it is given.

mod bus_stats;
mod directory;
mod error;
mod events;
pub mod hold;
mod liveness;
mod outbox;
mod registry;
mod relay;
mod resume;
pub mod roles;
mod rules;
mod sessions;
mod tasks;
mod upkeep;

use std::sync::Arc;
use std::time::Duration;

use bus::{Backend, BackendError, Inbound};
use bytes::Bytes;
use protocol::{
    BusEvent, CloseReason, DisplayName, Envelope, EventClass, LeftReason, MemberInfo, NodeId, Payload, PeerId, Role,
    RoomId, SignalKind,
};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::admission::Admission;
use crate::metrics::NodeMetrics;

pub use directory::JoinDone;
use directory::{DirectorySettings, RoomDirectory};
pub use error::CoreError;
pub use events::{Event, Frames, RENDERINGS};
pub use liveness::Health;
use liveness::Liveness;
pub use registry::RoomRegistry;
use relay::Relay;
use resume::Resumption;
pub use resume::{Hold, ResumedRoom, Resumes};
pub use rules::token_hash;
pub use sessions::{SessionHandle, SessionInbox, Sessions};
use tasks::Tasks;

/// Room rules and timings the core applies.
#[derive(Debug, Clone)]
pub struct CoreSettings {
    pub room_capacity: usize,
    /// Beyond this many members, a room's members hear of hosts only.
    pub presence_limit: usize,
    pub rooms_per_peer: usize,
    pub heartbeat_interval: Duration,
    pub node_ttl: Duration,
    /// How long a join waits for its own announcement to come back on the room channel.
    pub join_timeout: Duration,
    /// RESUME_GRACE_MS: how long a dropped connection's member stays, away, for its
    /// client to resume it (zero: no resume; members leave at once).
    pub resume_grace: Duration,
    /// RELOAD_GRACE_MS: how long the member of a page that closed with 4001
    /// `reloading` is held (at most the resume grace).
    pub reload_grace: Duration,
    /// Identity and the room registry's rules.
    pub admission: Arc<Admission>,
}

/// A join request, already validated at the edge.
pub struct JoinRequest {
    pub room: RoomId,
    pub name: DisplayName,
    pub role: Role,
    pub token: Option<String>,
    pub meta: Payload,
    /// The public id the client chose (unique in the room); None: the connection's own.
    pub member: Option<PeerId>,
}

pub struct Core {
    node: NodeId,
    backend: Arc<dyn Backend>,
    settings: CoreSettings,
    sessions: Arc<Sessions>,
    /// Room membership: the mirror, its subscriptions, owed removals, resync.
    directory: Arc<RoomDirectory>,
    /// Signals and broadcasts: sending, delivering, bouncing; the publish gate.
    relay: Arc<Relay>,
    /// Heartbeat, inbox probe, the reaper; what /readyz reports.
    liveness: Liveness,
    resync_wanted: Notify,
    bus_stats: bus_stats::BusStats,
    metrics: Arc<NodeMetrics>,
    /// Members held away for their resume, and hand-overs between nodes.
    resumption: Arc<Resumption>,
    /// The tracker and stop token [`Core::start`] was given: every task the core starts
    /// runs on them, so a drain waits for them (boundedly) and stops them.
    tasks: Arc<Tasks>,
}

impl Core {
    pub fn new(node: NodeId, backend: Arc<dyn Backend>, settings: CoreSettings) -> Arc<Self> {
        Self::with_metrics(node, backend, settings, Arc::new(NodeMetrics::new()))
    }

    /// With metrics shared with other parts of the node (the timed store).
    pub fn with_metrics(
        node: NodeId,
        backend: Arc<dyn Backend>,
        settings: CoreSettings,
        metrics: Arc<NodeMetrics>,
    ) -> Arc<Self> {
        let directory = Arc::new(RoomDirectory::new(
            node.clone(),
            backend.clone(),
            DirectorySettings {
                room_capacity: settings.room_capacity,
                presence_limit: settings.presence_limit,
                require_created: settings.admission.require_created,
                join_timeout: settings.join_timeout,
                suspect_grace: settings.node_ttl,
                heartbeat_interval: settings.heartbeat_interval,
            },
            metrics.clone(),
        ));
        let relay = Arc::new(Relay::new(node.clone(), backend.clone(), metrics.clone()));
        let sessions = Arc::new(Sessions::default());
        let tasks = Arc::new(Tasks::default());
        let resumption = Arc::new(Resumption {
            node: node.clone(),
            store: backend.clone(),
            metrics: metrics.clone(),
            state: Resumes::new(settings.resume_grace, settings.reload_grace),
            sessions: sessions.clone(),
            directory: directory.clone(),
            relay: relay.clone(),
            tasks: tasks.clone(),
        });
        Arc::new(Self {
            liveness: Liveness::new(
                node.clone(),
                backend.clone(),
                metrics.clone(),
                settings.heartbeat_interval,
                settings.node_ttl,
                settings.resume_grace,
            ),
            directory,
            relay,
            sessions,
            resumption,
            tasks,
            node,
            backend,
            settings,
            resync_wanted: Notify::new(),
            bus_stats: bus_stats::BusStats::default(),
            metrics,
        })
    }

    pub fn node(&self) -> &NodeId {
        &self.node
    }

    pub fn admission(&self) -> &Admission {
        &self.settings.admission
    }

    /// The room registry, for the HTTP API.
    pub fn registry(&self) -> RoomRegistry<'_> {
        RoomRegistry { backend: self.backend.as_ref() }
    }

    pub fn room_count(&self) -> usize {
        self.directory.room_count()
    }

    pub fn local_member_count(&self) -> usize {
        self.directory.local_member_count()
    }

    fn envelope(&self, event: BusEvent) -> Bytes {
        envelope(&self.node, event)
    }

    pub fn metrics(&self) -> &NodeMetrics {
        &self.metrics
    }

    /// Subscribes to this node's inbox, registers the node, removes what an earlier run
    /// under the same id left behind, and starts the core's own tasks on `tasks`
    /// (dispatching bus messages, liveness, bounces) until `stop`. Call once before
    /// serving.
    pub async fn start(self: &Arc<Self>, tasks: &TaskTracker, stop: CancellationToken) -> Result<(), BackendError> {
        let inbox = self
            .backend
            .take_inbox()
            .ok_or_else(|| BackendError::Protocol("the backend's inbox was already taken".into()))?;
        self.backend.subscribe_node(&self.node).await?;
        self.liveness.register().await?;
        // A node restarted under the same NODE_ID before its heartbeat expired was never
        // reaped: whatever Redis still lists as served here belongs to its previous life.
        let ghosts = self.directory.sweep_own_ghosts(&[]).await?;
        if ghosts > 0 {
            info!(ghosts, "removed members left behind by an earlier run of this node");
        }
        self.liveness.health().set_redis(true);
        self.tasks.start(tasks, &stop);
        tasks.spawn(self.clone().run_dispatcher(inbox));
        tasks.spawn(self.clone().run_upkeep(stop.clone()));
        let core = self.clone();
        let publisher_stop = stop.clone();
        tasks.spawn(async move { core.relay.run_bounces(stop).await });
        let core = self.clone();
        tasks.spawn(async move {
            let teller = core.clone();
            let tell = move |room, from, to| teller.deliver_bounce(room, from, to);
            core.relay.run_publisher(&tell, publisher_stop).await
        });
        Ok(())
    }

    /// Handles bus messages in arrival order until the backend closes the inbox.
    async fn run_dispatcher(self: Arc<Self>, mut inbox: mpsc::Receiver<Inbound>) {
        let capacity = inbox.max_capacity();
        while let Some(inbound) = inbox.recv().await {
            self.dispatch(inbound);
            self.health().set_bus_backlog(inbox.len(), capacity);
        }
    }

    /// The connections this node serves.
    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    /// What /readyz reports.
    pub fn health(&self) -> &Health {
        self.liveness.health()
    }

    /// Drain step: take this node's heartbeat and room index out of Redis.
    pub async fn leave_cluster(&self) {
        self.liveness.leave_cluster().await;
    }

    /// Messages the bus lost on their way here.
    pub fn bus_stats(&self) -> &bus_stats::BusStats {
        &self.bus_stats
    }

    /// Joins a room (see `directory/rooms.rs` for the handshake that makes the member lists
    /// exact).
    pub async fn join(
        &self,
        session: &SessionHandle,
        req: JoinRequest,
        rooms_held: usize,
    ) -> Result<JoinDone, CoreError> {
        let member = req.member.unwrap_or_else(|| session.peer.clone());
        rules::may_join(self.directory.is_member(&req.room, &member), rooms_held, self.settings.rooms_per_peer)?;
        let token_hash = req.token.as_deref().map(rules::token_hash);
        let record = Arc::new(MemberInfo {
            // A native peer id names its node already: the record repeats it only for ids
            // that do not (saves a string per member in every mirror).
            node: (!member.is_on(&self.node)).then(|| self.node.clone()),
            peer: member,
            name: req.name,
            role: req.role,
            meta: req.meta,
        });
        let joined = self.directory.join(&req.room, session, record, token_hash.as_deref()).await;
        if matches!(joined, Err(CoreError::JoinTimeout)) {
            // The room channel never confirmed the join: the subscription may be dead.
            self.health().subscription_suspect();
        }
        joined
    }

    /// Leaves a room; the others hear `peer-left` with `reason`.
    pub async fn leave(&self, peer: &PeerId, room: &RoomId, reason: LeftReason) -> Result<(), CoreError> {
        if !self.directory.is_member(room, peer) {
            return Err(CoreError::NotInRoom);
        }
        self.metrics.left(reason);
        self.directory.leave(room, peer, reason).await
    }

    /// Relays a signal to one peer that shares `room` with the sender. With `wait`, a
    /// signal for another node returns once published, so that its request learns the
    /// outcome; otherwise once queued (see `relay::publisher`).
    pub async fn signal(
        &self,
        from: &PeerId,
        room: &RoomId,
        to: &PeerId,
        kind: SignalKind,
        data: Payload,
        wait: bool,
    ) -> Result<(), CoreError> {
        // Counted from the route to the publish, so a resume's fence waits for it.
        let routing = self.relay.routing();
        // The room mirror knows where every member is: no Redis lookup.
        let (sender_in, target) = self.directory.route(room, from, to);
        rules::may_signal(sender_in, target.is_some())?;
        self.check_role(room, from, kind.as_str())?;
        let target = target.ok_or(CoreError::PeerUnavailable)?;
        self.relay.send_signal(target, routing, room, from, to, kind, data, wait).await
    }

    /// Returns once every signal queued for other nodes so far has been published.
    pub async fn signals_published(&self) {
        self.relay.signals_published().await;
    }

    /// Sends to every other member of the room: one publish, whatever the room size.
    pub async fn broadcast(
        &self,
        from: &PeerId,
        room: &RoomId,
        kind: SignalKind,
        data: Payload,
    ) -> Result<(), CoreError> {
        if !self.directory.is_member(room, from) {
            return Err(CoreError::NotInRoom);
        }
        self.check_role(room, from, "broadcast")?;
        self.relay.broadcast(room, from, kind, data).await
    }

    /// Closes a room for everyone, on every node: each node's members in it hear
    /// `room-closed` (in their dialect) and leave with reason `closed`. With
    /// `forget`, a room created ahead loses its registration too.
    pub async fn close_room(&self, room: &RoomId, reason: CloseReason, forget: bool) -> Result<(), CoreError> {
        let msg = self.envelope(BusEvent::Closed { room: room.clone(), reason });
        self.backend.publish_room(room, msg).await?;
        if forget {
            self.backend.unregister_room(room).await?;
        }
        info!(%room, reason = reason.as_str(), "room closed");
        Ok(())
    }

    /// Refuses `action` if ROLE_DENY denies it to the member's role in `room` (no cost
    /// when no rule is configured).
    fn check_role(&self, room: &RoomId, peer: &PeerId, action: &str) -> Result<(), CoreError> {
        let rules = &self.settings.admission.role_rules;
        if rules.is_empty() {
            return Ok(());
        }
        let Some(me) = self.directory.local_record(room, peer) else { return Ok(()) };
        if rules.allows(&me.role, action) {
            Ok(())
        } else {
            Err(CoreError::RoleForbidden { role: me.role.to_string(), action: action.to_owned() })
        }
    }

    /// Whether `peer` is an active local member of `room`.
    pub fn is_member(&self, peer: &PeerId, room: &RoomId) -> bool {
        self.directory.is_member(room, peer)
    }

    /// Removes `peer` from `room` on behalf of a host: the node that serves it tells it
    /// and makes it leave (the others hear `peer-left` with reason `removed`).
    pub async fn remove_from_room(&self, room: &RoomId, peer: &PeerId) -> Result<(), CoreError> {
        if !self.directory.members(room).iter().any(|m| &m.peer == peer) {
            return Err(CoreError::NoSuchPeer);
        }
        let msg = self.envelope(BusEvent::Removed { room: room.clone(), peer: peer.clone() });
        self.backend.publish_room(room, msg).await?;
        Ok(())
    }

    /// Locks `room` against new joins, or unlocks it.
    pub async fn lock_room(&self, room: &RoomId, locked: bool) -> Result<(), CoreError> {
        Ok(self.backend.set_room_locked(room, locked).await?)
    }

    /// Whether `who` holds host powers in `room`: a verified `host` role, or the
    /// room's creator or one of the hosts named when it was created.
    pub async fn is_host(&self, who: &auth::Identity, room: &RoomId) -> Result<bool, CoreError> {
        if who.role.as_deref() == Some("host") {
            return Ok(true);
        }
        let record = self.backend.room_record(room).await?;
        Ok(record.is_some_and(|r| r.creator == who.subject || r.hosts.contains(&who.subject)))
    }

    /// Replaces the member's metadata; the others hear `peer-updated`.
    pub async fn update(&self, peer: &PeerId, room: &RoomId, meta: Payload) -> Result<(), CoreError> {
        // A non-member has no role to check; the directory refuses it (not in room).
        self.check_role(room, peer, "update")?;
        self.directory.update(room, peer, meta).await
    }

    /// The other members of a room `peer` is in, from the mirror.
    pub fn members(&self, peer: &PeerId, room: &RoomId) -> Result<Vec<Arc<MemberInfo>>, CoreError> {
        if !self.directory.is_member(room, peer) {
            return Err(CoreError::NotInRoom);
        }
        Ok(self.directory.members(room).into_iter().filter(|m| &m.peer != peer).collect())
    }

    /// A connection ended: leave every room it was in (as the member id it had there).
    pub async fn disconnect(&self, connection: &SessionHandle, memberships: &[(RoomId, PeerId)]) {
        for (room, member) in memberships {
            if let Err(e) = self.leave(member, room, LeftReason::Disconnected).await {
                debug!(%room, error = %e, "leave on disconnect failed; the removal is owed and retried");
            }
        }
        self.resumption.forget_incoming(connection);
        self.sessions.remove(connection);
    }

    // ---- resume (core/resume.rs) -----------------------------------------------------

    /// Tokens, members held away, hand-overs in progress.
    pub fn resumes(&self) -> &Resumes {
        self.resumption.state()
    }

    /// Claims the resumable record of `peer` with the hash of the token its client
    /// presented, for this node, storing the hash of the next token; None when the
    /// token is unknown, used or expired.
    pub async fn claim_resumable(
        &self,
        peer: &PeerId,
        token_hash: &str,
        next_token_hash: &str,
    ) -> Result<Option<bus::Claimed>, CoreError> {
        self.resumption.claim_resumable(peer, token_hash, next_token_hash).await
    }

    /// Records a resumable member's room (so any node can resume it).
    pub async fn note_resumable(&self, peer: &PeerId, token: &str, room: &RoomId) {
        self.resumption.note_resumable(peer, token, room).await;
    }

    pub async fn forget_resumable_room(&self, peer: &PeerId, room: &RoomId) {
        self.resumption.forget_resumable_room(peer, room).await;
    }

    /// The connection ended for good: its token no longer resumes it.
    pub async fn end_resumable(&self, peer: &PeerId) {
        self.resumption.end_resumable(peer).await;
    }

    /// A resumable connection dropped: its member stays in its rooms, away, for `hold`.
    pub fn go_away(&self, handle: SessionHandle, inbox: SessionInbox, memberships: Vec<(RoomId, PeerId)>, hold: Hold) {
        self.resumption.go_away(handle, inbox, memberships, hold);
    }

    /// Every away member leaves now (the node stops).
    pub async fn leave_all_away(&self) {
        self.resumption.leave_all_away().await;
    }

    /// Registers a live connection on this node that a resume on this node takes over.
    pub fn take_over_here(&self, peer: &PeerId) {
        self.resumption.take_over_here(peer);
    }

    /// A resumed connection ended: stop routing forwarded events to it.
    pub fn forget_incoming(&self, handle: &SessionHandle) {
        self.resumption.forget_incoming(handle);
    }

    /// Takes `claimed` over for the connection behind `handle` (see
    /// `Resumption::resume`); the rooms it is back in.
    pub async fn resume(
        &self,
        handle: &SessionHandle,
        claimed: bus::Claimed,
        chosen: Option<&PeerId>,
    ) -> Result<Vec<ResumedRoom>, CoreError> {
        let resumed = self.resumption.resume(handle, claimed, chosen).await?;
        if resumed.unconfirmed {
            self.health().subscription_suspect();
        }
        Ok(resumed.rooms)
    }

    /// Handles one inbound bus item. Runs on the dispatcher task, in arrival order.
    fn dispatch(self: &Arc<Self>, inbound: Inbound) {
        let bytes = match inbound {
            Inbound::Message(bytes) => bytes,
            Inbound::Resync(why) => {
                // Whatever was published while the subscription was down never arrived.
                self.bus_stats.record_gap();
                self.health().bus_fell_behind();
                warn!(why, "bus subscription had a gap: messages published meanwhile are lost; resynchronising");
                self.resync_wanted.notify_one();
                return;
            }
            Inbound::Lost(lost) => {
                self.bus_stats.record_lost(&lost);
                self.health().bus_fell_behind();
                warn!(
                    total = lost.total(),
                    signals = lost.get(EventClass::Signal),
                    broadcasts = lost.get(EventClass::Broadcast),
                    room_events = lost.get(EventClass::RoomEvent),
                    probes = lost.get(EventClass::Probe),
                    unknown = lost.get(EventClass::Unknown),
                    "node fell behind the bus (overloaded): messages lost; resynchronising"
                );
                self.resync_wanted.notify_one();
                return;
            }
        };
        for envelope in protocol::batch::envelopes(&bytes) {
            match envelope.and_then(Envelope::decode) {
                Ok(env) => self.dispatch_envelope(env),
                Err(e) => {
                    self.bus_stats.record_unreadable();
                    warn!(error = %e, "dropped an unreadable bus envelope");
                }
            }
        }
    }

    /// Handles one envelope from the bus, in arrival order.
    fn dispatch_envelope(self: &Arc<Self>, env: Envelope) {
        let Envelope { from_node, event, sent_us, traceparent, reads_batches, .. } = env;
        self.relay.note_sender(&from_node, reads_batches);
        let span = match traceparent {
            Some(parent) if telemetry::traces::sampled(&parent) => deliver_span(&from_node, &parent),
            _ => tracing::Span::none(),
        };
        let _delivering = span.enter();
        match event {
            BusEvent::Signal { room, from, to, kind, data } => {
                // The target resumed on another node, and this one forwards what still
                // arrives for it (its sender's node routed before it saw the move).
                let target = self
                    .directory
                    .active_session(&room, &to)
                    .or_else(|| self.resumption.state().forwarding_handle(&to));
                self.relay.deliver_signal(target, from_node, room, from, to, kind, data, sent_us)
            }
            BusEvent::Undeliverable { room, from, to } => self.deliver_bounce(room, from, to),
            // Probes on room channels reach every node there; only ours count here.
            BusEvent::Probe { nonce } if from_node == self.node => {
                if !self.health().probe_returned(nonce) {
                    self.directory.probe_returned(nonce);
                }
            }
            BusEvent::Probe { .. } => {}
            BusEvent::Moved { room, member, from, nonce } => {
                let here = self.directory.apply_moved(&room, &member, nonce);
                let new = member.serving_node();
                if here.fence {
                    self.tasks.spawn(self.resumption.clone().send_fence(room.clone(), member.peer.clone(), from, new));
                }
                if here.left {
                    let core = self.clone();
                    self.tasks.spawn(async move { core.directory.release_room(&room).await });
                }
            }
            BusEvent::ResumeRequest { peer, to } => self.resumption.on_resume_request(peer, to),
            BusEvent::Fence { room, peer } => self.resumption.on_fence(room, &peer, from_node),
            BusEvent::Forward { peer, events } => self.resumption.on_forward(&peer, events),
            event => {
                if self.directory.apply(&event) {
                    // Another node declared some of ours lost: write them back.
                    self.resync_wanted.notify_one();
                }
            }
        }
    }

    fn deliver_bounce(&self, room: RoomId, from: PeerId, to: PeerId) {
        if let Some(sender) = self.directory.active_session(&room, &from) {
            sender.push(Arc::new(Event::Undeliverable { room, to }));
        }
    }

    /// Bounced signals dropped because their queue was full (for metrics).
    pub fn dropped_bounces(&self) -> u64 {
        self.relay.dropped_bounces()
    }

    /// Member removals Redis has not confirmed yet (for metrics).
    pub fn owed_removals(&self) -> usize {
        self.directory.owed_removals()
    }
}

/// The span of a delivery on this node of what another node published, in the
/// publisher's trace.
fn deliver_span(from_node: &NodeId, traceparent: &str) -> tracing::Span {
    let span = tracing::info_span!(
        target: telemetry::traces::TARGET,
        parent: None,
        "deliver",
        otel.kind = "consumer",
        from_node = %from_node,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
    );
    telemetry::traces::continue_from(&span, traceparent);
    telemetry::traces::record_ids(&span);
    span
}

/// A bus envelope from `node`, stamped with the time it is sent.
fn envelope(node: &NodeId, event: BusEvent) -> Bytes {
    Bytes::from(Envelope::new(node.clone(), event).sent_at(now_us()).encode())
}

/// Now, in Unix milliseconds (a created room's expiry is kept in these).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Now, in microseconds since the Unix epoch (bus envelopes are stamped with it).
pub fn now_us() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}
