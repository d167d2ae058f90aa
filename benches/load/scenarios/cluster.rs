//! cluster: SPEC §11.3's budget for several hubs on one Redis — "p99 publish → receive at 1k
//! streams × 100/s within 2× of one hub in the same run; nothing lost, nothing duplicated."
//!
//! Two phases in one run, each with hubs of its own (this checkout's build, or `--hub-bin`),
//! whatever `--spawn` says, and the generator's own `redis-server` (or `--redis-url`):
//! - `single`: one hub without `[cluster]`: `--streams` streams on one topic, `--rate` events
//!   per second for `--duration` s.
//! - `cluster`: `--hubs` hubs (2) with `RUNNEL_CLUSTER_REDIS` naming that Redis, each with its
//!   own data directory and port; the streams are split evenly between them and event `seq` is
//!   published on hub `seq % hubs` (alternating). First a probe: one stream per hub on a topic
//!   of its own must get one event published on each hub within 10 s; if not, the phase is
//!   reported as failed (with what the hubs wrote to stderr) and not measured. Each cluster
//!   phase has keys of its own in Redis (`RUNNEL_CLUSTER_KEY`), so it never follows an earlier
//!   one's log. `--hubs 1` measures one hub on Redis against one without.
//!
//! `--rounds N` runs both phases N times, the cluster first every other round, and judges the
//! budget by the median p99 of each.
//!
//! Each phase prints one line: receive − send percentiles over every delivery, lost and
//! duplicated events, and the order: every stream must see its events with ids that increase
//! (as strings), each event with the same id on every stream, in the same order. The last
//! line compares the two p99s against the budget (cluster ≤ 2 × single).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use crate::client::expand;
use crate::clock::data_for;
use crate::publisher::Publisher;
use crate::redis_server::Redis;
use crate::scenarios::fanout::{CpuMark, publish_on_own_thread};
use crate::scenarios::open_streams;
use crate::server::Server;
use crate::sse::SseReader;
use crate::stats::{Lat, Tally, lat_text, percentiles};
use crate::{ClusterPhase, Opts};

/// The topic every measured stream reads.
const TOPIC: &str = "cluster";
/// The probe's topic.
const PROBE: &str = "cluster-probe";

pub async fn cluster(opts: &Opts, redis: &Redis) {
    let (mut single, mut cluster) = (Vec::new(), Vec::new());
    for round in 0..opts.rounds.max(1) {
        // Every other round the cluster goes first, so that a change in what else the
        // machine does weighs on both phases.
        let cluster_first = round % 2 == 1;
        for clustered in [cluster_first, !cluster_first] {
            let wanted = match opts.phase {
                ClusterPhase::Both => true,
                ClusterPhase::Single => !clustered,
                ClusterPhase::Cluster => clustered,
            };
            if wanted {
                let outcome = phase(opts, redis, clustered, round).await;
                if clustered { &mut cluster } else { &mut single }.push(outcome);
            }
        }
    }
    if opts.phase == ClusterPhase::Both {
        verdict(&single, &cluster);
    }
}

/// The budget's line: the median p99 of each phase over the rounds, and their ratio.
fn verdict(single: &[Option<Outcome>], cluster: &[Option<Outcome>]) {
    let p99s = |v: &[Option<Outcome>]| -> Option<Vec<f64>> {
        v.iter()
            .map(|o| o.as_ref().and_then(|o| o.lat.as_ref()).map(|l| l.p99))
            .collect()
    };
    let (Some(one), Some(many)) = (p99s(single), p99s(cluster)) else {
        println!("cluster budget: not measured (a phase failed; see above)");
        return;
    };
    let ratios: Vec<String> = one
        .iter()
        .zip(&many)
        .map(|(a, b)| format!("{:.2}", b / a.max(0.001)))
        .collect();
    let (one, many) = (median(one), median(many));
    let ratio = many / one.max(0.001);
    let whole = cluster.iter().flatten().all(Outcome::whole);
    println!(
        "cluster budget: rounds={} p99 single={one:.1}ms cluster={many:.1}ms{} \
         ratio={ratio:.2}{} (≤ 2: {}); nothing lost, nothing duplicated, one order: {}; \
         budget {}",
        ratios.len(),
        if ratios.len() > 1 { " (medians)" } else { "" },
        if ratios.len() > 1 {
            format!(" (each round: {})", ratios.join(", "))
        } else {
            String::new()
        },
        yes(ratio <= 2.0),
        yes(whole),
        if ratio <= 2.0 && whole {
            "met"
        } else {
            "not met"
        },
    );
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// What a phase measured.
struct Outcome {
    lat: Option<Lat>,
    lost: u64,
    dup: u64,
    order: OrderCheck,
}

impl Outcome {
    /// Nothing lost, nothing duplicated, one order with one id per event.
    fn whole(&self) -> bool {
        self.lost == 0 && self.dup == 0 && self.order.sound()
    }
}

/// Starts the phase's hubs, checks them, measures, prints its line.
async fn phase(opts: &Opts, redis: &Redis, clustered: bool, round: usize) -> Option<Outcome> {
    let (name, hubs) = if clustered {
        ("cluster", opts.hubs.max(1))
    } else {
        ("single", 1)
    };
    let name = if opts.rounds > 1 {
        format!("{name} round={}", round + 1)
    } else {
        name.to_string()
    };
    let servers = start_hubs(opts, redis, clustered.then_some(round));
    for s in &servers {
        wait_healthy(s, opts).await;
    }
    if clustered && let Err(e) = probe(&servers, opts).await {
        println!("cluster phase={name} hubs={hubs} FAILED: {e}");
        for (k, s) in servers.iter().enumerate() {
            if let Some(t) = s.stderr_tail() {
                eprintln!("  hub {k} stderr: {t}");
            }
        }
        return None;
    }
    Some(measure(&servers, opts, redis, &name).await)
}

/// One hub without `[cluster]`, or (with the round's number) `--hubs` hubs in a cluster on
/// `redis`, under keys of their own: a fresh cluster, with nothing to catch up on from another
/// round or another run.
fn start_hubs(opts: &Opts, redis: &Redis, cluster_round: Option<usize>) -> Vec<Server> {
    let mut o = opts.clone();
    let Some(round) = cluster_round else {
        return vec![Server::spawn(&o, None)];
    };
    o.env.push(format!("RUNNEL_CLUSTER_REDIS={}", redis.url));
    let key = format!("runnel-bench-{}-{round}", std::process::id());
    o.env.push(format!("RUNNEL_CLUSTER_KEY={key}"));
    (0..opts.hubs.max(1))
        .map(|_| Server::spawn(&o, None))
        .collect()
}

/// Until `/health` says "ok" (at most 15 s; then it says why on stderr and goes on).
async fn wait_healthy(server: &Server, opts: &Opts) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mut conn = Publisher::connect(server.addr).await;
        let (_, body) = conn.get(opts, "/health").await;
        let health: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        if health["status"] == "ok" {
            return;
        }
        if Instant::now() > deadline {
            eprintln!("  hub {} not healthy after 15 s: {health}", server.addr);
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One stream per hub on [`PROBE`], one event published on each hub: every stream must get
/// every one within 10 s.
async fn probe(servers: &[Server], opts: &Opts) -> Result<(), String> {
    let hubs = servers.len() as u64;
    let mut streams = Vec::new();
    for s in servers {
        streams.extend(open_streams(s, opts, 1, |_| PROBE.to_string()).await);
    }
    let (stop, _) = tokio::sync::watch::channel(false);
    let readers = spawn_readers(streams, hubs, &stop, &Arc::new(AtomicUsize::new(0)));
    let mut errors = Vec::new();
    for (k, s) in servers.iter().enumerate() {
        let mut p = Publisher::connect(s.addr).await;
        let path = expand(&opts.pub_path, PROBE, "");
        let body = expand(&opts.pub_body, PROBE, &data_for(k as u64, opts.payload));
        let (status, answer) = p
            .post(opts, &path, &opts.pub_content_type, body.as_bytes())
            .await;
        if !(200..300).contains(&status) {
            let answer = String::from_utf8_lossy(&answer);
            errors.push(format!("publishing on hub {k}: {status} {answer}"));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !readers.iter().all(JoinHandle::is_finished) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop.send(true);
    for (k, r) in readers.into_iter().enumerate() {
        let t = r.await.unwrap();
        if t.received < hubs || t.dup > 0 {
            errors.push(format!(
                "the stream on hub {k} received {} of the {hubs} probe events (one published \
                 on each hub) and {} twice in 10 s",
                t.received, t.dup
            ));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

/// One task per stream, reading until it has `want` events or `stop` turns true; each counts
/// itself in `done` when it has them all.
fn spawn_readers(
    streams: Vec<SseReader>,
    want: u64,
    stop: &tokio::sync::watch::Sender<bool>,
    done: &Arc<AtomicUsize>,
) -> Vec<JoinHandle<Tally>> {
    streams
        .into_iter()
        .map(|s| {
            let (mut stop, done) = (stop.subscribe(), done.clone());
            tokio::spawn(async move {
                let mut t = Tally::ordered();
                tokio::select! {
                    () = s.run(&mut t, |t| t.received >= want) => {}
                    _ = stop.wait_for(|s| *s) => {}
                }
                if t.received >= want {
                    done.fetch_add(1, Ordering::Relaxed);
                }
                t
            })
        })
        .collect()
}

/// The streams split between the hubs, events published on them in turn; prints the line.
async fn measure(servers: &[Server], opts: &Opts, redis: &Redis, name: &str) -> Outcome {
    let (n, hubs) = (opts.streams, servers.len());
    let mut streams = Vec::with_capacity(n);
    for (k, s) in servers.iter().enumerate() {
        let count = n / hubs + usize::from(k < n % hubs);
        streams.extend(open_streams(s, opts, count, |_| TOPIC.to_string()).await);
    }
    let total = (opts.rate * opts.duration).round() as u64;
    let expected = total * n as u64;
    let (stop, _) = tokio::sync::watch::channel(false);
    let done = Arc::new(AtomicUsize::new(0));
    let readers = spawn_readers(streams, total, &stop, &done);
    let marks: Vec<CpuMark> = servers.iter().map(CpuMark::take).collect();
    let redis_cpu = redis.cpu_s();
    let t0 = Instant::now();
    let addrs: Vec<_> = servers.iter().map(|s| s.addr).collect();
    let (published, failed, pub_lats) =
        publish_on_own_thread(&addrs, opts, total, Arc::new(|_| TOPIC.to_string())).await;
    // Below --rate when the publishers could not keep the pace (they send late, not less).
    let sent_rate = published as f64 / t0.elapsed().as_secs_f64();
    // Let the last events arrive (at most 10 s), then stop counting.
    let wait_until = Instant::now() + Duration::from_secs(10);
    while done.load(Ordering::Relaxed) < n && Instant::now() < wait_until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let _ = stop.send(true);
    let cpu = hubs_cpu(servers, &marks);
    let redis_cpu = redis_cpu
        .zip(redis.cpu_s())
        .map_or("?".into(), |(a, b)| format!("{:.2}s", b - a));
    let mut tallies = Vec::with_capacity(n);
    for r in readers {
        tallies.push(r.await.unwrap());
    }
    let received: u64 = tallies.iter().map(|t| t.received).sum();
    let dup: u64 = tallies.iter().map(|t| t.dup).sum();
    let incomplete = tallies.iter().filter(|t| t.received < total).count();
    let order = OrderCheck::of(&tallies);
    let lat = percentiles(
        tallies
            .iter_mut()
            .flat_map(|t| t.latencies_us.drain(..))
            .collect(),
    );
    let lost = expected.saturating_sub(received);
    println!(
        "cluster phase={name} hubs={hubs} streams={n} rate={}/s payload={}B \
         published={published} sent/s={sent_rate:.0} failed={failed} expected={expected} \
         received={received} lost={lost} dup={dup} incomplete_streams={incomplete} {} {order} \
         deliveries/s={:.0} {cpu} redis_cpu={redis_cpu} publish_p99={:.1}ms",
        opts.rate,
        opts.payload,
        lat_text(&lat),
        received as f64 / elapsed,
        percentiles(pub_lats).map_or(0.0, |l| l.p99),
    );
    Outcome {
        lat,
        lost,
        dup,
        order,
    }
}

/// The hubs' CPU since their marks (in total and each), this process's, and their RSS.
fn hubs_cpu(servers: &[Server], marks: &[CpuMark]) -> String {
    let mut each = Vec::new();
    let mut client = String::new();
    for (s, m) in servers.iter().zip(marks) {
        let (cpu, _, c) = m.since(s);
        each.push(cpu);
        client = c;
    }
    let join = |v: Vec<String>| v.join("+");
    let total: Option<f64> = each.iter().copied().sum();
    let rss = servers
        .iter()
        .map(|s| {
            s.rss_kib()
                .map_or("?".into(), |r| format!("{:.1}", r as f64 / 1024.0))
        })
        .collect();
    format!(
        "server_cpu={}s({}) rss={}MiB client_cpu={client}",
        total.map_or("?".into(), |c| format!("{c:.2}")),
        join(
            each.iter()
                .map(|c| c.map_or("?".into(), |c| format!("{c:.2}")))
                .collect()
        ),
        join(rss),
    )
}

/// Whether the streams agree on the order and the ids.
struct OrderCheck {
    /// Events whose id was missing or not above the previous one on their stream.
    ids_not_increasing: u64,
    /// Streams that got two events in another order than the reference stream did.
    misordered: usize,
    /// Streams that got an event with another id than the reference stream did.
    other_ids: usize,
}

impl OrderCheck {
    /// The reference is the stream that got the most events; every other stream's events
    /// must come in the reference's order with the reference's ids.
    fn of(tallies: &[Tally]) -> OrderCheck {
        let logs: Vec<&Vec<(u64, u64)>> = tallies.iter().filter_map(|t| t.order.as_ref()).collect();
        let mut at = HashMap::new();
        if let Some(reference) = logs.iter().max_by_key(|l| l.len()) {
            for (i, (seq, id)) in reference.iter().enumerate() {
                at.entry(*seq).or_insert((i, *id));
            }
        }
        let (mut misordered, mut other_ids) = (0, 0);
        for log in &logs {
            let (mut last, mut order_ok, mut ids_ok) = (None, true, true);
            for (seq, id) in log.iter() {
                // An event the reference lacks is counted as lost there, not here.
                let Some(&(i, ref_id)) = at.get(seq) else {
                    continue;
                };
                order_ok &= last.is_none_or(|l| i > l);
                ids_ok &= *id == ref_id;
                last = Some(i);
            }
            misordered += usize::from(!order_ok);
            other_ids += usize::from(!ids_ok);
        }
        OrderCheck {
            ids_not_increasing: tallies.iter().map(|t| t.ids_not_increasing).sum(),
            misordered,
            other_ids,
        }
    }

    fn sound(&self) -> bool {
        self.ids_not_increasing == 0 && self.misordered == 0 && self.other_ids == 0
    }
}

impl std::fmt::Display for OrderCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ids_not_increasing={} misordered_streams={} other_id_streams={}",
            self.ids_not_increasing, self.misordered, self.other_ids
        )
    }
}
