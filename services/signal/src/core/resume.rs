//! Resume on any node (docs/architecture.md, "Resume").
//!
//! ```text
//!  old node A (member away)         Redis                       new node B (client back)
//!                                                 ◀── claim resumable record (token, once)
//!  ◀── resume-request{peer, B} on A's inbox ───────────────────
//!  forward what is held, in order ──────────▶ forward{peer, events} on B's inbox
//!                                   MOVE per room: record names B,
//!                                   PUBLISH moved{nonce} ─────▶ every node with members
//!  sees moved: stops serving it in the room,                    there routes to B from here
//!  queues "room handed over" ───────────────▶ (forwarded)
//!  each node with members there: fence ──▶ A (after its in-flight publishes) ──▶ B
//! ```
//! B writes `resumed`, then everything A forwarded, then what reached B directly once
//! every room is handed over and every fence is in (see [`super::hold`]). A member
//! whose client does not come back within the grace leaves (reason disconnected) on A,
//! unless a claim got there first: the resumable record decides, once.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bus::{Backend, Claimed};
use protocol::{BusEvent, Held, LeftReason, MemberInfo, NodeId, PeerId, RoomId};
use sha2::{Digest, Sha256};
use tracing::{debug, info, warn};

use super::directory::RoomDirectory;
use super::events::{Event, Frames, HandOverMark};
use super::relay::Relay;
use super::rules::token_hash;
use super::sessions::Sessions;
use super::sessions::{SessionHandle, SessionInbox};
use super::tasks::Tasks;
use super::{envelope, CoreError};
use crate::metrics::NodeMetrics;

/// How long a resumed member's direct events wait for fences before they are written
/// anyway (a node that had members in the room died, or runs an older version).
pub const FENCE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long an old node forwards after a member resumed elsewhere: signals that nodes
/// routed before they saw the move still arrive meanwhile.
pub const FORWARD_WINDOW: Duration = Duration::from_secs(10);

/// Most events in one forward.
const FORWARD_BATCH: usize = 64;

/// How a registration's connection id starts (no node id contains a colon).
const REGISTRATION_PREFIX: &str = "r:";

/// Length of a token's secret part (base64url of 32 bytes).
const SECRET_CHARS: usize = 43;

/// A room a resumed member is back in.
#[derive(Debug)]
pub struct ResumedRoom {
    pub room: RoomId,
    /// Its own record there (a dialect reads the state it kept in the metadata).
    pub me: Arc<MemberInfo>,
    /// The room's other members.
    pub others: Vec<Arc<MemberInfo>>,
}

/// A member whose connection dropped: the handle its rooms still push to, and the
/// queue behind it.
struct Away {
    handle: SessionHandle,
    memberships: Vec<(RoomId, PeerId)>,
    /// Taken when forwarding starts.
    inbox: Option<SessionInbox>,
    forwarding: bool,
}

/// How long a member whose connection ended is held, away, for its client to resume
/// it (docs/protocol.md, "Closing").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// RESUME_GRACE_MS: the connection was lost, the node closed it, or the client
    /// moves (close code 4000 `moving`, or any other 4000-4999 code).
    Grace,
    /// RELOAD_GRACE_MS: the client's page is unloading and may be back at once (close
    /// code 4001 `reloading`): a reload resumes, a closed tab leaves within this hold.
    Reload,
}

/// The node's part of resume: tokens, members held away, and hand-overs in progress.
///
/// Lock order: `away` before `incoming` before the session registry's lock before
/// `takeovers` (`go_away` and `on_resume_request` nest them so). Every lock is a `std` mutex held for a few map operations, never
/// across an `.await`.
pub struct Resumes {
    grace: Duration,
    /// RELOAD_GRACE_MS (at most the grace).
    reload_grace: Duration,
    /// Keys the tokens this node issues (a token is a digest of it, the peer and a nonce).
    secret: [u8; 32],
    away: Mutex<HashMap<PeerId, Away>>,
    /// Live connections that a resume (on this node or another) is taking over, by peer:
    /// the node it resumed on.
    takeovers: Mutex<HashMap<PeerId, NodeId>>,
    /// Members resumed here whose hold is not open yet, by peer.
    incoming: Mutex<HashMap<PeerId, SessionHandle>>,
    /// Told when the last away member is gone (a draining node waits for it).
    all_gone: tokio::sync::Notify,
}

impl Resumes {
    pub fn new(grace: Duration, reload_grace: Duration) -> Self {
        Self {
            grace,
            reload_grace: reload_grace.min(grace),
            secret: rand::random(),
            away: Mutex::default(),
            takeovers: Mutex::default(),
            incoming: Mutex::default(),
            all_gone: tokio::sync::Notify::new(),
        }
    }

    /// Waits until no member is held away here (each resumed elsewhere and was handed
    /// over, or its grace ran out).
    pub async fn until_none_away(&self) {
        loop {
            let gone = self.all_gone.notified();
            if self.away_count() == 0 {
                return;
            }
            gone.await;
        }
    }

    /// Removes the away entry of the connection `handle` fed (not a later one of the
    /// same peer), and tells a waiting drain when it was the last.
    fn take_away(&self, handle: &SessionHandle) -> Option<Away> {
        let mut away = self.away.lock().expect("away lock");
        if !away.get(&handle.peer).is_some_and(|a| a.handle.same_connection(handle)) {
            return None;
        }
        let entry = away.remove(&handle.peer);
        if away.is_empty() {
            self.all_gone.notify_waiters();
        }
        entry
    }

    /// Whether connections may resume (RESUME_GRACE_MS > 0).
    pub fn enabled(&self) -> bool {
        !self.grace.is_zero()
    }

    /// The token that resumes `peer`: `<peer>.<43 characters>`, unguessable without
    /// this node's secret; `nonce` makes each one new.
    pub fn token(&self, peer: &PeerId, nonce: u32) -> String {
        let mut digest = Sha256::new();
        digest.update(self.secret);
        digest.update(peer.as_str().as_bytes());
        digest.update(nonce.to_le_bytes());
        let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.finalize());
        format!("{peer}.{secret}")
    }

    /// The connection id and resume token of a registration under a member id its
    /// client chose (the plain dialect, whose clients never see a token): derived from
    /// what the client presents again when it registers anew, so that any node computes
    /// the same. Whoever can register as that member again (with the room's token, as
    /// the same verified subject) can resume it; the session only allows it when one
    /// of the two is present. The id depends on the proof too: a registration with
    /// another token (refused by the room) gets another id, so its resumable record
    /// can never overwrite the member's.
    pub fn of_registration(
        room: &RoomId,
        member: &PeerId,
        room_token: Option<&str>,
        subject: Option<&str>,
    ) -> (PeerId, String) {
        let digest = |parts: &[&str]| {
            let mut digest = Sha256::new();
            for part in parts {
                digest.update((part.len() as u64).to_le_bytes());
                digest.update(part.as_bytes());
            }
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.finalize())
        };
        let proof = [room.as_str(), member.as_str(), room_token.unwrap_or(""), subject.unwrap_or("")];
        let id = digest(&[&["registration"][..], &proof].concat());
        let peer = PeerId::parse(&format!("{REGISTRATION_PREFIX}{}", &id[..22])).expect("base64url is a valid peer id");
        let secret = digest(&[&["registration-resume"][..], &proof].concat());
        let token = format!("{peer}.{secret}");
        (peer, token)
    }

    /// Whether `peer` is a registration's connection id (see [`Self::of_registration`]):
    /// only a registration resumes it, as its member id in the room is another.
    pub fn is_registration(peer: &PeerId) -> bool {
        peer.as_str().starts_with(REGISTRATION_PREFIX)
    }

    /// The peer a token names, if it is shaped as one.
    pub fn peer_of(token: &str) -> Option<PeerId> {
        let (peer, secret) = token.rsplit_once('.')?;
        let shaped =
            secret.len() == SECRET_CHARS && secret.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        shaped.then(|| PeerId::parse(peer).ok()).flatten()
    }

    /// The queue of an away member that resumed elsewhere and is being forwarded.
    pub fn forwarding_handle(&self, peer: &PeerId) -> Option<SessionHandle> {
        self.away.lock().expect("away lock").get(peer).filter(|a| a.forwarding).map(|a| a.handle.clone())
    }

    /// Whether a resume took over the live connection of `peer`.
    pub fn taken_over(&self, peer: &PeerId) -> bool {
        self.takeovers.lock().expect("takeovers lock").contains_key(peer)
    }

    /// Connections held away here.
    pub fn away_count(&self) -> usize {
        self.away.lock().expect("away lock").len()
    }

    /// How long a member is held for `hold`.
    fn hold_for(&self, hold: Hold) -> Duration {
        match hold {
            Hold::Grace => self.grace,
            Hold::Reload => self.reload_grace,
        }
    }
}

/// The resume part: the state above, and what the node does with it. It reaches the
/// sessions (to find or cut a live connection), the room directory (to move a member's
/// rooms here, or leave them after the hold) and the relay (to fence), each through its
/// methods.
///
/// The core builds it from its parts' handles (the fields are the core's to set).
pub struct Resumption {
    pub(super) node: NodeId,
    pub(super) store: Arc<dyn Backend>,
    pub(super) metrics: Arc<NodeMetrics>,
    pub(super) state: Resumes,
    pub(super) sessions: Arc<Sessions>,
    pub(super) directory: Arc<RoomDirectory>,
    pub(super) relay: Arc<Relay>,
    pub(super) tasks: Arc<Tasks>,
}

/// What a resume brought back.
pub struct Resumed {
    pub rooms: Vec<ResumedRoom>,
    /// A room's move was never confirmed by its channel (the subscription may be dead).
    pub unconfirmed: bool,
}

impl Resumption {
    /// Tokens, members held away, hand-overs in progress.
    pub fn state(&self) -> &Resumes {
        &self.state
    }

    /// A member held away whose client did not come back leaves its room.
    async fn leave(&self, room: &RoomId, member: &PeerId) -> Result<(), CoreError> {
        self.metrics.left(LeftReason::Disconnected);
        self.directory.leave(room, member, LeftReason::Disconnected).await
    }

    /// Claims the resumable record of `peer` with the hash of the token its client
    /// presented, for this node, storing the hash of the next token; None when the
    /// token is unknown, used or expired.
    pub async fn claim_resumable(
        &self,
        peer: &PeerId,
        token_hash: &str,
        next_token_hash: &str,
    ) -> Result<Option<Claimed>, CoreError> {
        Ok(self.store.claim_resumable(peer, token_hash, next_token_hash, &self.node).await?)
    }

    /// Records a resumable member's room (so any node can resume it).
    pub async fn note_resumable(&self, peer: &PeerId, token: &str, room: &RoomId) {
        if let Err(e) = self.store.note_resumable(peer, &token_hash(token), &self.node, room).await {
            warn!(%room, error = %e, "could not record the connection as resumable; a resume will fail");
        }
    }

    pub async fn forget_resumable_room(&self, peer: &PeerId, room: &RoomId) {
        if let Err(e) = self.store.forget_resumable_room(peer, room).await {
            debug!(%room, error = %e, "could not update the resumable record");
        }
    }

    /// The connection ended for good: its token no longer resumes it.
    pub async fn end_resumable(&self, peer: &PeerId) {
        if let Err(e) = self.store.end_resumable(peer, &self.node).await {
            debug!(error = %e, "could not delete the resumable record; it expires by itself");
        }
    }

    /// A resumable connection dropped: its member stays in its rooms, away, and what
    /// arrives for it is held in its queue for the grace (or forwarded at once, if a
    /// resume elsewhere took it over).
    pub fn go_away(
        self: &Arc<Self>,
        handle: SessionHandle,
        inbox: SessionInbox,
        memberships: Vec<(RoomId, PeerId)>,
        hold: Hold,
    ) {
        let peer = handle.peer.clone();
        let held = handle.clone();
        // A queue that overflowed before (the connection was taken over) is not watched.
        let watch_overflow = !inbox.is_too_slow();
        {
            let mut away = self.state.away.lock().expect("away lock");
            self.sessions.remove(&handle);
            let entry = Away { handle, memberships, inbox: Some(inbox), forwarding: false };
            away.insert(peer.clone(), entry);
            let taken_over = self.state.takeovers.lock().expect("takeovers lock").remove(&peer);
            if let Some(to) = taken_over {
                self.start_forwarding(&mut away, &peer, to);
            }
        }
        self.count_away();
        debug!(%peer, ?hold, "connection ended; held away for its resume");
        let hold = self.state.hold_for(hold);
        self.tasks.spawn(self.clone().expire_after_grace(held, hold, watch_overflow));
    }

    /// Leaves the rooms of an away member whose client did not come back in time,
    /// unless a resume elsewhere claimed it first (the resumable record decides).
    async fn expire_after_grace(self: Arc<Self>, held: SessionHandle, hold: Duration, watch_overflow: bool) {
        let peer = held.peer.clone();
        let overflowed = if watch_overflow {
            tokio::select! {
                _ = tokio::time::sleep(hold) => false,
                _ = held.overflowed() => true,
            }
        } else {
            tokio::time::sleep(hold).await;
            false
        };
        if !self.still_waiting(&held) {
            return;
        }
        // Retried while Redis does not answer: leaving while a claim may still land
        // would announce a member that is about to be live elsewhere.
        let deadline = Instant::now() + self.state.grace;
        let ours = loop {
            match self.store.end_resumable(&peer, &self.node).await {
                Ok(ours) => break ours,
                Err(e) if Instant::now() < deadline => {
                    debug!(error = %e, "could not settle an away member's record; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(_) => break true,
            }
        };
        if !ours {
            // Claimed by a resume elsewhere: its request is on its way. Should it never
            // come (that node died), the member's remaining rooms here are left later.
            tokio::time::sleep(self.state.grace).await;
            if !self.still_waiting(&held) {
                return;
            }
        }
        if overflowed {
            self.metrics.resume.overflowed.inc();
        } else {
            self.metrics.resume.expired.inc();
        }
        self.leave_away(&held).await;
    }

    fn count_away(&self) {
        self.metrics.resume.away.set(self.state.away_count() as i64);
    }

    /// Whether the connection `held` fed is still away here, not resumed.
    fn still_waiting(&self, held: &SessionHandle) -> bool {
        self.state
            .away
            .lock()
            .expect("away lock")
            .get(&held.peer)
            .is_some_and(|a| !a.forwarding && a.handle.same_connection(held))
    }

    /// Leaves the rooms an away member is still served in here (others hear
    /// `peer-left`, reason disconnected).
    async fn leave_away(&self, held: &SessionHandle) {
        let Some(entry) = self.state.take_away(held) else { return };
        self.count_away();
        for (room, member) in &entry.memberships {
            if self.directory.active_session(room, member).is_some_and(|s| s.same_connection(&entry.handle)) {
                if let Err(e) = self.leave(room, member).await {
                    debug!(%room, error = %e, "leave after the grace failed; the removal is owed and retried");
                }
            }
        }
    }

    /// Every away member leaves now (the node stops; a client that comes back later
    /// joins afresh).
    pub async fn leave_all_away(&self) {
        let held: Vec<SessionHandle> =
            self.state.away.lock().expect("away lock").values().map(|a| a.handle.clone()).collect();
        for handle in held {
            if self.still_waiting(&handle) {
                let _ = self.store.end_resumable(&handle.peer, &self.node).await;
            }
            self.leave_away(&handle).await;
        }
    }

    /// A client resumed `peer` on `to`: forward what is held, take over a connection
    /// still open here, or tell `to` that nothing is held here.
    pub(super) fn on_resume_request(self: &Arc<Self>, peer: PeerId, to: NodeId) {
        let mut away = self.state.away.lock().expect("away lock");
        if away.contains_key(&peer) {
            return self.start_forwarding(&mut away, &peer, to);
        }
        let incoming = self.state.incoming.lock().expect("incoming lock").get(&peer).cloned();
        let live = self.sessions.get(&peer).filter(|h| incoming.as_ref().is_none_or(|i| !h.same_connection(i)));
        let mut takeovers = self.state.takeovers.lock().expect("takeovers lock");
        if let Some(live) = live {
            // Its client reconnected before this node saw the old connection drop.
            takeovers.insert(peer, to);
            live.cut_off();
            return;
        }
        if takeovers.contains_key(&peer) {
            return;
        }
        drop((takeovers, away));
        let unknown = envelope(&self.node, BusEvent::Forward { peer, events: vec![Held::Unknown] });
        let core = self.clone();
        self.tasks.spawn(async move {
            if let Err(e) = core.store.publish_node(&to, unknown).await {
                debug!(error = %e, "could not tell a resuming node that nothing is held here");
            }
        });
    }

    /// Registers a live connection on this node that a resume on this node takes over.
    pub fn take_over_here(&self, peer: &PeerId) {
        if let Some(live) = self.sessions.get(peer) {
            self.state.takeovers.lock().expect("takeovers lock").insert(peer.clone(), self.node.clone());
            live.cut_off();
        }
    }

    fn start_forwarding(self: &Arc<Self>, away: &mut HashMap<PeerId, Away>, peer: &PeerId, to: NodeId) {
        let Some(entry) = away.get_mut(peer).filter(|e| !e.forwarding) else { return };
        entry.forwarding = true;
        let Some(inbox) = entry.inbox.take() else { return };
        info!(%peer, %to, "member resumed elsewhere; forwarding what is held for it");
        let rooms = entry.memberships.len();
        self.tasks.spawn(self.clone().forward(entry.handle.clone(), to, inbox, rooms));
    }

    /// Forwards an away member's queue to the node it resumed on, in order, until
    /// [`FENCE_TIMEOUT`] after it saw the member move out of all its `rooms` here (the
    /// other nodes' fences pass meanwhile; the new node stops waiting for them then), at
    /// most [`FORWARD_WINDOW`]; then forgets the member here.
    async fn forward(self: Arc<Self>, away: SessionHandle, to: NodeId, inbox: SessionInbox, rooms: usize) {
        let peer = away.peer.clone();
        let mut until = tokio::time::Instant::now() + FORWARD_WINDOW;
        let mut handed_over = 0;
        loop {
            let first = tokio::select! {
                event = inbox.recv() => event,
                _ = tokio::time::sleep_until(until) => break,
            };
            let mut events = vec![held(&first)];
            while events.len() < FORWARD_BATCH {
                let Some(event) = inbox.try_pop() else { break };
                events.push(held(&event));
            }
            handed_over += events.iter().filter(|e| matches!(e, Held::RoomHandedOver { .. })).count();
            if handed_over >= rooms {
                until = until.min(tokio::time::Instant::now() + FENCE_TIMEOUT);
            }
            let count = events.len() as u64;
            let msg = envelope(&self.node, BusEvent::Forward { peer: peer.clone(), events });
            match self.publish_with_retries(&to, msg).await {
                Some(0) => {
                    warn!(%peer, %to, "the node the member resumed on is gone; stopped forwarding");
                    self.metrics.resume.forward_lost.inc_by(count);
                    break;
                }
                Some(_) => self.metrics.resume.forwarded.inc_by(count),
                None => self.metrics.resume.forward_lost.inc_by(count),
            }
        }
        let Some(entry) = self.state.take_away(&away) else { return };
        self.count_away();
        // Rooms it never moved out of here (it was gone from them in Redis): forget it.
        for (room, member) in &entry.memberships {
            if self.directory.active_session(room, member).is_some_and(|s| s.same_connection(&entry.handle)) {
                self.directory.forget_local(room, member).await;
            }
        }
    }

    async fn publish_with_retries(&self, to: &NodeId, msg: bytes::Bytes) -> Option<u64> {
        for attempt in 0..3u32 {
            match self.store.publish_node(to, msg.clone()).await {
                Ok(n) => return Some(n),
                Err(e) => {
                    debug!(error = %e, attempt, "forwarding failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
                }
            }
        }
        None
    }

    /// What the old node forwarded for a member resumed here.
    pub(super) fn on_forward(&self, peer: &PeerId, events: Vec<Held>) {
        let Some(handle) = self.state.incoming.lock().expect("incoming lock").get(peer).cloned() else {
            self.metrics.resume.forward_lost.inc_by(events.len() as u64);
            return debug!(%peer, "forwarded events for a member not resuming here; dropped");
        };
        let Some(hold) = handle.hold() else { return };
        for event in events {
            match event {
                Held::Fence { room, node } => hold.fence_seen(room, node),
                Held::RoomHandedOver { room } => hold.room_handed_over(&room),
                Held::Unknown => hold.no_hand_over(),
                other => {
                    if let Some(event) = event_of(other) {
                        handle.push_forwarded(Arc::new(event));
                    }
                }
            }
        }
        self.forget_incoming_if_open(&handle);
    }

    /// A node's fence for a moved member: the old node passes it on in order with what
    /// it holds; the new node (when the old one is gone) counts it.
    pub(super) fn on_fence(&self, room: RoomId, peer: &PeerId, from: NodeId) {
        if let Some(entry) = self.state.away.lock().expect("away lock").get(peer) {
            entry.handle.push(Arc::new(Event::HandOver { room, mark: HandOverMark::Fence(from) }));
            return;
        }
        let handle = self.state.incoming.lock().expect("incoming lock").get(peer).cloned();
        if let Some(handle) = handle {
            if let Some(hold) = handle.hold() {
                hold.fence_seen(room, from);
            }
            self.forget_incoming_if_open(&handle);
        }
    }

    fn forget_incoming_if_open(&self, handle: &SessionHandle) {
        if handle.hold().is_some_and(|h| h.is_open()) {
            let mut incoming = self.state.incoming.lock().expect("incoming lock");
            if incoming.get(&handle.peer).is_some_and(|h| h.same_connection(handle)) {
                incoming.remove(&handle.peer);
            }
        }
    }

    /// A resumed connection ended: stop routing forwarded events to it.
    pub fn forget_incoming(&self, handle: &SessionHandle) {
        let mut incoming = self.state.incoming.lock().expect("incoming lock");
        if incoming.get(&handle.peer).is_some_and(|h| h.same_connection(handle)) {
            incoming.remove(&handle.peer);
        }
    }

    /// After this node applied a member's `moved`: once the signals this node routed
    /// through the member's old node are all published, send that node a fence (or the
    /// new node, if the old one is gone).
    pub(super) async fn send_fence(self: Arc<Self>, room: RoomId, peer: PeerId, old: NodeId, new: NodeId) {
        self.relay.fence().await;
        let fence = envelope(&self.node, BusEvent::Fence { room, peer });
        match self.store.publish_node(&old, fence.clone()).await {
            Ok(n) if n > 0 => {}
            _ => {
                if let Err(e) = self.store.publish_node(&new, fence).await {
                    debug!(error = %e, "could not send a fence; the resumed member's node opens after its timeout");
                }
            }
        }
    }

    /// Takes `claimed` over for the connection behind `handle` (already renamed to the
    /// resumed peer, with a hold): asks the old node to hand over, and moves every room
    /// here. `chosen` is its member id in its rooms when its client chose one (a plain
    /// registration); otherwise its peer id is. Returns the rooms it is back in.
    pub async fn resume(
        self: &Arc<Self>,
        handle: &SessionHandle,
        claimed: Claimed,
        chosen: Option<&PeerId>,
    ) -> Result<Resumed, CoreError> {
        let peer = handle.peer.clone();
        let hold = handle.hold().cloned().ok_or(CoreError::Internal("a resumed session without a hold"))?;
        self.state.incoming.lock().expect("incoming lock").insert(peer.clone(), handle.clone());
        let request = envelope(&self.node, BusEvent::ResumeRequest { peer: peer.clone(), to: self.node.clone() });
        // The claim is made: from here the client gets `resumed` (with the rooms that
        // could be moved, and a token to try again), never an error that would leave
        // it without its next token.
        let old_alive = match self.store.publish_node(&claimed.node, request).await {
            Ok(reached) => reached > 0,
            Err(e) => {
                warn!(error = %e, "could not ask the old node to hand over; resuming without it");
                false
            }
        };
        if !old_alive {
            hold.no_hand_over();
        }
        let mut back = Vec::new();
        let mut unconfirmed = false;
        for room in claimed.rooms {
            let moved = self.directory.move_here(&room, handle, chosen.unwrap_or(&peer)).await;
            unconfirmed |= matches!(moved, Err(CoreError::JoinTimeout));
            match moved {
                Ok(Some((me, others))) => {
                    let nodes: HashSet<NodeId> =
                        others.iter().map(|m| m.serving_node()).filter(|n| old_alive || *n != claimed.node).collect();
                    hold.expect_fences(&room, nodes);
                    back.push(ResumedRoom { room, me, others });
                }
                Ok(None) => hold.room_gone(&room),
                Err(e) => {
                    warn!(%room, error = %e, "could not move a resumed member's room here");
                    hold.room_gone(&room);
                }
            }
        }
        let core = self.clone();
        let waiting = handle.clone();
        self.tasks.spawn(async move {
            tokio::time::sleep(FENCE_TIMEOUT).await;
            if let Some(hold) = waiting.hold() {
                if hold.force_open() {
                    core.metrics.resume.fence_timeouts.inc();
                    debug!(peer = %waiting.peer, "a resumed member's fences did not all arrive; opened anyway");
                }
            }
            core.forget_incoming(&waiting);
        });
        Ok(Resumed { rooms: back, unconfirmed })
    }
}

/// An event as it is forwarded between nodes.
fn held(event: &Event) -> Held {
    let member = |m: &Arc<MemberInfo>| (**m).clone();
    match event {
        Event::Signal { room, from, kind, data } => {
            Held::Signal { room: room.clone(), from: from.clone(), kind: kind.clone(), data: data.clone() }
        }
        Event::Broadcast { room, from, kind, data, .. } => {
            Held::Broadcast { room: room.clone(), from: from.clone(), kind: kind.clone(), data: data.clone() }
        }
        Event::PeerJoined { room, member: m, .. } => Held::Joined { room: room.clone(), member: member(m) },
        Event::PeerLeft { room, peer, reason, member: m, .. } => {
            Held::Left { room: room.clone(), peer: peer.clone(), reason: *reason, member: m.as_ref().map(member) }
        }
        Event::PeerUpdated { room, member: m, .. } => Held::Updated { room: room.clone(), member: member(m) },
        Event::RoomClosed { room, reason, members } => {
            Held::Closed { room: room.clone(), reason: *reason, members: members.iter().map(member).collect() }
        }
        Event::Undeliverable { room, to } => Held::Undeliverable { room: room.clone(), to: to.clone() },
        Event::HandOver { room, mark: HandOverMark::RoomDone } => Held::RoomHandedOver { room: room.clone() },
        Event::HandOver { room, mark: HandOverMark::Fence(node) } => {
            Held::Fence { room: room.clone(), node: node.clone() }
        }
    }
}

/// A forwarded event as the resumed member's session takes it; None for the marks,
/// which the hold takes.
fn event_of(held: Held) -> Option<Event> {
    Some(match held {
        Held::Signal { room, from, kind, data } => Event::Signal { room, from, kind, data },
        Held::Broadcast { room, from, kind, data } => {
            Event::Broadcast { room, from, kind, data, frames: Frames::default() }
        }
        Held::Joined { room, member } => {
            Event::PeerJoined { room, member: Arc::new(member), frames: Frames::default() }
        }
        Held::Left { room, peer, reason, member } => {
            Event::PeerLeft { room, peer, reason, member: member.map(Arc::new), frames: Frames::default() }
        }
        Held::Updated { room, member } => {
            Event::PeerUpdated { room, member: Arc::new(member), frames: Frames::default() }
        }
        Held::Closed { room, reason, members } => {
            Event::RoomClosed { room, reason, members: members.into_iter().map(Arc::new).collect() }
        }
        Held::Undeliverable { room, to } => Event::Undeliverable { room, to },
        Held::Fence { .. } | Held::RoomHandedOver { .. } | Held::Unknown => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_names_its_peer_and_changes_with_the_nonce() {
        let resumes = Resumes::new(Duration::from_secs(15), Duration::ZERO);
        let peer = PeerId::parse("n1.abcdefgh").unwrap();
        let token = resumes.token(&peer, 1);
        assert_eq!(Resumes::peer_of(&token), Some(peer.clone()));
        assert_ne!(token, resumes.token(&peer, 2));
        assert_ne!(
            token,
            Resumes::new(Duration::from_secs(15), Duration::ZERO).token(&peer, 1),
            "another node, another secret"
        );
        assert_eq!(Resumes::peer_of("n1.abcdefgh.short"), None);
        assert_eq!(Resumes::peer_of("no-dot"), None);
    }

    #[test]
    fn a_registration_gives_every_node_the_same_id_and_a_token_bound_to_its_proof() {
        let room = RoomId::parse("standup").unwrap();
        let member = PeerId::parse("Worker-1").unwrap();
        let (peer, token) = Resumes::of_registration(&room, &member, Some("tok"), None);
        assert_eq!((peer.clone(), token.clone()), Resumes::of_registration(&room, &member, Some("tok"), None));
        assert!(Resumes::is_registration(&peer) && !Resumes::is_registration(&PeerId::parse("n1.abc").unwrap()));
        assert_eq!(Resumes::peer_of(&token), Some(peer.clone()), "shaped as any token");
        let other_token = Resumes::of_registration(&room, &member, Some("tik"), None);
        let other_subject = Resumes::of_registration(&room, &member, Some("tok"), Some("alice"));
        let other_member = Resumes::of_registration(&room, &PeerId::parse("Worker-2").unwrap(), Some("tok"), None);
        assert_ne!(other_token, (peer.clone(), token.clone()), "the id and token need the room token");
        assert_ne!(other_subject, (peer.clone(), token.clone()), "and the same subject");
        assert_ne!(other_member.0, peer);
    }

    #[test]
    fn a_reload_hold_is_short_and_never_longer_than_the_grace() {
        let resumes = Resumes::new(Duration::from_secs(15), Duration::from_millis(500));
        assert_eq!(resumes.hold_for(Hold::Reload), Duration::from_millis(500));
        assert_eq!(resumes.hold_for(Hold::Grace), Duration::from_secs(15));
        let short = Resumes::new(Duration::from_millis(200), Duration::from_millis(500));
        assert_eq!(short.hold_for(Hold::Reload), Duration::from_millis(200));
    }
}
