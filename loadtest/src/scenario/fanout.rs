//! `fanout`: large rooms (hundreds of members spread over the nodes) where members
//! take turns broadcasting at an open-loop total rate. Measures each member's
//! delivery latency, the time until the last member has it, and loss.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use futures::stream::{FuturesOrdered, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use super::{await_rooms_known, join, open_all, shut_down, wait_for, Measurement, RunContext};
use crate::cli::parse_duration;
use crate::driver::{Command, CommandSink, Event, EventStream};
use crate::metrics::{Counter, Metrics, Results, ServerUsage};
use crate::order::{Arrival, SeqTracker};
use crate::pacer;
use crate::payload::{chat_data, read_stamp, Stamp};
use crate::plan::{room_name, url_for};

#[derive(Debug, Clone, clap::Args, Serialize, Deserialize)]
pub struct FanoutArgs {
    /// Rooms over all workers.
    #[arg(long, env = "LOADTEST_ROOMS", default_value_t = 2)]
    pub rooms: usize,
    /// Members per room.
    #[arg(long, env = "LOADTEST_ROOM_SIZE", default_value_t = 200)]
    pub room_size: usize,
    /// Broadcasts per second over all rooms, offered open-loop.
    #[arg(long, env = "LOADTEST_RATE", default_value_t = 20.0)]
    pub rate: f64,
    /// Length of the measured phase.
    #[arg(long, env = "LOADTEST_DURATION", default_value = "10s", value_parser = parse_duration)]
    #[serde(with = "crate::cli::duration_text")]
    pub duration: Duration,
    /// The nodes' PRESENCE_LIMIT: a larger room is quiet (members do not hear of each
    /// other), so a member is ready once joined rather than once it knows everyone.
    #[arg(long, env = "LOADTEST_PRESENCE_LIMIT", default_value_t = DEFAULT_PRESENCE_LIMIT)]
    #[serde(default = "default_presence_limit")]
    pub presence_limit: usize,
}

/// The nodes' default PRESENCE_LIMIT.
const DEFAULT_PRESENCE_LIMIT: usize = 1000;

fn default_presence_limit() -> usize {
    DEFAULT_PRESENCE_LIMIT
}

/// Broadcasts not yet delivered to every member: (src, seq) → (members still to
/// receive it, intended send time).
type Outstanding = Arc<Mutex<HashMap<(u32, u64), (usize, Instant)>>>;

pub async fn run(args: &FanoutArgs, ctx: &RunContext) -> anyhow::Result<Results> {
    if args.room_size < 2 || args.rooms == 0 || args.rate.is_nan() || args.rate <= 0.0 {
        bail!("fanout needs --room-size >= 2, --rooms >= 1 and --rate > 0");
    }
    let metrics = Arc::new(Metrics::new("broadcast"));
    let k = args.room_size;
    // The others each member must have heard of before the broadcasts start.
    let to_know = if k > args.presence_limit { 0 } else { k - 1 };
    let local_rooms: Vec<usize> = ctx.shard.rooms(args.rooms).collect();
    let urls = local_rooms.iter().flat_map(|r| (0..k).map(|m| url_for(&ctx.urls, *r, m).to_owned())).collect();
    let mut conns = open_all(ctx, &metrics, urls).await.into_iter();

    let ready = Arc::new(AtomicUsize::new(0));
    let stopping = Arc::new(AtomicBool::new(false));
    let outstanding: Outstanding = Arc::default();
    // Due sends the writers have taken and tried (sent, failed, or dropped with a dead
    // connection).
    let attempted = Arc::new(AtomicU64::new(0));
    let (mut writers, mut readers, mut due_senders) = (Vec::new(), Vec::new(), Vec::new());
    for r in &local_rooms {
        let room = room_name(&ctx.run_id, "fanout", *r);
        // Join the room's members concurrently; each reader starts at once so
        // announcements never pile up unread.
        let mut joining = FuturesOrdered::new();
        for m in 0..k {
            let Some(mut conn) = conns.next().flatten() else { continue };
            let (room, metrics, timeout) = (room.clone(), metrics.clone(), ctx.setup_timeout);
            joining.push_back(async move {
                let present = join(&mut conn, &room, &format!("fan-{r}-{m}"), None, &metrics, timeout).await;
                present.map(|p| (m, p.len(), conn))
            });
        }
        while let Some(joined) = joining.next().await {
            let Some((m, present, conn)) = joined else { continue };
            let src = (r * k + m) as u32;
            let reader = read_broadcasts(
                conn.rx,
                present,
                to_know,
                ready.clone(),
                stopping.clone(),
                outstanding.clone(),
                metrics.clone(),
            );
            readers.push(tokio::spawn(reader));
            let (due_tx, due_rx) = unbounded_channel();
            due_senders.push(due_tx);
            let writer = write_broadcasts(
                conn.tx,
                due_rx,
                src,
                room.clone(),
                k - 1,
                Books { outstanding: outstanding.clone(), attempted: attempted.clone(), metrics: metrics.clone() },
            );
            writers.push(tokio::spawn(writer));
        }
        ctx.progress.step(format!("room {r}: {k} members joining"));
    }
    let members = writers.len();
    await_rooms_known(ctx, &metrics, &ready, members).await;

    let rate = args.rate * local_rooms.len() as f64 / args.rooms as f64;
    let before = ctx.servers.try_sample().await;
    let measurement = Measurement::begin(ctx, &metrics, args.duration).await?;
    let start = measurement.start;
    // Interleave rooms so consecutive broadcasts come from different rooms.
    let pacer = pacer::spawn(rate, start, args.duration, interleave(due_senders, local_rooms.len()), Arc::default());
    let dispatched = tokio::task::spawn_blocking(move || pacer.join())
        .await?
        .map_err(|_| anyhow::anyhow!("pacer thread panicked"))?;
    let elapsed = start.elapsed();
    // The pacer returns once it has handed out the last due time, not once the writers
    // have sent it: wait for every dispatched send to be attempted (each one counted as
    // expected before it leaves), then for every expected delivery.
    let drained = wait_for(ctx.drain_timeout, || {
        attempted.load(Ordering::Relaxed) >= dispatched
            && metrics.get(Counter::Delivered) >= metrics.get(Counter::Expected)
    })
    .await;
    let after = ctx.servers.try_sample().await;
    measurement.end().await;
    if !drained {
        tracing::warn!("deliveries still missing after the drain timeout; they count as lost");
    }

    shut_down(&stopping, writers, readers).await?;
    let mut results = metrics.snapshot("fanout", elapsed, Some(rate));
    // Node CPU per fan-out delivery (every member's copy of every broadcast).
    results.server = ServerUsage::between(before, after);
    Ok(results)
}

/// Reorders per-room member lists (room-major) so that position i takes member
/// i / rooms of room i % rooms.
fn interleave<T>(items: Vec<T>, rooms: usize) -> Vec<T> {
    if rooms <= 1 {
        return items;
    }
    let per_room = items.len() / rooms;
    let mut slots: Vec<Option<T>> = items.into_iter().map(Some).collect();
    let mut out = Vec::with_capacity(slots.len());
    for m in 0..per_room {
        for r in 0..rooms {
            if let Some(item) = slots.get_mut(r * per_room + m).and_then(Option::take) {
                out.push(item);
            }
        }
    }
    out.extend(slots.into_iter().flatten());
    out
}

/// What a writer records about its sends.
struct Books {
    outstanding: Outstanding,
    attempted: Arc<AtomicU64>,
    metrics: Arc<Metrics>,
}

async fn write_broadcasts(
    mut tx: Box<dyn CommandSink>,
    mut due: UnboundedReceiver<Instant>,
    src: u32,
    room: String,
    receivers: usize,
    books: Books,
) -> Box<dyn CommandSink> {
    let Books { outstanding, attempted, metrics } = books;
    let mut seq = 0u64;
    while let Some(intended) = due.recv().await {
        let data = chat_data(Stamp { src, seq, t: metrics.stamp(intended) });
        outstanding.lock().expect("outstanding lock").insert((src, seq), (receivers, intended));
        seq += 1;
        // Counted before the send: once the broadcast is out, a delivery may be counted
        // before this task runs again, and the books must never show more delivered
        // than expected.
        metrics.add(Counter::Expected, receivers as u64);
        let sent = tx.send(&Command::Broadcast { room: room.clone(), kind: "chat", data }).await;
        attempted.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = sent {
            metrics.error(e.label());
            break;
        }
        metrics.add(Counter::Sent, 1);
    }
    // A dead connection leaves its remaining due sends unsent: they count as attempted
    // (and lost) so the end-of-run wait does not stall on them.
    while due.recv().await.is_some() {
        attempted.fetch_add(1, Ordering::Relaxed);
    }
    tx
}

#[allow(clippy::too_many_arguments)]
async fn read_broadcasts(
    mut rx: Box<dyn EventStream>,
    present: usize,
    others: usize,
    ready: Arc<AtomicUsize>,
    stopping: Arc<AtomicBool>,
    outstanding: Outstanding,
    metrics: Arc<Metrics>,
) {
    let mut known = present;
    let mut counted = false;
    let mut mark = |known: usize| {
        if !counted && known >= others {
            counted = true;
            ready.fetch_add(1, Ordering::Relaxed);
        }
    };
    mark(known);
    let mut trackers: HashMap<u32, SeqTracker> = HashMap::new();
    loop {
        match rx.next().await {
            Ok(Event::Broadcast { data, .. }) => {
                let now = Instant::now();
                let Some(stamp) = read_stamp(&data) else {
                    metrics.error("unstamped-broadcast");
                    continue;
                };
                let arrival = trackers.entry(stamp.src).or_default().observe(stamp.seq);
                if arrival == Arrival::Duplicate {
                    metrics.add(Counter::Duplicates, 1);
                    continue;
                }
                if arrival == Arrival::Late {
                    metrics.add(Counter::OutOfOrder, 1);
                }
                metrics.add(Counter::Delivered, 1);
                metrics.record("broadcast", now.saturating_duration_since(metrics.instant_of(stamp.t)));
                let mut open = outstanding.lock().expect("outstanding lock");
                if let Some((left, intended)) = open.get_mut(&(stamp.src, stamp.seq)) {
                    *left -= 1;
                    if *left == 0 {
                        let took = now.saturating_duration_since(*intended);
                        open.remove(&(stamp.src, stamp.seq));
                        drop(open);
                        metrics.record("broadcast_all", took);
                    }
                }
            }
            Ok(Event::PeerJoined { .. }) => {
                known += 1;
                mark(known);
            }
            Ok(Event::PeerLeft { .. }) if !stopping.load(Ordering::Relaxed) => metrics.error("unexpected-peer-left"),
            Ok(Event::Error { code, .. }) => metrics.error(&code),
            Ok(_) => {}
            Err(e) => {
                if !stopping.load(Ordering::Relaxed) {
                    metrics.error(e.label());
                }
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::interleave;

    #[test]
    fn interleaving_alternates_rooms() {
        assert_eq!(interleave(vec![0, 1, 2, 10, 11, 12], 2), vec![0, 10, 1, 11, 2, 12]);
        assert_eq!(interleave(vec![1, 2, 3], 1), vec![1, 2, 3]);
    }
}
