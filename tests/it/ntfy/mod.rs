//! SPEC §11.1: ntfy's publish and subscribe API, spoken beside runnel's own.
//!
//! `publish`: every field in its header, alias and query forms, JSON publishing, the
//! features refused; `subscribe`: the four formats, `since=`, `poll=1`, the filters, resume
//! across a restart; `access`: credentials as ntfy clients send them, reserved names, the
//! error shape, and the mapping both ways with runnel's own API.

mod access;
mod publish;
mod subscribe;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::common::*;

/// `PUT`/`POST`/`GET` on an ntfy path; headers as given.
async fn call(
    hub: &TestHub,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Resp {
    request(hub.addr, method, path, headers, body.as_bytes()).await
}

/// Publishes through ntfy (`POST /<topic>`), insists on success, returns the answer.
async fn ntfy_publish(hub: &TestHub, topic: &str, headers: &[(&str, &str)], body: &str) -> Value {
    let r = call(hub, "POST", &format!("/{topic}"), headers, body).await;
    assert_eq!(r.status, 200, "ntfy publish failed: {}", r.text());
    r.json()
}

/// The events `poll=1` returns for `path` (`/<topics>/json?...`), one object a line.
async fn poll(hub: &TestHub, path: &str) -> Vec<Value> {
    let sep = if path.contains('?') { '&' } else { '?' };
    let r = hub.get(&format!("{path}{sep}poll=1")).await;
    assert_eq!(r.status, 200, "{path}: {}", r.text());
    r.text()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// The `message` fields of messages.
fn messages(v: &[Value]) -> Vec<&str> {
    v.iter().filter_map(|m| m["message"].as_str()).collect()
}

/// Asserts ntfy's error shape with this status.
fn assert_ntfy_error(r: &Resp, status: u16, says: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    let v = r.json();
    assert_eq!(v["http"], status, "{v}");
    let code = v["code"].as_u64().expect("a numeric code");
    assert_eq!(code / 100, u64::from(status), "{v}");
    let e = v["error"].as_str().expect("an error text");
    assert!(e.contains(says), "{e:?} should say {says:?}");
}

/// A streaming ntfy subscription (`/json`, `/sse`, `/raw`) read line by line.
struct Lines {
    pub status: u16,
    pub content_type: String,
    s: TcpStream,
    dechunk: Dechunker,
    text: Vec<u8>,
}

impl Lines {
    async fn open(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Lines {
        let (s, head, rest) = get_head(addr, path, headers).await;
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        let content_type = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-type")
                    .then(|| v.trim().to_string())
            })
            .unwrap_or_default();
        let mut dechunk = Dechunker::default();
        let text = dechunk.feed(&rest);
        Lines {
            status,
            content_type,
            s,
            dechunk,
            text,
        }
    }

    /// The next line (without its newline), or `None` after `t` of silence or at the end.
    async fn line_within(&mut self, t: Duration) -> Option<String> {
        loop {
            if let Some(nl) = self.text.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.text.drain(..=nl).collect();
                return Some(String::from_utf8_lossy(&line[..nl]).to_string());
            }
            if self.dechunk.finished {
                return None;
            }
            let mut chunk = [0u8; 4096];
            let n = match tokio::time::timeout(t, self.s.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => n,
                _ => return None,
            };
            let more = self.dechunk.feed(&chunk[..n]);
            self.text.extend_from_slice(&more);
        }
    }

    /// The response ended with its last chunk (not a dropped connection).
    fn finished(&self) -> bool {
        self.dechunk.finished
    }

    /// The next JSON line (`/json`).
    async fn next_json(&mut self) -> Value {
        let line = self.line_within(TIMEOUT).await.expect("a line in time");
        serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON: {line:?}"))
    }

    /// The next `message` event of a `/json` stream, skipping `open` and `keepalive`.
    async fn next_message(&mut self) -> Value {
        loop {
            let v = self.next_json().await;
            if v["event"] == "message" {
                return v;
            }
        }
    }

    /// Messages until `quiet` passes with none.
    async fn messages_until_quiet(&mut self, quiet: Duration) -> Vec<Value> {
        let mut out = Vec::new();
        while let Some(line) = self.line_within(quiet).await {
            let v: Value = serde_json::from_str(&line).unwrap();
            if v["event"] == "message" {
                out.push(v);
            }
        }
        out
    }
}
