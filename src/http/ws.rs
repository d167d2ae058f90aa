//! `GET /ws` (SPEC §5.8): the WebSocket handshake's checks and its `101` answer. Everything
//! that can be refused is refused here, as JSON, before the connection is upgraded: the
//! upgrade headers, the credentials, the `Origin`, the topics and the connection limits.
//! The upgraded connection itself is served by `server` (runnel's own connection path),
//! which alone can take the socket: a `/ws` that reaches hyper (HTTP/2, or a later request
//! on a kept-alive connection) is refused with a message saying what is needed.

use std::net::SocketAddr;

use http::header::{CONNECTION, HeaderValue, ORIGIN, UPGRADE};
use http::request::Parts;
use http::{Response, StatusCode};

use super::body::query;
use super::{Body, Resp};
use crate::auth::Caller;
use crate::error::Error;
use crate::event::Format;
use crate::hub::Hub;
use crate::stream::{StreamRequest, Subscription};

/// Put on a request whose head the server read itself, from a connection it can hand to a
/// WebSocket: only such a `/ws` can be upgraded.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OwnConnection;

/// An accepted WebSocket: its connection (subscribed before the `101` is sent) and who
/// opened it, for what it sends later.
pub(crate) struct WsSession {
    pub sub: Subscription,
    pub caller: Caller,
    /// Where the opening's topics are covered from (see `Subscription::opening_cover`).
    pub opened_since: u64,
    /// Topics the connection's own ops changed since: the seq after which it has every event
    /// of each (`u64::MAX`: unsubscribed, nothing assumed).
    pub changed: Vec<(String, u64)>,
}

impl WsSession {
    /// The topics the connection has every event of after a seq, for a replay to leave out.
    /// (Topics a user's session added meanwhile are not among them: their events may come
    /// twice, never not at all.)
    pub fn covered(&self) -> Vec<(String, u64)> {
        let (opening, _) = self.sub.opening_cover();
        let mut out: Vec<(String, u64)> = opening
            .into_iter()
            .filter(|t| !self.changed.iter().any(|(c, _)| c == t))
            .map(|t| (t, self.opened_since))
            .collect();
        out.extend(self.changed.iter().filter(|(_, s)| *s != u64::MAX).cloned());
        out
    }

    /// Notes what an op changed: `since` for added topics, `None` for removed ones.
    pub fn note(&mut self, topics: &[String], since: Option<u64>) {
        for t in topics {
            let since = since.unwrap_or(u64::MAX);
            match self.changed.iter_mut().find(|(c, _)| c == t) {
                Some(e) => e.1 = since,
                None => self.changed.push((t.clone(), since)),
            }
        }
    }
}

/// Checks the handshake and opens the connection's subscription; the answer is the `101`.
pub(super) async fn upgrade(hub: &Hub, parts: &Parts, peer: SocketAddr) -> Result<Resp, Error> {
    let key = ws_key(parts)?;
    let caller = super::caller(parts)?;
    let mut req = StreamRequest {
        named: Vec::new(),
        last_event_id: None,
        ip: peer.ip(),
        format: Format::Ws,
        filter: None,
    };
    for (k, v) in query(parts) {
        match k.as_str() {
            "topic" => req.named.push(v),
            "last_event_id" if !v.is_empty() => req.last_event_id = Some(v),
            _ => {}
        }
    }
    accept(hub, parts, &key, caller, req).await
}

/// The same for a stream another front door asked for (ntfy's `/<topics>/ws`).
pub(super) async fn upgrade_stream(
    hub: &Hub,
    parts: &Parts,
    caller: Caller,
    req: StreamRequest,
) -> Result<Resp, Error> {
    let key = ws_key(parts)?;
    accept(hub, parts, &key, caller, req).await
}

/// `Sec-WebSocket-Key` of an upgrade this connection can take.
fn ws_key(parts: &Parts) -> Result<String, Error> {
    let own = parts.extensions.get::<OwnConnection>().is_some();
    // HTTP/2 has no `Upgrade` header: say what is missing rather than ask for it.
    let key = match handshake_key(parts) {
        Err(_) if parts.version == http::Version::HTTP_2 => None,
        k => Some(k?),
    };
    key.filter(|_| own).ok_or_else(|| {
        Error::BadRequest(format!(
            "GET {} needs an HTTP/1.1 connection whose first request is the WebSocket upgrade \
             (not HTTP/2, not a kept-alive connection)",
            parts.uri.path()
        ))
    })
}

/// The checks that follow the handshake's, the subscription, and the `101`.
async fn accept(
    hub: &Hub,
    parts: &Parts,
    key: &str,
    caller: Caller,
    req: StreamRequest,
) -> Result<Resp, Error> {
    check_origin(hub, parts)?;
    let sub = hub.subscribe(&caller, req).await?;
    let (_, opened_since) = sub.opening_cover();
    let session = WsSession {
        sub,
        caller,
        opened_since,
        changed: Vec::new(),
    };
    let mut resp = Response::new(Body::Upgrade(Box::new(session)));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    if let Ok(v) = HeaderValue::from_str(&crate::ws::accept_key(key)) {
        h.insert("sec-websocket-accept", v);
    }
    Ok(resp)
}

/// The upgrade headers of RFC 6455 §4.2.1; returns `Sec-WebSocket-Key`.
fn handshake_key(parts: &Parts) -> Result<String, Error> {
    let has_token = |name: http::header::HeaderName, token: &str| {
        parts.headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    if !has_token(UPGRADE, "websocket") {
        return Err(Error::UpgradeRequired(
            "GET /ws is a WebSocket endpoint: send `Upgrade: websocket` and `Connection: \
             Upgrade` (for a stream over plain HTTP, use GET /events)"
                .into(),
        ));
    }
    if !has_token(CONNECTION, "upgrade") {
        return Err(Error::BadRequest(
            "a WebSocket upgrade needs `Connection: Upgrade`".into(),
        ));
    }
    let version = parts.headers.get("sec-websocket-version");
    if version.and_then(|v| v.to_str().ok()).map(str::trim) != Some("13") {
        return Err(Error::UpgradeRequired(
            "this hub speaks WebSocket version 13: send `Sec-WebSocket-Version: 13`".into(),
        ));
    }
    match parts
        .headers
        .get("sec-websocket-key")
        .and_then(|v| v.to_str().ok())
    {
        Some(k) if crate::ws::valid_key(k) => Ok(k.trim().to_string()),
        _ => Err(Error::BadRequest(
            "`Sec-WebSocket-Key` is missing or not 16 bytes in base64".into(),
        )),
    }
}

/// Browsers apply no CORS to WebSockets and send cookies along: a page may open one only
/// from the hub's own origin or one in `cors.allow_origins`. Clients that are not browsers
/// send no `Origin`.
fn check_origin(hub: &Hub, parts: &Parts) -> Result<(), Error> {
    let Some(origin) = parts.headers.get(ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or("");
    if hub.auth().origin_allowed(origin) || own_origin(hub, parts, origin) {
        return Ok(());
    }
    Err(Error::Forbidden(format!(
        "a WebSocket from origin {origin:?} is refused: it is neither this hub's own origin \
         nor in cors.allow_origins"
    )))
}

/// Is `origin` the request's own scheme and `Host`? The scheme is https with `[tls]`, or
/// what a proxy in front says in `X-Forwarded-Proto` (a page cannot set that header on a
/// WebSocket).
fn own_origin(hub: &Hub, parts: &Parts, origin: &str) -> bool {
    let Some(host) = parts
        .headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let forwarded = parts
        .headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .map(|p| {
            p.split(',')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    let scheme = match (hub.tls(), forwarded.as_deref()) {
        (Some(_), _) => "https",
        (None, Some("https")) => "https",
        (None, _) => "http",
    };
    origin
        .split_once("://")
        .is_some_and(|(s, rest)| s.eq_ignore_ascii_case(scheme) && rest.eq_ignore_ascii_case(host))
}
