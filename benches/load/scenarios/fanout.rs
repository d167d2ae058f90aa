//! fanout and many-topics: streams receive events published at a steady rate, to one topic
//! (every stream gets every event) or to one topic per stream; latency, loss and hub CPU.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use crate::Opts;
use crate::publisher::publish_at_rate;
use crate::scenarios::open_streams;
use crate::server::{Server, cpu_of};
use crate::sse::SseReader;
use crate::stats::{Tally, lat_text, percentiles};

pub async fn fanout(server: &Server, opts: &Opts, many_topics: bool) {
    let n = opts.streams;
    let topic_of_stream = move |i: usize| {
        if many_topics {
            format!("mt{i}")
        } else {
            "fan".to_string()
        }
    };
    let streams = open_streams(server, opts, n, topic_of_stream).await;
    let total = (opts.rate * opts.duration).round() as u64;
    // Which events each stream must get.
    let expected_per_stream = |i: usize| -> u64 {
        if many_topics {
            (0..total).filter(|s| (*s as usize) % n == i).count() as u64
        } else {
            total
        }
    };
    let expected: u64 = (0..n).map(expected_per_stream).sum();
    let done = Arc::new(AtomicUsize::new(0));
    let readers = spawn_readers(streams, expected_per_stream, &done);
    let mark = CpuMark::take(server);
    let t0 = Instant::now();
    let topic_of: Arc<dyn Fn(u64) -> String + Send + Sync> = if many_topics {
        Arc::new(move |seq| format!("mt{}", seq as usize % n))
    } else {
        Arc::new(|_| "fan".to_string())
    };
    let (published, failed, pub_lats) =
        publish_on_own_thread(&[server.addr], opts, total, topic_of).await;
    // Let the last events arrive (at most 10 s), then stop counting.
    let wait_until = Instant::now() + Duration::from_secs(10);
    while done.load(Ordering::Relaxed) < n && Instant::now() < wait_until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let (cpu, split, client) = mark.since(server);
    let rss = server.rss_kib();
    let (received, dup, lat) = collect(readers).await;
    let lost = expected.saturating_sub(received);
    let per_delivery = cpu.map_or("unknown".into(), |c| {
        format!("{:.2}µs", c * 1e6 / received.max(1) as f64)
    });
    println!(
        "{} streams={n} rate={}/s payload={}B published={published} failed={failed} \
         expected={expected} received={received} lost={lost} dup={dup} {} \
         deliveries/s={:.0} server_cpu={}s{split} cpu/delivery={per_delivery} rss={} publish_p99={:.1}ms client_cpu={client}",
        if many_topics { "many-topics" } else { "fanout" },
        opts.rate,
        opts.payload,
        lat_text(&percentiles(lat)),
        received as f64 / elapsed,
        cpu.map_or("?".into(), |c| format!("{c:.2}")),
        rss.map_or("?".into(), |r| format!("{:.1}MiB", r as f64 / 1024.0)),
        percentiles(pub_lats).map_or(0.0, |l| l.p99),
    );
}

/// One task per stream, reading until it has the `want(i)` events meant for it (or 600 s
/// pass); each counts itself in `done` when it stops.
pub fn spawn_readers(
    streams: Vec<SseReader>,
    want: impl Fn(usize) -> u64,
    done: &Arc<AtomicUsize>,
) -> Vec<JoinHandle<Tally>> {
    let mut readers = Vec::new();
    for (i, s) in streams.into_iter().enumerate() {
        let want = want(i);
        let done = done.clone();
        readers.push(tokio::spawn(async move {
            let mut t = Tally::default();
            let r = tokio::time::timeout(
                Duration::from_secs(600),
                s.run(&mut t, |t| t.received >= want),
            )
            .await;
            let _ = r;
            done.fetch_add(1, Ordering::Relaxed);
            t
        }));
    }
    readers
}

/// Runs [`publish_at_rate`] to its end and returns what it returns.
pub async fn publish_on_own_thread(
    addrs: &[SocketAddr],
    opts: &Opts,
    total: u64,
    topic_of: Arc<dyn Fn(u64) -> String + Send + Sync>,
) -> (u64, u64, Vec<u32>) {
    // The publishers get a thread and runtime of their own, so they never queue behind
    // thousands of reader tasks (which would delay the send times they stamp).
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (o, addrs) = (opts.clone(), addrs.to_vec());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let r = rt.block_on(publish_at_rate(&addrs, &o, total, o.rate, topic_of));
        let _ = tx.send(r);
    });
    rx.await.expect("publisher thread")
}

/// Adds up the readers that finished (received, duplicates, latencies); aborts the rest.
pub async fn collect(readers: Vec<JoinHandle<Tally>>) -> (u64, u64, Vec<u32>) {
    let mut lat = Vec::new();
    let (mut received, mut dup) = (0, 0);
    for r in readers {
        if r.is_finished() {
            let t = r.await.unwrap();
            received += t.received;
            dup += t.dup;
            lat.extend(t.latencies_us);
        } else {
            r.abort();
        }
    }
    (received, dup, lat)
}

/// CPU times when publishing starts: the hub's (total, and user and system) and this
/// process's.
pub struct CpuMark {
    cpu: Option<f64>,
    split: Option<(f64, f64)>,
    client: Option<(f64, f64)>,
}

impl CpuMark {
    pub fn take(server: &Server) -> CpuMark {
        CpuMark {
            cpu: server.cpu_s(),
            split: server.cpu_split(),
            client: cpu_of(std::process::id()),
        }
    }

    /// Since the mark: the hub's CPU seconds, its user and system text, and this process's
    /// CPU text.
    pub fn since(&self, server: &Server) -> (Option<f64>, String, String) {
        let cpu = match (self.cpu, server.cpu_s()) {
            (Some(a), Some(b)) => Some(b - a),
            _ => None,
        };
        let split = match (self.split, server.cpu_split()) {
            (Some(a), Some(b)) => format!("(user {:.2}s, system {:.2}s)", b.0 - a.0, b.1 - a.1),
            _ => String::new(),
        };
        // The generator shares the machine: what it spent is CPU the hub did not get.
        let client = match (self.client, cpu_of(std::process::id())) {
            (Some(a), Some(b)) => format!("{:.2}s", (b.0 + b.1) - (a.0 + a.1)),
            _ => "?".into(),
        };
        (cpu, split, client)
    }
}
