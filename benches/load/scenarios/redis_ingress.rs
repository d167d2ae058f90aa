//! redis-ingress: messages PUBLISHed to Redis become persisted events through the hub's
//! `[[redis.ingress]]` rule (`pattern = "bench:*"`, `topic = "bench/{1}"`), on channels
//! `bench:0`… (`--topics`, at least one). The generator starts its own `redis-server` unless
//! `--redis-url` names one, and waits until `/health` says "ok" (the ingress is connected).
//! - `--rate 0`: throughput. `--publishers` connections each send `--pipeline` PUBLISHes per
//!   round trip for `--duration` s; no streams. Reports what Redis took (`sent`), what the hub
//!   published from it (`/stats`: `ingress[0].published`) while it was sent and once it
//!   caught up (`drain`), what it dropped because they came faster than it publishes
//!   (`dropped_overflow`; `lost` is what is accounted for by neither), its CPU per event and
//!   its RSS.
//! - `--rate R`: latency. `--streams` SSE readers on the topics; single PUBLISHes paced at R/s
//!   over `--publishers` connections (open loop, each stamped as it is sent); receive − send
//!   percentiles, lost and duplicated events.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::Opts;
use crate::clock::data_for;
use crate::redis_server::Redis;
use crate::scenarios::fanout::{CpuMark, collect, spawn_readers};
use crate::scenarios::open_streams;
use crate::scenarios::publish::stats;
use crate::server::Server;
use crate::stats::{lat_text, percentiles};

pub async fn redis_ingress(server: &Server, opts: &Opts, redis: &Redis) {
    wait_connected(server, opts).await;
    if opts.rate > 0.0 {
        latency(server, opts, redis).await;
    } else {
        throughput(server, opts, redis).await;
    }
}

/// The hub's counters that matter here, from `/stats`.
#[derive(Clone, Copy, Default)]
struct Figures {
    /// `ingress[0].published`: events made from Redis messages, in the log.
    ingress: u64,
    /// `events.published`: every event the hub published.
    events: u64,
    flushes: u64,
    outages: u64,
    /// `ingress[0].dropped_overflow`: messages that came faster than the hub's queue took.
    overflow: u64,
}

async fn figures(server: &Server, opts: &Opts) -> Figures {
    let Some(s) = stats(server, opts).await else {
        return Figures::default();
    };
    let ingress = &s["ingress"][0];
    Figures {
        ingress: ingress["published"].as_u64().unwrap_or(0),
        events: s["events"]["published"].as_u64().unwrap_or(0),
        flushes: s["store"]["flushes"].as_u64().unwrap_or(0),
        outages: ingress["outages"].as_u64().unwrap_or(0),
        overflow: ingress["dropped_overflow"].as_u64().unwrap_or(0),
    }
}

/// Until `/health` says "ok": every ingress source connected (at most 15 s).
async fn wait_connected(server: &Server, opts: &Opts) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mut conn = crate::publisher::Publisher::connect(server.addr).await;
        let (_, body) = conn.get(opts, "/health").await;
        let health: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        if health["status"] == "ok" {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the hub's Redis ingress did not connect: {health}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn channel(seq: u64, channels: usize) -> String {
    format!("bench:{}", seq % channels as u64)
}

/// What the publishing side counted.
#[derive(Default)]
struct Sent {
    /// PUBLISHes Redis answered.
    sent: u64,
    /// PUBLISHes that failed (an error, or the connection).
    failed: u64,
    /// PUBLISHes that reached no subscriber (the hub's was not there).
    unheard: u64,
    /// Round trips (µs): a pipeline, or one PUBLISH.
    round_trips: Vec<u32>,
}

impl Sent {
    fn add(&mut self, other: Sent) {
        self.sent += other.sent;
        self.failed += other.failed;
        self.unheard += other.unheard;
        self.round_trips.extend(other.round_trips);
    }

    fn answered(&mut self, commands: u64, r: redis::RedisResult<Vec<i64>>, t: Instant) {
        self.round_trips.push(t.elapsed().as_micros() as u32);
        match r {
            Ok(receivers) => {
                self.sent += receivers.len() as u64;
                self.unheard += receivers.iter().filter(|n| **n == 0).count() as u64;
            }
            Err(_) => self.failed += commands,
        }
    }
}

async fn connect(url: &str) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(url).expect("a Redis URL");
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .expect("connect to Redis")
}

/// `--publishers` connections, each sending `--pipeline` PUBLISHes per round trip until
/// `stop_at`.
async fn flood(url: &str, o: &Opts, stop_at: Instant, channels: usize) -> Sent {
    let next = Arc::new(AtomicU64::new(0));
    let depth = o.pipeline.max(1) as u64;
    let tasks: Vec<_> = (0..o.publishers.max(1))
        .map(|_| {
            let (next, url, payload) = (next.clone(), url.to_string(), o.payload);
            tokio::spawn(async move {
                let mut conn = connect(&url).await;
                let mut s = Sent::default();
                while Instant::now() < stop_at {
                    let first = next.fetch_add(depth, Ordering::Relaxed);
                    let mut pipe = redis::pipe();
                    for seq in first..first + depth {
                        pipe.cmd("PUBLISH")
                            .arg(channel(seq, channels))
                            .arg(data_for(seq, payload));
                    }
                    let t = Instant::now();
                    let r = pipe.query_async(&mut conn).await;
                    s.answered(depth, r, t);
                }
                s
            })
        })
        .collect();
    let mut all = Sent::default();
    for t in tasks {
        all.add(t.await.unwrap());
    }
    all
}

async fn throughput(server: &Server, opts: &Opts, redis: &Redis) {
    let channels = opts.topics.max(1);
    let before = figures(server, opts).await;
    let mark = CpuMark::take(server);
    let (redis_cpu, written) = (redis.cpu_s(), server.write_bytes());
    let t0 = Instant::now();
    let sent = flood(&redis.url, opts, t0 + secs(opts.duration), channels).await;
    let elapsed = t0.elapsed().as_secs_f64();
    let during = figures(server, opts).await;
    // Until the hub has published all that Redis took, or 5 s pass without progress.
    let end = Instant::now();
    let (mut now, mut progress) = (during, end);
    let accounted = |f: &Figures| f.ingress + f.overflow - before.ingress - before.overflow;
    while accounted(&now) < sent.sent && progress.elapsed() < secs(5.0) {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let f = figures(server, opts).await;
        if accounted(&f) != accounted(&now) {
            progress = Instant::now();
        }
        now = f;
    }
    let drain = progress.duration_since(end).as_secs_f64();
    let (cpu, split, client) = mark.since(server);
    let events = now.ingress - before.ingress;
    let overflow = now.overflow - before.overflow;
    let per_event = |x: f64| x / events.max(1) as f64;
    println!(
        "redis-ingress rate=0 connections={} pipeline={} channels={channels} payload={}B \
         sent={} sent/s={:.0} failed={} unheard={} events={events} \
         dropped_overflow={overflow} lost={} dup={} \
         events/s={:.0} drain={:.0}ms events/s_with_drain={:.0} hub_events={} \
         flushes_per_event={:.4} written_per_event={} outages={} server_cpu={}s{split} \
         cpu/event={} {} redis_cpu={} client_cpu={client} pipeline_p99={:.1}ms",
        opts.publishers.max(1),
        opts.pipeline.max(1),
        opts.payload,
        sent.sent,
        sent.sent as f64 / elapsed,
        sent.failed,
        sent.unheard,
        sent.sent.saturating_sub(events + overflow),
        events.saturating_sub(sent.sent),
        (during.ingress - before.ingress) as f64 / elapsed,
        drain * 1000.0,
        events as f64 / (elapsed + drain),
        now.events - before.events,
        per_event((now.flushes - before.flushes) as f64),
        written_per_event(server, written, events),
        now.outages - before.outages,
        cpu.map_or("?".into(), |c| format!("{c:.2}")),
        cpu.map_or("?".into(), |c| format!("{:.2}µs", per_event(c * 1e6))),
        rss_text(server),
        since(redis_cpu, redis.cpu_s()),
        percentiles(sent.round_trips).map_or(0.0, |l| l.p99),
    );
}

async fn latency(server: &Server, opts: &Opts, redis: &Redis) {
    let (n, channels) = (opts.streams, opts.topics.max(1));
    let streams = open_streams(server, opts, n, |i| format!("bench/{}", i % channels)).await;
    let total = (opts.rate * opts.duration).round() as u64;
    // Stream i reads topic i % channels, which gets every channels-th message.
    let ch = channels as u64;
    let want = move |i: usize| total / ch + u64::from(((i % channels) as u64) < total % ch);
    let expected: u64 = (0..n).map(want).sum();
    let done = Arc::new(AtomicUsize::new(0));
    let readers = spawn_readers(streams, want, &done);
    let before = figures(server, opts).await;
    let mark = CpuMark::take(server);
    let (redis_cpu, written) = (redis.cpu_s(), server.write_bytes());
    let t0 = Instant::now();
    let sent = paced_on_own_thread(&redis.url, opts, total, channels).await;
    // Below --rate when the generator could not keep the pace (it sends late, not less).
    let sent_rate = sent.sent as f64 / t0.elapsed().as_secs_f64();
    // Let the last events arrive (at most 10 s), then stop counting.
    let wait_until = Instant::now() + secs(10.0);
    while done.load(Ordering::Relaxed) < n && Instant::now() < wait_until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (cpu, split, client) = mark.since(server);
    let after = figures(server, opts).await;
    let (received, dup, lat) = collect(readers).await;
    let events = after.ingress - before.ingress;
    println!(
        "redis-ingress streams={n} rate={}/s channels={channels} payload={}B sent={} \
         sent/s={sent_rate:.0} failed={} unheard={} events={events} expected={expected} received={received} \
         lost={} dup={dup} {} server_cpu={}s{split} cpu/event={} {} redis_cpu={} \
         client_cpu={client} publish_p99={:.1}ms flushes_per_event={:.3} \
         written_per_event={} outages={}",
        opts.rate,
        opts.payload,
        sent.sent,
        sent.failed,
        sent.unheard,
        expected.saturating_sub(received),
        lat_text(&percentiles(lat)),
        cpu.map_or("?".into(), |c| format!("{c:.2}")),
        cpu.map_or("?".into(), |c| format!(
            "{:.2}µs",
            c * 1e6 / events.max(1) as f64
        )),
        rss_text(server),
        since(redis_cpu, redis.cpu_s()),
        percentiles(sent.round_trips).map_or(0.0, |l| l.p99),
        (after.flushes - before.flushes) as f64 / events.max(1) as f64,
        written_per_event(server, written, events),
        after.outages - before.outages,
    );
}

/// Publishes `total` messages at `--rate`, one PUBLISH each, on a thread and runtime of
/// their own (so that the stream readers never delay a send stamp).
async fn paced_on_own_thread(url: &str, opts: &Opts, total: u64, channels: usize) -> Sent {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (url, o) = (url.to_string(), opts.clone());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _ = tx.send(rt.block_on(paced(&url, &o, total, channels)));
    });
    rx.await.expect("publisher thread")
}

async fn paced(url: &str, o: &Opts, total: u64, channels: usize) -> Sent {
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..o.publishers.max(1))
        .map(|_| {
            let (next, url, o) = (next.clone(), url.to_string(), o.clone());
            tokio::spawn(async move {
                let mut conn = connect(&url).await;
                let mut s = Sent::default();
                loop {
                    let seq = next.fetch_add(1, Ordering::Relaxed);
                    if seq >= total {
                        break;
                    }
                    // Open loop: each message has its moment; a late one is sent late.
                    let due = start + secs(seq as f64 / o.rate);
                    tokio::time::sleep_until(due.into()).await;
                    let data = data_for(seq, o.payload);
                    let t = Instant::now();
                    let r: redis::RedisResult<i64> = redis::cmd("PUBLISH")
                        .arg(channel(seq, channels))
                        .arg(data)
                        .query_async(&mut conn)
                        .await;
                    s.answered(1, r.map(|n| vec![n]), t);
                }
                s
            })
        })
        .collect();
    let mut all = Sent::default();
    for t in tasks {
        all.add(t.await.unwrap());
    }
    all
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

fn since(before: Option<f64>, after: Option<f64>) -> String {
    before
        .zip(after)
        .map_or("?".into(), |(a, b)| format!("{:.2}s", b - a))
}

/// Bytes the hub sent to the block device since `before`, per event.
fn written_per_event(server: &Server, before: Option<u64>, events: u64) -> String {
    before
        .zip(server.write_bytes())
        .map_or("?".into(), |(a, b)| {
            format!("{:.0}B", (b - a) as f64 / events.max(1) as f64)
        })
}

/// The hub's RSS now and at its peak.
fn rss_text(server: &Server) -> String {
    let mib = |k: Option<u64>| k.map_or("?".into(), |k| format!("{:.1}MiB", k as f64 / 1024.0));
    format!(
        "rss={} rss_peak={}",
        mib(server.rss_kib()),
        mib(server.rss_peak_kib())
    )
}
