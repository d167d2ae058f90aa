//! One accepted connection: event streams are written here, everything else goes to hyper.
//!
//! hyper keeps two 8 KiB buffers for the whole life of an HTTP/1 connection (the write
//! buffer, and the read buffer it re-reserves while a response streams, to notice a
//! hang-up), and no builder option shrinks them. For an idle event stream they are most of
//! what the stream costs (docs/BENCHMARKS.md). So the connection's first request head is
//! read here, into a short-lived buffer:
//!
//! - a bodiless HTTP/1.1 `GET /events…` is answered by the same handler hyper would call
//!   (`http::handle`); an event stream is then written straight from its subscription
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
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;

use bytes::{Buf, Bytes};
use http::Request;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::{Service, service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::Watcher;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::runtime::Handle;

use super::head::{Head, header_limit, read_head, response_head, upgrade_head};
use super::io::{Rewind, WriteTimeout};
use crate::error::Error;
use crate::http::{self as api, Body, ReqBody};
use crate::hub::Hub;
use crate::shutdown::Shutdown;
use crate::stream::Subscription;

/// Serves one connection until it closes. `watcher` keeps graceful shutdown waiting for it.
/// Event streams move to the `streams` runtime once they are accepted, so publishing and
/// everything else answered on this one never queues behind a fan-out to many streams.
pub(super) async fn serve(
    hub: Hub,
    stream: TcpStream,
    peer: SocketAddr,
    watcher: Watcher,
    shutdown: Shutdown,
    streams: Handle,
) {
    let io = WriteTimeout::new(stream, hub.config().limits.write_timeout.0);
    // Boxed: the reading state is large and short-lived; the task keeps only what a
    // stream needs.
    match Box::pin(first_request(&hub, io, peer, &shutdown)).await {
        First::Done => {}
        First::Hyper { io, pre } => Box::pin(hyper_conn(hub, io, peer, pre, watcher)).await,
        First::Stream { io, head, body } => {
            let timeout = hub.config().limits.write_timeout.0;
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
        First::Ws {
            io,
            head,
            session,
            rest,
        } => {
            let timeout = hub.config().limits.write_timeout.0;
            let Ok(sock) = io.into_inner().into_std() else {
                return;
            };
            drop(shutdown);
            streams.spawn(async move {
                let Ok(sock) = TcpStream::from_std(sock) else {
                    return;
                };
                let io = WriteTimeout::new(sock, timeout);
                // The upgrade is boxed, so that the task keeps only the connection.
                let accepted = Box::pin(super::ws::accept(hub, io, head, rest, session, peer));
                if let Some(mut conn) = accepted.await {
                    conn.run().await;
                }
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
    Stream {
        io: S,
        head: Vec<u8>,
        body: Subscription,
    },
    /// An accepted WebSocket: the `101` head, then the connection; `rest` is what the
    /// client sent after its head (its first frames, perhaps).
    Ws {
        io: S,
        head: Vec<u8>,
        session: Box<api::WsSession>,
        rest: Bytes,
    },
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
        Head::Refused(e) => {
            refuse(hub, &mut io, peer, &e).await;
            First::Done
        }
        Head::Other(pre) => First::Hyper { io, pre },
        Head::Stream {
            req,
            keep_alive,
            rest,
        } => {
            let Ok(resp) = Box::pin(api::handle(hub.clone(), *req, peer)).await;
            let (parts, body) = resp.into_parts();
            match body {
                Body::Stream(body) => First::Stream {
                    io,
                    head: response_head(parts.status, &parts.headers, None, false),
                    body,
                },
                Body::Upgrade(session) => First::Ws {
                    io,
                    head: upgrade_head(&parts.headers),
                    session,
                    rest,
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

/// Answers a request head that could not be read with its JSON error, and closes: what
/// follows on the connection cannot be trusted to start a request.
async fn refuse<S: AsyncWrite + Unpin>(hub: &Hub, io: &mut S, peer: SocketAddr, e: &Error) {
    let request_id = hub.next_request_id();
    let mut resp = api::error_response(e);
    if let Ok(v) = http::HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    let (parts, body) = resp.into_parts();
    let body = match body {
        Body::Full(b) => b.unwrap_or_default(),
        Body::Stream(_) | Body::Upgrade(_) => Bytes::new(),
    };
    let head = response_head(parts.status, &parts.headers, Some(body.len()), true);
    let _ = io.write_all(&head).await;
    let _ = io.write_all(&body).await;
    let _ = io.shutdown().await;
    tracing::info!(
        target: "access",
        method = "-",
        path = "-",
        status = parts.status.as_u16(),
        bytes = body.len(),
        user = "-",
        %peer,
        request_id,
        error = %e,
        "request refused"
    );
}

/// Writes a stream's response head, then its frames until it ends or the client goes away.
async fn write_stream<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    head: Vec<u8>,
    body: Subscription,
) {
    if io.write_all(&head).await.is_ok() && io.flush().await.is_ok() {
        drop(head);
        stream_events(io, body).await;
    }
}

/// Writes the stream's frames as chunks until it ends or the client goes away.
async fn stream_events<S: AsyncRead + AsyncWrite + Unpin>(io: &mut S, mut body: Subscription) {
    enum Step {
        Frame(Option<Bytes>),
        Gone,
    }
    // Nothing is expected from the client: what it sends is read into a few bytes of stack
    // and dropped, only to see it hang up.
    let mut probe = [0u8; 64];
    loop {
        let step = poll_fn(|cx| {
            if let Poll::Ready(data) = body.poll_next(cx) {
                return Poll::Ready(Step::Frame(data));
            }
            loop {
                let mut buf = ReadBuf::new(&mut probe);
                match std::pin::Pin::new(&mut *io).poll_read(cx, &mut buf) {
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
pub(super) async fn serve_tls(
    hub: Hub,
    stream: TcpStream,
    peer: SocketAddr,
    watcher: Watcher,
    shutdown: Shutdown,
    tls: Arc<rustls::ServerConfig>,
) {
    let limits = &hub.config().limits;
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
            First::Ws {
                io,
                head,
                session,
                rest,
            } => {
                let accepted = Box::pin(super::ws::accept(hub, io, head, rest, session, peer));
                if let Some(mut conn) = accepted.await {
                    conn.run().await;
                }
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
    let limits = &hub.config().limits;
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
