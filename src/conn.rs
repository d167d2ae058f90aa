//! One accepted connection: event streams are written here, everything else goes to hyper.
//!
//! hyper keeps two 8 KiB buffers for the whole life of an HTTP/1 connection (the write
//! buffer, and the read buffer it re-reserves while a response streams, to notice a
//! hang-up), and no builder option shrinks them. For an idle event stream they are most of
//! what the stream costs (docs/BENCHMARKS.md). So the connection's first request head is
//! read here, into a short-lived buffer:
//!
//! - a bodiless HTTP/1.1 `GET /events…` is answered by the same handler hyper would call
//!   ([`api::handle`]); an event stream is then written straight from the broker's frames
//!   with chunked framing, and the socket is only probed with a few bytes of stack to see
//!   the client hang up;
//! - any other request, malformed or oversized heads included, goes to hyper with the bytes
//!   already read put back in front, so hyper parses (and answers) it as usual; so does
//!   whatever follows a non-stream answer on a kept-alive connection.
//!
//! HTTPS connections that ALPN puts on HTTP/1.1 are served the same way over rustls; on
//! HTTP/2, where one connection carries many streams, hyper serves everything.

use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http::header::{CONNECTION, CONTENT_LENGTH, HeaderName, HeaderValue, TRANSFER_ENCODING};
use http::{Method, Request, StatusCode, Uri, Version};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::{Service, service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::Watcher;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::runtime::Handle;

use crate::config::LimitsConfig;
use crate::http::{self as api, Body, ReqBody};
use crate::hub::Hub;
use crate::io::WriteTimeout;
use crate::shutdown::Shutdown;
use crate::sse::SseBody;

/// Most request heads fit; the buffer grows (up to `limits.max_header_bytes`) for the rest.
const FIRST_READ: usize = 2048;
/// Header lines parsed here; a head with more goes to hyper.
const MAX_HEADERS: usize = 64;

/// Serves one connection until it closes. `watcher` keeps graceful shutdown waiting for it.
/// Event streams move to the `streams` runtime once they are accepted, so publishing and
/// everything else answered on this one never queues behind a fan-out to many streams.
pub async fn serve(
    hub: Hub,
    stream: TcpStream,
    peer: SocketAddr,
    watcher: Watcher,
    shutdown: Shutdown,
    streams: Handle,
) {
    let io = WriteTimeout::new(stream, hub.config.limits.write_timeout.0);
    // Boxed: the reading state is large and short-lived; the task keeps only what a
    // stream needs.
    match Box::pin(first_request(&hub, io, peer, &shutdown)).await {
        First::Done => {}
        First::Hyper { io, pre } => Box::pin(hyper_conn(hub, io, peer, pre, watcher)).await,
        First::Stream { io, head, body } => {
            let timeout = hub.config.limits.write_timeout.0;
            let Ok(sock) = io.into_inner().into_std() else {
                return;
            };
            streams.spawn(async move {
                let Ok(sock) = TcpStream::from_std(sock) else {
                    return;
                };
                let mut io = WriteTimeout::new(sock, timeout);
                write_stream(&mut io, head, body).await;
                drop(watcher);
            });
        }
    }
}

/// What the first request on a connection came to.
enum First<S> {
    /// Answered and closed, or nothing usable came.
    Done,
    /// For hyper, with the bytes already read put back in front.
    Hyper { io: S, pre: Bytes },
    /// An event stream: its response head, then its frames.
    Stream { io: S, head: Vec<u8>, body: SseBody },
}

/// Reads the first request head; answers it here if it asks for an event stream.
async fn first_request<S: AsyncRead + AsyncWrite + Unpin>(
    hub: &Hub,
    mut io: S,
    peer: SocketAddr,
    shutdown: &Shutdown,
) -> First<S> {
    match read_head(hub, &mut io, shutdown).await {
        Head::Closed => First::Done,
        Head::Other(pre) => First::Hyper { io, pre },
        Head::Stream {
            req,
            keep_alive,
            rest,
        } => {
            let Ok(resp) = Box::pin(api::handle(hub.clone(), *req, peer)).await;
            let (parts, body) = resp.into_parts();
            match body {
                Body::Sse(body) => First::Stream {
                    io,
                    head: response_head(parts.status, &parts.headers, None, false),
                    body,
                },
                Body::Full(b) => {
                    let b = b.unwrap_or_default();
                    let head =
                        response_head(parts.status, &parts.headers, Some(b.len()), !keep_alive);
                    drop(parts);
                    let sent = io.write_all(&head).await.is_ok()
                        && io.write_all(&b).await.is_ok()
                        && io.flush().await.is_ok();
                    if sent && keep_alive {
                        First::Hyper { io, pre: rest }
                    } else {
                        let _ = io.shutdown().await;
                        First::Done
                    }
                }
            }
        }
    }
}

/// Writes a stream's response head, then its frames until it ends or the client goes away.
async fn write_stream<S: AsyncRead + AsyncWrite + Unpin>(io: &mut S, head: Vec<u8>, body: SseBody) {
    if io.write_all(&head).await.is_ok() && io.flush().await.is_ok() {
        drop(head);
        stream_events(io, body).await;
    }
}

enum Head {
    /// The client went away, sent nothing in time, or the hub is stopping.
    Closed,
    /// Not an event stream (or not parsed here): hyper's, with these bytes first.
    Other(Bytes),
    /// `GET /events…`; `rest` is what followed the head.
    Stream {
        req: Box<api::Req>,
        keep_alive: bool,
        rest: Bytes,
    },
}

async fn read_head<S: AsyncRead + Unpin>(hub: &Hub, io: &mut S, shutdown: &Shutdown) -> Head {
    let limits = &hub.config.limits;
    let max = header_limit(limits);
    let read = async {
        let mut buf: Vec<u8> = Vec::with_capacity(FIRST_READ.min(max));
        loop {
            if buf.len() == buf.capacity() {
                if buf.len() >= max {
                    // hyper answers 431.
                    return Head::Other(Bytes::from(buf));
                }
                buf.reserve((buf.len() * 2).min(max) - buf.len());
            }
            match io.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return Head::Closed,
                Ok(_) => {}
            }
            match parse_head(&buf) {
                Parsed::Partial => {}
                Parsed::Other => return Head::Other(Bytes::from(buf)),
                Parsed::Stream {
                    req,
                    keep_alive,
                    len,
                } => {
                    let rest = Bytes::copy_from_slice(&buf[len..]);
                    return Head::Stream {
                        req,
                        keep_alive,
                        rest,
                    };
                }
            }
        }
    };
    tokio::select! {
        _ = shutdown.wait() => Head::Closed,
        // Like hyper's header timeout: a head that does not arrive in time closes the
        // connection without an answer.
        r = tokio::time::timeout(limits.request_timeout.0, read) => r.unwrap_or(Head::Closed),
    }
}

enum Parsed {
    Partial,
    Other,
    Stream {
        req: Box<api::Req>,
        keep_alive: bool,
        len: usize,
    },
}

/// Parses a request head: an event-stream request becomes a `Request`, anything else (or
/// anything odd) is left to hyper.
fn parse_head(buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut r = httparse::Request::new(&mut headers);
    let len = match r.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Other,
    };
    let (Some("GET"), Some(path), Some(1)) = (r.method, r.path, r.version) else {
        return Parsed::Other;
    };
    let route = path.split('?').next().unwrap_or("");
    if route != "/events" && !route.starts_with("/events/") {
        return Parsed::Other;
    }
    let Ok(uri) = Uri::try_from(path) else {
        return Parsed::Other;
    };
    let mut req = Request::new(ReqBody::Empty);
    *req.method_mut() = Method::GET;
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;
    let map = req.headers_mut();
    let mut keep_alive = true;
    for h in r.headers.iter() {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_bytes(h.value),
        ) else {
            return Parsed::Other;
        };
        if name == TRANSFER_ENCODING || (name == CONTENT_LENGTH && h.value.trim_ascii() != b"0") {
            // A body on a GET: rare enough to leave to hyper.
            return Parsed::Other;
        }
        if name == CONNECTION
            && value
                .to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
        {
            keep_alive = false;
        }
        map.append(name, value);
    }
    Parsed::Stream {
        req: Box::new(req),
        keep_alive,
        len,
    }
}

/// A response head as hyper would write it: status line, headers, `date`, and the framing.
fn response_head(
    status: StatusCode,
    headers: &http::HeaderMap,
    content_length: Option<usize>,
    close: bool,
) -> Vec<u8> {
    let mut h = Vec::with_capacity(256);
    h.extend_from_slice(b"HTTP/1.1 ");
    h.extend_from_slice(status.as_str().as_bytes());
    h.push(b' ');
    h.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    h.extend_from_slice(b"\r\n");
    for (k, v) in headers {
        if k == CONTENT_LENGTH || k == TRANSFER_ENCODING || k == CONNECTION {
            continue;
        }
        h.extend_from_slice(k.as_str().as_bytes());
        h.extend_from_slice(b": ");
        h.extend_from_slice(v.as_bytes());
        h.extend_from_slice(b"\r\n");
    }
    h.extend_from_slice(b"date: ");
    h.extend_from_slice(httpdate::fmt_http_date(std::time::SystemTime::now()).as_bytes());
    h.extend_from_slice(b"\r\n");
    match content_length {
        Some(n) => h.extend_from_slice(format!("content-length: {n}\r\n").as_bytes()),
        None => h.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    if close {
        h.extend_from_slice(b"connection: close\r\n");
    }
    h.extend_from_slice(b"\r\n");
    h
}

/// Writes the stream's frames as chunks until it ends or the client goes away.
async fn stream_events<S: AsyncRead + AsyncWrite + Unpin>(io: &mut S, mut body: SseBody) {
    enum Step {
        Frame(Option<Bytes>),
        Gone,
    }
    // Nothing is expected from the client: what it sends is read into a few bytes of stack
    // and dropped, only to see it hang up.
    let mut probe = [0u8; 64];
    loop {
        let step = poll_fn(|cx| {
            if let Poll::Ready(f) = Pin::new(&mut body).poll_frame(cx) {
                let data = f.and_then(|f| f.ok()).and_then(|f| f.into_data().ok());
                return Poll::Ready(Step::Frame(data));
            }
            loop {
                let mut buf = ReadBuf::new(&mut probe);
                match Pin::new(&mut *io).poll_read(cx, &mut buf) {
                    Poll::Ready(Ok(())) if buf.filled().is_empty() => {
                        return Poll::Ready(Step::Gone);
                    }
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(_)) => return Poll::Ready(Step::Gone),
                    Poll::Pending => return Poll::Pending,
                }
            }
        })
        .await;
        match step {
            Step::Frame(Some(data)) => {
                if write_chunk(io, &data).await.is_err() {
                    return;
                }
            }
            Step::Frame(None) => {
                // The stream ended (closed by the hub): finish the body properly.
                let _ = io.write_all(b"0\r\n\r\n").await;
                let _ = io.flush().await;
                let _ = io.shutdown().await;
                return;
            }
            Step::Gone => return,
        }
    }
}

/// One chunk: size line, data, CRLF, in one vectored write when the socket takes it, then
/// a flush (which sends it on a TLS connection; a no-op on a plain one).
async fn write_chunk<S: AsyncWrite + Unpin>(io: &mut S, data: &[u8]) -> io::Result<()> {
    if data.is_empty() {
        return Ok(());
    }
    let mut size = [0u8; 18];
    let n = {
        use std::io::Write as _;
        let mut c = io::Cursor::new(&mut size[..]);
        let _ = write!(c, "{:x}\r\n", data.len());
        c.position() as usize
    };
    let mut chunk = Buf::chain(Buf::chain(&size[..n], data), &b"\r\n"[..]);
    io.write_all_buf(&mut chunk).await?;
    io.flush().await
}

/// Serves one HTTPS connection: the handshake (bounded by `limits.request_timeout`, and
/// given up at shutdown), then what ALPN chose. HTTP/2 goes to hyper. HTTP/1.1 is served
/// like a plain connection: an event stream is written here, without hyper's buffers, and
/// stays on this runtime (rustls's state cannot move between runtimes' sockets).
pub async fn serve_tls(
    hub: Hub,
    stream: TcpStream,
    peer: SocketAddr,
    watcher: Watcher,
    shutdown: Shutdown,
    tls: Arc<rustls::ServerConfig>,
) {
    let limits = &hub.config.limits;
    let io = WriteTimeout::new(stream, limits.write_timeout.0);
    let accept = tokio_rustls::TlsAcceptor::from(tls).accept(io);
    let tls_stream = tokio::select! {
        r = tokio::time::timeout(limits.request_timeout.0, accept) => match r {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake timed out");
                return;
            }
        },
        _ = shutdown.wait() => return,
    };
    if tls_stream.get_ref().1.alpn_protocol() != Some(b"h2".as_slice()) {
        match Box::pin(first_request(&hub, tls_stream, peer, &shutdown)).await {
            First::Done => {}
            First::Hyper { io, pre } => Box::pin(hyper_conn(hub, io, peer, pre, watcher)).await,
            First::Stream { mut io, head, body } => {
                write_stream(&mut io, head, body).await;
                drop(watcher);
            }
        }
        return;
    }
    let conn = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(header_limit(limits)).unwrap_or(u32::MAX))
        .serve_connection(TokioIo::new(tls_stream), service(&hub, peer));
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(%peer, error = %e, "HTTP/2 connection ended with an error");
    }
}

/// Hands the connection to hyper; `pre` is what was already read from it.
async fn hyper_conn<S>(hub: Hub, io: S, peer: SocketAddr, pre: Bytes, watcher: Watcher)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = &hub.config.limits;
    // The header timeout also closes connections that never send a request, and idle
    // keep-alive connections between requests.
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.request_timeout.0)
        .max_buf_size(header_limit(limits))
        .serve_connection(TokioIo::new(Rewind { pre, inner: io }), service(&hub, peer));
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// The hyper service of one connection, plain or TLS: every request goes to the API.
fn service(
    hub: &Hub,
    peer: SocketAddr,
) -> impl Service<
    Request<Incoming>,
    Response = api::Resp,
    Error = Infallible,
    Future = impl Future<Output = Result<api::Resp, Infallible>> + Send + 'static,
> + Clone {
    let hub = hub.clone();
    service_fn(move |req: Request<Incoming>| {
        api::handle(hub.clone(), req.map(ReqBody::Hyper), peer)
    })
}

/// How large a request head may grow (`limits.max_header_bytes`), for hyper's builders.
fn header_limit(limits: &LimitsConfig) -> usize {
    usize::try_from(limits.max_header_bytes.0).unwrap_or(16 << 10)
}

/// A socket that first yields bytes already read from it.
struct Rewind<T> {
    pre: Bytes,
    inner: T,
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pre.has_remaining() {
            let n = this.pre.len().min(buf.remaining());
            buf.put_slice(&this.pre[..n]);
            this.pre.advance(n);
            if !this.pre.has_remaining() {
                this.pre = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewind<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_stream(raw: &str) -> bool {
        matches!(parse_head(raw.as_bytes()), Parsed::Stream { .. })
    }

    #[test]
    fn only_bodiless_http11_event_gets_are_taken() {
        assert!(is_stream("GET /events?topic=a HTTP/1.1\r\nhost: x\r\n\r\n"));
        assert!(is_stream("GET /events/a%2Fb HTTP/1.1\r\n\r\n"));
        assert!(is_stream(
            "GET /events HTTP/1.1\r\ncontent-length: 0\r\n\r\n"
        ));
        assert!(!is_stream("GET /eventsx HTTP/1.1\r\n\r\n"));
        assert!(!is_stream("GET /health HTTP/1.1\r\n\r\n"));
        assert!(!is_stream("POST /events HTTP/1.1\r\n\r\n"));
        assert!(!is_stream("HEAD /events HTTP/1.1\r\n\r\n"));
        assert!(!is_stream("GET /events HTTP/1.0\r\n\r\n"));
        assert!(!is_stream(
            "GET /events HTTP/1.1\r\ncontent-length: 5\r\n\r\nhello"
        ));
        assert!(!is_stream(
            "GET /events HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n"
        ));
        assert!(!is_stream("GET /events HTTP/1.1\r\nbad header\r\n\r\n"));
        assert!(matches!(
            parse_head(b"GET /events HTTP/1.1\r\nhost: x\r\n"),
            Parsed::Partial
        ));
    }

    #[test]
    fn connection_close_is_seen() {
        let raw = b"GET /events HTTP/1.1\r\nConnection: keep-alive, Close\r\n\r\nXY";
        let Parsed::Stream {
            keep_alive, len, ..
        } = parse_head(raw)
        else {
            panic!("not a stream");
        };
        assert!(!keep_alive);
        assert_eq!(&raw[len..], b"XY");
    }

    #[test]
    fn heads_look_like_hypers() {
        let mut h = http::HeaderMap::new();
        h.insert(
            "content-type",
            HeaderValue::from_static("text/event-stream"),
        );
        h.insert(CONTENT_LENGTH, HeaderValue::from_static("99"));
        let s = String::from_utf8(response_head(StatusCode::OK, &h, None, false)).unwrap();
        assert!(s.starts_with("HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ndate: "));
        assert!(s.ends_with("\r\ntransfer-encoding: chunked\r\n\r\n"));
        assert!(!s.contains("99"));
        let s =
            String::from_utf8(response_head(StatusCode::UNAUTHORIZED, &h, Some(12), true)).unwrap();
        assert!(s.starts_with("HTTP/1.1 401 Unauthorized\r\n"));
        assert!(s.ends_with("content-length: 12\r\nconnection: close\r\n\r\n"));
    }
}
