//! publish: how many events concurrent publishers get in, each waiting for its answer; or,
//! with `--publish-rate`, a steady load and what it costs the disk: bytes the hub wrote per
//! event (`/proc/<pid>/io`), flushes per event and the data directory per retained event
//! (from `/stats`). `--warmup` publishes first without measuring, so that retention prunes as
//! fast as events arrive during the measured part.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::Opts;
use crate::client::expand;
use crate::clock::data_for;
use crate::publisher::Publisher;
use crate::server::Server;
use crate::stats::{lat_text, percentiles};

/// What the measured part counts.
#[derive(Default)]
struct Counts {
    events: AtomicU64,
    failed: AtomicU64,
    /// Set once the warm-up is over.
    measuring: std::sync::atomic::AtomicBool,
    lats: Mutex<Vec<u32>>,
}

/// The hub's disk figures at one moment.
struct Disk {
    written: u64,
    flushes: u64,
}

pub async fn publish(server: &Server, opts: &Opts) {
    let counts = Arc::new(Counts::default());
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(opts.warmup);
    let stop_at = measure_from + Duration::from_secs_f64(opts.duration);
    let tasks: Vec<_> = (0..opts.publishers)
        .map(|p| {
            let (counts, addr, o) = (counts.clone(), server.addr, opts.clone());
            tokio::spawn(async move { run_publisher(p, addr, &o, &counts, stop_at).await })
        })
        .collect();
    tokio::time::sleep_until(measure_from.into()).await;
    let before = disk(server, opts).await;
    let cpu_before = server.cpu_s();
    counts.measuring.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    for t in tasks {
        t.await.unwrap();
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = server.cpu_s().zip(cpu_before).map(|(b, a)| b - a);
    let after = disk(server, opts).await;
    report(server, opts, &counts, secs, before.zip(after), cpu).await;
}

/// One publisher: its own connection, paced if `--publish-rate` is given.
async fn run_publisher(
    p: usize,
    addr: std::net::SocketAddr,
    o: &Opts,
    counts: &Counts,
    stop_at: Instant,
) {
    let mut conn = Publisher::connect(addr).await;
    let mut mine = Vec::new();
    let mut seq = 0u64;
    let per_publisher = o.publish_rate / o.publishers as f64;
    let mut pace = (per_publisher > 0.0).then(|| {
        let every = Duration::from_secs_f64(o.batch as f64 / per_publisher);
        let mut iv = tokio::time::interval(every);
        iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        iv
    });
    while Instant::now() < stop_at {
        if let Some(iv) = &mut pace {
            iv.tick().await;
        }
        let topic = match o.topics {
            0 => format!("pub{p}"),
            n => format!("pub{}", (seq as usize + p) % n),
        };
        let (path, ctype, body) = request(o, &topic, seq);
        let t = Instant::now();
        let (status, _) = conn.post(o, &path, ctype, &body).await;
        seq += o.batch as u64;
        if !counts.measuring.load(Ordering::Relaxed) {
            continue;
        }
        mine.push(t.elapsed().as_micros() as u32);
        if (200..300).contains(&status) {
            counts.events.fetch_add(o.batch as u64, Ordering::Relaxed);
        } else {
            counts.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
    counts.lats.lock().unwrap().extend(mine);
}

/// The request for event `seq` (or a batch of `--batch` from it) on `topic`.
fn request<'a>(o: &'a Opts, topic: &str, seq: u64) -> (String, &'a str, Vec<u8>) {
    if o.batch > 1 {
        let items: Vec<serde_json::Value> = (0..o.batch)
            .map(|k| serde_json::json!({"topic": topic, "data": data_for(seq + k as u64, o.payload)}))
            .collect();
        let body = serde_json::to_vec(&items).unwrap();
        return ("/publish".to_string(), "application/json", body);
    }
    let data = data_for(seq, o.payload);
    (
        expand(&o.pub_path, topic, ""),
        o.pub_content_type.as_str(),
        expand(&o.pub_body, topic, &data).into_bytes(),
    )
}

/// Bytes written so far and the log's flushes (from `/stats`), for a hub whose pid we know.
async fn disk(server: &Server, opts: &Opts) -> Option<Disk> {
    let written = server.write_bytes()?;
    let stats = stats(server, opts).await?;
    Some(Disk {
        written,
        flushes: stats["store"]["flushes"].as_u64()?,
    })
}

/// The hub's `/stats`.
pub async fn stats(server: &Server, opts: &Opts) -> Option<serde_json::Value> {
    let mut conn = Publisher::connect(server.addr).await;
    let (status, body) = conn.get(opts, "/stats").await;
    (status == 200).then(|| serde_json::from_slice(&body).ok())?
}

async fn report(
    server: &Server,
    opts: &Opts,
    counts: &Counts,
    secs: f64,
    disk: Option<(Disk, Disk)>,
    cpu: Option<f64>,
) {
    let n = counts.events.load(Ordering::Relaxed);
    let lats = std::mem::take(&mut *counts.lats.lock().unwrap());
    let mut line = format!(
        "publish publishers={} batch={} payload={}B events={n} failed={} events/s={:.0} \
         requests/s={:.0} request_{}",
        opts.publishers,
        opts.batch,
        opts.payload,
        counts.failed.load(Ordering::Relaxed),
        n as f64 / secs,
        lats.len() as f64 / secs,
        lat_text(&percentiles(lats)),
    );
    if let Some(cpu) = cpu.filter(|_| n > 0) {
        // The hub's CPU time (user + system) per event published: what a publish costs it.
        line.push_str(&format!(
            " server_cpu_per_event={:.1}us",
            cpu * 1e6 / n as f64
        ));
    }
    if let Some((a, b)) = disk.filter(|_| n > 0) {
        let per = |x: u64| x as f64 / n as f64;
        line.push_str(&format!(
            " written_per_event={:.0}B flushes_per_event={:.3}",
            per(b.written - a.written),
            per(b.flushes - a.flushes)
        ));
    }
    let retained = stats(server, opts)
        .await
        .and_then(|s| s["store"]["events"].as_u64());
    if let (Some(dir), Some(kept)) = (server.data_dir_bytes(), retained.filter(|k| *k > 0)) {
        line.push_str(&format!(
            " retained={kept} data_dir_per_event={:.0}B",
            dir as f64 / kept as f64
        ));
    }
    println!("{line}");
}
