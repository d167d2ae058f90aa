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
//!   (subscriptions, exchange tokens, the cookie), `ops`, `assets`; `cors`: preflight and
//!   headers.

mod assets;
mod body;
mod cors;
mod events;
mod history;
mod ops;
mod publish;
mod router;
mod session;

use std::convert::Infallible;
use std::net::SocketAddr;

use http::header::HeaderValue;
use http::{Method, Request, Response};

pub(crate) use body::{Body, ReqBody, error_response};

use crate::error::Error;
use crate::hub::Hub;

pub(crate) type Resp = Response<Body>;
pub(crate) type Req = Request<ReqBody>;

/// The hyper service: every request ends here.
pub(crate) async fn handle(hub: Hub, req: Req, peer: SocketAddr) -> Result<Resp, Infallible> {
    let request_id = request_id(&hub, &req);
    // CORS headers go on every answer to an allowed origin, errors included, so the page
    // can read them.
    let cors_origin = cors::allowed_origin(&hub, &req);
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
    Ok(resp)
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
