//! A small HTTP/1 client for `runnel pub` and `runnel sub`.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use tokio::net::TcpStream;

use crate::sse::{ParsedEvent, Parser};

/// Characters kept as they are in a topic inside a URL path.
const TOPIC_SET: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b':')
    .remove(b'@')
    .remove(b'/');

/// Where the hub is: `http://host:port[/prefix]` or `https://…`.
#[derive(Clone)]
pub struct Endpoint {
    host: String,
    port: u16,
    authority: String,
    base: String,
    /// For https: whom to trust.
    tls: Option<Arc<rustls::ClientConfig>>,
}

/// Where Debian, Fedora and Alpine keep the system's trusted certificates.
const SYSTEM_ROOTS: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// A TLS client trusting the PEM certificates in `ca`, or else the system's.
fn tls_client(ca: Option<&Path>) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let (pem, from) = match ca {
        Some(p) => (
            std::fs::read(p).with_context(|| format!("cannot read --ca {}", p.display()))?,
            p.display().to_string(),
        ),
        None => SYSTEM_ROOTS
            .iter()
            .find_map(|p| std::fs::read(p).ok().map(|b| (b, (*p).to_string())))
            .ok_or_else(|| anyhow!("no system certificates found; pass --ca FILE"))?,
    };
    tls_from_pem(&pem, &[b"http/1.1"]).with_context(|| from.clone())
}

/// A TLS client (ring) trusting the PEM certificates in `pem`, offering `alpn`. Certificates
/// rustls cannot use (a system bundle may hold some) are skipped; none usable is an error.
pub fn tls_from_pem(pem: &[u8], alpn: &[&[u8]]) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(pem) {
        let _ = roots.add(c.context("a certificate is damaged")?);
    }
    if roots.is_empty() {
        bail!("no usable PEM certificate in it");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(cfg))
}

impl Endpoint {
    /// `ca`: PEM certificates to trust for an https URL (default: the system's).
    pub fn parse(url: &str, ca: Option<&Path>) -> anyhow::Result<Endpoint> {
        let uri: http::Uri = url
            .parse()
            .with_context(|| format!("{url:?} is not a URL"))?;
        let tls = match uri.scheme_str() {
            Some("http") => None,
            Some("https") => Some(tls_client(ca)?),
            _ => bail!("{url:?} must start with http:// or https://"),
        };
        let host = uri
            .host()
            .ok_or_else(|| anyhow!("{url:?} has no host"))?
            .trim_matches(['[', ']'])
            .to_string();
        let port = uri
            .port_u16()
            .unwrap_or(if tls.is_some() { 443 } else { 80 });
        let authority = uri
            .authority()
            .map(|a| a.to_string())
            .unwrap_or_else(|| host.clone());
        Ok(Endpoint {
            host,
            port,
            authority,
            base: uri.path().trim_end_matches('/').to_string(),
            tls,
        })
    }

    fn request(
        &self,
        method: &str,
        path_and_query: &str,
        cred: Option<&str>,
    ) -> http::request::Builder {
        let mut b = Request::builder()
            .method(method)
            .uri(format!("{}{}", self.base, path_and_query))
            .header("host", &self.authority)
            .header("user-agent", concat!("runnel/", env!("CARGO_PKG_VERSION")));
        if let Some(c) = cred {
            b = b.header("authorization", format!("Bearer {c}"));
        }
        b
    }

    async fn send(&self, req: Request<Full<Bytes>>) -> anyhow::Result<http::Response<Incoming>> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .with_context(|| format!("cannot connect to {}", self.authority))?;
        let _ = tcp.set_nodelay(true);
        let Some(tls) = &self.tls else {
            return send_on(tcp, req).await;
        };
        let name = rustls::pki_types::ServerName::try_from(self.host.clone())
            .with_context(|| format!("{:?} is not a host name for TLS", self.host))?;
        let stream = tokio_rustls::TlsConnector::from(tls.clone())
            .connect(name, tcp)
            .await
            .with_context(|| format!("TLS with {} failed", self.authority))?;
        send_on(stream, req).await
    }
}

async fn send_on<T>(io: T, req: Request<Full<Bytes>>) -> anyhow::Result<http::Response<Incoming>>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender.send_request(req).await?)
}

fn topic_path(topic: &str) -> String {
    utf8_percent_encode(topic, TOPIC_SET).to_string()
}

/// The message of a JSON error body, or the body itself.
fn error_message(status: StatusCode, body: &[u8]) -> String {
    let msg = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string());
    format!("{status}: {msg}")
}

/// `runnel health`: the hub's `/health` answer, within `timeout`. Ok when it says 200.
pub async fn health(ep: &Endpoint, timeout: Duration) -> anyhow::Result<serde_json::Value> {
    let req = ep
        .request("GET", "/health", None)
        .body(Full::new(Bytes::new()))?;
    let resp = tokio::time::timeout(timeout, ep.send(req))
        .await
        .map_err(|_| anyhow!("no answer from {} within {timeout:?}", ep.authority))??;
    let status = resp.status();
    let body = tokio::time::timeout(timeout, resp.into_body().collect())
        .await
        .map_err(|_| anyhow!("the answer from {} did not arrive in time", ep.authority))??
        .to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    if status != StatusCode::OK {
        bail!("{status}: {v}");
    }
    Ok(v)
}

/// `runnel pub`: publishes `data` to `topic`; returns the hub's JSON answer.
pub async fn publish(
    ep: &Endpoint,
    topic: &str,
    data: Vec<u8>,
    event: Option<&str>,
    cred: Option<&str>,
) -> anyhow::Result<String> {
    let mut path = format!("/publish/{}", topic_path(topic));
    if let Some(e) = event {
        path.push('?');
        path.push_str(
            &form_urlencoded::Serializer::new(String::new())
                .append_pair("event", e)
                .finish(),
        );
    }
    let req = ep
        .request("POST", &path, cred)
        .header("content-type", "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(data)))?;
    let resp = ep.send(req).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        bail!("{}", error_message(status, &body));
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// How `runnel sub` prints events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// One JSON object per line: `{"id", "event", "topics", "data"}`, the data as the JSON
    /// value it holds (text that is no JSON stays a string).
    Json,
    /// One JSON object per line, `{"id", "event", "data"}`, the data as text.
    Raw,
    /// The data only, one event per line.
    Data,
}

enum Failure {
    /// Retrying cannot help (bad topic, no permission): stop.
    Fatal(anyhow::Error),
    /// Network trouble or the hub restarting: try again.
    Retry(anyhow::Error),
}

/// `runnel sub`: prints events forever, reconnecting with the last id it saw.
pub async fn subscribe(
    ep: &Endpoint,
    topics: &[String],
    cred: Option<&str>,
    mut last_id: Option<String>,
    output: Output,
) -> anyhow::Result<()> {
    let mut retry = Duration::from_secs(3);
    loop {
        match stream_once(ep, topics, cred, &mut last_id, &mut retry, output).await {
            Ok(()) => eprintln!("runnel: stream ended; reconnecting"),
            Err(Failure::Fatal(e)) => return Err(e),
            Err(Failure::Retry(e)) => eprintln!("runnel: {e:#}; retrying in {retry:?}"),
        }
        tokio::time::sleep(retry).await;
    }
}

async fn stream_once(
    ep: &Endpoint,
    topics: &[String],
    cred: Option<&str>,
    last_id: &mut Option<String>,
    retry: &mut Duration,
    output: Output,
) -> Result<(), Failure> {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for t in topics {
        q.append_pair("topic", t);
    }
    let q = q.finish();
    let path = if q.is_empty() {
        "/events".to_string()
    } else {
        format!("/events?{q}")
    };
    let mut b = ep
        .request("GET", &path, cred)
        .header("accept", "text/event-stream");
    if let Some(id) = last_id.as_deref() {
        b = b.header("last-event-id", id);
    }
    let req = b
        .body(Full::new(Bytes::new()))
        .map_err(|e| Failure::Fatal(e.into()))?;
    let resp = ep.send(req).await.map_err(Failure::Retry)?;
    let status = resp.status();
    if status != StatusCode::OK {
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let e = anyhow!("{}", error_message(status, &body));
        let retryable = status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS;
        return Err(if retryable {
            Failure::Retry(e)
        } else {
            Failure::Fatal(e)
        });
    }
    let mut body = resp.into_body();
    let mut parser = Parser::default();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Failure::Retry(e.into()))?;
        let Some(data) = frame.data_ref() else {
            continue;
        };
        for ev in parser.feed(data) {
            if let Some(r) = ev.retry {
                *retry = Duration::from_millis(r);
            }
            if ev.id.is_some() {
                last_id.clone_from(&ev.id);
            }
            print_event(&ev, output).map_err(|e| Failure::Fatal(e.into()))?;
        }
    }
    Ok(())
}

fn print_event(ev: &ParsedEvent, output: Output) -> std::io::Result<()> {
    // Control events carry no id; they go to stderr so stdout holds only the events.
    if ev.id.is_none() {
        if let Some(name) = &ev.event {
            eprintln!("runnel: {name} {}", ev.data);
        }
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    match output {
        Output::Json => {
            let data = serde_json::from_str::<serde_json::Value>(&ev.data)
                .unwrap_or_else(|_| serde_json::Value::String(ev.data.clone()));
            let v = serde_json::json!({
                "id": ev.id, "event": ev.event, "topics": ev.topics, "data": data
            });
            writeln!(out, "{v}")?;
        }
        Output::Raw => {
            let v = serde_json::json!({"id": ev.id, "event": ev.event, "data": ev.data});
            writeln!(out, "{v}")?;
        }
        Output::Data => writeln!(out, "{}", ev.data)?,
    }
    out.flush()
}
