//! The Redis backend (fred): standalone, Sentinel or Cluster, chosen by the URL scheme
//! (`redis://`, `redis-sentinel://`, `redis-cluster://`, and `rediss` variants).
//!
//! Two clients: one for commands and publishes (a single multiplexed connection per
//! server, so publishes from one sender leave in order) and one subscriber. On Cluster,
//! channels are shard channels (SSUBSCRIBE/SPUBLISH): a classic PUBLISH would be copied
//! to every Cluster node.

use std::future::Future;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use fred::clients::SubscriberClient;
use fred::prelude::*;
use fred::types::config::{ReconnectPolicy, ServerConfig};
use fred::types::{Expiration, MultipleKeys, MultipleValues, SetOptions};
use protocol::{EventClass, NodeId, PeerId, RoomId};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{
    keys, scripts, scripts::Script, Backend, BackendError, Claimed, DeadNode, Heartbeat, Inbound, JoinOutcome,
    JoinPolicy, LostMessages, MemberWrite, Membership, MoveOutcome, Operation, PubSub, Registry, ResumeStore,
    RoomRecord, StoreObserver, EXPIRED_ROOM_MEMORY_MS, RESUMABLE_TTL_MS,
};

/// Connection tuning. Defaults suit a node; tests shorten nothing here.
#[derive(Clone)]
pub struct RedisOptions {
    /// A command that takes longer fails with `unavailable` instead of hanging.
    pub command_timeout: Duration,
    pub connect_timeout: Duration,
    /// Messages held for the node while its dispatcher is busy (the node's inbox).
    /// Beyond it messages are dropped, counted by class, and the node resynchronises.
    /// fred's own buffer in front of it gets the same size, at least
    /// [`MIN_FRED_BUFFER`].
    pub subscriber_buffer: usize,
    /// Told of every operation's latency and outcome (the node's metrics); None: not
    /// measured.
    pub observer: Option<Arc<dyn StoreObserver>>,
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            command_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(2),
            subscriber_buffer: 8 * 1024,
            observer: None,
        }
    }
}

/// The least fred may buffer between its reader and the forwarder. What fred drops is
/// gone before anyone can tell what it was, so its buffer must absorb the moments the
/// forwarder is not scheduled; the node's own inbox (sized by `subscriber_buffer`) is
/// where an overloaded node drops, and counts, messages.
const MIN_FRED_BUFFER: usize = 16 * 1024;

/// Broadcast capacity of the command client (fred's default).
const COMMAND_CLIENT_BROADCAST: usize = 32;

pub struct RedisBackend {
    client: Client,
    subscriber: SubscriberClient,
    sharded: bool,
    inbox_rx: StdMutex<Option<mpsc::Receiver<Inbound>>>,
    stop: CancellationToken,
    observer: Option<Arc<dyn StoreObserver>>,
}

/// fred's failure as the store's: its text, with fred's error kept as the source.
fn unavailable(e: fred::error::Error) -> BackendError {
    BackendError::Unavailable(Arc::new(e))
}

impl RedisBackend {
    async fn run_leave(
        &self,
        room: &RoomId,
        peer: &PeerId,
        announcement: Bytes,
        expected: Option<Bytes>,
    ) -> Result<bool, BackendError> {
        let keys = vec![keys::room_members(room), keys::room_meta(room)];
        let mut args: Vec<Value> = vec![
            peer.as_str().into(),
            keys::room_channel(room).into(),
            announcement.into(),
            self.publish_command().into(),
        ];
        // Its own label when conditional: the reaper's removals, apart from members' leaves.
        let script = if expected.is_some() { scripts::LEAVE_IF_UNCHANGED } else { scripts::LEAVE };
        args.extend(expected.map(Value::from));
        let removed: i64 = self.eval(script, keys, args).await?;
        Ok(removed == 1)
    }

    /// Connects both clients; fails if Redis cannot be reached now.
    pub async fn connect(url: &str, options: RedisOptions) -> Result<Self, BackendError> {
        let config = Config::from_url(url).map_err(unavailable)?;
        let sharded = matches!(config.server, ServerConfig::Clustered { .. });
        let mut builder = Builder::from_config(config);
        builder
            .with_performance_config(|p| {
                p.default_command_timeout = options.command_timeout;
                // The command client receives no messages; fred's default is plenty.
                p.broadcast_channel_capacity = COMMAND_CLIENT_BROADCAST;
            })
            .with_connection_config(|c| {
                c.connection_timeout = options.connect_timeout;
                c.internal_command_timeout = options.command_timeout;
                c.max_command_attempts = 2;
            })
            // Retry forever: a node outlives a Redis restart.
            .set_policy(ReconnectPolicy::new_exponential(0, 50, 1_000, 2));
        let client = builder.build().map_err(unavailable)?;
        // fred allocates every broadcast slot up front (several channels per client),
        // so this capacity is resident memory whether or not it is ever used.
        builder
            .with_performance_config(|p| p.broadcast_channel_capacity = options.subscriber_buffer.max(MIN_FRED_BUFFER));
        let subscriber = builder.build_subscriber_client().map_err(unavailable)?;
        client.init().await.map_err(unavailable)?;
        subscriber.init().await.map_err(unavailable)?;

        let (tx, rx) = mpsc::channel(options.subscriber_buffer);
        let stop = CancellationToken::new();
        // Detached on purpose: it ends when `stop` is cancelled (on drop) or the node's
        // inbox closes; it owns no state that needs a drain.
        tokio::spawn(forward(subscriber.clone(), sharded, tx, stop.clone()));
        Ok(Self { client, subscriber, sharded, inbox_rx: StdMutex::new(Some(rx)), stop, observer: options.observer })
    }

    fn publish_command(&self) -> &'static str {
        if self.sharded {
            "SPUBLISH"
        } else {
            "PUBLISH"
        }
    }

    /// Runs `call` as one `operation`: timed, and traced when the caller is, through
    /// the observer (if any). Every store call of this backend goes through here.
    async fn timed<T>(
        &self,
        operation: Operation,
        call: impl Future<Output = Result<T, BackendError>>,
    ) -> Result<T, BackendError> {
        let Some(observer) = &self.observer else { return call.await };
        let started = Instant::now();
        let result = match observer.span(operation) {
            Some(span) => call.instrument(span).await,
            None => call.await,
        };
        observer.observed(operation, started.elapsed(), result.is_ok());
        result
    }

    /// Evaluates a Lua script, timed under the script's own operation.
    async fn eval<R, K, V>(&self, script: Script, keys: K, args: V) -> Result<R, BackendError>
    where
        R: FromValue,
        K: Into<MultipleKeys> + Send,
        V: TryInto<MultipleValues> + Send,
        V::Error: Into<fred::error::Error> + Send,
    {
        self.timed(
            script.operation,
            async move { self.client.eval(script.source, keys, args).await.map_err(unavailable) },
        )
        .await
    }

    async fn publish(&self, operation: Operation, channel: String, msg: Bytes) -> Result<u64, BackendError> {
        self.timed(operation, async move {
            let n: i64 = if self.sharded {
                self.client.spublish(channel, msg).await
            } else {
                self.client.publish(channel, msg).await
            }
            .map_err(unavailable)?;
            Ok(n.max(0) as u64)
        })
        .await
    }

    /// Subscribes and returns only once Redis has processed the subscription.
    ///
    /// fred resolves SUBSCRIBE as soon as it is written (its confirmation arrives
    /// out of band), so a publish sent right after on the command connection could
    /// reach Redis first and miss us: under a burst of joins, whole rooms never saw
    /// their join markers. A PING on the same connection is answered only after
    /// Redis has read everything before it, so it is the barrier. SSUBSCRIBE is
    /// already confirmed by fred.
    async fn subscribe(&self, operation: Operation, channel: String) -> Result<(), BackendError> {
        self.timed(operation, async move {
            if self.sharded {
                return self.subscriber.ssubscribe(channel).await.map_err(unavailable);
            }
            self.subscriber.subscribe(channel).await.map_err(unavailable)?;
            let _: Value = self.subscriber.ping(None).await.map_err(unavailable)?;
            Ok(())
        })
        .await
    }
}

impl Drop for RedisBackend {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Moves fred's pub/sub messages into the node's inbox, and turns reconnects and
/// losses into reports for the node. It never waits for the node: when the inbox is
/// full it drops the message and counts it by class (waiting would only move the loss
/// into fred's buffer, where nobody can tell what was lost). Reports wait until the
/// inbox has room, and go ahead of the next message. Resubscribes before asking for a
/// resync, so the resync's snapshots happen after the subscription is live again.
async fn forward(subscriber: SubscriberClient, sharded: bool, tx: mpsc::Sender<Inbound>, stop: CancellationToken) {
    let mut messages = subscriber.message_rx();
    let mut reconnects = subscriber.reconnect_rx();
    let mut lost = LostMessages::default();
    let mut resync: Option<&'static str> = None;
    loop {
        let pending = resync.is_some() || !lost.is_empty();
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            permit = tx.reserve(), if pending => {
                let Ok(permit) = permit else { return };
                match resync.take() {
                    Some(why) => permit.send(Inbound::Resync(why)),
                    None => permit.send(Inbound::Lost(std::mem::take(&mut lost))),
                }
            }
            server = reconnects.recv() => match server {
                Ok(server) => {
                    // Spawned after the first connection: every event here is a reconnect.
                    if let Err(e) = resubscribe(&subscriber, sharded).await {
                        tracing::warn!(error = %e, "resubscribe failed; the node's probes retry");
                    }
                    tracing::info!(%server, "bus subscription re-established");
                    resync = Some("reconnected");
                }
                Err(RecvError::Lagged(_)) => resync = Some("reconnected"),
                Err(RecvError::Closed) => return,
            },
            msg = messages.recv() => match msg {
                Ok(msg) => {
                    let Some(bytes) = msg.value.into_bytes() else { continue };
                    if pending {
                        // Reports go first; what cannot wait behind them is lost.
                        lost.add(EventClass::of_message(&bytes), protocol::batch::len(&bytes));
                        continue;
                    }
                    match tx.try_send(Inbound::Message(bytes)) {
                        Ok(()) => {}
                        Err(TrySendError::Full(Inbound::Message(bytes))) => {
                            lost.add(EventClass::of_message(&bytes), protocol::batch::len(&bytes))
                        }
                        Err(_) => return,
                    }
                }
                // fred's own buffer overflowed: what was lost cannot be read any more.
                Err(RecvError::Lagged(n)) => lost.add(EventClass::Unknown, n),
                Err(RecvError::Closed) => return,
            },
        }
    }
}

/// Subscribes again to every channel the subscriber tracks. Not fred's
/// `resubscribe_all`: it also sends SUBSCRIBE and PSUBSCRIBE for empty lists, which a
/// cluster refuses ("wrong number of arguments"), and it gives up there, before the
/// shard channels: after a failover a node's inbox then stayed unsubscribed for good.
/// Every slot is tried even when one fails (its shard may still be failing over), and
/// the first failure is returned.
async fn resubscribe(subscriber: &SubscriberClient, sharded: bool) -> Result<(), fred::error::Error> {
    if !sharded {
        let channels: Vec<_> = subscriber.tracked_channels().into_iter().collect();
        if !channels.is_empty() {
            subscriber.subscribe(channels).await?;
        }
        return Ok(());
    }
    // SSUBSCRIBE takes the channels of one slot: one command per slot.
    let mut first_failure = None;
    for (_, channels) in fred::util::group_by_hash_slot(subscriber.tracked_shard_channels())? {
        if let Err(e) = subscriber.ssubscribe(Vec::from(channels)).await {
            first_failure.get_or_insert(e);
        }
    }
    first_failure.map_or(Ok(()), Err)
}

fn records(values: Vec<Value>) -> Vec<Bytes> {
    values.into_iter().filter_map(Value::into_bytes).collect()
}

fn opt_str(token_hash: Option<&str>) -> String {
    token_hash.unwrap_or_default().to_owned()
}

impl Backend for RedisBackend {
    fn registry(&self) -> Option<&dyn Registry> {
        Some(self)
    }
}

#[async_trait]
impl Membership for RedisBackend {
    async fn join(&self, w: MemberWrite<'_>, policy: JoinPolicy<'_>) -> Result<JoinOutcome, BackendError> {
        let keys = vec![keys::room_members(w.room), keys::room_meta(w.room)];
        let args: Vec<Value> = vec![
            w.peer.as_str().into(),
            w.record.into(),
            (policy.capacity as i64).into(),
            opt_str(policy.token_hash).into(),
            keys::room_channel(w.room).into(),
            w.announcement.into(),
            self.publish_command().into(),
            (policy.now_ms as i64).into(),
            if policy.require_registered { "1" } else { "0" }.into(),
            if policy.with_others { "1" } else { "0" }.into(),
        ];
        let reply: Vec<Value> = self.eval(scripts::JOIN, keys, args).await?;
        let mut reply = reply.into_iter();
        let status = reply.next().and_then(|v| v.as_string()).unwrap_or_default();
        match status.as_str() {
            "ok" => {
                let token = reply.next().and_then(|v| v.as_string()).filter(|t| !t.is_empty());
                let expires_ms = reply.next().and_then(|v| v.as_string()).and_then(|t| t.parse().ok());
                Ok(JoinOutcome::Joined { others: records(reply.collect()), token_hash: token, expires_ms })
            }
            "full" => Ok(JoinOutcome::Full),
            "token" => Ok(JoinOutcome::BadToken),
            "notfound" => Ok(JoinOutcome::NotFound),
            "expired" => Ok(JoinOutcome::Expired),
            "locked" => Ok(JoinOutcome::Locked),
            "taken" => Ok(JoinOutcome::Taken),
            other => Err(BackendError::Protocol(format!("join script said {other:?}"))),
        }
    }

    async fn create_room(&self, room: &RoomId, record: &RoomRecord) -> Result<bool, BackendError> {
        let keys = vec![keys::room_members(room), keys::room_meta(room)];
        let json = serde_json::to_string(record).expect("a record serialises");
        let args: Vec<Value> = vec![
            record.token_hash.as_str().into(),
            (record.expires_ms as i64).into(),
            i64::from(record.capacity.unwrap_or(0)).into(),
            json.into(),
            ((record.expires_ms + EXPIRED_ROOM_MEMORY_MS) as i64).into(),
        ];
        let created: i64 = self.eval(scripts::CREATE_ROOM, keys, args).await?;
        Ok(created == 1)
    }

    async fn room_record(&self, room: &RoomId) -> Result<Option<RoomRecord>, BackendError> {
        self.timed(Operation::RoomRecord, async move {
            let json: Option<String> = self.client.hget(keys::room_meta(room), "record").await.map_err(unavailable)?;
            json.map(|j| serde_json::from_str(&j).map_err(|e| BackendError::Protocol(format!("room record: {e}"))))
                .transpose()
        })
        .await
    }

    async fn active_rooms(&self) -> Result<Vec<RoomId>, BackendError> {
        self.timed(Operation::ActiveRooms, async move {
            let nodes: Vec<String> = self.client.smembers(keys::NODES).await.map_err(unavailable)?;
            let mut rooms = std::collections::BTreeSet::new();
            for node in nodes.iter().filter_map(|n| NodeId::parse(n).ok()) {
                rooms.extend(self.node_rooms(&node).await?);
            }
            Ok(rooms.into_iter().collect())
        })
        .await
    }

    async fn set_room_locked(&self, room: &RoomId, locked: bool) -> Result<(), BackendError> {
        self.timed(Operation::SetRoomLocked, async move {
            let meta = keys::room_meta(room);
            if locked {
                let _: i64 = self.client.hset(meta, ("locked", "1")).await.map_err(unavailable)?;
            } else {
                let _: i64 = self.client.hdel(meta, "locked").await.map_err(unavailable)?;
            }
            Ok(())
        })
        .await
    }

    async fn unregister_room(&self, room: &RoomId) -> Result<(), BackendError> {
        self.timed(Operation::UnregisterRoom, async move {
            let _: i64 = self.client.del(keys::room_meta(room)).await.map_err(unavailable)?;
            Ok(())
        })
        .await
    }

    async fn restore(&self, w: MemberWrite<'_>, token_hash: Option<&str>) -> Result<bool, BackendError> {
        let keys = vec![keys::room_members(w.room), keys::room_meta(w.room)];
        let args: Vec<Value> = vec![
            w.peer.as_str().into(),
            w.record.into(),
            opt_str(token_hash).into(),
            keys::room_channel(w.room).into(),
            w.announcement.into(),
            self.publish_command().into(),
        ];
        let written: i64 = self.eval(scripts::RESTORE, keys, args).await?;
        Ok(written == 1)
    }

    async fn move_member(&self, w: MemberWrite<'_>, expected: Bytes) -> Result<MoveOutcome, BackendError> {
        let keys = vec![keys::room_members(w.room), keys::room_meta(w.room)];
        let args: Vec<Value> = vec![
            w.peer.as_str().into(),
            w.record.into(),
            keys::room_channel(w.room).into(),
            w.announcement.into(),
            self.publish_command().into(),
            expected.into(),
        ];
        let reply: Vec<Value> = self.eval(scripts::MOVE, keys, args).await?;
        let mut reply = reply.into_iter();
        match reply.next().and_then(|v| v.as_string()).unwrap_or_default().as_str() {
            "ok" => {
                let token = reply.next().and_then(|v| v.as_string()).filter(|t| !t.is_empty());
                let expires_ms = reply.next().and_then(|v| v.as_string()).and_then(|t| t.parse().ok());
                Ok(MoveOutcome::Moved { others: records(reply.collect()), token_hash: token, expires_ms })
            }
            "gone" => Ok(MoveOutcome::Gone),
            "changed" => Ok(MoveOutcome::Changed),
            other => Err(BackendError::Protocol(format!("move script said {other:?}"))),
        }
    }

    async fn member_record(&self, room: &RoomId, peer: &PeerId) -> Result<Option<Bytes>, BackendError> {
        self.timed(Operation::MemberRecord, async move {
            let record: Option<Bytes> =
                self.client.hget(keys::room_members(room), peer.as_str()).await.map_err(unavailable)?;
            Ok(record)
        })
        .await
    }

    async fn leave(&self, room: &RoomId, peer: &PeerId, announcement: Bytes) -> Result<bool, BackendError> {
        self.run_leave(room, peer, announcement, None).await
    }

    async fn leave_if_unchanged(
        &self,
        room: &RoomId,
        peer: &PeerId,
        expected: Bytes,
        announcement: Bytes,
    ) -> Result<bool, BackendError> {
        self.run_leave(room, peer, announcement, Some(expected)).await
    }

    async fn update(&self, w: MemberWrite<'_>) -> Result<bool, BackendError> {
        let args: Vec<Value> = vec![
            w.peer.as_str().into(),
            w.record.into(),
            keys::room_channel(w.room).into(),
            w.announcement.into(),
            self.publish_command().into(),
        ];
        let updated: i64 = self.eval(scripts::UPDATE, keys::room_members(w.room), args).await?;
        Ok(updated == 1)
    }

    async fn snapshot(&self, room: &RoomId, marker: Bytes) -> Result<Vec<Bytes>, BackendError> {
        let args: Vec<Value> = vec![keys::room_channel(room).into(), marker.into(), self.publish_command().into()];
        let reply: Vec<Value> = self.eval(scripts::SNAPSHOT, keys::room_members(room), args).await?;
        Ok(records(reply))
    }

    async fn members(&self, room: &RoomId) -> Result<Vec<Bytes>, BackendError> {
        self.timed(Operation::Members, async move {
            let reply: Vec<Value> = self.client.hvals(keys::room_members(room)).await.map_err(unavailable)?;
            Ok(records(reply))
        })
        .await
    }
}

#[async_trait]
impl PubSub for RedisBackend {
    fn take_inbox(&self) -> Option<mpsc::Receiver<Inbound>> {
        self.inbox_rx.lock().expect("inbox lock").take()
    }

    async fn ping(&self) -> Result<(), BackendError> {
        self.timed(Operation::Ping, async move {
            let _: String = self.client.ping(None).await.map_err(unavailable)?;
            Ok(())
        })
        .await
    }

    async fn publish_node(&self, node: &NodeId, msg: Bytes) -> Result<u64, BackendError> {
        self.publish(Operation::PublishNode, keys::node_channel(node), msg).await
    }

    async fn publish_room(&self, room: &RoomId, msg: Bytes) -> Result<u64, BackendError> {
        self.publish(Operation::PublishRoom, keys::room_channel(room), msg).await
    }

    async fn subscribe_node(&self, node: &NodeId) -> Result<(), BackendError> {
        self.subscribe(Operation::SubscribeNode, keys::node_channel(node)).await
    }

    async fn resubscribe(&self) -> Result<(), BackendError> {
        self.timed(
            Operation::Resubscribe,
            async move { self.subscriber.force_reconnection().await.map_err(unavailable) },
        )
        .await
    }

    async fn subscribe_room(&self, room: &RoomId) -> Result<(), BackendError> {
        self.subscribe(Operation::SubscribeRoom, keys::room_channel(room)).await
    }

    async fn unsubscribe_room(&self, room: &RoomId) -> Result<(), BackendError> {
        self.timed(Operation::UnsubscribeRoom, async move {
            let channel = keys::room_channel(room);
            if self.sharded {
                self.subscriber.sunsubscribe(channel).await
            } else {
                self.subscriber.unsubscribe(channel).await
            }
            .map_err(unavailable)
        })
        .await
    }
}

#[async_trait]
impl Registry for RedisBackend {
    async fn heartbeat(&self, node: &NodeId, ttl_ms: u64) -> Result<Heartbeat, BackendError> {
        self.timed(Operation::Heartbeat, async move {
            let previous: Option<String> = self
                .client
                .set(keys::node_alive(node), "1", Some(Expiration::PX(ttl_ms as i64)), None, true)
                .await
                .map_err(unavailable)?;
            let _: Option<String> = self
                .client
                .set(keys::node_seen(node), "1", Some(Expiration::PX(keys::NODE_SEEN_TTL_MS as i64)), None, false)
                .await
                .map_err(unavailable)?;
            let _: i64 = self.client.sadd(keys::NODES, node.as_str()).await.map_err(unavailable)?;
            Ok(if previous.is_some() { Heartbeat::Continued } else { Heartbeat::Fresh })
        })
        .await
    }

    async fn note_room(&self, node: &NodeId, room: &RoomId) -> Result<(), BackendError> {
        self.timed(Operation::NoteRoom, async move {
            let _: i64 = self.client.sadd(keys::node_rooms(node), room.as_str()).await.map_err(unavailable)?;
            Ok(())
        })
        .await
    }

    async fn forget_room(&self, node: &NodeId, room: &RoomId) -> Result<(), BackendError> {
        self.timed(Operation::ForgetRoom, async move {
            let _: i64 = self.client.srem(keys::node_rooms(node), room.as_str()).await.map_err(unavailable)?;
            Ok(())
        })
        .await
    }

    async fn node_rooms(&self, node: &NodeId) -> Result<Vec<RoomId>, BackendError> {
        self.timed(Operation::NodeRooms, async move {
            let names: Vec<String> = self.client.smembers(keys::node_rooms(node)).await.map_err(unavailable)?;
            Ok(names.iter().filter_map(|n| RoomId::parse_with_max(n, usize::MAX).ok()).collect())
        })
        .await
    }

    async fn dead_nodes(&self, me: &NodeId) -> Result<Vec<DeadNode>, BackendError> {
        self.timed(Operation::DeadNodes, async move {
            let names: Vec<String> = self.client.smembers(keys::NODES).await.map_err(unavailable)?;
            let mut dead = Vec::new();
            for node in names.iter().filter_map(|n| NodeId::parse(n).ok()) {
                if &node == me {
                    continue;
                }
                let alive: i64 = self.client.exists(keys::node_alive(&node)).await.map_err(unavailable)?;
                if alive == 0 {
                    // PTTL: -2 (no key) or -1 (no expiry) mean no record of the last beat.
                    let left_ms: i64 = self.client.pttl(keys::node_seen(&node)).await.map_err(unavailable)?;
                    let silent_for = u64::try_from(left_ms)
                        .ok()
                        .map(|left| Duration::from_millis(keys::NODE_SEEN_TTL_MS.saturating_sub(left)));
                    dead.push(DeadNode { node, silent_for });
                }
            }
            Ok(dead)
        })
        .await
    }

    async fn claim_reap(&self, dead: &NodeId, me: &NodeId, ttl_ms: u64) -> Result<bool, BackendError> {
        self.timed(Operation::ClaimReap, async move {
            let set: Option<String> = self
                .client
                .set(
                    keys::node_reaper(dead),
                    me.as_str(),
                    Some(Expiration::PX(ttl_ms as i64)),
                    Some(SetOptions::NX),
                    false,
                )
                .await
                .map_err(unavailable)?;
            Ok(set.is_some())
        })
        .await
    }

    async fn forget_node(&self, node: &NodeId) -> Result<(), BackendError> {
        self.timed(Operation::ForgetNode, async move {
            let _: i64 = self.client.del(vec![keys::node_alive(node)]).await.map_err(unavailable)?;
            let _: i64 = self.client.del(vec![keys::node_rooms(node)]).await.map_err(unavailable)?;
            let _: i64 = self.client.del(vec![keys::node_seen(node)]).await.map_err(unavailable)?;
            let _: i64 = self.client.srem(keys::NODES, node.as_str()).await.map_err(unavailable)?;
            Ok(())
        })
        .await
    }
}

#[async_trait]
impl ResumeStore for RedisBackend {
    async fn note_resumable(
        &self,
        peer: &PeerId,
        token_hash: &str,
        node: &NodeId,
        room: &RoomId,
    ) -> Result<(), BackendError> {
        let args: Vec<Value> =
            vec![token_hash.into(), node.as_str().into(), format!("r:{room}").into(), (RESUMABLE_TTL_MS as i64).into()];
        let _: i64 = self.eval(scripts::NOTE_RESUMABLE, keys::resumable(peer), args).await?;
        Ok(())
    }

    async fn forget_resumable_room(&self, peer: &PeerId, room: &RoomId) -> Result<(), BackendError> {
        self.timed(Operation::ForgetResumableRoom, async move {
            let _: i64 = self.client.hdel(keys::resumable(peer), format!("r:{room}")).await.map_err(unavailable)?;
            Ok(())
        })
        .await
    }

    async fn claim_resumable(
        &self,
        peer: &PeerId,
        token_hash: &str,
        new_token_hash: &str,
        node: &NodeId,
    ) -> Result<Option<Claimed>, BackendError> {
        let args: Vec<Value> =
            vec![token_hash.into(), new_token_hash.into(), node.as_str().into(), (RESUMABLE_TTL_MS as i64).into()];
        let reply: Value = self.eval(scripts::CLAIM_RESUME, keys::resumable(peer), args).await?;
        let Value::Array(values) = reply else { return Ok(None) };
        let mut values = values.into_iter().filter_map(|v| v.as_string());
        let node = values
            .next()
            .and_then(|n| NodeId::parse(&n).ok())
            .ok_or_else(|| BackendError::Protocol("a resumable record without its node".into()))?;
        let rooms = values.filter_map(|r| RoomId::parse_with_max(&r, usize::MAX).ok()).collect();
        Ok(Some(Claimed { node, rooms }))
    }

    async fn end_resumable(&self, peer: &PeerId, node: &NodeId) -> Result<bool, BackendError> {
        let ended: i64 =
            self.eval(scripts::END_RESUMABLE, keys::resumable(peer), vec![Value::from(node.as_str())]).await?;
        Ok(ended == 1)
    }
}

#[cfg(test)]
mod error_tests {
    use super::*;

    #[test]
    fn a_redis_failure_keeps_its_cause_as_the_source() {
        let cause = fred::error::Error::new(fred::error::ErrorKind::Timeout, "no answer in time");
        let error = unavailable(cause);
        assert!(std::error::Error::source(&error).is_some(), "the cause is the source");
        let BackendError::Unavailable(cause) = &error else { panic!("{error:?}") };
        let fred_error = cause.downcast_ref::<fred::error::Error>().expect("as fred's own error");
        assert_eq!(fred_error.kind(), &fred::error::ErrorKind::Timeout);
        assert!(error.to_string().contains("no answer in time"), "{error}");
    }
}
