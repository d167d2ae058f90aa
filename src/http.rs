//! Routing and handlers (SPEC §5).
//!
//! Routing is a `match` on the path: the API is small and fixed, and a table of closures
//! would hide it. Every response gets an `x-request-id`; every error is the JSON of
//! [`Error`]. The SSE handler is synchronous, so the future hyper keeps for each streaming
//! connection stays small; the publish handlers, which await the body and the commit, are
//! boxed for the same reason.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{
    AUTHORIZATION, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, SET_COOKIE,
};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode};
use http_body::{Frame, SizeHint};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use serde_json::{Value, json};

use crate::auth::{Caller, Via};
use crate::broker::StreamSpec;
use crate::error::Error;
use crate::hub::Hub;
use crate::idempotency::Begin;
use crate::message::{self, NewEvent};
use crate::sse::{self, Replay, SseBody};
use crate::store::{Resume, Selector};
use crate::{stats, topic};

/// A response body: a complete buffer, or an event stream.
pub enum Body {
    Full(Option<Bytes>),
    Sse(SseBody),
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Body::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Body::Sse(s) => Pin::new(s).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Body::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Body::Full(None) => SizeHint::with_exact(0),
            Body::Sse(_) => SizeHint::default(),
        }
    }
}

pub type Resp = Response<Body>;

/// A request body: hyper's, or none (a request read by [`crate::direct`], which takes only
/// bodiless `GET`s).
pub enum ReqBody {
    Hyper(Incoming),
    Empty,
}

impl http_body::Body for ReqBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ReqBody::Hyper(b) => Pin::new(b).poll_frame(cx),
            ReqBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReqBody::Hyper(b) => b.is_end_stream(),
            ReqBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReqBody::Hyper(b) => b.size_hint(),
            ReqBody::Empty => SizeHint::with_exact(0),
        }
    }
}

pub type Req = Request<ReqBody>;

/// The hyper service: every request ends here.
pub async fn handle(hub: Hub, req: Req, peer: SocketAddr) -> Result<Resp, Infallible> {
    let request_id = request_id(&hub, &req);
    // CORS headers go on every answer to an allowed origin, errors included, so the page
    // can read them.
    let cors_origin = req
        .headers()
        .get(http::header::ORIGIN)
        .filter(|o| o.to_str().is_ok_and(|o| hub.auth.origin_allowed(o)))
        .cloned();
    let mut resp = if !hub.auth.ip_allowed(peer.ip()) {
        error_response(&Error::Forbidden(format!(
            "{} is not in auth.allow_ips",
            peer.ip()
        )))
    } else if req.method() == Method::OPTIONS {
        preflight(&req, cors_origin.is_some())
    } else {
        match dispatch(&hub, req, peer).await {
            Ok(r) => r,
            Err(e) => error_response(&e),
        }
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        h.insert("x-request-id", v);
    }
    if let Some(origin) = cors_origin {
        h.insert("access-control-allow-origin", origin);
        h.insert(
            "access-control-allow-credentials",
            HeaderValue::from_static("true"),
        );
        h.insert(
            "access-control-expose-headers",
            HeaderValue::from_static("x-request-id, retry-after, idempotent-replayed"),
        );
        h.append(http::header::VARY, HeaderValue::from_static("origin"));
    }
    Ok(resp)
}

/// A CORS preflight: 204 for an allowed origin (the caller adds the origin headers),
/// 403 for any other.
fn preflight(req: &Req, allowed: bool) -> Resp {
    if !allowed {
        return error_response(&Error::Forbidden(
            "this origin is not in cors.allow_origins".into(),
        ));
    }
    let mut r = Response::new(Body::Full(None));
    *r.status_mut() = StatusCode::NO_CONTENT;
    let h = r.headers_mut();
    h.insert(
        "access-control-allow-methods",
        HeaderValue::from_static("GET, HEAD, POST, DELETE, OPTIONS"),
    );
    let asked = req
        .headers()
        .get("access-control-request-headers")
        .cloned()
        .unwrap_or(HeaderValue::from_static(
            "authorization, content-type, last-event-id, x-api-key, x-auth-token, x-request-id",
        ));
    h.insert("access-control-allow-headers", asked);
    h.insert("access-control-max-age", HeaderValue::from_static("600"));
    r
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

async fn dispatch(hub: &Hub, req: Req, peer: SocketAddr) -> Result<Resp, Error> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path();
    let m = &parts.method;
    match path {
        "/" => {
            allow(m, &[Method::GET, Method::HEAD], "GET")?;
            Ok(asset("text/html; charset=utf-8", CONSOLE_HTML))
        }
        "/runnel.js" => {
            allow(m, &[Method::GET, Method::HEAD], "GET")?;
            Ok(asset("text/javascript; charset=utf-8", RUNNEL_JS))
        }
        "/events" => {
            allow(m, &[Method::GET, Method::HEAD], "GET, HEAD")?;
            if m == Method::HEAD {
                return events_probe(hub, &parts, None);
            }
            events(hub, &parts, peer, None)
        }
        "/publish" => {
            allow(m, &[Method::POST], "POST")?;
            Box::pin(publish_json(hub, parts, body, peer)).await
        }
        "/notify" => {
            allow(m, &[Method::POST], "POST")?;
            Box::pin(notify(hub, parts, body, peer)).await
        }
        "/health" => {
            allow(m, &[Method::GET, Method::HEAD], "GET")?;
            Ok(health(hub))
        }
        "/stats" => {
            allow(m, &[Method::GET], "GET")?;
            admin(hub, &parts, peer)?;
            Ok(json_response(StatusCode::OK, &stats::stats_json(hub)))
        }
        "/metrics" => {
            allow(m, &[Method::GET], "GET")?;
            if !hub.auth.public_metrics() {
                admin(hub, &parts, peer)?;
            }
            Ok(text_response(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                stats::metrics_text(hub),
            ))
        }
        "/connections" => {
            allow(m, &[Method::GET], "GET")?;
            admin(hub, &parts, peer)?;
            Ok(connections(hub))
        }
        "/subscribe" | "/unsubscribe" => {
            allow(m, &[Method::POST], "POST")?;
            let add = path == "/subscribe";
            Box::pin(session_change(hub, parts, body, peer, add)).await
        }
        "/auth/sse-token" => {
            allow(m, &[Method::POST], "POST")?;
            sse_token(hub, &parts, peer)
        }
        "/auth/cookie" => {
            allow(m, &[Method::POST, Method::DELETE], "POST, DELETE")?;
            if m == Method::POST {
                set_cookie(hub, &parts, peer)
            } else {
                Ok(clear_cookie(hub))
            }
        }
        _ => {
            if let Some(t) = path.strip_prefix("/events/") {
                allow(m, &[Method::GET, Method::HEAD], "GET, HEAD")?;
                let t = decode_path(t)?;
                if m == Method::HEAD {
                    return events_probe(hub, &parts, Some(t));
                }
                events(hub, &parts, peer, Some(t))
            } else if let Some(t) = path.strip_prefix("/publish/") {
                allow(m, &[Method::POST], "POST")?;
                let t = decode_path(t)?;
                Box::pin(publish_raw(hub, parts, body, peer, t)).await
            } else if let Some(id) = path.strip_prefix("/connections/") {
                allow(m, &[Method::DELETE], "DELETE")?;
                admin(hub, &parts, peer)?;
                close_connection(hub, id)
            } else {
                Err(Error::NotFound(format!("no such endpoint: {path}")))
            }
        }
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

fn decode_path(raw: &str) -> Result<String, Error> {
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| Error::InvalidTopic("the topic in the path is not valid UTF-8".into()))
}

fn query(parts: &Parts) -> Vec<(String, String)> {
    parts
        .uri
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

fn authenticate(hub: &Hub, parts: &Parts, _peer: SocketAddr) -> Result<Caller, Error> {
    hub.auth.authenticate(parts, false)
}

fn admin(hub: &Hub, parts: &Parts, peer: SocketAddr) -> Result<Caller, Error> {
    let c = authenticate(hub, parts, peer)?;
    if c.is_admin() {
        Ok(c)
    } else {
        Err(c.refuse("this endpoint is for admins".into()))
    }
}

// ---------------------------------------------------------------------------------------------
// Streams

/// What a stream request asks for, once checked: who may not open it is refused here.
struct StreamQuery {
    named: Vec<String>,
    last_event_id: Option<String>,
    envelope: bool,
}

fn stream_query(
    hub: &Hub,
    caller: &Caller,
    parts: &Parts,
    path_topic: Option<String>,
) -> Result<StreamQuery, Error> {
    if !caller.may_stream() {
        return Err(Error::Unauthorized("credentials are required".into()));
    }
    let mut q = StreamQuery {
        named: path_topic.into_iter().collect(),
        last_event_id: None,
        envelope: false,
    };
    for (k, v) in query(parts) {
        match k.as_str() {
            "topic" => q.named.push(v),
            "last_event_id" => q.last_event_id = Some(v),
            "envelope" => q.envelope = matches!(v.as_str(), "" | "1" | "true"),
            _ => {}
        }
    }
    dedup(&mut q.named);
    let max = hub.config.limits.max_topics_per_stream;
    if q.named.len() > max {
        return Err(Error::BadRequest(format!(
            "a stream names at most {max} topics (limits.max_topics_per_stream), got {}",
            q.named.len()
        )));
    }
    check_readable(caller, &q.named)?;
    Ok(q)
}

/// `HEAD /events…`: would this stream open? The same checks as `GET` (credentials, topics,
/// permissions), answered without opening one, so a browser client can learn why its
/// `EventSource` failed (which `EventSource` cannot see). A single-use exchange token is not
/// accepted here: a probe must not spend it.
fn events_probe(hub: &Hub, parts: &Parts, path_topic: Option<String>) -> Result<Resp, Error> {
    let caller = hub.auth.authenticate(parts, false)?;
    stream_query(hub, &caller, parts, path_topic)?;
    let mut r = Response::new(Body::Full(None));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    Ok(r)
}

/// `GET /events` and `GET /events/{topic}`.
fn events(
    hub: &Hub,
    parts: &Parts,
    peer: SocketAddr,
    path_topic: Option<String>,
) -> Result<Resp, Error> {
    let caller = hub.auth.authenticate(parts, true)?;
    let StreamQuery {
        named,
        last_event_id: query_last,
        envelope,
    } = stream_query(hub, &caller, parts, path_topic)?;
    // The header wins over the query parameter (an EventSource reconnect sends the header).
    let last_id = parts
        .headers
        .get("last-event-id")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_string())
        .filter(|s| !s.is_empty())
        .or(query_last.filter(|s| !s.is_empty()));

    let mut topics = named;
    if let Some(u) = &caller.user {
        topics.push(topic::personal_topic(u));
    }
    topics.push(topic::BROADCAST.to_string());
    dedup(&mut topics);

    let reg = hub.broker.register(
        StreamSpec {
            user: caller.user.clone(),
            admin: caller.admin,
            ip: peer.ip(),
            topics,
            expires_at: caller.expires_at,
        },
        |t| caller.can_read(t),
    )?;
    let live_from = reg.live_from;
    let topics = reg.topics;
    // From here the stream is registered; the body unregisters it when dropped (so an
    // error below must still build the body, or unregister).
    let selector = Selector::new(&topics, caller.user.clone(), caller.admin);
    let resume = last_id.as_deref().map(|id| hub.store.parse_id(id));
    let pruned = match resume {
        Some(Resume::After(seq)) if seq > 0 && seq <= live_from => {
            match hub.store.pruned_since(&selector, seq) {
                Ok(p) => p,
                Err(e) => {
                    hub.broker.unregister(&reg.sub);
                    return Err(Error::unavailable(format!(
                        "the event log cannot be read: {e}"
                    )));
                }
            }
        }
        _ => false,
    };
    let (reset, replay_after) = match resume {
        None => (None, None),
        Some(Resume::After(seq)) if seq > live_from => (Some("unknown_id"), Some(0)),
        Some(Resume::After(_)) if pruned => (Some("pruned"), Some(0)),
        Some(Resume::After(seq)) => (None, Some(seq)),
        Some(Resume::Unknown) => (Some("unknown_id"), Some(0)),
    };
    let mut preamble = Vec::with_capacity(512);
    preamble.extend_from_slice(&sse::retry_frame(hub.config.stream.retry.as_millis()));
    preamble.extend_from_slice(&sse::control_frame(
        "connected",
        &json!({
            "connection_id": reg.sub.id,
            "user": caller.user,
            "topics": topics,
            "last_event_id": last_id,
        }),
    ));
    if let Some(reason) = reset {
        preamble.extend_from_slice(&sse::control_frame(
            "reset",
            &json!({"reason": reason, "last_event_id": last_id}),
        ));
    }
    let replay = replay_after
        .filter(|after| *after < live_from)
        .map(|after| {
            Box::new(Replay {
                store: hub.store.clone(),
                selector,
                after,
                until: live_from,
                // Continuity is promised only when resuming from an id without a reset.
                continues_from: if reset.is_none() && after > 0 {
                    last_id.clone()
                } else {
                    None
                },
            })
        });
    tracing::debug!(conn = %reg.sub.id, user = ?caller.user, topics = ?topics,
        last_event_id = ?last_id, reset = ?reset, "stream opened");
    let body = SseBody::new(hub.broker.clone(), reg.sub, Bytes::from(preamble), replay)
        .with_envelope(envelope);
    let mut resp = Response::new(Body::Sse(body));
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(resp)
}

/// Validates topics or patterns and checks the caller may read each (SPEC §5.1, §5.4).
fn check_readable(caller: &Caller, topics: &[String]) -> Result<(), Error> {
    for t in topics {
        topic::validate_pattern(t)?;
        if !caller.can_read(t) {
            return Err(caller.refuse(format!("you may not read topic {t:?}")));
        }
    }
    Ok(())
}

fn dedup(v: &mut Vec<String>) {
    let mut seen = std::collections::HashSet::new();
    v.retain(|t| seen.insert(t.clone()));
}

// ---------------------------------------------------------------------------------------------
// Publishing

/// Reads a request body, refusing it (413) from `Content-Length` or as soon as it grows past
/// `limits.max_body_bytes`, without buffering more than that; a body that does not arrive
/// within `limits.request_timeout` is a 408.
async fn read_body(hub: &Hub, body: ReqBody, parts: &Parts) -> Result<Bytes, Error> {
    let limit = hub.config.limits.max_body_bytes.0;
    let timeout = hub.config.limits.request_timeout.0;
    let too_large = || {
        Error::PayloadTooLarge(format!(
            "the request body is larger than limits.max_body_bytes ({})",
            crate::config::ByteSize(limit)
        ))
    };
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let collected = tokio::time::timeout(timeout, Limited::new(body, limit).collect())
        .await
        .map_err(|_| {
            Error::RequestTimeout(format!(
                "the request body did not arrive within limits.request_timeout ({})",
                crate::config::Dur(timeout)
            ))
        })?;
    match collected {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Err(e) => Err(Error::BadRequest(format!(
            "could not read the request body: {e}"
        ))),
    }
}

/// JSON endpoints take `application/json` (or `+json`), or no content type at all.
fn require_json(parts: &Parts) -> Result<(), Error> {
    let Some(ct) = parts.headers.get(CONTENT_TYPE) else {
        return Ok(());
    };
    let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
    let essence = ct.split(';').next().unwrap_or("").trim();
    if essence == "application/json" || essence.ends_with("+json") {
        Ok(())
    } else {
        Err(Error::UnsupportedMediaType(format!(
            "this endpoint takes JSON (content-type: application/json), not {essence:?}; \
             to publish raw text use POST /publish/{{topic}}"
        )))
    }
}

/// Publishing needs credentials (unless auth is off): refuse before reading the body.
fn publisher(hub: &Hub, parts: &Parts, peer: SocketAddr) -> Result<Caller, Error> {
    let caller = authenticate(hub, parts, peer)?;
    if caller.open || caller.is_authenticated() {
        Ok(caller)
    } else {
        Err(Error::Unauthorized("publishing needs credentials".into()))
    }
}

fn check_publish(caller: &Caller, events: &[NewEvent]) -> Result<(), Error> {
    for ev in events {
        for t in &ev.topics {
            if !caller.can_publish(t) {
                let what = if t == topic::BROADCAST {
                    "you may not broadcast (that needs a publish pattern covering \
                     $broadcast, such as *)"
                        .to_string()
                } else {
                    format!("you may not publish to topic {t:?}")
                };
                return Err(caller.refuse(what));
            }
        }
    }
    Ok(())
}

/// `POST /publish`.
async fn publish_json(
    hub: &Hub,
    parts: Parts,
    body: ReqBody,
    peer: SocketAddr,
) -> Result<Resp, Error> {
    let caller = publisher(hub, &parts, peer)?;
    require_json(&parts)?;
    let bytes = read_body(hub, body, &parts).await?;
    let (events, batch) = message::parse_publish(&bytes, hub.publish_limits())?;
    check_publish(&caller, &events)?;
    let (answers, replayed) = publish(hub, &caller, events).await?;
    let v = if batch {
        Value::Array(answers)
    } else {
        answers.into_iter().next().unwrap_or(Value::Null)
    };
    Ok(publish_response(&v, replayed && !batch))
}

/// `POST /publish/{topic}`: the body is the data.
async fn publish_raw(
    hub: &Hub,
    parts: Parts,
    body: ReqBody,
    peer: SocketAddr,
    topic: String,
) -> Result<Resp, Error> {
    let caller = publisher(hub, &parts, peer)?;
    let bytes = read_body(hub, body, &parts).await?;
    let ev = message::parse_raw(&topic, &query(&parts), &bytes, hub.publish_limits())?;
    let events = vec![ev];
    check_publish(&caller, &events)?;
    let (answers, replayed) = publish(hub, &caller, events).await?;
    Ok(publish_response(
        &answers.into_iter().next().unwrap_or(Value::Null),
        replayed,
    ))
}

/// `POST /notify`.
async fn notify(hub: &Hub, parts: Parts, body: ReqBody, peer: SocketAddr) -> Result<Resp, Error> {
    let caller = publisher(hub, &parts, peer)?;
    require_json(&parts)?;
    let bytes = read_body(hub, body, &parts).await?;
    let events = vec![message::parse_notify(&bytes, hub.publish_limits())?];
    check_publish(&caller, &events)?;
    let (answers, replayed) = publish(hub, &caller, events).await?;
    Ok(publish_response(
        &answers.into_iter().next().unwrap_or(Value::Null),
        replayed,
    ))
}

fn publish_response(v: &Value, replayed: bool) -> Resp {
    let mut r = json_response(StatusCode::OK, v);
    if replayed {
        r.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    r
}

/// Publishes events as one atomic batch, answering keyed events seen in the last five
/// minutes from memory instead. Returns one answer per event, in order, and whether every
/// answer was such a replay.
async fn publish(
    hub: &Hub,
    caller: &Caller,
    events: Vec<NewEvent>,
) -> Result<(Vec<Value>, bool), Error> {
    let scope = caller.scope();
    let mut answers: Vec<Option<Value>> = vec![None; events.len()];
    let mut fresh = Vec::new();
    let mut fresh_at = Vec::new();
    let mut claimed: Vec<(usize, String)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for ev in events.iter().filter_map(|e| e.idempotency_key.as_ref()) {
        if !seen.insert(ev) {
            return Err(Error::BadRequest(format!(
                "idempotency_key {ev:?} appears twice in one batch"
            )));
        }
    }
    for (i, ev) in events.into_iter().enumerate() {
        if let Some(k) = &ev.idempotency_key {
            let key = format!("{scope}\n{k}");
            match hub.idempotency.begin(&key) {
                Begin::Done(v) => {
                    answers[i] = Some(v);
                    continue;
                }
                Begin::InProgress => {
                    for (_, k) in &claimed {
                        hub.idempotency.abort(k);
                    }
                    return Err(Error::Conflict(format!(
                        "a publish with idempotency_key {:?} is in progress; retry later",
                        ev.idempotency_key.as_deref().unwrap_or("")
                    )));
                }
                Begin::Fresh => claimed.push((i, key)),
            }
        }
        fresh_at.push(i);
        fresh.push(ev);
    }
    let all_replayed = fresh.is_empty();
    if !fresh.is_empty() {
        match hub.publisher.publish(fresh).await {
            Ok(published) => {
                for (i, p) in fresh_at.into_iter().zip(published) {
                    answers[i] = Some(json!({
                        "id": p.id, "topics": p.topics, "delivered": p.delivered
                    }));
                }
                for (i, k) in &claimed {
                    hub.idempotency
                        .complete(k, answers[*i].clone().unwrap_or(Value::Null));
                }
            }
            Err(e) => {
                for (_, k) in &claimed {
                    hub.idempotency.abort(k);
                }
                return Err(e);
            }
        }
    }
    Ok((
        answers
            .into_iter()
            .map(|a| a.unwrap_or(Value::Null))
            .collect(),
        all_replayed,
    ))
}

// ---------------------------------------------------------------------------------------------
// Sessions and exchange tokens

/// `POST /subscribe` and `POST /unsubscribe` (SPEC §5.4).
async fn session_change(
    hub: &Hub,
    parts: Parts,
    body: ReqBody,
    peer: SocketAddr,
    add: bool,
) -> Result<Resp, Error> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Change {
        topics: Vec<String>,
        connection_id: Option<String>,
    }
    let caller = authenticate(hub, &parts, peer)?;
    require_json(&parts)?;
    let bytes = read_body(hub, body, &parts).await?;
    let v: Value = serde_json::from_slice(&bytes)
        .map_err(|e| Error::InvalidJson(format!("invalid JSON: {e}")))?;
    let change: Change = serde_json::from_value(v).map_err(|e| {
        Error::BadRequest(format!(
            "{e}; expected {{\"topics\": [...], \"connection_id\"?: \"...\"}}"
        ))
    })?;
    let mut topics = change.topics;
    dedup(&mut topics);
    if topics.is_empty() {
        return Err(Error::BadRequest("\"topics\" is empty".into()));
    }
    if add {
        check_readable(&caller, &topics)?;
    } else {
        for t in &topics {
            topic::validate_pattern(t)?;
        }
    }
    let result = match (&caller.user, &change.connection_id) {
        (Some(user), id) => {
            // A user's change goes into the session; a connection id, if given, must be one
            // of the user's streams.
            if let Some(id) = id
                && hub.broker.stream_owned_by(id, user) != Some(true)
            {
                return Err(Error::NotFound(format!(
                    "you have no open stream with connection_id {id:?}"
                )));
            }
            if add {
                hub.broker.session_subscribe(user, &topics)?
            } else {
                hub.broker.session_unsubscribe(user, &topics)
            }
        }
        (None, Some(id)) => {
            if !caller.may_stream() {
                return Err(Error::Unauthorized("credentials are required".into()));
            }
            if add {
                hub.broker.stream_subscribe(id, &topics)?
            } else {
                hub.broker.stream_unsubscribe(id, &topics)?
            }
        }
        (None, None) => {
            return Err(if caller.may_stream() {
                Error::BadRequest(
                    "without a user, name the stream: {\"topics\": [...], \"connection_id\": \
                     \"...\"} (from the stream's `connected` event)"
                        .into(),
                )
            } else {
                Error::Unauthorized("credentials are required".into())
            });
        }
    };
    Ok(json_response(StatusCode::OK, &json!({"topics": result})))
}

/// `POST /auth/sse-token`: a 30-second, single-use token for `GET /events?token=`.
fn sse_token(hub: &Hub, parts: &Parts, peer: SocketAddr) -> Result<Resp, Error> {
    let caller = authenticate(hub, parts, peer)?;
    if !caller.is_authenticated() && !caller.open {
        return Err(Error::Unauthorized("credentials are required".into()));
    }
    let token = hub.auth.issue_exchange(&caller)?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"token": token, "expires_in": crate::auth::EXCHANGE_TTL.as_secs()}),
    ))
}

/// `POST /auth/cookie`: stores the JWT the request carries (`Authorization: Bearer` or
/// `x-auth-token`) in an `HttpOnly` cookie for this origin (`Secure` with `[tls]`), so a page's `EventSource` and
/// `fetch` calls are authenticated without the token ever being readable by scripts. It lasts
/// as long as the token. An API key is refused: it never expires and should not sit in a
/// browser.
fn set_cookie(hub: &Hub, parts: &Parts, peer: SocketAddr) -> Result<Resp, Error> {
    let caller = authenticate(hub, parts, peer)?;
    let jwt = match caller.via {
        Via::Bearer if caller.key.is_none() => parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().split_once(' '))
            .map(|(_, t)| t.trim()),
        Via::AuthTokenHeader => parts
            .headers
            .get("x-auth-token")
            .and_then(|v| v.to_str().ok())
            .map(str::trim),
        _ => None,
    };
    let (Some(jwt), Some(user)) = (jwt, caller.user.as_deref()) else {
        return Err(Error::Unauthorized(
            "send the JWT to store as `Authorization: Bearer <JWT>` or `x-auth-token` \
             (API keys and other carriers are not put in cookies)"
                .into(),
        ));
    };
    let now = crate::broker::unix_ms();
    let max_age = caller
        .expires_at
        .map_or(0, |exp| exp.saturating_sub(now) / 1000);
    let cookie = format!(
        "{}={jwt}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict{}",
        hub.config.auth.cookie_name,
        secure_attr(hub)
    );
    let mut r = json_response(
        StatusCode::OK,
        &json!({"user": user, "admin": caller.admin, "expires_in": max_age}),
    );
    r.headers_mut().insert(
        SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(|_| {
            Error::BadRequest("the token holds characters a cookie cannot carry".into())
        })?,
    );
    Ok(r)
}

/// Over HTTPS the cookie is marked `Secure`, so it never travels in clear text.
fn secure_attr(hub: &Hub) -> &'static str {
    if hub.tls.is_some() { "; Secure" } else { "" }
}

/// `DELETE /auth/cookie`: forgets the cookie (logs the browser out).
fn clear_cookie(hub: &Hub) -> Resp {
    let mut r = Response::new(Body::Full(None));
    *r.status_mut() = StatusCode::NO_CONTENT;
    let cookie = format!(
        "{}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict{}",
        hub.config.auth.cookie_name,
        secure_attr(hub)
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(SET_COOKIE, v);
    }
    r
}

// ---------------------------------------------------------------------------------------------
// Operations

fn health(hub: &Hub) -> Resp {
    let (status, word) = if hub.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining")
    } else if !hub.store.is_healthy() {
        (StatusCode::SERVICE_UNAVAILABLE, "store_failed")
    } else {
        (StatusCode::OK, "ok")
    };
    json_response(status, &json!({"status": word}))
}

fn connections(hub: &Hub) -> Resp {
    let list: Vec<Value> = hub
        .broker
        .connections()
        .into_iter()
        .map(|c| {
            json!({
                "id": c.id,
                "user": c.user,
                "ip": c.ip.to_string(),
                "topics": c.topics,
                "connected_at": c.connected_at,
                "queued": c.queued,
            })
        })
        .collect();
    json_response(StatusCode::OK, &json!({"connections": list}))
}

fn close_connection(hub: &Hub, id: &str) -> Result<Resp, Error> {
    let frame = sse::control_frame(
        "closed",
        &json!({"reason": "closed_by_admin", "message": "an admin closed this stream"}),
    );
    if hub.broker.close_stream(id, frame) {
        let mut r = Response::new(Body::Full(None));
        *r.status_mut() = StatusCode::NO_CONTENT;
        Ok(r)
    } else {
        Err(Error::NotFound(format!("no open stream has id {id:?}")))
    }
}

/// The console (`GET /`): one page, no build step, no outside resources.
const CONSOLE_HTML: &str = include_str!("../web/console.html");
/// The browser client (`GET /runnel.js`), an ES module.
const RUNNEL_JS: &str = include_str!("../web/runnel.js");

fn asset(content_type: &'static str, body: &'static str) -> Resp {
    let mut r = Response::new(Body::Full(Some(Bytes::from_static(body.as_bytes()))));
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Small, and must change with the binary: revalidate rather than cache blindly.
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    r
}

// ---------------------------------------------------------------------------------------------
// Responses

pub fn json_response(status: StatusCode, v: &Value) -> Resp {
    let body = serde_json::to_vec(v).unwrap_or_default();
    let mut r = Response::new(Body::Full(Some(Bytes::from(body))));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn text_response(status: StatusCode, content_type: &'static str, body: String) -> Resp {
    let mut r = Response::new(Body::Full(Some(Bytes::from(body))));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

pub fn error_response(e: &Error) -> Resp {
    let mut r = Response::new(Body::Full(Some(Bytes::from(e.body()))));
    *r.status_mut() = e.status();
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    for (k, v) in e.extra_headers() {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(k, v);
        }
    }
    r
}
