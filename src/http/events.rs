//! `GET /events` and `GET /events/{topic}` (SPEC §5.1), and `HEAD` on both: would the
//! stream open?

use std::net::SocketAddr;

use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use http::request::Parts;
use http::{Method, Response};

use super::body::query;
use super::{Body, Resp};
use crate::error::Error;
use crate::event::Format;
use crate::hub::Hub;
use crate::stream::StreamRequest;

/// Opens the stream (`GET`) or says whether it would open (`HEAD`).
pub(super) async fn stream(
    hub: &Hub,
    parts: &Parts,
    peer: SocketAddr,
    path_topic: Option<String>,
) -> Result<Resp, Error> {
    let probe = parts.method == Method::HEAD;
    // A single-use exchange token is spent only by GET (see `handle`): a probe does not.
    let caller = super::caller(parts)?;
    let req = request(parts, peer, path_topic);
    let body = if probe {
        hub.check_stream(&caller, req)?;
        Body::Full(None)
    } else {
        Body::Stream(hub.subscribe(&caller, req).await?)
    };
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    if !probe {
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    }
    Ok(resp)
}

/// What the request asks for: topics from the path and `topic=`, where to resume (the
/// `Last-Event-ID` header wins over `last_event_id=`: an `EventSource` reconnect sends the
/// header), and `envelope`.
fn request(parts: &Parts, peer: SocketAddr, path_topic: Option<String>) -> StreamRequest {
    let mut req = StreamRequest {
        named: path_topic.into_iter().collect(),
        last_event_id: None,
        ip: peer.ip(),
        format: Format::Sse,
        filter: None,
    };
    let mut query_last = None;
    for (k, v) in query(parts) {
        match k.as_str() {
            "topic" => req.named.push(v),
            "last_event_id" => query_last = Some(v),
            "envelope" if matches!(v.as_str(), "" | "1" | "true") => {
                req.format = Format::SseEnvelope;
            }
            "envelope" => req.format = Format::Sse,
            _ => {}
        }
    }
    req.last_event_id = parts
        .headers
        .get("last-event-id")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_string())
        .filter(|s| !s.is_empty())
        .or(query_last.filter(|s| !s.is_empty()));
    req
}
