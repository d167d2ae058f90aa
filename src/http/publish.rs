//! `POST /publish`, `POST /publish/{topic}` and `POST /notify` (SPEC §5.2).

use std::net::SocketAddr;

use http::StatusCode;
use http::header::HeaderValue;
use http::request::Parts;
use serde_json::{Value, json};

use super::body::{json_response, query, read_body, require_json};
use super::{ReqBody, Resp};
use crate::auth::Caller;
use crate::error::Error;
use crate::event::Published;
use crate::hub::{Hub, Outcome};
use crate::message;

/// `POST /publish`: one JSON object, or an array of them as one atomic batch.
pub(super) async fn json(
    hub: &Hub,
    parts: Parts,
    body: ReqBody,
    peer: SocketAddr,
) -> Result<Resp, Error> {
    let caller = publisher(&parts)?;
    require_json(&parts)?;
    let bytes = read_body(hub, body, &parts).await?;
    let (events, batch) = message::parse_publish(&bytes, hub.publish_limits())?;
    let out = hub.publish(&caller, events, peer).await?;
    if batch {
        let all = out.answers.iter().map(answer).collect();
        return Ok(json_response(StatusCode::OK, &Value::Array(all)));
    }
    Ok(single(&out))
}

/// `POST /publish/{topic}`: the body is the data.
pub(super) async fn raw(
    hub: &Hub,
    parts: Parts,
    body: ReqBody,
    peer: SocketAddr,
    topic: String,
) -> Result<Resp, Error> {
    let caller = publisher(&parts)?;
    let bytes = read_body(hub, body, &parts).await?;
    let ev = message::parse_raw(&topic, &query(&parts), &bytes, hub.publish_limits())?;
    Ok(single(&hub.publish(&caller, vec![ev], peer).await?))
}

/// `POST /notify`.
pub(super) async fn notify(
    hub: &Hub,
    parts: Parts,
    body: ReqBody,
    peer: SocketAddr,
) -> Result<Resp, Error> {
    let caller = publisher(&parts)?;
    require_json(&parts)?;
    let bytes = read_body(hub, body, &parts).await?;
    let ev = message::parse_notify(&bytes, hub.publish_limits())?;
    Ok(single(&hub.publish(&caller, vec![ev], peer).await?))
}

/// Publishing needs credentials (unless auth is off): refuse before reading the body.
pub(super) fn publisher(parts: &Parts) -> Result<Caller, Error> {
    let caller = super::caller(parts)?;
    if caller.open || caller.is_authenticated() {
        Ok(caller)
    } else {
        Err(Error::Unauthorized("publishing needs credentials".into()))
    }
}

fn answer(p: &Published) -> Value {
    json!({"id": p.id, "topics": p.topics, "delivered": p.delivered})
}

/// The answer to a single-event publish; `idempotent-replayed: true` when it was
/// remembered rather than published now.
fn single(out: &Outcome) -> Resp {
    let v = out.answers.first().map_or(Value::Null, answer);
    let mut r = json_response(StatusCode::OK, &v);
    if out.replayed {
        r.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    r
}
