//! HTTP: SSE readers, which dechunk the stream and parse the `<seq> <ns>` data lines; with
//! `--ws`, WebSocket readers, which unframe JSON text frames and answer pings.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::Opts;
use crate::client::{Io, dial, find};
use crate::stats::Tally;

/// An SSE connection reading chunked frames and the `<seq> <ns>` data lines.
pub struct SseReader {
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
    /// A WebSocket (`--ws`): `buf` holds frames, not chunks.
    ws: bool,
    /// Pings read and not answered yet.
    pings: usize,
}

impl SseReader {
    /// Connects and reads up to the `connected` event.
    pub async fn open(
        addr: SocketAddr,
        opts: &Opts,
        path: &str,
        last_id: Option<&str>,
    ) -> SseReader {
        let mut stream = dial(addr).await;
        let mut req = if opts.ws {
            let sep = if path.contains('?') { '&' } else { '?' };
            let resume = last_id.map_or(String::new(), |id| format!("{sep}last_event_id={id}"));
            format!(
                "GET {path}{resume} HTTP/1.1\r\nhost: {addr}\r\nupgrade: websocket\r\n\
                 connection: Upgrade\r\nsec-websocket-version: 13\r\n\
                 sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            )
        } else {
            format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\naccept: text/event-stream\r\n")
        };
        if let (Some(id), false) = (last_id, opts.ws) {
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
        let ok = if opts.ws {
            "HTTP/1.1 101"
        } else {
            "HTTP/1.1 200"
        };
        assert!(head.starts_with(ok), "stream refused: {head}");
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
            ws: opts.ws,
            pings: 0,
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
        if self.ws {
            self.unframe(bytes, f);
            return;
        }
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

    /// WebSocket frames from the hub (never masked): JSON text messages, and pings to answer.
    fn unframe(&mut self, bytes: &[u8], f: &mut impl FnMut(Event<'_>, Option<&str>)) {
        self.buf.extend_from_slice(bytes);
        let mut at = 0;
        while self.buf.len() - at >= 2 {
            let b = &self.buf[at..];
            let (len, head) = match b[1] & 0x7f {
                126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
                127 if b.len() >= 10 => (
                    u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize,
                    10,
                ),
                126 | 127 => break,
                n => (n as usize, 2),
            };
            if b.len() < head + len {
                break;
            }
            let payload = &b[head..head + len];
            match b[0] & 0x0f {
                1 => {
                    let v: serde_json::Value = serde_json::from_slice(payload).unwrap_or_default();
                    match v["type"].as_str() {
                        Some("event") => {
                            let mut it = v["data"].as_str().unwrap_or("").split(' ');
                            let seq = it.next().and_then(|s| s.parse().ok());
                            let ns = it.next().and_then(|s| s.parse().ok());
                            if let (Some(seq), Some(ns)) = (seq, ns) {
                                f(Event::Data(seq, ns), v["id"].as_str());
                            }
                        }
                        Some(name) => f(Event::Named(name), None),
                        None => {}
                    }
                }
                9 => self.pings += 1,
                _ => {}
            }
            at += head + len;
        }
        self.buf.drain(..at);
    }

    /// Answers the pings read so far (masked pongs with a zero key).
    async fn pong(&mut self) -> bool {
        while self.pings > 0 {
            self.pings -= 1;
            if self
                .stream
                .write_all(&[0x8a, 0x80, 0, 0, 0, 0])
                .await
                .is_err()
            {
                return false;
            }
        }
        true
    }

    /// Reads until `stop` says so or the connection ends.
    pub async fn run(mut self, tally: &mut Tally, mut stop: impl FnMut(&Tally) -> bool) {
        for (seq, ns, id) in std::mem::take(&mut self.early) {
            tally.record(seq, ns);
            tally.arrived(seq, id.as_deref());
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
                    tally.arrived(seq, id);
                }
            });
            if !self.pong().await {
                return;
            }
        }
    }
}

enum Event<'a> {
    Named(&'a str),
    Data(u64, u64),
}
