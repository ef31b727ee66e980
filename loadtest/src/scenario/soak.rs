//! `soak`: a long run with the churn of a real deployment, to show that nothing
//! grows. Each peer slot joins a random room, stays a random time while signalling
//! a random other member every `--signal-every`, and then does one of three things:
//! - leaves the room politely and joins another on the same connection;
//! - drops its connection and resumes it on the next URL (`--resume-share`, native
//!   dialect), staying in its room; what was sent to it meanwhile must arrive;
//! - closes for good and connects afresh as a new peer (`--disconnect-share`).
//!
//! Every `--sample-every` the harness reads the servers' RSS, CPU and open file
//! descriptors (`--server-pid` or `--metrics-url`) and the watched Redis's memory and
//! key count (`--watch-redis`), and once more at the end before any peer closes; the
//! report gives each series' least-squares slope per hour after a warm-up of a tenth
//! of the run.
//!
//! Signals are checked for duplicates and order per sender's stay, and their latency is
//! recorded; loss is not judged, since a target may leave while a signal is on its way
//! (the node then answers `peer-unavailable`, counted under errors). `relay` and
//! `relay --resume` judge loss exactly.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::{connect_one, join, Measurement, RunContext, SignalChecker};
use crate::cli::parse_duration;
use crate::driver::{Command, Connection, Driver, Event};
use crate::metrics::{Counter, Metrics, Results};
use crate::payload::{kind_for, signal_data, Stamp};
use crate::plan::room_name;
use crate::usage::{RedisWatch, Sampler, UsageSample};

#[derive(Debug, Clone, clap::Args, Serialize, Deserialize)]
pub struct SoakArgs {
    /// Peer slots cycling at once, over all workers.
    #[arg(long, env = "LOADTEST_PEERS", default_value_t = 200)]
    pub peers: usize,
    /// Rooms they cycle through, over all workers.
    #[arg(long, env = "LOADTEST_ROOMS", default_value_t = 40)]
    pub rooms: usize,
    /// Shortest stay in a room.
    #[arg(long, env = "LOADTEST_STAY_MIN", default_value = "5s", value_parser = parse_duration)]
    #[serde(with = "crate::cli::duration_text")]
    pub stay_min: Duration,
    /// Longest stay in a room.
    #[arg(long, env = "LOADTEST_STAY_MAX", default_value = "60s", value_parser = parse_duration)]
    #[serde(with = "crate::cli::duration_text")]
    pub stay_max: Duration,
    /// How often each member signals a random other member of its room.
    #[arg(long, env = "LOADTEST_SIGNAL_EVERY", default_value = "1s", value_parser = parse_duration)]
    #[serde(with = "crate::cli::duration_text")]
    pub signal_every: Duration,
    /// Share of stays that end with the connection dropped and resumed elsewhere.
    #[arg(long, env = "LOADTEST_RESUME_SHARE", default_value_t = 0.25)]
    pub resume_share: f64,
    /// Share of stays that end with the connection closed for good and a new one opened.
    #[arg(long, env = "LOADTEST_DISCONNECT_SHARE", default_value_t = 0.25)]
    pub disconnect_share: f64,
    /// How often usage is sampled.
    #[arg(long, env = "LOADTEST_SAMPLE_EVERY", default_value = "30s", value_parser = parse_duration)]
    #[serde(with = "crate::cli::duration_text")]
    pub sample_every: Duration,
    /// The deployment's Redis, to sample its memory and key count.
    #[arg(long, env = "LOADTEST_WATCH_REDIS")]
    pub watch_redis: Option<String>,
    /// Length of the run.
    #[arg(long, env = "LOADTEST_DURATION", default_value = "10m", value_parser = parse_duration)]
    #[serde(with = "crate::cli::duration_text")]
    pub duration: Duration,
}

/// How a stay ends.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Ending {
    Leave,
    Resume,
    Disconnect,
}

/// What the harness holds right now, for the samples.
#[derive(Default)]
struct Held {
    connections: AtomicU64,
    members: AtomicU64,
}

/// What every slot shares.
struct Shared {
    args: SoakArgs,
    driver: Arc<dyn Driver>,
    urls: Vec<String>,
    rooms: Vec<String>,
    metrics: Arc<Metrics>,
    held: Held,
    /// Numbers stays over the run: a stamp's `src`, so a receiver tells a sender's
    /// new stay in the room (sequences from 0 again) from duplicates.
    stays: AtomicU64,
    timeout: Duration,
    end: Instant,
    /// Cancelled once the last sample is taken: peers close only then, so the last
    /// sample shows the load, not its end.
    last_sampled: tokio_util::sync::CancellationToken,
}

pub async fn run(args: &SoakArgs, ctx: &RunContext) -> anyhow::Result<Results> {
    if args.peers < 2 || args.rooms == 0 || args.stay_min > args.stay_max || args.signal_every.is_zero() {
        bail!("soak needs --peers >= 2, --rooms > 0, --stay-min <= --stay-max and --signal-every > 0");
    }
    let shares_ok = |x: f64| (0.0..=1.0).contains(&x);
    if !shares_ok(args.resume_share)
        || !shares_ok(args.disconnect_share)
        || args.resume_share + args.disconnect_share > 1.0
    {
        bail!("--resume-share and --disconnect-share are shares between 0 and 1 that add up to at most 1");
    }
    let metrics = Arc::new(Metrics::new("signal"));
    let rooms: Vec<String> = ctx.shard.rooms(args.rooms).map(|r| room_name(&ctx.run_id, "soak", r)).collect();
    if rooms.is_empty() {
        return Ok(metrics.snapshot("soak", Duration::ZERO, None));
    }
    // Worker 0 samples: every worker would read the same servers.
    let sampler = if ctx.shard.index == 0 {
        let redis = match &args.watch_redis {
            Some(url) => Some(RedisWatch::connect(url).await?),
            None => None,
        };
        Some(Sampler { servers: ctx.servers.clone(), redis })
    } else {
        None
    };
    let local_peers = ctx.shard.share(args.peers as f64, args.rooms).round().max(2.0) as usize;

    let measurement = Measurement::begin(ctx, &metrics, args.duration).await?;
    let start = measurement.start;
    let shared = Arc::new(Shared {
        args: args.clone(),
        driver: ctx.driver.clone(),
        urls: ctx.urls.clone(),
        rooms,
        metrics: metrics.clone(),
        held: Held::default(),
        stays: AtomicU64::new(0),
        timeout: ctx.setup_timeout,
        end: start + args.duration,
        last_sampled: tokio_util::sync::CancellationToken::new(),
    });
    let sampling = match sampler {
        Some(sampler) => Some(tokio::spawn(sample_until_end(sampler, shared.clone(), start))),
        None => {
            shared.last_sampled.cancel();
            None
        }
    };
    let mut slots = Vec::new();
    for slot in 0..local_peers {
        slots.push(tokio::spawn(cycle(slot, local_peers, shared.clone())));
    }
    for slot in slots {
        slot.await.context("soak slot")?;
    }
    let elapsed = start.elapsed();
    let samples = match sampling {
        Some(task) => task.await.context("sampling task")?,
        None => Vec::new(),
    };
    measurement.end().await;
    let mut results = metrics.snapshot("soak", elapsed, None);
    results.usage = samples;
    Ok(results)
}

/// Samples at the start, every `--sample-every`, and once more when the slots are done.
async fn sample_until_end(sampler: Sampler, shared: Arc<Shared>, start: Instant) -> Vec<UsageSample> {
    let held = |s: &Shared| (s.held.connections.load(Ordering::Relaxed), s.held.members.load(Ordering::Relaxed));
    let mut samples = Vec::new();
    let mut next = start;
    while next < shared.end {
        tokio::time::sleep_until(next.into()).await;
        let (connections, members) = held(&shared);
        samples.push(sampler.sample(start.elapsed().as_secs_f64(), connections, members).await);
        next += shared.args.sample_every;
    }
    tokio::time::sleep_until(shared.end.into()).await;
    let (connections, members) = held(&shared);
    samples.push(sampler.sample(start.elapsed().as_secs_f64(), connections, members).await);
    shared.last_sampled.cancel();
    samples
}

/// One peer slot's life until the end of the run.
async fn cycle(slot: usize, slots: usize, shared: Arc<Shared>) {
    let args = &shared.args;
    // Spread the first joins over the first stay.
    tokio::time::sleep(args.stay_min.mul_f64(slot as f64 / slots as f64)).await;
    let mut at = slot % shared.urls.len();
    let mut member: Option<Member> = None;
    while Instant::now() < shared.end {
        let mut m = match member.take() {
            Some(m) => m,
            None => match connect(&shared, at).await {
                Some(m) => m,
                None => continue,
            },
        };
        if m.room.is_none() && !m.join_random(&shared, slot).await {
            m.drop_connection(&shared);
            continue;
        }
        let stay = rand::rng().random_range(args.stay_min..=args.stay_max);
        if !m.stay(&shared, stay).await {
            m.drop_connection(&shared);
            continue;
        }
        if Instant::now() >= shared.end {
            member = Some(m);
            break;
        }
        let roll: f64 = rand::rng().random();
        let ending = if roll < args.resume_share {
            Ending::Resume
        } else if roll < args.resume_share + args.disconnect_share {
            Ending::Disconnect
        } else {
            Ending::Leave
        };
        member = match ending {
            Ending::Leave => {
                if m.leave(&shared).await {
                    Some(m)
                } else {
                    m.drop_connection(&shared);
                    None
                }
            }
            Ending::Disconnect => {
                m.conn.tx.close().await;
                m.drop_connection(&shared);
                None
            }
            Ending::Resume => {
                at = (at + 1) % shared.urls.len();
                m.resume(&shared, at).await
            }
        };
    }
    if let Some(mut m) = member {
        let _ = tokio::time::timeout(shared.timeout, shared.last_sampled.cancelled()).await;
        m.conn.tx.close().await;
        m.drop_connection(&shared);
    }
}

async fn connect(shared: &Shared, at: usize) -> Option<Member> {
    let Some(conn) = connect_one(&*shared.driver, &shared.urls[at], &shared.metrics, shared.timeout).await else {
        // Refused or timed out: a moment before the next try.
        tokio::time::sleep(Duration::from_millis(100)).await;
        return None;
    };
    shared.held.connections.fetch_add(1, Ordering::Relaxed);
    Some(Member {
        conn,
        room: None,
        stay: 0,
        known: HashSet::new(),
        seqs: HashMap::new(),
        received: SignalChecker::new(shared.metrics.clone()),
    })
}

/// One connection and the room it is in.
struct Member {
    conn: Connection,
    room: Option<String>,
    /// This stay's number (the stamps' `src`).
    stay: u32,
    /// The room's other members, as announced.
    known: HashSet<String>,
    /// Next sequence number per target.
    seqs: HashMap<String, u64>,
    /// Latency, duplicates and order per sender's stay.
    received: SignalChecker,
}

impl Member {
    async fn join_random(&mut self, shared: &Shared, slot: usize) -> bool {
        let room = shared.rooms[rand::rng().random_range(0..shared.rooms.len())].clone();
        let name = format!("soak-{slot}");
        let Some(present) = join(&mut self.conn, &room, &name, None, &shared.metrics, shared.timeout).await else {
            return false;
        };
        // A new stay: new pairs, new sequences.
        self.stay = shared.stays.fetch_add(1, Ordering::Relaxed) as u32;
        self.known = present.into_iter().collect();
        self.seqs.clear();
        self.received.reset();
        self.room = Some(room);
        shared.held.members.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Stays `stay` in the room, signalling a random other member every
    /// `--signal-every`; false if the connection failed.
    async fn stay(&mut self, shared: &Shared, stay: Duration) -> bool {
        let room = self.room.clone().expect("in a room");
        let until = (Instant::now() + stay).min(shared.end);
        let every = shared.args.signal_every;
        let mut next_signal = Instant::now() + every.mul_f64(rand::rng().random());
        loop {
            let wake = until.min(next_signal);
            match tokio::time::timeout_at(wake.into(), self.conn.rx.next()).await {
                Ok(Ok(event)) => self.observe(event, &shared.metrics),
                Ok(Err(e)) => {
                    shared.metrics.error(e.label());
                    return false;
                }
                Err(_) if Instant::now() >= until => return true,
                Err(_) => {
                    next_signal += every;
                    if !self.signal_someone(shared, &room).await {
                        return false;
                    }
                }
            }
        }
    }

    async fn signal_someone(&mut self, shared: &Shared, room: &str) -> bool {
        if self.known.is_empty() {
            return true;
        }
        let pick = rand::rng().random_range(0..self.known.len());
        let to = self.known.iter().nth(pick).expect("index in range").clone();
        let seq = self.seqs.entry(to.clone()).or_default();
        let stamp = Stamp { src: self.stay, seq: *seq, t: shared.metrics.stamp(Instant::now()) };
        *seq += 1;
        let kind = kind_for(stamp.seq, true);
        let cmd = Command::Signal { room: room.to_owned(), to, kind, data: signal_data(kind, stamp) };
        match self.conn.tx.send(&cmd).await {
            Ok(()) => {
                shared.metrics.add(Counter::Sent, 1);
                true
            }
            Err(e) => {
                shared.metrics.error(e.label());
                false
            }
        }
    }

    fn observe(&mut self, event: Event, metrics: &Metrics) {
        match event {
            Event::PeerJoined { room, peer } if self.room.as_deref() == Some(room.as_str()) => {
                self.known.insert(peer);
            }
            Event::PeerLeft { room, peer, .. } if self.room.as_deref() == Some(room.as_str()) => {
                self.known.remove(&peer);
            }
            Event::Signal { data, .. } => self.received.signal(&data),
            Event::Error { code, .. } => metrics.error(&code),
            _ => {}
        }
    }

    /// Leaves the room and waits for `left`; false if the connection failed.
    async fn leave(&mut self, shared: &Shared) -> bool {
        let room = self.room.take().expect("in a room");
        shared.held.members.fetch_sub(1, Ordering::Relaxed);
        if let Err(e) = self.conn.tx.send(&Command::Leave { room: room.clone() }).await {
            shared.metrics.error(e.label());
            return false;
        }
        let acked = tokio::time::timeout(shared.timeout, async {
            loop {
                match self.conn.rx.next().await {
                    Ok(Event::Left { room: r }) if r == room => return true,
                    Ok(event) => self.observe(event, &shared.metrics),
                    Err(_) => return false,
                }
            }
        })
        .await;
        if acked != Ok(true) {
            shared.metrics.error("leave-not-acknowledged");
            return false;
        }
        true
    }

    /// Drops the connection as a lost network would, and resumes on `urls[at]`:
    /// the same peer in the same room, what was held arriving first.
    async fn resume(mut self, shared: &Shared, at: usize) -> Option<Member> {
        let Some(token) = self.conn.resume.clone() else {
            shared.metrics.error("no-resume-token");
            self.conn.tx.close().await;
            self.drop_connection(shared);
            return None;
        };
        let t0 = Instant::now();
        self.conn.tx.close_to_resume().await;
        // What the node wrote before its close still counts.
        let _ = tokio::time::timeout(shared.timeout, async {
            while let Ok(event) = self.conn.rx.next().await {
                self.observe(event, &shared.metrics);
            }
        })
        .await;
        match tokio::time::timeout(shared.timeout, shared.driver.resume(&shared.urls[at], &token)).await {
            Ok(Ok(conn)) => {
                shared.metrics.record("resume", t0.elapsed());
                self.conn = conn;
                Some(self)
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "resume refused");
                shared.metrics.error("resume-failed");
                self.drop_connection(shared);
                None
            }
            Err(_) => {
                shared.metrics.error("resume-timeout");
                self.drop_connection(shared);
                None
            }
        }
    }

    /// Counts the connection (and its membership) as gone.
    fn drop_connection(&mut self, shared: &Shared) {
        shared.held.connections.fetch_sub(1, Ordering::Relaxed);
        if self.room.take().is_some() {
            shared.held.members.fetch_sub(1, Ordering::Relaxed);
        }
    }
}
