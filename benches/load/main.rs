//! runnel's load generator: `cargo bench --bench load -- <scenario> [options]`.
//!
//! It speaks HTTP/1.1 and SSE (or WebSocket, `--ws`), plain or over TLS, to any hub (`--url`, `--sub-path`,
//! `--pub-path`, `--pub-body`, `--ca`), or starts runnel itself (`--spawn`, with `--tls` for
//! HTTPS) with a fresh data directory. Many
//! streams run on few threads (tokio). Each event carries `<seq> <send time>` in its data.
//! Subscribers turn that into publish→receive latency (exact percentiles over every sample),
//! and count what was lost or duplicated. Server RSS and CPU time come from `/proc/<pid>`.
//! Every scenario prints one line of results.
//!
//! Scenarios: idle, fanout, many-topics, publish, reconnect, startup, redis-ingress (Redis
//! pub/sub messages into the hub's events; it starts a `redis-server` of its own), cluster
//! (one hub, then two hubs sharing that Redis: latency, loss and order against SPEC §11.3's
//! budget). See docs/BENCHMARKS.md.
//!
//! Files: `server.rs` (the hub, spawned or given, and its /proc readings), `client.rs`
//! (dialing, TLS), `publisher.rs` (publishing), `sse.rs` (stream readers), `stats.rs`
//! (tallies, percentiles), `clock.rs` (send times), `redis_server.rs` (Redis for
//! redis-ingress and cluster), and `scenarios/`, one file each.

mod client;
mod clock;
mod publisher;
mod redis_server;
mod scenarios;
mod server;
mod sse;
mod stats;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, ValueEnum};

use server::Server;

#[derive(Parser, Debug, Clone)]
#[command(name = "load", about = "Load generator for SSE hubs")]
struct Opts {
    scenario: Scenario,
    /// The hub (ignored with --spawn).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Start runnel (this checkout's release build) on a free port with a fresh data dir.
    #[arg(long)]
    spawn: bool,
    /// With --spawn: start this runnel binary instead (to compare builds in one sitting).
    #[arg(long, value_name = "PATH")]
    hub_bin: Option<std::path::PathBuf>,
    /// The server's pid, for RSS and CPU (found by itself with --spawn).
    #[arg(long)]
    pid: Option<u32>,
    /// Extra environment for the spawned hub, KEY=VALUE (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    #[arg(long, default_value_t = 1000)]
    streams: usize,
    /// Events per second (fanout, many-topics: in total; redis-ingress: PUBLISHes per
    /// second in total, 0 for as many as Redis takes; cluster: 100 unless given).
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Bytes of data per event.
    #[arg(long, default_value_t = 100)]
    payload: usize,
    /// Concurrent publishers (publish scenario) or publishing connections (others).
    #[arg(long, default_value_t = 4)]
    publishers: usize,
    /// Events per publish request (publish scenario; >1 sends JSON arrays).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Publish scenario: events per second in total, paced evenly over the publishers (0: as
    /// fast as each publisher's answers come back).
    #[arg(long, default_value_t = 0.0)]
    publish_rate: f64,
    /// Publish scenario: topics the publishers take turns on (0: one topic per publisher).
    /// redis-ingress: channels (and so topics) the messages take turns on (0: one).
    #[arg(long, default_value_t = 0)]
    topics: usize,
    /// Publish scenario: seconds of publishing before the measured --duration (so that
    /// retention is pruning as fast as events arrive: a steady state).
    #[arg(long, default_value_t = 0.0)]
    warmup: f64,
    /// redis-ingress with --rate 0: PUBLISHes per round trip on each connection.
    #[arg(long, default_value_t = 100)]
    pipeline: usize,
    /// redis-ingress: this Redis instead of a `redis-server` of the generator's own (a given
    /// hub must read `bench:*` into `bench/{1}` from it).
    #[arg(long, value_name = "URL")]
    redis_url: Option<String>,
    /// cluster: hubs in the cluster phase.
    #[arg(long, default_value_t = 2)]
    hubs: usize,
    /// cluster: rounds of both phases (the cluster first every other round); the budget is
    /// judged on the median p99s.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// cluster: run only this phase (single: one hub without a cluster; cluster: --hubs hubs
    /// on one Redis).
    #[arg(long, value_enum, default_value_t = ClusterPhase::Both)]
    phase: ClusterPhase,
    /// Events the reconnecting clients are behind (reconnect scenario).
    #[arg(long, default_value_t = 100)]
    behind: usize,
    /// Events in the log (startup scenario).
    #[arg(long, default_value_t = 100_000)]
    events: usize,
    /// Subscribe path; {topic} is replaced.
    #[arg(long, default_value = "/events?topic={topic}")]
    sub_path: String,
    /// Publish path; {topic} is replaced.
    #[arg(long, default_value = "/publish/{topic}")]
    pub_path: String,
    /// Publish body; {topic} and {data} are replaced (url-encoding is the caller's affair).
    #[arg(long, default_value = "{data}")]
    pub_body: String,
    #[arg(long, default_value = "text/plain")]
    pub_content_type: String,
    /// Extra request header, "name: value" (repeatable), e.g. for credentials.
    #[arg(long = "header")]
    headers: Vec<String>,
    /// The named event a hub sends when a stream is registered (runnel: `connected`); empty
    /// for hubs that send none (then a stream counts as open once the response head is read).
    #[arg(long, default_value = "connected")]
    ready_event: String,
    /// Client worker threads.
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// With --spawn: serve HTTPS (a fresh self-signed certificate), and speak TLS to it.
    #[arg(long)]
    tls: bool,
    /// Subscribe over WebSocket (`GET /ws?topic={topic}` unless --sub-path says otherwise):
    /// the same events as JSON text frames; pings are answered.
    #[arg(long)]
    ws: bool,
    /// With an https:// --url: PEM certificates to trust.
    #[arg(long, value_name = "FILE")]
    ca: Option<std::path::PathBuf>,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    Idle,
    Fanout,
    ManyTopics,
    Publish,
    Reconnect,
    Startup,
    RedisIngress,
    Cluster,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum ClusterPhase {
    Both,
    Single,
    Cluster,
}

fn main() {
    // `cargo bench` passes `--bench`; drop it.
    let args: Vec<String> = std::env::args().filter(|a| a != "--bench").collect();
    let matches = Opts::command().get_matches_from(args);
    let mut opts = Opts::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if opts.scenario == Scenario::Cluster
        && matches.value_source("rate") == Some(ValueSource::DefaultValue)
    {
        opts.rate = 100.0;
    }
    if opts.ws && opts.sub_path == "/events?topic={topic}" {
        opts.sub_path = "/ws?topic={topic}".into();
    }
    server::raise_fd_limit();
    clock::epoch();
    if opts.scenario == Scenario::Startup {
        scenarios::startup::startup(&opts);
        return;
    }
    if opts.scenario == Scenario::Cluster {
        // It starts its hubs itself, two sets of them, after its Redis.
        let redis = redis_server::Redis::start(&opts);
        runtime(&opts).block_on(scenarios::cluster::cluster(&opts, &redis));
        return;
    }
    // redis-ingress: Redis first, so that the hub's configuration can name it.
    let redis =
        (opts.scenario == Scenario::RedisIngress).then(|| redis_server::Redis::prepare(&mut opts));
    let server = if opts.spawn {
        Server::spawn(&opts, None)
    } else {
        Server::given(&opts)
    };
    runtime(&opts).block_on(async {
        match opts.scenario {
            Scenario::Idle => scenarios::idle::idle(&server, &opts).await,
            Scenario::Fanout => scenarios::fanout::fanout(&server, &opts, false).await,
            Scenario::ManyTopics => scenarios::fanout::fanout(&server, &opts, true).await,
            Scenario::Publish => scenarios::publish::publish(&server, &opts).await,
            Scenario::Reconnect => scenarios::reconnect::reconnect(&server, &opts).await,
            Scenario::RedisIngress => {
                let redis = redis.as_ref().unwrap();
                scenarios::redis_ingress::redis_ingress(&server, &opts, redis).await;
            }
            Scenario::Startup | Scenario::Cluster => unreachable!(),
        }
    });
    drop(server);
    drop(redis);
}

/// The readers' runtime: `--client-threads` workers.
fn runtime(opts: &Opts) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(opts.client_threads.max(1))
        .enable_all()
        .build()
        .unwrap()
}
