//! runnel's load generator: `cargo bench --bench load -- <scenario> [options]`.
//!
//! It speaks HTTP/1.1 and SSE, plain or over TLS, to any hub (`--url`, `--sub-path`,
//! `--pub-path`, `--pub-body`, `--ca`), or starts runnel itself (`--spawn`, with `--tls` for
//! HTTPS) with a fresh data directory. Many
//! streams run on few threads (tokio). Each event carries `<seq> <send time>` in its data.
//! Subscribers turn that into publish→receive latency (exact percentiles over every sample),
//! and count what was lost or duplicated. Server RSS and CPU time come from `/proc/<pid>`.
//! Every scenario prints one line of results.
//!
//! Scenarios: idle, fanout, many-topics, publish, reconnect, startup. See docs/BENCHMARKS.md.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

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
    /// The server's pid, for RSS and CPU (found by itself with --spawn).
    #[arg(long)]
    pid: Option<u32>,
    /// Extra environment for the spawned hub, KEY=VALUE (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    #[arg(long, default_value_t = 1000)]
    streams: usize,
    /// Events per second (fanout, many-topics: in total).
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
    /// With an https:// --url: PEM certificates to trust.
    #[arg(long, value_name = "FILE")]
    ca: Option<std::path::PathBuf>,
}

// ---------------------------------------------------------------------------------------------
// Connections: plain TCP, or TLS (HTTP/1.1 over it) when the hub serves HTTPS.

trait Conn: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Conn for T {}
type Io = Box<dyn Conn>;

static TLS: OnceLock<tokio_rustls::TlsConnector> = OnceLock::new();

/// Trusts these PEM certificates for every connection from now on (which is then TLS).
fn use_tls(pem: &[u8]) {
    let cfg = runnel::client::tls_from_pem(pem, &[b"http/1.1"]).expect("usable certificates");
    let _ = TLS.set(tokio_rustls::TlsConnector::from(cfg));
}

async fn dial(addr: SocketAddr) -> Io {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.set_nodelay(true).ok();
    match TLS.get() {
        None => Box::new(tcp),
        Some(tls) => {
            let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
            Box::new(tls.connect(name, tcp).await.expect("TLS handshake"))
        }
    }
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    Idle,
    Fanout,
    ManyTopics,
    Publish,
    Reconnect,
    Startup,
}

// ---------------------------------------------------------------------------------------------
// Clock: send times are nanoseconds since this process started.

fn epoch() -> Instant {
    static E: OnceLock<Instant> = OnceLock::new();
    *E.get_or_init(Instant::now)
}

fn now_ns() -> u64 {
    epoch().elapsed().as_nanos() as u64
}

// ---------------------------------------------------------------------------------------------
// The server: spawned or given.

struct Server {
    addr: SocketAddr,
    pid: Option<u32>,
    child: Option<Child>,
    dir: Option<tempfile::TempDir>,
}

impl Server {
    fn spawn(opts: &Opts, dir: Option<tempfile::TempDir>) -> Server {
        let dir = dir.unwrap_or_else(|| tempfile::tempdir().expect("temp dir"));
        let port = free_port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_runnel"));
        cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--data")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (k, _) in std::env::vars() {
            if k.starts_with("RUNNEL_") {
                cmd.env_remove(k);
            }
        }
        // Everything runs from 127.0.0.1; lift the per-host and total stream limits.
        cmd.env("RUNNEL_LIMITS_MAX_CONNECTIONS_PER_IP", "1000000")
            .env("RUNNEL_LIMITS_MAX_CONNECTIONS", "1000000")
            .env("RUNNEL_LOG", "warn");
        for kv in &opts.env {
            let (k, v) = kv.split_once('=').expect("--env KEY=VALUE");
            cmd.env(k, v);
        }
        if opts.tls {
            let made = runnel::tls::self_signed(&["127.0.0.1".into()]).expect("a certificate");
            let (cert, key) = (dir.path().join("bench.crt"), dir.path().join("bench.key"));
            std::fs::write(&cert, &made.cert_pem).unwrap();
            std::fs::write(&key, &made.key_pem).unwrap();
            cmd.env("RUNNEL_TLS_CERT", &cert)
                .env("RUNNEL_TLS_KEY", &key);
            use_tls(made.cert_pem.as_bytes());
        }
        let child = cmd.spawn().expect("start runnel");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let start = Instant::now();
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "runnel did not start"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        Server {
            addr,
            pid: Some(child.id()),
            child: Some(child),
            dir: Some(dir),
        }
    }

    fn given(opts: &Opts) -> Server {
        if opts.url.starts_with("https://") {
            let ca = opts.ca.as_ref().expect("an https:// --url needs --ca FILE");
            use_tls(&std::fs::read(ca).expect("read --ca"));
        }
        let rest = opts
            .url
            .trim_start_matches("http://")
            .trim_start_matches("https://");
        let hostport = rest.split('/').next().unwrap();
        let addr = std::net::ToSocketAddrs::to_socket_addrs(hostport)
            .ok()
            .and_then(|mut a| a.next())
            .expect("--url must be http(s)://host:port");
        Server {
            addr,
            pid: opts.pid,
            child: None,
            dir: None,
        }
    }

    /// Stops a spawned hub with SIGTERM and keeps its data directory.
    fn stop(&mut self) -> Option<tempfile::TempDir> {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
        self.dir.take()
    }

    fn rss_kib(&self) -> Option<u64> {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid?)).ok()?;
        s.lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// User + system CPU time in seconds.
    fn cpu_s(&self) -> Option<f64> {
        self.cpu_split().map(|(u, s)| u + s)
    }

    /// User and system CPU time in seconds.
    fn cpu_split(&self) -> Option<(f64, f64)> {
        cpu_of(self.pid?)
    }
}

/// A process's user and system CPU time in seconds, from /proc.
fn cpu_of(pid: u32) -> Option<(f64, f64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = after.split(' ').collect();
    let user: u64 = f.get(11)?.parse().ok()?;
    let sys: u64 = f.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some((user as f64 / hz, sys as f64 / hz))
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn raise_fd_limit() {
    // SAFETY: plain libc calls on a local struct.
    unsafe {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 {
            // Root may lift the hard limit too (the spawned hub inherits it).
            let want = libc::rlimit {
                rlim_cur: 1 << 20,
                rlim_max: 1 << 20,
            };
            if r.rlim_max >= want.rlim_max || libc::setrlimit(libc::RLIMIT_NOFILE, &want) != 0 {
                r.rlim_cur = r.rlim_max;
                libc::setrlimit(libc::RLIMIT_NOFILE, &r);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP: a keep-alive publisher connection, and SSE readers.

fn expand(t: &str, topic: &str, data: &str) -> String {
    t.replace("{topic}", topic).replace("{data}", data)
}

struct Publisher {
    stream: Io,
    buf: Vec<u8>,
    addr: SocketAddr,
}

impl Publisher {
    async fn connect(addr: SocketAddr) -> Publisher {
        let stream = dial(addr).await;
        Publisher {
            stream,
            buf: Vec::with_capacity(4096),
            addr,
        }
    }

    /// One request; returns the status and body. Reconnects once if the server closed.
    async fn post(&mut self, opts: &Opts, path: &str, ctype: &str, body: &[u8]) -> (u16, Vec<u8>) {
        for attempt in 0..2 {
            let mut req = format!(
                "POST {path} HTTP/1.1\r\nhost: {}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\n",
                self.addr,
                body.len()
            );
            for h in &opts.headers {
                req.push_str(h);
                req.push_str("\r\n");
            }
            req.push_str("\r\n");
            let mut msg = req.into_bytes();
            msg.extend_from_slice(body);
            if self.stream.write_all(&msg).await.is_ok()
                && let Some(r) = self.read_response().await
            {
                return r;
            }
            if attempt == 0 {
                *self = Publisher::connect(self.addr).await;
            }
        }
        (0, Vec::new())
    }

    async fn read_response(&mut self) -> Option<(u16, Vec<u8>)> {
        self.buf.clear();
        let mut chunk = [0u8; 8192];
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let head = std::str::from_utf8(&self.buf[..end]).ok()?;
                let status: u16 = head.split(' ').nth(1)?.parse().ok()?;
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                while self.buf.len() < end + 4 + len {
                    let n = self.stream.read(&mut chunk).await.ok()?;
                    if n == 0 {
                        return None;
                    }
                    self.buf.extend_from_slice(&chunk[..n]);
                }
                return Some((status, self.buf[end + 4..end + 4 + len].to_vec()));
            }
            let n = self.stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

/// What a stream reader reports back.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    received: u64,
    dup: u64,
    /// Received seqs, as a bitset.
    seen: Vec<u64>,
    last_id: Option<String>,
}

impl Tally {
    fn record(&mut self, seq: u64, sent_ns: u64) {
        let word = (seq / 64) as usize;
        if self.seen.len() <= word {
            self.seen.resize(word + 1, 0);
        }
        let bit = 1u64 << (seq % 64);
        if self.seen[word] & bit != 0 {
            self.dup += 1;
            return;
        }
        self.seen[word] |= bit;
        self.received += 1;
        let lat = now_ns().saturating_sub(sent_ns) / 1000;
        self.latencies_us.push(lat.min(u32::MAX as u64) as u32);
    }
}

/// An SSE connection reading chunked frames and the `<seq> <ns>` data lines.
struct SseReader {
    stream: Io,
    buf: Vec<u8>,
    /// The body is chunked (HTTP/1.1); otherwise it runs to the end of the connection.
    chunked: bool,
    /// Bytes left in the current chunk (including its trailing CRLF) or None for a size line.
    chunk_left: Option<usize>,
    line: Vec<u8>,
    cur_id: Option<String>,
    /// Events that arrived with the opening frames (a resumed stream's replay often does).
    early: Vec<(u64, u64, Option<String>)>,
}

impl SseReader {
    /// Connects and reads up to the `connected` event.
    async fn open(addr: SocketAddr, opts: &Opts, path: &str, last_id: Option<&str>) -> SseReader {
        let mut stream = dial(addr).await;
        let mut req =
            format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\naccept: text/event-stream\r\n");
        if let Some(id) = last_id {
            req.push_str(&format!("last-event-id: {id}\r\n"));
        }
        for h in &opts.headers {
            req.push_str(h);
            req.push_str("\r\n");
        }
        req.push_str("\r\n");
        stream.write_all(req.as_bytes()).await.expect("request");
        let mut buf = Vec::with_capacity(4096);
        let mut chunk = [0u8; 4096];
        let end = loop {
            if let Some(e) = find(&buf, b"\r\n\r\n") {
                break e;
            }
            let n = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut chunk))
                .await
                .expect("no response head within 30 s (is the hub out of file descriptors?)")
                .expect("head");
            assert!(n > 0, "closed before the response head");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        assert!(head.starts_with("HTTP/1.1 200"), "stream refused: {head}");
        let rest = buf[end + 4..].to_vec();
        let chunked = head
            .lines()
            .any(|l| l.to_ascii_lowercase().replace(' ', "") == "transfer-encoding:chunked");
        let mut r = SseReader {
            stream,
            chunked,
            buf: Vec::new(),
            chunk_left: None,
            line: Vec::with_capacity(256),
            cur_id: None,
            early: Vec::new(),
        };
        // Consume until the `connected` event.
        let mut pending = rest;
        let mut connected = opts.ready_event.is_empty();
        let mut early = Vec::new();
        loop {
            r.feed(&pending, &mut |ev, id| match ev {
                Event::Named(n) if n == opts.ready_event => connected = true,
                Event::Data(seq, ns) => early.push((seq, ns, id.map(str::to_string))),
                Event::Named(_) => {}
            });
            if connected {
                break;
            }
            let n = r.stream.read(&mut chunk).await.expect("read");
            assert!(n > 0, "closed before connected");
            pending = chunk[..n].to_vec();
        }
        r.early = early;
        r
    }

    /// Dechunks and parses; calls `f` for events.
    fn feed(&mut self, bytes: &[u8], f: &mut impl FnMut(Event<'_>, Option<&str>)) {
        if !self.chunked {
            self.parse(bytes, f);
            return;
        }
        self.buf.extend_from_slice(bytes);
        let mut at = 0;
        let buf = std::mem::take(&mut self.buf);
        loop {
            match self.chunk_left {
                None => {
                    let Some(nl) = find(&buf[at..], b"\r\n") else {
                        break;
                    };
                    let size = std::str::from_utf8(&buf[at..at + nl])
                        .ok()
                        .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
                        .unwrap_or(0);
                    at += nl + 2;
                    self.chunk_left = Some(size + 2);
                }
                Some(left) => {
                    let avail = buf.len() - at;
                    if avail == 0 {
                        break;
                    }
                    let take = avail.min(left);
                    // The last two bytes of a chunk are its CRLF, not data.
                    let data_end = left.saturating_sub(2).min(take);
                    let data = &buf[at..at + data_end];
                    self.parse(data, f);
                    at += take;
                    let remaining = left - take;
                    self.chunk_left = if remaining == 0 {
                        None
                    } else {
                        Some(remaining)
                    };
                }
            }
        }
        let mut buf = buf;
        buf.drain(..at);
        self.buf = buf;
    }

    fn parse(&mut self, data: &[u8], f: &mut impl FnMut(Event<'_>, Option<&str>)) {
        for &b in data {
            if b != b'\n' {
                self.line.push(b);
                continue;
            }
            let mut line = std::mem::take(&mut self.line);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if let Some(v) = line.strip_prefix(b"id: ") {
                self.cur_id = Some(String::from_utf8_lossy(v).into_owned());
            } else if let Some(v) = line.strip_prefix(b"event: ") {
                f(Event::Named(&String::from_utf8_lossy(v)), None);
            } else if let Some(v) = line.strip_prefix(b"data: ") {
                let mut it = v.split(|c| *c == b' ');
                let seq = it
                    .next()
                    .and_then(|s| std::str::from_utf8(s).ok()?.parse().ok());
                let ns = it
                    .next()
                    .and_then(|s| std::str::from_utf8(s).ok()?.parse().ok());
                if let (Some(seq), Some(ns)) = (seq, ns) {
                    f(Event::Data(seq, ns), self.cur_id.as_deref());
                }
            } else if line.is_empty() {
                self.cur_id = None;
            }
            self.line = line;
            self.line.clear();
        }
    }

    /// Reads until `stop` says so or the connection ends.
    async fn run(mut self, tally: &mut Tally, mut stop: impl FnMut(&Tally) -> bool) {
        for (seq, ns, id) in std::mem::take(&mut self.early) {
            tally.record(seq, ns);
            if id.is_some() {
                tally.last_id = id;
            }
        }
        let mut chunk = vec![0u8; 4096];
        while !stop(tally) {
            let n = match self.stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            self.feed(&chunk[..n], &mut |ev, id| {
                if let Event::Data(seq, ns) = ev {
                    tally.record(seq, ns);
                    if let Some(id) = id {
                        tally.last_id = Some(id.to_string());
                    }
                }
            });
        }
    }
}

enum Event<'a> {
    Named(&'a str),
    Data(u64, u64),
}

// ---------------------------------------------------------------------------------------------
// Results

struct Lat {
    p50: f64,
    p99: f64,
    p999: f64,
    max: f64,
}

fn percentiles(mut v: Vec<u32>) -> Option<Lat> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    let at = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)] as f64 / 1000.0;
    Some(Lat {
        p50: at(0.50),
        p99: at(0.99),
        p999: at(0.999),
        max: *v.last().unwrap() as f64 / 1000.0,
    })
}

fn lat_text(l: &Option<Lat>) -> String {
    match l {
        Some(l) => format!(
            "p50={:.1}ms p99={:.1}ms p999={:.1}ms max={:.1}ms",
            l.p50, l.p99, l.p999, l.max
        ),
        None => "no samples".into(),
    }
}

fn data_for(seq: u64, payload: usize) -> String {
    let mut d = format!("{seq} {}", now_ns());
    if d.len() < payload {
        d.push(' ');
        while d.len() < payload {
            d.push('x');
        }
    }
    d
}

// ---------------------------------------------------------------------------------------------
// Scenarios

/// Opens `n` streams (topic chosen by `topic_of`), 500 at a time.
async fn open_streams(
    server: &Server,
    opts: &Opts,
    n: usize,
    topic_of: impl Fn(usize) -> String,
) -> Vec<SseReader> {
    let mut out = Vec::with_capacity(n);
    let mut i = 0;
    while i < n {
        let end = (i + 500).min(n);
        let batch: Vec<_> = (i..end)
            .map(|k| {
                let path = expand(&opts.sub_path, &topic_of(k), "");
                let (addr, o) = (server.addr, opts.clone());
                tokio::spawn(async move { SseReader::open(addr, &o, &path, None).await })
            })
            .collect();
        for b in batch {
            out.push(b.await.unwrap());
        }
        i = end;
    }
    out
}

async fn idle(server: &Server, opts: &Opts) {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = server.rss_kib();
    let streams = open_streams(server, opts, opts.streams, |i| format!("idle{}", i % 100)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = server.rss_kib();
    let per = match (before, after) {
        (Some(b), Some(a)) => format!(
            "rss_before={:.1}MiB rss_after={:.1}MiB per_stream={:.2}KiB",
            b as f64 / 1024.0,
            a as f64 / 1024.0,
            (a as f64 - b as f64) / opts.streams.max(1) as f64
        ),
        _ => "rss=unknown (no --pid)".into(),
    };
    if opts.streams == 0 {
        println!(
            "idle streams=0 rss={}",
            after.map_or("?".into(), |a| format!("{:.1}MiB", a as f64 / 1024.0))
        );
    } else {
        println!("idle streams={} {per}", opts.streams);
    }
    drop(streams);
}

/// Publishes `total` events at `rate` over `conns` connections to topics from `topic_of`.
/// Returns (published, failed, publish latencies in µs).
async fn publish_at_rate(
    addr: SocketAddr,
    opts: &Opts,
    total: u64,
    rate: f64,
    topic_of: Arc<dyn Fn(u64) -> String + Send + Sync>,
) -> (u64, u64, Vec<u32>) {
    let next = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let lats = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..opts.publishers.max(1) {
        let (next, failed, lats, topic_of) =
            (next.clone(), failed.clone(), lats.clone(), topic_of.clone());
        let o = opts.clone();
        tasks.push(tokio::spawn(async move {
            let mut p = Publisher::connect(addr).await;
            let mut mine = Vec::new();
            loop {
                let seq = next.fetch_add(1, Ordering::Relaxed);
                if seq >= total {
                    break;
                }
                // Open loop: each event has its moment; a late publisher does not slow
                // the schedule, it just sends late (and the latency shows it).
                let due = start + Duration::from_secs_f64(seq as f64 / rate);
                tokio::time::sleep_until(due.into()).await;
                let topic = topic_of(seq);
                let data = data_for(seq, o.payload);
                let path = expand(&o.pub_path, &topic, "");
                let body = expand(&o.pub_body, &topic, &data);
                let t = Instant::now();
                let (status, _) = p
                    .post(&o, &path, &o.pub_content_type, body.as_bytes())
                    .await;
                mine.push(t.elapsed().as_micros() as u32);
                if !(200..300).contains(&status) {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
            lats.lock().unwrap().extend(mine);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let lats = std::mem::take(&mut *lats.lock().unwrap());
    (total, failed.load(Ordering::Relaxed), lats)
}

async fn fanout(server: &Server, opts: &Opts, many_topics: bool) {
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
    let mut readers = Vec::new();
    for (i, s) in streams.into_iter().enumerate() {
        let want = expected_per_stream(i);
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
    let cpu0 = server.cpu_s();
    let split0 = server.cpu_split();
    let client0 = cpu_of(std::process::id());
    let t0 = Instant::now();
    let topic_of: Arc<dyn Fn(u64) -> String + Send + Sync> = if many_topics {
        Arc::new(move |seq| format!("mt{}", seq as usize % n))
    } else {
        Arc::new(|_| "fan".to_string())
    };
    // The publishers get a thread and runtime of their own, so they never queue behind
    // thousands of reader tasks (which would delay the send times they stamp).
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (addr, o) = (server.addr, opts.clone());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let r = rt.block_on(publish_at_rate(addr, &o, total, o.rate, topic_of));
        let _ = tx.send(r);
    });
    let (published, failed, pub_lats) = rx.await.expect("publisher thread");
    // Let the last events arrive (at most 10 s), then stop counting.
    let wait_until = Instant::now() + Duration::from_secs(10);
    while done.load(Ordering::Relaxed) < n && Instant::now() < wait_until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = match (cpu0, server.cpu_s()) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let split = match (split0, server.cpu_split()) {
        (Some(a), Some(b)) => format!("(user {:.2}s, system {:.2}s)", b.0 - a.0, b.1 - a.1),
        _ => String::new(),
    };
    // The generator shares the machine: what it spent is CPU the hub did not get.
    let client = match (client0, cpu_of(std::process::id())) {
        (Some(a), Some(b)) => format!("{:.2}s", (b.0 + b.1) - (a.0 + a.1)),
        _ => "?".into(),
    };
    let rss = server.rss_kib();
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

async fn publish(server: &Server, opts: &Opts) {
    let stop_at = Instant::now() + Duration::from_secs_f64(opts.duration);
    let count = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let lats = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    let t0 = Instant::now();
    for p in 0..opts.publishers {
        let (count, failed, lats) = (count.clone(), failed.clone(), lats.clone());
        let (addr, o) = (server.addr, opts.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = Publisher::connect(addr).await;
            let mut mine = Vec::new();
            let mut seq = 0u64;
            while Instant::now() < stop_at {
                let topic = format!("pub{p}");
                let (path, ctype, body) = if o.batch > 1 {
                    let items: Vec<serde_json::Value> = (0..o.batch)
                        .map(|k| {
                            serde_json::json!({"topic": topic,
                                "data": data_for(seq + k as u64, o.payload)})
                        })
                        .collect();
                    (
                        "/publish".to_string(),
                        "application/json",
                        serde_json::to_vec(&items).unwrap(),
                    )
                } else {
                    let data = data_for(seq, o.payload);
                    (
                        expand(&o.pub_path, &topic, ""),
                        o.pub_content_type.as_str(),
                        expand(&o.pub_body, &topic, &data).into_bytes(),
                    )
                };
                let t = Instant::now();
                let (status, _) = conn.post(&o, &path, ctype, &body).await;
                mine.push(t.elapsed().as_micros() as u32);
                if (200..300).contains(&status) {
                    count.fetch_add(o.batch as u64, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                seq += o.batch as u64;
            }
            lats.lock().unwrap().extend(mine);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let secs = t0.elapsed().as_secs_f64();
    let n = count.load(Ordering::Relaxed);
    let lats = std::mem::take(&mut *lats.lock().unwrap());
    println!(
        "publish publishers={} batch={} payload={}B events={n} failed={} events/s={:.0} \
         requests/s={:.0} request_{}",
        opts.publishers,
        opts.batch,
        opts.payload,
        failed.load(Ordering::Relaxed),
        n as f64 / secs,
        lats.len() as f64 / secs,
        lat_text(&percentiles(lats)),
    );
}

async fn reconnect(server: &Server, opts: &Opts) {
    let n = opts.streams;
    // Everyone sees a first event, so everyone has an id to come back with.
    let streams = open_streams(server, opts, n, |_| "storm".into()).await;
    let mut readers = Vec::new();
    for s in streams {
        readers.push(tokio::spawn(async move {
            let mut t = Tally::default();
            s.run(&mut t, |t| t.received >= 1).await;
            t.last_id
        }));
    }
    let mut p = Publisher::connect(server.addr).await;
    let path = expand(&opts.pub_path, "storm", "");
    let body = expand(&opts.pub_body, "storm", &data_for(0, opts.payload));
    p.post(opts, &path, &opts.pub_content_type, body.as_bytes())
        .await;
    let mut ids = Vec::new();
    for r in readers {
        ids.push(r.await.unwrap().expect("every stream got the first event"));
    }
    // All disconnected now (their readers ended). Publish `behind` events while away.
    for seq in 1..=opts.behind as u64 {
        let body = expand(&opts.pub_body, "storm", &data_for(seq, opts.payload));
        let (status, _) = p
            .post(opts, &path, &opts.pub_content_type, body.as_bytes())
            .await;
        assert!((200..300).contains(&status), "publish failed: {status}");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let behind = opts.behind as u64;
    let cpu0 = server.cpu_s();
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for id in ids {
        let (addr, o) = (server.addr, opts.clone());
        let sub = expand(&opts.sub_path, "storm", "");
        tasks.push(tokio::spawn(async move {
            let s = SseReader::open(addr, &o, &sub, Some(&id)).await;
            let mut t = Tally::default();
            let _ = tokio::time::timeout(
                Duration::from_secs(120),
                s.run(&mut t, |t| t.received >= behind),
            )
            .await;
            (t.received, t.dup, t0.elapsed())
        }));
    }
    let (mut got, mut dup, mut slowest) = (0, 0, Duration::ZERO);
    for t in tasks {
        let (r, d, at) = t.await.unwrap();
        got += r;
        dup += d;
        slowest = slowest.max(at);
    }
    let cpu = match (cpu0, server.cpu_s()) {
        (Some(a), Some(b)) => format!("{:.2}s", b - a),
        _ => "?".into(),
    };
    println!(
        "reconnect clients={n} behind={behind} all_caught_up_in={:.2}s expected={} received={got} \
         lost={} dup={dup} server_cpu={cpu}",
        slowest.as_secs_f64(),
        n as u64 * behind,
        (n as u64 * behind).saturating_sub(got),
    );
}

fn startup(opts: &Opts) {
    assert!(opts.spawn, "the startup scenario needs --spawn");
    let mut o = opts.clone();
    o.env.push("RUNNEL_STORE_RETENTION_EVENTS=10000000".into());
    o.env.push("RUNNEL_STORE_SYNC=none".into());
    let mut server = Server::spawn(&o, None);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut p = Publisher::connect(server.addr).await;
        let mut seq = 0u64;
        while seq < o.events as u64 {
            let n = (o.events as u64 - seq).min(1000);
            let items: Vec<serde_json::Value> = (0..n)
                .map(|k| {
                    serde_json::json!({"topic": format!("s{}", (seq + k) % 10),
                    "data": data_for(seq + k, o.payload)})
                })
                .collect();
            let (status, body) = p
                .post(
                    &o,
                    "/publish",
                    "application/json",
                    &serde_json::to_vec(&items).unwrap(),
                )
                .await;
            assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
            seq += n;
        }
    });
    let dir = server.stop();
    let mut times = Vec::new();
    let mut dir = dir;
    for _ in 0..3 {
        let t = Instant::now();
        let mut s = Server::spawn(&o, dir.take());
        // Ready: it answers /health.
        let ok = rt.block_on(async {
            let mut p = Publisher::connect(s.addr).await;
            p.stream
                .write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
                .await
                .ok();
            p.read_response().await.map(|(st, _)| st)
        });
        times.push(t.elapsed());
        assert_eq!(ok, Some(200));
        let rss = s.rss_kib();
        eprintln!("  ready after {:?}, rss {:?} KiB", t.elapsed(), rss);
        dir = s.stop();
    }
    times.sort();
    println!(
        "startup events={} ready_median={:.0}ms ready_max={:.0}ms",
        o.events,
        times[1].as_secs_f64() * 1000.0,
        times[2].as_secs_f64() * 1000.0
    );
}

fn main() {
    // `cargo bench` passes `--bench`; drop it.
    let args: Vec<String> = std::env::args().filter(|a| a != "--bench").collect();
    let opts = Opts::parse_from(args);
    raise_fd_limit();
    epoch();
    if opts.scenario == Scenario::Startup {
        startup(&opts);
        return;
    }
    let server = if opts.spawn {
        Server::spawn(&opts, None)
    } else {
        Server::given(&opts)
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(opts.client_threads.max(1))
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        match opts.scenario {
            Scenario::Idle => idle(&server, &opts).await,
            Scenario::Fanout => fanout(&server, &opts, false).await,
            Scenario::ManyTopics => fanout(&server, &opts, true).await,
            Scenario::Publish => publish(&server, &opts).await,
            Scenario::Reconnect => reconnect(&server, &opts).await,
            Scenario::Startup => unreachable!(),
        }
    });
    drop(server);
}
