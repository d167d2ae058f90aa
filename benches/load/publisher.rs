//! HTTP: a keep-alive publisher connection, and publishing at a steady rate.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::Opts;
use crate::client::{Io, dial, expand, find};
use crate::clock::data_for;

pub struct Publisher {
    pub stream: Io,
    buf: Vec<u8>,
    addr: SocketAddr,
}

impl Publisher {
    pub async fn connect(addr: SocketAddr) -> Publisher {
        let stream = dial(addr).await;
        Publisher {
            stream,
            buf: Vec::with_capacity(4096),
            addr,
        }
    }

    /// One request; returns the status and body. Reconnects once if the server closed.
    pub async fn post(
        &mut self,
        opts: &Opts,
        path: &str,
        ctype: &str,
        body: &[u8],
    ) -> (u16, Vec<u8>) {
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

    /// A GET; returns the status and body.
    pub async fn get(&mut self, opts: &Opts, path: &str) -> (u16, Vec<u8>) {
        let mut req = format!("GET {path} HTTP/1.1\r\nhost: {}\r\n", self.addr);
        for h in &opts.headers {
            req.push_str(h);
            req.push_str("\r\n");
        }
        req.push_str("\r\n");
        if self.stream.write_all(req.as_bytes()).await.is_ok()
            && let Some(r) = self.read_response().await
        {
            return r;
        }
        (0, Vec::new())
    }

    pub async fn read_response(&mut self) -> Option<(u16, Vec<u8>)> {
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

/// Publishes `total` events at `rate` over `--publishers` connections to topics from
/// `topic_of`, to the hubs at `addrs` in turn: event `seq` goes to `addrs[seq % len]` (each
/// publisher holds a connection to every hub). Returns (published, failed, publish latencies
/// in µs).
pub async fn publish_at_rate(
    addrs: &[SocketAddr],
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
        let (o, addrs) = (opts.clone(), addrs.to_vec());
        tasks.push(tokio::spawn(async move {
            let mut conns = Vec::with_capacity(addrs.len());
            for addr in addrs {
                conns.push(Publisher::connect(addr).await);
            }
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
                let hub = (seq % conns.len() as u64) as usize;
                let p = &mut conns[hub];
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
