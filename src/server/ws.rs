//! One WebSocket connection (SPEC §5.8), after its `101`.
//!
//! The connection is written like an event stream: what its `Subscription` yields is
//! already WebSocket frames (each event encoded once for every connection, `Format::Ws`), and
//! goes straight to the socket. Reading is the WebSocket library's (tokio-tungstenite, with a
//! small read buffer so an idle connection stays small): unmasking, fragments, UTF-8, answering
//! pings, the close handshake. Before each write of the hub's own frames the library's
//! pending output (a pong, a close reply) is flushed, so frames never interleave.
//!
//! Heartbeats are pings: the broker's keepalive (in this format a ping frame) when the
//! connection is idle, and one from here when it is busy; a peer from which nothing was
//! heard for two heartbeats is dropped when the task next wakes.

use std::future::poll_fn;
use std::net::SocketAddr;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::{Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::{Message, Role, WebSocketConfig};

use super::ws_ops;
use crate::http::WsSession;
use crate::hub::Hub;
use crate::ws::{self, close};

/// The library's read buffer: frames larger than this are read in several steps, and an
/// idle connection keeps only this much (docs/BENCHMARKS.md).
const READ_BUFFER: usize = 512;

/// What woke the connection's task.
enum Step {
    /// Bytes from the subscription, or its end.
    Out(Option<Bytes>),
    /// A message from the client, a broken frame, or the end of its side.
    In(Option<Result<Message, WsError>>),
    /// The hub ended the subscription (shutdown, slow reader, ...): no more client
    /// messages; its last message and close frame follow.
    Stopping,
}

/// A connection being served. Its task keeps this and little else while it waits, so it
/// is what an idle WebSocket costs (with the library's read buffer and the subscription).
pub(super) struct Conn<S> {
    ws: WebSocketStream<S>,
    hub: Hub,
    session: Box<WsSession>,
    peer: SocketAddr,
    heartbeat_ms: u64,
    /// Coarse times (the broker's clock) of the last frame from the client and the last ping.
    last_heard: u64,
    last_ping: u64,
}

/// Writes the `101` and sets up the connection (`None`: the client left already).
pub(super) async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
    hub: Hub,
    mut io: S,
    head: Vec<u8>,
    rest: Bytes,
    session: Box<WsSession>,
    peer: SocketAddr,
) -> Option<Conn<S>> {
    if io.write_all(&head).await.is_err() || io.flush().await.is_err() {
        return None;
    }
    drop(head);
    let max = usize::try_from(hub.config().limits.max_body_bytes.0).unwrap_or(usize::MAX);
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_message_size(Some(max))
        .max_frame_size(Some(max));
    let ws = if rest.is_empty() {
        WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await
    } else {
        WebSocketStream::from_partially_read(io, rest.to_vec(), Role::Server, Some(config)).await
    };
    let now = session.sub.now_ms();
    Some(Conn {
        ws,
        heartbeat_ms: hub.config().stream.heartbeat.as_millis(),
        hub,
        session,
        peer,
        last_heard: now,
        last_ping: now,
    })
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    /// Serves the connection until either side ends it.
    pub(super) async fn run(&mut self) {
        // Shutdown reaches the connection through its subscription: the hub ends every one
        // with `shutdown` (then close 1012). From then on the client's messages are not read,
        // so nothing new starts. (No shutdown future of its own: it would cost every idle
        // connection its size.)
        let mut stopping = false;
        loop {
            let step = poll_fn(|cx| {
                if !stopping && self.session.sub.is_ending() {
                    return Poll::Ready(Step::Stopping);
                }
                if let Poll::Ready(out) = self.session.sub.poll_next(cx) {
                    return Poll::Ready(Step::Out(out));
                }
                if !stopping && let Poll::Ready(m) = self.ws.poll_next_unpin(cx) {
                    return Poll::Ready(Step::In(m));
                }
                Poll::Pending
            })
            .await;
            let go_on = match step {
                Step::Stopping => {
                    stopping = true;
                    true
                }
                Step::Out(Some(bytes)) => {
                    if bytes[..] == ws::ping_frame()[..] {
                        self.last_ping = self.session.sub.now_ms();
                    }
                    self.write(&bytes).await
                }
                Step::Out(None) => {
                    Box::pin(self.end()).await;
                    false
                }
                Step::In(Some(Ok(msg))) => self.received(msg).await,
                Step::In(Some(Err(e))) => {
                    Box::pin(self.broken(&e)).await;
                    false
                }
                Step::In(None) => false,
            };
            if !go_on || !self.heartbeat().await {
                return;
            }
        }
    }

    /// The dead-peer rule and the pings of a busy connection. False: the peer is gone.
    async fn heartbeat(&mut self) -> bool {
        let now = self.session.sub.now_ms();
        if now.saturating_sub(self.last_heard) > 2 * self.heartbeat_ms {
            tracing::debug!(conn = %self.session.sub.id(), peer = %self.peer,
                "no answer to two heartbeats; dropping the WebSocket");
            let _ = self.write(&ws::close_frame(close::POLICY, "no pong")).await;
            return false;
        }
        if now.saturating_sub(self.last_ping) >= self.heartbeat_ms {
            self.last_ping = now;
            return self.write(&ws::ping_frame()).await;
        }
        true
    }

    /// Writes frames of the hub's own, after anything the library still has to send.
    /// False: the client is gone.
    async fn write(&mut self, bytes: &[u8]) -> bool {
        if self.ws.flush().await.is_err() {
            return false;
        }
        let io = self.ws.get_mut();
        io.write_all(bytes).await.is_ok() && io.flush().await.is_ok()
    }

    /// A message from the client. False: the connection is over.
    async fn received(&mut self, msg: Message) -> bool {
        self.last_heard = self.session.sub.now_ms();
        match msg {
            // ntfy's WebSocket only sends: what its clients send is not read, as in ntfy.
            Message::Text(_) | Message::Binary(_) if self.session.sub.format().ntfy().is_some() => {
                true
            }
            Message::Text(text) => {
                let mut ctx = ws_ops::Ctx {
                    hub: &self.hub,
                    session: &mut self.session,
                    peer: self.peer,
                };
                // Boxed: a publish's future is large and short-lived; an idle connection's task
                // keeps only what waiting needs.
                let answer = Box::pin(ws_ops::handle(&mut ctx, text.as_str())).await;
                self.write(&answer).await
            }
            Message::Binary(_) => {
                let answer = ws_ops::error_frame(
                    None,
                    "bad_request",
                    "binary frames are not accepted: send JSON text frames",
                );
                self.write(&answer).await
            }
            // The library answers pings itself; this sends the pong.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {
                self.ws.flush().await.is_ok()
            }
            Message::Close(_) => {
                // The library queued the close reply: send it, and end.
                let _ = self.ws.flush().await;
                false
            }
        }
    }

    /// A frame the library could not accept: close with the code that names why.
    async fn broken(&mut self, e: &WsError) {
        let (code, why) = match e {
            WsError::Capacity(_) => (close::TOO_BIG, "message larger than limits.max_body_bytes"),
            WsError::Utf8(_) => (close::INVALID_DATA, "text frame is not UTF-8"),
            WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake)
            | WsError::ConnectionClosed
            | WsError::AlreadyClosed
            | WsError::Io(_) => return,
            _ => (close::PROTOCOL, "protocol error"),
        };
        tracing::debug!(conn = %self.session.sub.id(), peer = %self.peer, error = %e,
            "closing a WebSocket on a broken frame");
        if self.write(&ws::close_frame(code, why)).await {
            self.finish().await;
        }
    }

    /// The hub ended the connection: its last message and close frame went out with the
    /// subscription's last bytes (unless the replay failed, which has no message).
    async fn end(&mut self) {
        if !self.session.sub.is_ending()
            && !self
                .write(&ws::close_frame(
                    close::INTERNAL,
                    "replay failed; reconnect",
                ))
                .await
        {
            return;
        }
        self.finish().await;
    }

    /// After the hub's close frame: end the sending side, and read (and drop) what the
    /// client still sends, its close reply included, until it closes or a second passes, so
    /// unread bytes never turn the close into a reset that could lose the last frames.
    async fn finish(&mut self) {
        let io = self.ws.get_mut();
        let _ = io.flush().await;
        let _ = io.shutdown().await;
        let mut sink = [0u8; 256];
        let drain = async { while matches!(io.read(&mut sink).await, Ok(n) if n > 0) {} };
        let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
    }
}
