//! WebSocket clients for tests: a library client (tokio-tungstenite, written by others) for
//! the protocol, and a raw one that writes frames by hand, for broken input and for a
//! client that stops reading or never answers a ping.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::TIMEOUT;

pub struct Ws<S = MaybeTlsStream<TcpStream>> {
    pub s: WebSocketStream<S>,
    /// Messages read past by [`Ws::call`] while it waited for its answer.
    stash: std::collections::VecDeque<Message>,
}

/// What a refused handshake answered.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub body: Value,
}

impl Ws {
    /// Opens `path` (`/ws?...`) with these extra headers; a refusal's status and JSON.
    pub async fn try_open(
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Ws, Refused> {
        let mut req = format!("ws://{addr}{path}").into_client_request().unwrap();
        for (k, v) in headers {
            req.headers_mut().insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        match tokio::time::timeout(TIMEOUT, tokio_tungstenite::connect_async(req)).await {
            Ok(Ok((s, resp))) => {
                assert_eq!(resp.status(), 101);
                Ok(Ws {
                    s,
                    stash: Default::default(),
                })
            }
            Ok(Err(WsError::Http(resp))) => Err(Refused {
                status: resp.status().as_u16(),
                body: serde_json::from_slice(resp.body().as_deref().unwrap_or(b"null"))
                    .unwrap_or(Value::Null),
            }),
            Ok(Err(e)) => panic!("WebSocket connect failed: {e}"),
            Err(_) => panic!("WebSocket connect timed out"),
        }
    }

    pub async fn open(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Ws {
        match Self::try_open(addr, path, headers).await {
            Ok(ws) => ws,
            Err(r) => panic!("WebSocket refused: {} {}", r.status, r.body),
        }
    }
}

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> Ws<S> {
    /// A client on a connection upgraded elsewhere (over TLS).
    pub fn from_stream(s: WebSocketStream<S>) -> Ws<S> {
        Ws {
            s,
            stash: Default::default(),
        }
    }

    /// The next message (skipping pings), within `t`; `None` on close or silence.
    pub async fn next_within(&mut self, t: Duration) -> Option<Message> {
        if let Some(m) = self.stash.pop_front() {
            return Some(m);
        }
        loop {
            match tokio::time::timeout(t, self.s.next()).await {
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                Ok(Some(Ok(m))) => return Some(m),
                _ => return None,
            }
        }
    }

    /// The next JSON message; panics on anything else.
    pub async fn next_json(&mut self) -> Value {
        match self.next_within(TIMEOUT).await {
            Some(Message::Text(t)) => serde_json::from_str(t.as_str()).expect("JSON message"),
            other => panic!("expected a JSON text message, got {other:?}"),
        }
    }

    /// The `connected` message, which comes first.
    pub async fn connected(&mut self) -> Value {
        let v = self.next_json().await;
        assert_eq!(v["type"], "connected", "{v}");
        v
    }

    /// The close code the hub sends next, after any text messages (returned too).
    pub async fn close_code(&mut self) -> (Vec<Value>, Option<u16>) {
        let mut texts = Vec::new();
        loop {
            match self.next_within(TIMEOUT).await {
                Some(Message::Text(t)) => texts.push(serde_json::from_str(t.as_str()).unwrap()),
                Some(Message::Close(f)) => {
                    return (texts, f.map(|f| u16::from(f.code)));
                }
                Some(other) => panic!("unexpected {other:?}"),
                None => return (texts, None),
            }
        }
    }

    pub async fn send(&mut self, v: &Value) {
        self.s.send(Message::text(v.to_string())).await.unwrap();
    }

    /// Sends a message and returns the answer (`ack`, `pong` or `error`); what came
    /// before it is read later.
    pub async fn call(&mut self, v: &Value) -> Value {
        self.send(v).await;
        let mut before = Vec::new();
        loop {
            let m = tokio::time::timeout(TIMEOUT, self.s.next()).await;
            let Ok(Some(Ok(m))) = m else {
                panic!("no answer to {v}: {m:?}");
            };
            if let Message::Text(t) = &m {
                let a: Value = serde_json::from_str(t.as_str()).unwrap();
                if matches!(a["type"].as_str(), Some("ack" | "pong" | "error")) {
                    self.stash.extend(before);
                    return a;
                }
            }
            before.push(m);
        }
    }

    /// Events (their data) until the hub is quiet for `quiet`.
    pub async fn events_until_quiet(&mut self, quiet: Duration) -> Vec<Value> {
        let mut out = Vec::new();
        while let Some(m) = self.next_within(quiet).await {
            if let Message::Text(t) = m {
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                if v["type"] == "event" {
                    out.push(v);
                }
            }
        }
        out
    }
}

/// A client that frames by hand: the handshake, masked frames of any shape, and the
/// server's frames read one by one.
pub struct RawWs {
    pub tcp: TcpStream,
    buf: Vec<u8>,
}

impl RawWs {
    pub async fn open(addr: SocketAddr, path: &str) -> RawWs {
        Self::open_with(addr, path, &[]).await
    }

    /// Opens with `first` (frames) sent in the same write as the request head.
    pub async fn open_with(addr: SocketAddr, path: &str, first: &[u8]) -> RawWs {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "GET {path} HTTP/1.1\r\nhost: {addr}\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\
             sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        );
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(first);
        tcp.write_all(&bytes).await.unwrap();
        let mut buf = Vec::new();
        let end = loop {
            let mut chunk = [0u8; 1024];
            let n = tokio::time::timeout(TIMEOUT, tcp.read(&mut chunk))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "closed during the handshake");
            buf.extend_from_slice(&chunk[..n]);
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        // RFC 6455's own example of a key and its answer.
        assert!(
            head.contains("sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"),
            "{head}"
        );
        RawWs {
            tcp,
            buf: buf[end..].to_vec(),
        }
    }

    /// Sends one frame; `mask` false makes it a (forbidden) unmasked client frame.
    pub async fn frame(&mut self, fin: bool, opcode: u8, payload: &[u8], mask: bool) {
        let f = Self::encode(fin, opcode, payload, mask);
        // A peer that closed may refuse the rest; what it answered is read next.
        let _ = self.tcp.write_all(&f).await;
    }

    /// One client frame's bytes.
    pub fn encode(fin: bool, opcode: u8, payload: &[u8], mask: bool) -> Vec<u8> {
        let mut f = vec![if fin { 0x80 } else { 0 } | opcode];
        let m = if mask { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => f.push(m | n as u8),
            n if n <= 0xffff => {
                f.push(m | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(m | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let key = [0x12u8, 0x34, 0x56, 0x78];
        if mask {
            f.extend_from_slice(&key);
            f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        } else {
            f.extend_from_slice(payload);
        }
        f
    }

    async fn fill(&mut self, n: usize) -> bool {
        while self.buf.len() < n {
            let mut chunk = [0u8; 4096];
            match tokio::time::timeout(TIMEOUT, self.tcp.read(&mut chunk)).await {
                Ok(Ok(k)) if k > 0 => self.buf.extend_from_slice(&chunk[..k]),
                _ => return false,
            }
        }
        true
    }

    /// The server's next frame: opcode and payload; `None` when the connection ends.
    pub async fn read_frame(&mut self) -> Option<(u8, Vec<u8>)> {
        if !self.fill(2).await {
            return None;
        }
        let opcode = self.buf[0] & 0x0f;
        assert_eq!(self.buf[1] & 0x80, 0, "server frames are not masked");
        let (len, at) = match self.buf[1] & 0x7f {
            126 => {
                self.fill(4).await.then_some(())?;
                (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4)
            }
            127 => {
                self.fill(10).await.then_some(())?;
                let b: [u8; 8] = self.buf[2..10].try_into().unwrap();
                (u64::from_be_bytes(b) as usize, 10)
            }
            n => (n as usize, 2),
        };
        if !self.fill(at + len).await {
            return None;
        }
        let payload = self.buf[at..at + len].to_vec();
        self.buf.drain(..at + len);
        Some((opcode, payload))
    }

    /// The next text frame as JSON, skipping pings.
    pub async fn next_json(&mut self) -> Value {
        loop {
            match self.read_frame().await {
                Some((1, p)) => return serde_json::from_slice(&p).unwrap(),
                Some((9, _)) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// Reads until the close frame; its code.
    pub async fn close_code(&mut self) -> Option<u16> {
        loop {
            match self.read_frame().await? {
                (8, p) if p.len() >= 2 => return Some(u16::from_be_bytes([p[0], p[1]])),
                (8, _) => return Some(1005),
                _ => continue,
            }
        }
    }
}
