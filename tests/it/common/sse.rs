//! An SSE stream read with a small parser of its own (independent of the hub's).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::{Dechunker, TIMEOUT};

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
        let mut with_accept = vec![("accept", "text/event-stream")];
        with_accept.extend_from_slice(headers);
        let (s, head, rest) = super::get_head(addr, path, &with_accept).await;
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
