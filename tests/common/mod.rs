//! Test helpers: start the real hub on 127.0.0.1:0 (in-process, or as the `runnel` binary),
//! talk raw HTTP/1.1 to it, and read SSE streams with a small independent parser.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use runnel::config::{Config, Dur};
use runnel::server::{self, Running};

pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A hub running inside the test process.
pub struct TestHub {
    pub addr: SocketAddr,
    pub dir: PathBuf,
    running: Option<Running>,
    _tmp: Option<tempfile::TempDir>,
}

/// A configuration for tests: port 0, a fresh data dir, short timers.
pub fn test_config(dir: &Path) -> Config {
    let mut c = Config {
        listen: "127.0.0.1:0".into(),
        data_dir: dir.to_path_buf(),
        ..Config::default()
    };
    c.stream.retry = Dur(Duration::from_millis(200));
    c.stream.shutdown_grace = Dur(Duration::from_secs(3));
    c
}

impl TestHub {
    pub async fn start() -> TestHub {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(f: impl FnOnce(&mut Config)) -> TestHub {
        let tmp = tempfile::tempdir().unwrap();
        let mut hub = Self::start_in(tmp.path(), f).await;
        hub._tmp = Some(tmp);
        hub
    }

    /// Starts on an existing data directory (to test restarts).
    pub async fn start_in(dir: &Path, f: impl FnOnce(&mut Config)) -> TestHub {
        let mut c = test_config(dir);
        f(&mut c);
        c.validate().expect("test config is valid");
        let running = server::start(c).await.expect("hub starts");
        TestHub {
            addr: running.local_addr(),
            dir: dir.to_path_buf(),
            running: Some(running),
            _tmp: None,
        }
    }

    pub fn running(&self) -> &Running {
        self.running.as_ref().unwrap()
    }

    pub async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }

    pub async fn get(&self, path: &str) -> Resp {
        request(self.addr, "GET", path, &[], b"").await
    }

    pub async fn post_json(&self, path: &str, v: &Value) -> Resp {
        request(
            self.addr,
            "POST",
            path,
            &[("content-type", "application/json")],
            v.to_string().as_bytes(),
        )
        .await
    }

    /// Publishes and insists on success; returns the answer.
    pub async fn publish(&self, v: Value) -> Value {
        let r = self.post_json("/publish", &v).await;
        assert_eq!(r.status, 200, "publish failed: {}", r.text());
        r.json()
    }

    pub async fn sse(&self, path: &str) -> Sse {
        Sse::open(self.addr, path, &[]).await
    }
}

/// A complete HTTP response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
    /// Asserts a JSON error with this status and code.
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "body: {}", self.text());
        let v = self.json();
        assert_eq!(v["error"]["code"], code, "body: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "no message: {v}"
        );
        assert!(self.header("x-request-id").is_some());
        assert_eq!(self.header("content-type"), Some("application/json"));
    }
}

/// One request on a fresh connection (`Connection: close`).
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    let mut head = format!("{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        head.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    let raw = raw_request(addr, &bytes).await;
    parse_response(&raw).unwrap_or_else(|| {
        panic!(
            "unparseable response to {method} {path}: {:?}",
            String::from_utf8_lossy(&raw)
        )
    })
}

/// Sends arbitrary bytes and reads until the server closes (or 10 s pass).
pub async fn raw_request(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    raw_request_within(addr, bytes, TIMEOUT).await
}

/// Sends arbitrary bytes and reads until the server closes or `t` passes.
pub async fn raw_request_within(addr: SocketAddr, bytes: &[u8], t: Duration) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(bytes).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(t, s.read_to_end(&mut out)).await;
    out
}

/// Parses a response (chunked or with content-length) from raw bytes.
pub fn parse_response(raw: &[u8]) -> Option<Resp> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let rest = &raw[end + 4..];
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        let mut d = Dechunker::default();
        d.feed(rest)
    } else {
        rest.to_vec()
    };
    Some(Resp {
        status,
        headers,
        body,
    })
}

/// Decodes `Transfer-Encoding: chunked` incrementally.
#[derive(Default)]
pub struct Dechunker {
    buf: Vec<u8>,
    /// Bytes left in the current chunk (+2 for its CRLF), or None when a size line is next.
    left: Option<usize>,
    pub finished: bool,
}

impl Dechunker {
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<u8> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        loop {
            match self.left {
                None => {
                    let Some(nl) = self.buf.windows(2).position(|w| w == b"\r\n") else {
                        break;
                    };
                    let line = String::from_utf8_lossy(&self.buf[..nl]).to_string();
                    let size = usize::from_str_radix(line.split(';').next().unwrap().trim(), 16)
                        .expect("chunk size");
                    self.buf.drain(..nl + 2);
                    if size == 0 {
                        self.finished = true;
                        break;
                    }
                    self.left = Some(size + 2);
                }
                Some(n) => {
                    if self.buf.len() < n {
                        break;
                    }
                    out.extend_from_slice(&self.buf[..n - 2]);
                    self.buf.drain(..n);
                    self.left = None;
                }
            }
        }
        out
    }
}

/// One SSE item: an event, or a comment line (`: keepalive`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ev {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
    pub retry: Option<u64>,
    pub comment: Option<String>,
    /// The `topic:` fields (which `EventSource` ignores).
    pub topics: Vec<String>,
}

impl Ev {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("{e}: {:?}", self.data))
    }
    pub fn is_control(&self, name: &str) -> bool {
        self.id.is_none() && self.event.as_deref() == Some(name)
    }
}

/// An open SSE stream.
pub struct Sse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub error_body: Vec<u8>,
    stream: Option<TcpStream>,
    dechunk: Dechunker,
    text: Vec<u8>,
    pending: std::collections::VecDeque<Ev>,
    cur: Ev,
    has_field: bool,
    has_data: bool,
    pub ended: bool,
}

impl Sse {
    pub async fn open(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Sse {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut head =
            format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\naccept: text/event-stream\r\n");
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let end = loop {
            if let Some(e) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break e;
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(TIMEOUT, s.read(&mut chunk))
                .await
                .expect("response head in time")
                .unwrap();
            assert!(n > 0, "connection closed before the response head");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let rest = buf[end + 4..].to_vec();
        let mut sse = Sse {
            status,
            headers,
            error_body: Vec::new(),
            stream: Some(s),
            dechunk: Dechunker::default(),
            text: Vec::new(),
            pending: Default::default(),
            cur: Ev::default(),
            has_field: false,
            has_data: false,
            ended: false,
        };
        if status != 200 {
            // Read the (small) error body.
            let mut all = rest;
            let mut s = sse.stream.take().unwrap();
            let len: usize = sse
                .header("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            while all.len() < len {
                let mut chunk = [0u8; 4096];
                let n = tokio::time::timeout(TIMEOUT, s.read(&mut chunk))
                    .await
                    .unwrap()
                    .unwrap();
                if n == 0 {
                    break;
                }
                all.extend_from_slice(&chunk[..n]);
            }
            sse.error_body = all;
            sse.ended = true;
        } else {
            let text = sse.dechunk.feed(&rest);
            sse.parse(&text);
        }
        sse
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn error_json(&self) -> Value {
        serde_json::from_slice(&self.error_body).unwrap()
    }

    fn parse(&mut self, bytes: &[u8]) {
        self.text.extend_from_slice(bytes);
        while let Some(nl) = self.text.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.text.drain(..=nl).collect();
            let line = String::from_utf8(line[..line.len() - 1].to_vec()).expect("UTF-8 stream");
            if line.is_empty() {
                if self.has_field {
                    self.pending.push_back(std::mem::take(&mut self.cur));
                }
                self.has_field = false;
                self.has_data = false;
                continue;
            }
            if let Some(c) = line.strip_prefix(':') {
                self.pending.push_back(Ev {
                    comment: Some(c.trim().to_string()),
                    ..Ev::default()
                });
                continue;
            }
            let (f, v) = line.split_once(':').unwrap_or((&line, ""));
            let v = v.strip_prefix(' ').unwrap_or(v);
            self.has_field = true;
            match f {
                "id" => self.cur.id = Some(v.to_string()),
                "event" => self.cur.event = Some(v.to_string()),
                "topic" => self.cur.topics.push(v.to_string()),
                "retry" => self.cur.retry = Some(v.parse().expect("retry is a number")),
                "data" => {
                    if self.has_data {
                        self.cur.data.push('\n');
                    }
                    self.has_data = true;
                    self.cur.data.push_str(v);
                }
                other => panic!("unexpected field {other:?}"),
            }
        }
    }

    /// Whether the body ended with the last chunk (not just a dropped connection).
    #[allow(dead_code)]
    pub fn finished(&self) -> bool {
        self.dechunk.finished
    }

    /// The next item (event or comment) within `t`; `None` if the stream ended.
    pub async fn next_item_within(&mut self, t: Duration) -> Option<Ev> {
        let deadline = Instant::now() + t;
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Some(e);
            }
            if self.ended || self.dechunk.finished {
                self.ended = true;
                return None;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let mut chunk = vec![0u8; 65536];
            let s = self.stream.as_mut()?;
            let n = match tokio::time::timeout(left, s.read(&mut chunk)).await {
                Err(_) => panic!("no SSE item within {t:?}"),
                Ok(Ok(n)) => n,
                Ok(Err(_)) => 0,
            };
            if n == 0 {
                self.ended = true;
                continue;
            }
            let text = self.dechunk.feed(&chunk[..n]);
            self.parse(&text);
        }
    }

    /// The next event (comments skipped); panics after 10 s.
    pub async fn next(&mut self) -> Ev {
        loop {
            match self.next_item_within(TIMEOUT).await {
                Some(e) if e.comment.is_some() => continue,
                Some(e) => return e,
                None => panic!("stream ended while an event was expected"),
            }
        }
    }

    /// Reads the `retry` frame and the `connected` event; returns `connected`'s data.
    pub async fn connected(&mut self) -> Value {
        let r = self.next().await;
        assert!(r.retry.is_some(), "first frame is retry: {r:?}");
        let c = self.next().await;
        assert!(
            c.is_control("connected"),
            "second frame is connected: {c:?}"
        );
        c.json()
    }

    /// Events until the stream ends (comments skipped), waiting at most `t` in all.
    pub async fn rest(&mut self, t: Duration) -> Vec<Ev> {
        let deadline = Instant::now() + t;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_item_within(left).await {
                Some(e) if e.comment.is_some() => {}
                Some(e) => out.push(e),
                None => return out,
            }
        }
    }

    /// Asserts nothing but comments arrives for `t`.
    pub async fn assert_quiet(&mut self, t: Duration) {
        let deadline = Instant::now() + t;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            if let Some(e) = self.pending.pop_front() {
                assert!(e.comment.is_some(), "unexpected event {e:?}");
                continue;
            }
            let mut chunk = vec![0u8; 65536];
            let Some(s) = self.stream.as_mut() else {
                return;
            };
            match tokio::time::timeout(left, s.read(&mut chunk)).await {
                Err(_) => return,
                Ok(Ok(0)) | Ok(Err(_)) => panic!("stream ended"),
                Ok(Ok(n)) => {
                    let text = self.dechunk.feed(&chunk[..n]);
                    self.parse(&text);
                }
            }
        }
    }

    /// Events until no event (comments do not count) arrives for `quiet`.
    pub async fn until_quiet(&mut self, quiet: Duration) -> Vec<Ev> {
        let mut out = Vec::new();
        let mut deadline = Instant::now() + quiet;
        loop {
            if let Some(e) = self.pending.pop_front() {
                if e.comment.is_none() {
                    out.push(e);
                    deadline = Instant::now() + quiet;
                }
                continue;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(s) = self.stream.as_mut() else {
                return out;
            };
            if left.is_zero() {
                return out;
            }
            let mut chunk = vec![0u8; 65536];
            match tokio::time::timeout(left, s.read(&mut chunk)).await {
                Err(_) | Ok(Ok(0)) | Ok(Err(_)) => return out,
                Ok(Ok(n)) => {
                    let text = self.dechunk.feed(&chunk[..n]);
                    self.parse(&text);
                }
            }
        }
    }

    /// Closes the client side.
    pub fn close(&mut self) {
        self.stream = None;
    }

    /// The raw socket, to stall reading (tests of slow readers).
    pub fn into_stream(mut self) -> TcpStream {
        self.stream.take().unwrap()
    }
}

/// The `runnel` binary as a child process.
pub struct Proc {
    pub child: Child,
    pub addr: SocketAddr,
    pub log: Arc<Mutex<String>>,
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_runnel")
}

impl Proc {
    /// Starts `runnel serve` with these arguments and waits for "listening on".
    pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> Proc {
        Self::spawn_command(command(bin(), args, env))
    }

    /// Starts a prepared command (the binary, or a shell around it) and waits for
    /// "listening on".
    pub fn spawn_command(mut cmd: Command) -> Proc {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn runnel");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let log2 = log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                {
                    let mut log = log2.lock().unwrap();
                    log.push_str(&line);
                    log.push('\n');
                }
                if let Some(rest) = line
                    .split("listening on http://")
                    .nth(1)
                    .or_else(|| line.split("listening on https://").nth(1))
                    && let Some(tx) = tx.take()
                {
                    let addr = rest.split_whitespace().next().unwrap().to_string();
                    let _ = tx.send(addr);
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(a) => a.parse().unwrap(),
            Err(_) => {
                let _ = child.kill();
                panic!("runnel did not start: {}", log.lock().unwrap());
            }
        };
        Proc { child, addr, log }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Sends a signal by name (TERM, KILL, INT).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Waits for the process to exit, at most `t`; returns its exit code.
    pub fn wait_exit(&mut self, t: Duration) -> Option<i32> {
        let deadline = Instant::now() + t;
        while Instant::now() < deadline {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A command with a clean `RUNNEL_*` environment plus `env`.
pub fn command(program: &str, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(program);
    cmd.args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("RUNNEL_") {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Resident memory of a process, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Polls `f` until it returns true or `t` passes.
pub async fn eventually(t: Duration, mut f: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + t;
    while Instant::now() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

/// The lines a child prints on its standard output, as they come (read on a thread).
#[allow(dead_code)]
pub fn stdout_lines(child: &mut Child) -> std::sync::mpsc::Receiver<String> {
    let stdout = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}
