//! What a WebSocket client sends (SPEC §5.8): `subscribe`, `unsubscribe`, `publish` and
//! `ping` ops, and the `action` command form of hand-rolled WebSocket hubs mapped onto the
//! same ops. Each message is handled to the end before the next is read, so answers come
//! in order; each gets one answer (`ack`, `pong` or `error`), and bad input is an `error`
//! naming the problem, never the end of the connection.

use bytes::Bytes;
use serde_json::{Map, Value, json};
use std::net::SocketAddr;

use crate::error::Error;
use crate::event::Published;
use crate::http::WsSession;
use crate::hub::Hub;
use crate::message;

/// What a message acts on: the hub, the connection, and where it comes from.
pub(super) struct Ctx<'a> {
    pub hub: &'a Hub,
    pub session: &'a mut WsSession,
    pub peer: SocketAddr,
}

/// How the answer names the message it answers: `ref` for ops, `request_id` for actions.
struct Reply {
    key: &'static str,
    id: Option<Value>,
}

impl Reply {
    fn frame(&self, mut v: Map<String, Value>) -> Bytes {
        if let Some(id) = &self.id {
            v.insert(self.key.into(), id.clone());
        }
        crate::ws::text_frame(Value::Object(v).to_string().as_bytes())
    }

    fn ack(&self, result: Value) -> Bytes {
        let mut m = Map::new();
        m.insert("type".into(), "ack".into());
        m.insert("result".into(), result);
        self.frame(m)
    }

    fn error(&self, e: &Error) -> Bytes {
        let mut m = Map::new();
        m.insert("type".into(), "error".into());
        m.insert(
            "error".into(),
            json!({"code": e.code(), "message": e.to_string()}),
        );
        self.frame(m)
    }
}

/// An `error` message answering nothing in particular (or the message `id` names).
pub(super) fn error_frame(id: Option<Value>, code: &str, message: &str) -> Bytes {
    let v = json!({"type": "error", "error": {"code": code, "message": message}});
    let mut m = match v {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    if let Some(id) = id {
        m.insert("ref".into(), id);
    }
    crate::ws::text_frame(Value::Object(m).to_string().as_bytes())
}

/// Handles one text message; returns the answer's frame.
pub(super) async fn handle(conn: &mut Ctx<'_>, text: &str) -> Bytes {
    let mut msg = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => m,
        Ok(_) => {
            return error_frame(None, "bad_request", "a message must be a JSON object");
        }
        Err(e) => {
            return error_frame(
                None,
                "invalid_json",
                &format!("the message is not JSON: {e}"),
            );
        }
    };
    // The hub closes a connection whose credential expired within a tick; until then it
    // may still be read from, but nothing it sends is acted on.
    if conn
        .session
        .caller
        .expires_at
        .is_some_and(|exp| exp <= crate::time::unix_ms())
    {
        let id = msg.get("ref").or_else(|| msg.get("request_id")).cloned();
        return error_frame(id, "unauthorized", "the connection's credential expired");
    }
    if let Some(action) = msg.remove("action") {
        let reply = Reply {
            key: "request_id",
            id: msg.remove("request_id"),
        };
        let answer = match action.as_str() {
            Some(a) => action_op(conn, a, msg, &reply).await,
            None => Err(Error::BadRequest("\"action\" must be a string".into())),
        };
        return answer.unwrap_or_else(|e| reply.error(&e));
    }
    let reply = Reply {
        key: "ref",
        id: msg.remove("ref"),
    };
    let answer = match msg.remove("op") {
        Some(Value::String(op)) => op_named(conn, &op, msg, &reply).await,
        Some(_) => Err(Error::BadRequest("\"op\" must be a string".into())),
        None => Err(Error::BadRequest(
            "a message needs \"op\" (subscribe, unsubscribe, publish, ping) or \"action\"".into(),
        )),
    };
    answer.unwrap_or_else(|e| reply.error(&e))
}

async fn op_named(
    conn: &mut Ctx<'_>,
    op: &str,
    mut msg: Map<String, Value>,
    reply: &Reply,
) -> Result<Bytes, Error> {
    match op {
        "ping" => Ok(pong(reply)),
        "subscribe" | "unsubscribe" => {
            let topics = topics_of(msg.remove("topics"))?;
            let last_id = match msg.remove("last_event_id") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) if op == "subscribe" => Some(s),
                Some(_) if op == "subscribe" => {
                    return Err(Error::BadRequest(
                        "\"last_event_id\" must be a string".into(),
                    ));
                }
                Some(_) => {
                    return Err(Error::BadRequest(
                        "\"last_event_id\" belongs to subscribe".into(),
                    ));
                }
            };
            no_more(&msg)?;
            subscription(conn, op == "subscribe", topics, last_id, reply)
        }
        "publish" => {
            // The body of POST /publish: the message itself, or an atomic batch in "events".
            let body = match msg.remove("events") {
                Some(Value::Array(events)) => {
                    no_more(&msg)?;
                    Value::Array(events)
                }
                Some(_) => return Err(Error::BadRequest("\"events\" must be an array".into())),
                None => Value::Object(msg),
            };
            publish(conn, &body, reply).await
        }
        other => Err(Error::BadRequest(format!(
            "unknown op {other:?}: use subscribe, unsubscribe, publish or ping"
        ))),
    }
}

/// The `action` form: `{"action", "data": {"channel"?, "user_id"?, "content"?}, "request_id"?}`.
async fn action_op(
    conn: &mut Ctx<'_>,
    action: &str,
    mut msg: Map<String, Value>,
    reply: &Reply,
) -> Result<Bytes, Error> {
    let mut data = match msg.remove("data") {
        Some(Value::Object(d)) => d,
        None | Some(Value::Null) => Map::new(),
        Some(_) => return Err(Error::BadRequest("\"data\" must be an object".into())),
    };
    no_more(&msg)?;
    let mut field = |name: &str| {
        data.remove(name)
            .ok_or_else(|| Error::BadRequest(format!("action {action:?} needs \"data\".{name}")))
    };
    match action {
        "ping" => Ok(pong(reply)),
        "subscribe" | "unsubscribe" => {
            let channel = string(field("channel")?, "data.channel")?;
            subscription(conn, action == "subscribe", vec![channel], None, reply)
        }
        "send_to_channel" => {
            let channel = string(field("channel")?, "data.channel")?;
            let content = field("content")?;
            publish(conn, &json!({"topic": channel, "data": content}), reply).await
        }
        "send_to_user" => {
            let user = string(field("user_id")?, "data.user_id")?;
            let content = field("content")?;
            publish(conn, &json!({"user": user, "data": content}), reply).await
        }
        other => Err(Error::BadRequest(format!(
            "unknown action {other:?}: use ping, subscribe, unsubscribe, send_to_channel or \
             send_to_user"
        ))),
    }
}

fn pong(reply: &Reply) -> Bytes {
    let mut m = Map::new();
    m.insert("type".into(), "pong".into());
    reply.frame(m)
}

/// Subscribes this connection (replaying after `last_id` first) or unsubscribes it.
fn subscription(
    conn: &mut Ctx<'_>,
    add: bool,
    topics: Vec<String>,
    last_id: Option<String>,
    reply: &Reply,
) -> Result<Bytes, Error> {
    let session = &mut *conn.session;
    let now = if add {
        let covered = session.covered();
        let (now, since) = conn.hub.subscribe_more(
            &session.caller,
            &mut session.sub,
            topics.clone(),
            last_id,
            covered,
        )?;
        session.note(&topics, Some(since));
        now
    } else {
        let now = conn.hub.unsubscribe_some(&session.sub, topics.clone())?;
        session.note(&topics, None);
        now
    };
    Ok(reply.ack(json!({ "topics": now })))
}

/// Publishes the body of a `POST /publish` through the hub, and waits for the commit.
async fn publish(conn: &mut Ctx<'_>, body: &Value, reply: &Reply) -> Result<Bytes, Error> {
    let caller = &conn.session.caller;
    if !(caller.open || caller.is_authenticated()) {
        return Err(Error::Unauthorized("publishing needs credentials".into()));
    }
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let (events, batch) = message::parse_publish(&bytes, conn.hub.publish_limits())?;
    let out = conn.hub.publish(caller, events, conn.peer).await?;
    let answer = |p: &Published| json!({"id": p.id, "topics": p.topics, "delivered": p.delivered});
    let result = if batch {
        Value::Array(out.answers.iter().map(answer).collect())
    } else {
        out.answers.first().map_or(Value::Null, answer)
    };
    Ok(reply.ack(result))
}

fn topics_of(v: Option<Value>) -> Result<Vec<String>, Error> {
    match v {
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|t| string(t, "each of \"topics\""))
            .collect(),
        Some(_) => Err(Error::BadRequest(
            "\"topics\" must be an array of topics".into(),
        )),
        None => Err(Error::BadRequest("\"topics\" is missing".into())),
    }
}

fn string(v: Value, what: &str) -> Result<String, Error> {
    match v {
        Value::String(s) => Ok(s),
        _ => Err(Error::BadRequest(format!("{what} must be a string"))),
    }
}

/// Refuses fields the message does not know (a misspelt field would otherwise be ignored).
fn no_more(msg: &Map<String, Value>) -> Result<(), Error> {
    match msg.keys().next() {
        Some(k) => Err(Error::BadRequest(format!("unknown field {k:?}"))),
        None => Ok(()),
    }
}
