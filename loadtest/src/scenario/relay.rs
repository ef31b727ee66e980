//! `relay`: peers in rooms of `room_size`, members spread over the node URLs, each
//! sending offer/answer/candidate signals to its room peers at an open-loop total
//! rate. Measures end-to-end latency from the intended send time, throughput, loss,
//! duplicates and order violations per sender → receiver pair.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use super::{await_rooms_known, join, open_all, shut_down, wait_for, Measurement, RunContext};
use crate::cli::parse_duration;
use crate::driver::{Command, CommandSink, Connection, Event, EventStream};
use crate::metrics::{Counter, Metrics, Results, ServerUsage};
use crate::order::{Arrival, SeqTracker};
use crate::pacer;
use crate::payload::{kind_for, read_stamp, signal_data, Stamp};
use crate::plan::{room_name, url_for};

/// Signals written before a flush, so a busy sender still flushes regularly.
const MAX_BATCH: usize = 64;

#[derive(Debug, Clone, clap::Args, Serialize, Deserialize)]
pub struct RelayArgs {
    /// Peers over all workers.
    #[arg(long, env = "LOADTEST_PEERS", default_value_t = 200)]
    pub peers: usize,
    /// Members per room; each sends to every other member in turn.
    #[arg(long, env = "LOADTEST_ROOM_SIZE", default_value_t = 2)]
    pub room_size: usize,
    /// Signals per second over all peers, offered open-loop.
    #[arg(long, env = "LOADTEST_RATE", default_value_t = 5000.0)]
    pub rate: f64,
    /// Length of the measured phase.
    #[arg(long, env = "LOADTEST_DURATION", default_value = "10s", value_parser = parse_duration)]
    #[serde(with = "crate::cli::duration_text")]
    pub duration: Duration,
}

/// One local room member.
struct Member {
    /// Index over the whole run (room * room_size + position): the stamp's `src`.
    src: u32,
    room: String,
    conn: Connection,
    /// Peers the `joined` reply listed.
    present: Vec<String>,
}

/// Whom a member sends to.
#[derive(Clone)]
struct Target {
    src: u32,
    peer: String,
}

pub async fn run(args: &RelayArgs, ctx: &RunContext) -> anyhow::Result<Results> {
    if args.room_size < 2 || args.peers < args.room_size {
        bail!("relay needs --room-size >= 2 and --peers >= --room-size");
    }
    if args.rate.is_nan() || args.rate <= 0.0 {
        bail!("relay needs --rate > 0");
    }
    let metrics = Arc::new(Metrics::new("signal"));
    let k = args.room_size;
    let rooms = args.peers / k;
    let local_rooms: Vec<usize> = ctx.shard.rooms(rooms).collect();
    let urls = local_rooms.iter().flat_map(|r| (0..k).map(|m| url_for(&ctx.urls, *r, m).to_owned())).collect();
    let mut conns = open_all(ctx, &metrics, urls).await.into_iter();

    // Join room by room; a room with a failed connection or join is left out whole.
    let mut members: Vec<Member> = Vec::new();
    for (n, r) in local_rooms.iter().enumerate() {
        let room = room_name(&ctx.run_id, "relay", *r);
        let mut joined = Vec::new();
        for m in 0..k {
            let Some(mut conn) = conns.next().flatten() else { continue };
            if let Some(present) =
                join(&mut conn, &room, &format!("relay-{r}-{m}"), None, &metrics, ctx.setup_timeout).await
            {
                joined.push(Member { src: (r * k + m) as u32, room: room.clone(), conn, present });
            }
        }
        if joined.len() == k {
            members.extend(joined);
        }
        if n % 50 == 0 {
            ctx.progress.step(format!("joining rooms {n}/{}", local_rooms.len()));
        }
    }
    if members.is_empty() {
        bail!("no room could be filled: every connection or join failed (see errors)");
    }

    // Readers first, so membership announcements are consumed while we wait for
    // every member to know its whole room.
    let ready = Arc::new(AtomicUsize::new(0));
    let stopping = Arc::new(AtomicBool::new(false));
    let mut room_targets: HashMap<String, Vec<Target>> = HashMap::new();
    for m in &members {
        room_targets.entry(m.room.clone()).or_default().push(Target { src: m.src, peer: m.conn.peer.clone() });
    }
    let mut writers = Vec::new();
    let mut due_senders = Vec::new();
    let mut readers = Vec::new();
    for m in members {
        let targets: Vec<Target> = room_targets[&m.room].iter().filter(|t| t.src != m.src).cloned().collect();
        let Connection { tx, rx, .. } = m.conn;
        let others: HashSet<String> = targets.iter().map(|t| t.peer.clone()).collect();
        let known: HashSet<String> = m.present.into_iter().collect();
        readers.push(tokio::spawn(read_signals(rx, others, known, ready.clone(), stopping.clone(), metrics.clone())));
        let (due_tx, due_rx) = unbounded_channel();
        due_senders.push(due_tx);
        writers.push(tokio::spawn(write_signals(tx, due_rx, m.src, m.room, targets, metrics.clone())));
    }
    let local_members = writers.len();
    await_rooms_known(ctx, &metrics, &ready, local_members).await;

    let rate = args.rate * local_members as f64 / args.peers as f64;
    let before = ctx.servers.try_sample().await;
    let measurement = Measurement::begin(ctx, &metrics, args.duration).await?;
    let start = measurement.start;
    let pacer = pacer::spawn(rate, start, args.duration, due_senders, Arc::default());
    tokio::task::spawn_blocking(move || pacer.join()).await?.map_err(|_| anyhow::anyhow!("pacer thread panicked"))?;
    let elapsed = start.elapsed();
    let drained = wait_for(ctx.drain_timeout, || {
        metrics.get(Counter::Delivered) >= metrics.get(Counter::Expected)
            && metrics.get(Counter::Sent) >= pacer::total_sends(rate, args.duration)
    })
    .await;
    let after = ctx.servers.try_sample().await;
    measurement.end().await;
    if !drained {
        tracing::warn!("deliveries still missing after the drain timeout; they count as lost");
    }

    shut_down(&stopping, writers, readers).await?;
    let mut results = metrics.snapshot("relay", elapsed, Some(rate));
    if let (Some(b), Some(a)) = (before, after) {
        results.server = Some(ServerUsage {
            rss_before_bytes: b.rss_bytes,
            rss_loaded_bytes: a.rss_bytes,
            connections: 0,
            cpu_seconds: a.cpu_seconds - b.cpu_seconds,
        });
    }
    Ok(results)
}

/// Writes one signal per due time the pacer hands over, round-robin over the room's
/// other members, each pair with its own sequence. Returns the sink for closing.
async fn write_signals(
    mut tx: Box<dyn CommandSink>,
    mut due: UnboundedReceiver<Instant>,
    src: u32,
    room: String,
    targets: Vec<Target>,
    metrics: Arc<Metrics>,
) -> Box<dyn CommandSink> {
    let mut seqs = vec![0u64; targets.len()];
    let mut turn = 0usize;
    'run: while let Some(first) = due.recv().await {
        let mut next = Some(first);
        let mut batch = 0;
        while let Some(intended) = next.take() {
            let t = turn % targets.len();
            turn += 1;
            let seq = seqs[t];
            seqs[t] += 1;
            let kind = kind_for(seq, src < targets[t].src);
            let data = signal_data(kind, Stamp { src, seq, t: metrics.stamp(intended) });
            let cmd = Command::Signal { room: room.clone(), to: targets[t].peer.clone(), kind, data };
            metrics.record("send_lag", intended.elapsed());
            if let Err(e) = tx.feed(&cmd).await {
                metrics.error(e.label());
                break 'run;
            }
            metrics.add(Counter::Sent, 1);
            metrics.add(Counter::Expected, 1);
            batch += 1;
            if batch < MAX_BATCH {
                next = due.try_recv().ok();
            }
        }
        if let Err(e) = tx.flush().await {
            metrics.error(e.label());
            break;
        }
    }
    tx
}

/// Consumes one member's events: counts it ready once it knows all `others`, and
/// checks every signal's stamp for latency, duplicates and order.
async fn read_signals(
    mut rx: Box<dyn EventStream>,
    others: HashSet<String>,
    mut known: HashSet<String>,
    ready: Arc<AtomicUsize>,
    stopping: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
) {
    let mut is_ready = false;
    let mut check_ready = |known: &HashSet<String>| {
        if !is_ready && others.iter().all(|o| known.contains(o)) {
            is_ready = true;
            ready.fetch_add(1, Ordering::Relaxed);
        }
    };
    // `known` starts with the peers `joined` listed; later joiners announce themselves.
    let mut trackers: HashMap<u32, SeqTracker> = HashMap::new();
    check_ready(&known);
    loop {
        match rx.next().await {
            Ok(Event::Signal { data, .. }) => {
                let now = Instant::now();
                let Some(stamp) = read_stamp(&data) else {
                    metrics.error("unstamped-signal");
                    continue;
                };
                match trackers.entry(stamp.src).or_default().observe(stamp.seq) {
                    Arrival::Duplicate => metrics.add(Counter::Duplicates, 1),
                    arrival => {
                        if arrival == Arrival::Late {
                            metrics.add(Counter::OutOfOrder, 1);
                        }
                        metrics.add(Counter::Delivered, 1);
                        metrics.record("signal", now.saturating_duration_since(metrics.instant_of(stamp.t)));
                    }
                }
            }
            Ok(Event::PeerJoined { peer, .. }) => {
                known.insert(peer);
                check_ready(&known);
            }
            Ok(Event::PeerLeft { .. }) if !stopping.load(Ordering::Relaxed) => metrics.error("unexpected-peer-left"),
            Ok(Event::Error { code, .. }) => metrics.error(&code),
            Ok(Event::Reconnect) => metrics.error("reconnect"),
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
