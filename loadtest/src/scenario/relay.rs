//! `relay`: peers in rooms of `room_size`, members spread over the node URLs, each
//! sending offer/answer/candidate signals to its room peers at an open-loop total
//! rate. Measures end-to-end latency from the intended send time, throughput, loss,
//! duplicates and order violations per sender → receiver pair.
//!
//! With `--resume`, a member told to `reconnect` (its node drains) closes, resumes on
//! the next URL and goes on: run it across a rolling restart of the deployment to see
//! that nothing is lost, and the `resume` latency (from `reconnect` to `resumed`).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use super::{await_rooms_known, join, open_all, wait_for, Measurement, RunContext, SignalChecker};
use crate::cli::parse_duration;
use crate::driver::{Command, CommandSink, Connection, Event, EventStream};
use crate::metrics::{Counter, Metrics, Results, ServerUsage};
use crate::pacer;
use crate::payload::{kind_for, signal_data, Stamp};
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
    /// On `reconnect` (a draining node), resume on another URL instead of counting an
    /// error (native dialect).
    #[arg(long, env = "LOADTEST_RESUME", default_value_t = false)]
    #[serde(default)]
    pub resume: bool,
}

/// A member's sink, shared by its writer and, for a resume, its reader.
type SharedSink = Arc<tokio::sync::Mutex<Box<dyn CommandSink>>>;

/// What a reader needs to resume its member elsewhere.
struct Resumer {
    driver: Arc<dyn crate::driver::Driver>,
    urls: Vec<String>,
    /// The URL the member is on now.
    at: usize,
    token: String,
    sink: SharedSink,
}

impl Resumer {
    /// Closes the connection (counting what the node wrote until its close), resumes
    /// on the next URL that takes it, and swaps in the new halves. The writer waits
    /// meanwhile; what falls due then is sent late, and its latency shows it.
    async fn resume(&mut self, rx: &mut Box<dyn EventStream>, check: &mut SignalChecker) -> bool {
        let told = Instant::now();
        let mut tx = self.sink.lock().await;
        tx.close_to_resume().await;
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            while let Ok(event) = rx.next().await {
                if let Event::Signal { data, .. } = event {
                    check.signal(&data);
                }
            }
        })
        .await;
        let n = self.urls.len();
        let order: Vec<usize> = if n == 1 { vec![0] } else { (1..n).map(|step| (self.at + step) % n).collect() };
        for at in order {
            match self.driver.resume(&self.urls[at], &self.token).await {
                Ok(conn) => {
                    *tx = conn.tx;
                    *rx = conn.rx;
                    self.token = conn.resume.unwrap_or_default();
                    self.at = at;
                    check.metrics().record("resume", told.elapsed());
                    return true;
                }
                Err(e) => tracing::debug!(error = %e, "resume refused; trying the next URL"),
            }
        }
        check.metrics().error("resume-failed");
        false
    }
}

/// One local room member.
struct Member {
    /// Index over the whole run (room * room_size + position): the stamp's `src`.
    src: u32,
    room: String,
    conn: Connection,
    /// Peers the `joined` reply listed.
    present: Vec<String>,
    /// The node URL it is connected to.
    url: String,
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
                let url = url_for(&ctx.urls, *r, m).to_owned();
                joined.push(Member { src: (r * k + m) as u32, room: room.clone(), conn, present, url });
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
        let Connection { tx, rx, resume, .. } = m.conn;
        let sink: SharedSink = Arc::new(tokio::sync::Mutex::new(tx));
        let resumer = args.resume.then(|| Resumer {
            driver: ctx.driver.clone(),
            urls: ctx.urls.clone(),
            at: ctx.urls.iter().position(|u| *u == m.url).unwrap_or(0),
            token: resume.unwrap_or_default(),
            sink: sink.clone(),
        });
        let others: HashSet<String> = targets.iter().map(|t| t.peer.clone()).collect();
        let known: HashSet<String> = m.present.into_iter().collect();
        let reading = Reading { others, known, ready: ready.clone(), stopping: stopping.clone(), resumer };
        readers.push(tokio::spawn(read_signals(rx, reading, metrics.clone())));
        let (due_tx, due_rx) = unbounded_channel();
        due_senders.push(due_tx);
        writers.push(tokio::spawn(write_signals(sink, due_rx, m.src, m.room, targets, metrics.clone())));
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

    // Closed for good: the nodes let the members leave at once.
    stopping.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await?.lock().await.close().await;
    }
    for reader in readers {
        let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
    }
    let mut results = metrics.snapshot("relay", elapsed, Some(rate));
    results.server = ServerUsage::between(before, after);
    Ok(results)
}

/// Writes one signal per due time the pacer hands over, round-robin over the room's
/// other members, each pair with its own sequence. Returns the sink for closing.
async fn write_signals(
    sink: SharedSink,
    mut due: UnboundedReceiver<Instant>,
    src: u32,
    room: String,
    targets: Vec<Target>,
    metrics: Arc<Metrics>,
) -> SharedSink {
    let mut seqs = vec![0u64; targets.len()];
    let mut turn = 0usize;
    'run: while let Some(first) = due.recv().await {
        // Held for the batch: a resume swaps the sink between batches.
        let mut tx = sink.lock().await;
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
    sink
}

/// What one member's reader knows and shares.
struct Reading {
    /// The room's other members.
    others: HashSet<String>,
    /// Members it has heard of (`joined` listed them, or they announced themselves).
    known: HashSet<String>,
    ready: Arc<AtomicUsize>,
    stopping: Arc<AtomicBool>,
    resumer: Option<Resumer>,
}

/// Consumes one member's events: counts it ready once it knows all `others`, checks
/// every signal's stamp, and (with `--resume`) resumes elsewhere when told to reconnect.
async fn read_signals(mut rx: Box<dyn EventStream>, reading: Reading, metrics: Arc<Metrics>) {
    let Reading { others, mut known, ready, stopping, mut resumer } = reading;
    let mut is_ready = false;
    let mut check_ready = |known: &HashSet<String>| {
        if !is_ready && others.iter().all(|o| known.contains(o)) {
            is_ready = true;
            ready.fetch_add(1, Ordering::Relaxed);
        }
    };
    let mut check = SignalChecker::new(metrics.clone());
    check_ready(&known);
    loop {
        match rx.next().await {
            Ok(Event::Signal { data, .. }) => check.signal(&data),
            Ok(Event::PeerJoined { peer, .. }) => {
                known.insert(peer);
                check_ready(&known);
            }
            Ok(Event::PeerLeft { .. }) if !stopping.load(Ordering::Relaxed) => metrics.error("unexpected-peer-left"),
            Ok(Event::Error { code, .. }) => metrics.error(&code),
            Ok(Event::Reconnect) => match resumer.as_mut() {
                Some(resumer) => {
                    if !resumer.resume(&mut rx, &mut check).await {
                        return;
                    }
                }
                None => metrics.error("reconnect"),
            },
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
