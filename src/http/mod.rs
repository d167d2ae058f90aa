//! The HTTP API (SPEC §5): the hub's first front door.
//!
//! Every request goes through [`handle`]: the `auth.allow_ips` check, CORS, the router, and
//! one `x-request-id` on every answer. Handlers turn HTTP into calls of the hub's API and
//! its answers back into HTTP; every error is the JSON of [`Error`]. The stream handler is
//! synchronous, so the future hyper keeps for each streaming connection stays small; the
//! publish handlers, which await the body and the commit, are boxed for the same reason.
//!
//! - `router`: paths and methods; `body`: request and response bodies and their helpers;
//! - one file per group of handlers: `events`, `history`, `publish`, `session`
//!   (subscriptions, exchange tokens, the cookie), `ops`, `assets`, `ws` (the WebSocket
//!   handshake); `cors`: preflight and headers;
//! - `ntfy`: ntfy's publish and subscribe API (SPEC §11.1), a front door of its own.

mod assets;
mod body;
mod cors;
mod events;
mod history;
mod ntfy;
mod ops;
mod publish;
mod router;
mod session;
mod ws;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Instant;

use http::header::HeaderValue;
use http::request::Parts;
use http::{Method, Request, Response};

pub(crate) use body::{Body, ReqBody, error_response};
pub(crate) use ws::{OwnConnection, WsSession};

use crate::auth::Caller;
use crate::error::Error;
use crate::hub::Hub;

pub(crate) type Resp = Response<Body>;
pub(crate) type Req = Request<ReqBody>;

/// Who sent the request, worked out once in [`handle`] (a single-use exchange token is
/// spent there, only by `GET /events…`); handlers take it with [`caller`].
#[derive(Clone)]
struct Authenticated(Result<Caller, Error>);

/// The request's caller, or why its credentials were refused.
fn caller(parts: &Parts) -> Result<Caller, Error> {
    match parts.extensions.get::<Authenticated>() {
        Some(a) => a.0.clone(),
        None => Err(Error::Unauthorized("credentials are required".into())),
    }
}

/// The hyper service: every request ends here, and leaves one access line in the log.
pub(crate) async fn handle(hub: Hub, mut req: Req, peer: SocketAddr) -> Result<Resp, Infallible> {
    let started = Instant::now();
    let request_id = request_id(&hub, &req);
    let (method, path) = (req.method().clone(), masked_path(req.uri()));
    // CORS headers go on every answer to an allowed origin, errors included, so the page
    // can read them.
    let cors_origin = cors::allowed_origin(&hub, &req);
    let spends_exchange = req.method() == Method::GET
        && (req.uri().path().starts_with("/events") || req.uri().path() == "/ws");
    let (parts, body) = req.into_parts();
    let who = hub.auth().authenticate(&parts, spends_exchange);
    let user = who.as_ref().ok().and_then(name_of);
    req = Request::from_parts(parts, body);
    req.extensions_mut().insert(Authenticated(who));
    let mut resp = if !hub.auth().ip_allowed(peer.ip()) {
        error_response(&Error::Forbidden(format!(
            "{} is not in auth.allow_ips",
            peer.ip()
        )))
    } else if req.method() == Method::OPTIONS {
        cors::preflight(&req, cors_origin.is_some())
    } else {
        match router::dispatch(&hub, req, peer).await {
            Ok(r) => r,
            Err(e) => error_response(&e),
        }
    };
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    if let Some(origin) = cors_origin {
        cors::add_headers(resp.headers_mut(), origin);
    }
    let bytes = match resp.body() {
        Body::Full(b) => b.as_ref().map_or(0, |b| b.len()).to_string(),
        Body::Stream(_) => "stream".to_string(),
        Body::Upgrade(_) => "websocket".to_string(),
    };
    tracing::info!(
        target: "access",
        %method,
        path,
        status = resp.status().as_u16(),
        %bytes,
        ms = %format_args!("{:.1}", started.elapsed().as_secs_f64() * 1000.0),
        user = user.as_deref().unwrap_or("-"),
        %peer,
        request_id,
        "request"
    );
    Ok(resp)
}

/// The name the access log gives a caller: the user, or `key:<name>` for an API key.
fn name_of(c: &Caller) -> Option<String> {
    c.user
        .clone()
        .or_else(|| c.key.as_ref().map(|k| format!("key:{k}")))
}

/// The path and query, with credentials in the query (`token=`, `auth=`) masked.
fn masked_path(uri: &http::Uri) -> String {
    let Some(q) = uri.query() else {
        return uri.path().to_string();
    };
    let masked: Vec<String> = q
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if matches!(k, "token" | "auth") => format!("{k}=***"),
            _ => pair.to_string(),
        })
        .collect();
    format!("{}?{}", uri.path(), masked.join("&"))
}

/// The client's `x-request-id` if it is a sane token, otherwise a fresh one.
fn request_id(hub: &Hub, req: &Req) -> String {
    match req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
    {
        Some(id)
            if !id.is_empty()
                && id.len() <= 64
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b)) =>
        {
            id.to_string()
        }
        _ => hub.next_request_id(),
    }
}
