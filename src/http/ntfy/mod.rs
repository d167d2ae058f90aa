//! ntfy's HTTP API (SPEC §11.1), the hub's front door for the tools that already notify
//! through ntfy: `publish` (its publish API) and `subscribe` (its subscribe API), both
//! calling the hub's API like runnel's own handlers. ntfy's paths sit at the root beside
//! runnel's: the router tries runnel's routes first, so their first segments are reserved
//! as topic names. Errors on ntfy's paths take ntfy's shape, which its clients read.

mod fields;
mod publish;
mod subscribe;

use std::net::SocketAddr;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::request::Parts;
use http::{Method, Response};

use super::body::decode_path;
use super::{Body, ReqBody, Resp};
use crate::error::Error;
use crate::hub::Hub;
use crate::ntfy::{Wire, valid_topic};

/// First path segments of runnel's own routes, so never ntfy topics.
const RESERVED: &[&str] = &[
    "events",
    "ws",
    "history",
    "publish",
    "notify",
    "health",
    "stats",
    "metrics",
    "connections",
    "subscribe",
    "unsubscribe",
    "auth",
    "v1",
];

/// Is `t` one of runnel's own path names?
pub(super) fn reserved(t: &str) -> bool {
    RESERVED.contains(&t)
}

/// Serves an ntfy request, or `None` when the path is not one of ntfy's.
pub(super) async fn route(
    hub: &Hub,
    parts: Parts,
    body: ReqBody,
    peer: SocketAddr,
) -> Option<Resp> {
    let path = parts.uri.path().to_string();
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let m = parts.method.clone();
    let out = match (&m, &segs[..]) {
        (&Method::POST | &Method::PUT, [""]) => {
            Box::pin(publish::json(hub, parts, body, peer)).await
        }
        (&Method::POST | &Method::PUT, [t]) => match publish::path_topic(t) {
            Ok(t) => Box::pin(publish::to_topic(hub, parts, body, peer, t)).await,
            Err(e) => Err(e),
        },
        (&Method::GET, [t, "publish" | "send" | "trigger"]) => match publish::path_topic(t) {
            Ok(t) => Box::pin(publish::to_topic(hub, parts, body, peer, t)).await,
            Err(e) => Err(e),
        },
        (_, [ts, kind @ ("json" | "sse" | "raw" | "ws")]) => {
            if m != Method::GET {
                Err(Error::MethodNotAllowed {
                    method: m.to_string(),
                    allow: "GET",
                })
            } else {
                match topics(ts) {
                    Ok(topics) => {
                        let wire = match *kind {
                            "json" => Wire::Json,
                            "sse" => Wire::Sse,
                            "raw" => Wire::Raw,
                            _ => Wire::Ws,
                        };
                        subscribe::subscribe(hub, &parts, peer, topics, wire).await
                    }
                    Err(e) => Err(e),
                }
            }
        }
        (_, [t] | [t, _]) if valid_topic(t) && reserved(t) => Err(reserved_error(t)),
        _ => return None,
    };
    Some(out.unwrap_or_else(|e| error_response(&e)))
}

/// `a,b,c` from the path, each an ntfy topic name that is not reserved.
fn topics(list: &str) -> Result<Vec<String>, Error> {
    let list = decode_path(list)?;
    let mut out = Vec::new();
    for t in list.split(',') {
        if reserved(t) {
            return Err(reserved_error(t));
        }
        check_topic(t)?;
        out.push(t.to_string());
    }
    Ok(out)
}

/// An ntfy topic name: 1 to 64 of `A-Z a-z 0-9 - _`.
fn check_topic(t: &str) -> Result<(), Error> {
    if valid_topic(t) {
        Ok(())
    } else {
        Err(Error::InvalidTopic(format!(
            "{t:?} is not an ntfy topic name (1 to 64 letters, digits, - and _)"
        )))
    }
}

/// The answer for a reserved name used as a topic.
pub(super) fn reserved_error(t: &str) -> Error {
    Error::InvalidTopic(format!(
        "{t:?} cannot be an ntfy topic here: /{t} is one of runnel's own routes"
    ))
}

/// An error in ntfy's shape: `{"code", "http", "error"}`, where `code` is the status
/// followed by two digits telling causes apart, as ntfy numbers them.
pub(super) fn error_response(e: &Error) -> Resp {
    let status = e.status();
    let cause = match e {
        Error::InvalidJson(_) => 1,
        Error::InvalidTopic(_) => 9,
        _ => 0,
    };
    let code = u32::from(status.as_u16()) * 100 + cause;
    let v = serde_json::json!({
        "code": code,
        "http": status.as_u16(),
        "error": e.to_string(),
    });
    let mut r = Response::new(Body::Full(Some(Bytes::from(v.to_string() + "\n"))));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    for (k, v) in e.extra_headers() {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(k, v);
        }
    }
    r
}
