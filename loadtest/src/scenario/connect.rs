//! `connect`: opens N connections at a ramp rate, joins each to a room of
//! `room_size`, holds them idle, then closes. Reports connect and join latency,
//! failures, and, when told where the servers are, their memory per connection.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::stream::{FuturesUnordered, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use super::{drain_events, join, open_all, RunContext};
use crate::cli::parse_duration;
use crate::driver::{CommandSink, Connection};
use crate::metrics::{Metrics, Results, ServerUsage};
use crate::plan::{room_name, url_for};

/// Joins in flight at once.
const JOIN_CONCURRENCY: usize = 128;

#[derive(Debug, Clone, clap::Args, Serialize, Deserialize)]
pub struct ConnectArgs {
    /// Connections over all workers.
    #[arg(long, env = "LOADTEST_CONNECTIONS", default_value_t = 1000)]
    pub connections: usize,
    /// Members per room.
    #[arg(long, env = "LOADTEST_ROOM_SIZE", default_value_t = 4)]
    pub room_size: usize,
    /// How long every connection stays open and idle once all have joined. Server
    /// memory is read at the end of it.
    #[arg(long, env = "LOADTEST_HOLD", default_value = "5s", value_parser = parse_duration)]
    #[serde(with = "crate::cli::duration_text")]
    pub hold: Duration,
}

pub async fn run(args: &ConnectArgs, ctx: &RunContext) -> anyhow::Result<Results> {
    if args.room_size == 0 || args.connections == 0 {
        bail!("connect needs --connections > 0 and --room-size > 0");
    }
    let metrics = Arc::new(Metrics::new("join"));
    let k = args.room_size;
    let rooms = args.connections.div_ceil(k);
    let mut slots = Vec::new();
    for r in ctx.shard.rooms(rooms) {
        for m in 0..k.min(args.connections - r * k) {
            slots.push((r, url_for(&ctx.urls, r, m).to_owned()));
        }
    }
    let before = ctx.servers.try_sample().await;

    let start = Instant::now();
    let conns = open_all(ctx, &metrics, slots.iter().map(|(_, u)| u.clone()).collect()).await;
    let join_start = Instant::now();
    let permits = Arc::new(Semaphore::new(JOIN_CONCURRENCY));
    let mut joining = FuturesUnordered::new();
    for (i, (conn, (r, _))) in conns.into_iter().zip(&slots).enumerate() {
        let Some(mut conn) = conn else { continue };
        let (room, metrics, permits) = (room_name(&ctx.run_id, "connect", *r), metrics.clone(), permits.clone());
        let timeout = ctx.setup_timeout;
        joining.push(tokio::spawn(async move {
            let _permit = permits.acquire_owned().await.expect("semaphore open");
            join(&mut conn, &room, &format!("idle-{i}"), None, &metrics, timeout).await.map(|_| conn)
        }));
    }
    let mut held: Vec<Box<dyn CommandSink>> = Vec::new();
    let mut readers = Vec::new();
    while let Some(done) = joining.next().await {
        if let Some(conn) = done.context("join task")? {
            let Connection { tx, rx, .. } = conn;
            readers.push(tokio::spawn(drain_events(rx, metrics.clone())));
            held.push(tx);
        }
        if held.len() % 500 == 0 {
            ctx.progress.step(format!("joined {}/{}", held.len(), slots.len()));
        }
    }
    let join_phase = join_start.elapsed();
    let setup = start.elapsed();

    ctx.gate.all_ready().await.context("waiting for the other workers")?;
    ctx.progress.step(format!("holding {} connections for {:?}", held.len(), args.hold));
    metrics.start_timeline();
    tokio::time::sleep(args.hold).await;
    metrics.tick();
    let loaded = ctx.servers.try_sample().await;

    let connections = held.len() as u64;
    for mut tx in held {
        tx.close().await;
    }
    for reader in readers {
        let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
    }
    let mut results = metrics.snapshot("connect", setup, None);
    results.phases.insert("join".into(), join_phase.as_secs_f64());
    if let (Some(b), Some(l)) = (before, loaded) {
        results.server = Some(ServerUsage {
            rss_before_bytes: b.rss_bytes,
            rss_loaded_bytes: l.rss_bytes,
            connections,
            cpu_seconds: l.cpu_seconds - b.cpu_seconds,
        });
    }
    Ok(results)
}
