//! A raw HTTP/1.1 client: one request per connection, and a parser for what comes back.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::TIMEOUT;

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

/// A JSON `POST` to the hub at `addr` (for tasks that cannot borrow the `TestHub`).
pub async fn post_json_at(addr: SocketAddr, path: &str, v: &Value) -> Resp {
    request(
        addr,
        "POST",
        path,
        &[("content-type", "application/json")],
        v.to_string().as_bytes(),
    )
    .await
}

/// Publishes to the hub at `addr`, insists on success, and returns the event's id.
pub async fn publish_at(addr: SocketAddr, v: &Value) -> String {
    let r = post_json_at(addr, "/publish", v).await;
    assert_eq!(r.status, 200, "publish failed: {}", r.text());
    r.json()["id"].as_str().expect("an id").to_string()
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

/// Sends `GET path` with these headers on a new connection and reads the response head:
/// the connection, the head's text, and what followed it.
pub async fn get_head(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (TcpStream, String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut head = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\n");
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
    (s, head, buf[end + 4..].to_vec())
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
