//! Routing: a `match` on the path. The API is small and fixed, and a table of closures
//! would hide it.

use std::net::SocketAddr;

use http::Method;
use http::request::Parts;

use super::body::decode_path;
use super::{Req, ReqBody, Resp, assets, events, history, ntfy, ops, publish, session, ws};
use crate::error::Error;
use crate::hub::Hub;

pub(super) async fn dispatch(hub: &Hub, req: Req, peer: SocketAddr) -> Result<Resp, Error> {
    let (parts, body) = req.into_parts();
    let ntfy = hub.config().ntfy.enabled;
    if ntfy && parts.uri.path() == "/" && matches!(parts.method, Method::POST | Method::PUT) {
        // ntfy's JSON publishing.
        return Ok(ntfy::route(hub, parts, body, peer)
            .await
            .unwrap_or_else(|| ntfy::error_response(&Error::NotFound("/".into()))));
    }
    own_routes(hub, parts, body, peer).await
}

/// runnel's own routes (SPEC §5), then ntfy's (SPEC §11.1).
async fn own_routes(
    hub: &Hub,
    parts: Parts,
    body: ReqBody,
    peer: SocketAddr,
) -> Result<Resp, Error> {
    let path = parts.uri.path();
    let m = &parts.method;
    match path {
        "/" => {
            allow(m, &[Method::GET, Method::HEAD], "GET")?;
            Ok(assets::console())
        }
        "/favicon.ico" => {
            allow(m, &[Method::GET, Method::HEAD], "GET")?;
            Ok(assets::favicon())
        }
        "/runnel.js" => {
            allow(m, &[Method::GET, Method::HEAD], "GET")?;
            Ok(assets::client_js())
        }
        "/events" => {
            allow(m, &[Method::GET, Method::HEAD], "GET, HEAD")?;
            events::stream(hub, &parts, peer, None).await
        }
        "/ws" => {
            allow(m, &[Method::GET], "GET")?;
            ws::upgrade(hub, &parts, peer).await
        }
        "/history" => {
            allow(m, &[Method::GET], "GET")?;
            Box::pin(history::history(hub, parts)).await
        }
        "/publish" => {
            allow(m, &[Method::POST], "POST")?;
            Box::pin(publish::json(hub, parts, body, peer)).await
        }
        "/notify" => {
            allow(m, &[Method::POST], "POST")?;
            Box::pin(publish::notify(hub, parts, body, peer)).await
        }
        "/health" => {
            allow(m, &[Method::GET, Method::HEAD], "GET")?;
            Ok(ops::health(hub))
        }
        "/stats" | "/metrics" | "/connections" => {
            allow(m, &[Method::GET], "GET")?;
            ops::read(hub, &parts, path).await
        }
        "/subscribe" | "/unsubscribe" => {
            allow(m, &[Method::POST], "POST")?;
            let add = path == "/subscribe";
            Box::pin(session::change(hub, parts, body, add)).await
        }
        "/auth/sse-token" => {
            allow(m, &[Method::POST], "POST")?;
            session::sse_token(hub, &parts)
        }
        "/auth/cookie" => {
            allow(m, &[Method::POST, Method::DELETE], "POST, DELETE")?;
            if m == Method::POST {
                session::set_cookie(hub, &parts)
            } else {
                Ok(session::clear_cookie(hub))
            }
        }
        _ => with_argument(hub, parts, body, peer).await,
    }
}

/// Paths that carry an argument: a topic or a connection id; then ntfy's paths.
async fn with_argument(
    hub: &Hub,
    parts: Parts,
    body: ReqBody,
    peer: SocketAddr,
) -> Result<Resp, Error> {
    let path = parts.uri.path();
    let m = &parts.method;
    if let Some(t) = path.strip_prefix("/events/") {
        allow(m, &[Method::GET, Method::HEAD], "GET, HEAD")?;
        let t = decode_path(t)?;
        events::stream(hub, &parts, peer, Some(t)).await
    } else if let Some(t) = path.strip_prefix("/publish/") {
        allow(m, &[Method::POST], "POST")?;
        let t = decode_path(t)?;
        Box::pin(publish::raw(hub, parts, body, peer, t)).await
    } else if let Some(id) = path.strip_prefix("/connections/") {
        allow(m, &[Method::DELETE], "DELETE")?;
        ops::close_connection(hub, &parts, id).await
    } else {
        let missing = Error::NotFound(format!("no such endpoint: {path}"));
        if !hub.config().ntfy.enabled {
            return Err(missing);
        }
        ntfy::route(hub, parts, body, peer).await.ok_or(missing)
    }
}

fn allow(m: &Method, allowed: &[Method], allow: &'static str) -> Result<(), Error> {
    if allowed.contains(m) {
        Ok(())
    } else {
        Err(Error::MethodNotAllowed {
            method: m.to_string(),
            allow,
        })
    }
}
