//! A client for HTTPS hubs: self-signed certificates, TLS connections with ALPN, HTTP/1.1 and
//! HTTP/2 requests over them, and event streams read through the hub's own SSE parser.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use runnel::config::TlsConfig;
use runnel::sse::{ParsedEvent, Parser};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::TestHub;

/// Writes a self-signed certificate for localhost and 127.0.0.1; returns (cert, key, PEM).
pub fn make_cert(dir: &Path, name: &str) -> (PathBuf, PathBuf, String) {
    let made = runnel::tls::self_signed(&["localhost".into(), "127.0.0.1".into()]).unwrap();
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&cert, &made.cert_pem).unwrap();
    std::fs::write(&key, &made.key_pem).unwrap();
    (cert, key, made.cert_pem)
}

pub async fn tls_hub(cert: &Path, key: &Path) -> TestHub {
    let (cert, key) = (cert.to_path_buf(), key.to_path_buf());
    TestHub::start_with(move |c| c.tls = Some(TlsConfig { cert, key })).await
}

/// A TLS connection trusting the given certificates, offering `alpn`.
pub async fn connect(
    addr: std::net::SocketAddr,
    trusted: &[&str],
    alpn: &[&[u8]],
) -> TlsStream<TcpStream> {
    let cfg = runnel::client::tls_from_pem(trusted.concat().as_bytes(), alpn).unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(cfg)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("TLS handshake")
}

/// An HTTP/2 client over one TLS connection.
pub async fn h2(
    addr: std::net::SocketAddr,
    ca: &str,
) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    let tls = connect(addr, &[ca], &[b"h2"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    send
}

pub fn get(path: &str, headers: &[(&str, &str)]) -> hyper::Request<Full<Bytes>> {
    let mut b = hyper::Request::get(format!("https://localhost{path}"));
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::default()).unwrap()
}

/// One request over its own HTTP/1.1 TLS connection; the answer's status and JSON.
pub async fn call(
    addr: std::net::SocketAddr,
    ca: &str,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let tls = connect(addr, &[ca], &[b"http/1.1"]).await;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(
            body.map(|b| b.to_string()).unwrap_or_default(),
        )))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    )
}

pub async fn publish(hub: &TestHub, ca: &str, v: serde_json::Value) -> serde_json::Value {
    let (status, answer) = call(hub.addr, ca, "POST", "/publish", Some(v)).await;
    assert_eq!(status, 200, "{answer}");
    answer
}

/// Reads SSE events from a response body.
pub struct Events {
    pub body: Incoming,
    pub parser: Parser,
    ready: std::collections::VecDeque<ParsedEvent>,
}

impl Events {
    pub fn new(resp: hyper::Response<Incoming>) -> Events {
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        Events {
            body: resp.into_body(),
            parser: Parser::default(),
            ready: Default::default(),
        }
    }

    pub async fn next(&mut self) -> ParsedEvent {
        loop {
            if let Some(e) = self.ready.pop_front() {
                return e;
            }
            let frame = tokio::time::timeout(Duration::from_secs(10), self.body.frame())
                .await
                .expect("an event within 10 s")
                .expect("the stream is open")
                .expect("no body error");
            if let Ok(data) = frame.into_data() {
                self.ready.extend(self.parser.feed(&data));
            }
        }
    }

    /// Skips to the `connected` event and returns its data.
    pub async fn connected(&mut self) -> serde_json::Value {
        loop {
            let e = self.next().await;
            if e.event.as_deref() == Some("connected") {
                return serde_json::from_str(&e.data).unwrap();
            }
        }
    }
}

pub fn peer_cert(tls: &TlsStream<TcpStream>) -> Vec<u8> {
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

pub fn der_of(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

/// Reads from `tls` into `seen` until it holds `needle` (within 5 s).
pub async fn read_until(tls: &mut TlsStream<TcpStream>, seen: &mut Vec<u8>, needle: &str) {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(seen).contains(needle) {
        let n = tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no {needle:?} within 5 s"))
            .unwrap();
        assert!(
            n > 0,
            "closed before {needle:?}: {}",
            String::from_utf8_lossy(seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
}

/// An event stream on its own HTTP/1.1 TLS connection, read up to its `connected` event.
pub async fn h1_stream(hub: &TestHub, ca: &str, topic: &str) -> (TlsStream<TcpStream>, Vec<u8>) {
    use tokio::io::AsyncWriteExt;
    let mut tls = connect(hub.addr, &[ca], &[b"http/1.1"]).await;
    let req = format!("GET /events?topic={topic} HTTP/1.1\r\nhost: localhost\r\n\r\n");
    tls.write_all(req.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    read_until(&mut tls, &mut seen, "event: connected").await;
    (tls, seen)
}
