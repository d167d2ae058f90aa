//! ntfy's publish API: `PUT`/`POST /<topic>` (the body is the message), `GET
//! /<topic>/publish|send|trigger`, and JSON to `POST /`. Every field as ntfy reads it — its
//! `X-` header, the header's short aliases, the query parameter — becomes the message object
//! stored as the event's data (see `crate::ntfy`); what runnel does not do is refused,
//! naming the feature.

use std::net::SocketAddr;

use http::StatusCode;
use http::header::CONTENT_TYPE;
use http::request::Parts;
use serde_json::{Map, Value};

use super::fields::{actions, check_actions, decode_words};
use super::reserved;
use crate::error::Error;
use crate::event::NewEvent;
use crate::http::body::{json_response, query, read_body};
use crate::http::{ReqBody, Resp};
use crate::hub::Hub;
use crate::ntfy::{self, MESSAGE_EVENT};

/// The names ntfy reads each field under: headers (any case), then query parameters.
const MESSAGE: &[&str] = &["x-message", "message", "m"];
const TITLE: &[&str] = &["x-title", "title", "ti", "t"];
const PRIORITY: &[&str] = &["x-priority", "priority", "prio", "p"];
const TAGS: &[&str] = &["x-tags", "tags", "tag", "ta"];
const CLICK: &[&str] = &["x-click", "click"];
const ICON: &[&str] = &["x-icon", "icon"];
const ACTIONS: &[&str] = &["x-actions", "actions", "action"];
const MARKDOWN: &[&str] = &["x-markdown", "markdown", "md"];
const CACHE: &[&str] = &["x-cache", "cache"];
const FIREBASE: &[&str] = &["x-firebase", "firebase"];

/// ntfy's features runnel does not have: any of these names present is a 400 naming it.
const UNSUPPORTED: &[(&str, &[&str])] = &[
    (
        "attachments",
        &[
            "x-attach",
            "attach",
            "a",
            "x-filename",
            "filename",
            "file",
            "f",
        ],
    ),
    (
        "e-mail notifications",
        &["x-email", "x-e-mail", "email", "e-mail", "mail", "e"],
    ),
    ("phone calls", &["x-call", "call"]),
    (
        "scheduled delivery",
        &["x-delay", "delay", "x-at", "at", "x-in", "in"],
    ),
    ("UnifiedPush", &["x-unifiedpush", "unifiedpush", "up"]),
    ("message templates", &["x-template", "template", "tpl"]),
];

/// What a request says about the message, header or query.
struct Params<'a> {
    headers: &'a http::HeaderMap,
    query: Vec<(String, String)>,
}

impl Params<'_> {
    fn of(parts: &Parts) -> Params<'_> {
        Params {
            headers: &parts.headers,
            query: query(parts)
                .into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v))
                .collect(),
        }
    }

    /// The first of `names` present: headers (UTF-8, or RFC 2047 encoded words, as ntfy
    /// takes them), then query parameters.
    fn get(&self, names: &[&str]) -> Option<String> {
        for n in names {
            if let Some(v) = self.headers.get(*n) {
                let text = String::from_utf8_lossy(v.as_bytes());
                return Some(decode_words(text.trim()));
            }
        }
        names.iter().find_map(|n| {
            self.query
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.trim().to_string())
        })
    }
}

/// `PUT`/`POST /<topic>`: the body is the message; `GET /<topic>/publish` (and `send`,
/// `trigger`): the `message` parameter is.
pub(in crate::http) async fn to_topic(
    hub: &Hub,
    parts: Parts,
    body: ReqBody,
    peer: SocketAddr,
    topic: &str,
) -> Result<Resp, Error> {
    let caller = crate::http::publish::publisher(&parts)?;
    let params = Params::of(&parts);
    let bytes = if parts.method == http::Method::GET {
        bytes::Bytes::new()
    } else {
        read_body(hub, body, &parts).await?
    };
    let mut fields = from_params(&params)?;
    let body_text = std::str::from_utf8(&bytes).map_err(|_| {
        unsupported(
            "attachments",
            "the body is not UTF-8 text, which ntfy makes an attachment",
        )
    })?;
    let body_text = body_text
        .strip_suffix("\r\n")
        .or_else(|| body_text.strip_suffix('\n'))
        .unwrap_or(body_text);
    let message = match (params.get(MESSAGE), body_text.is_empty()) {
        (Some(_), false) => {
            return Err(unsupported(
                "attachments",
                "a body beside a message parameter is an attachment in ntfy",
            ));
        }
        (Some(m), true) => m,
        (None, false) => body_text.to_string(),
        (None, true) => "triggered".to_string(),
    };
    if is_markdown_body(&parts) {
        fields.insert("content_type".into(), "text/markdown".into());
    }
    let persist = cache(&params)?;
    publish(hub, &caller, peer, topic, message, fields, persist).await
}

/// `POST /` (or `PUT /`) with a JSON object: `topic`, `message`, `title`, `tags`,
/// `priority`, `click`, `icon`, `actions`, `markdown`. Headers and parameters apply too; the
/// JSON's fields win.
pub(in crate::http) async fn json(
    hub: &Hub,
    parts: Parts,
    body: ReqBody,
    peer: SocketAddr,
) -> Result<Resp, Error> {
    let caller = crate::http::publish::publisher(&parts)?;
    let params = Params::of(&parts);
    let bytes = read_body(hub, body, &parts).await?;
    let v: Value = serde_json::from_slice(&bytes)
        .map_err(|e| Error::InvalidJson(format!("the body is not JSON: {e}")))?;
    let Value::Object(mut o) = v else {
        return Err(Error::InvalidJson(
            "publish a JSON object: {\"topic\": \"...\", \"message\": \"...\"}".into(),
        ));
    };
    for (feature, names) in UNSUPPORTED {
        if let Some(n) = names.iter().find(|n| o.contains_key(**n)) {
            return Err(unsupported(feature, &format!("the field {n:?}")));
        }
    }
    let topic = match o.remove("topic") {
        Some(Value::String(t)) => t,
        _ => {
            return Err(Error::BadRequest(
                "the JSON needs \"topic\": the topic to publish to".into(),
            ));
        }
    };
    path_topic(&topic)?;
    let mut fields = from_params(&params)?;
    merge_json(&mut o, &mut fields)?;
    let message = match o.remove("message") {
        None | Some(Value::Null) => params.get(MESSAGE),
        Some(Value::String(m)) => Some(m),
        Some(_) => return Err(Error::BadRequest("\"message\" must be a string".into())),
    }
    .unwrap_or_else(|| "triggered".into());
    let persist = cache(&params)?;
    publish(hub, &caller, peer, &topic, message, fields, persist).await
}
/// The fields of a JSON publish (but the message) over those of the headers.
fn merge_json(o: &mut Map<String, Value>, fields: &mut Map<String, Value>) -> Result<(), Error> {
    let text = |o: &mut Map<String, Value>, k: &str| -> Result<Option<String>, Error> {
        match o.remove(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(Error::BadRequest(format!("\"{k}\" must be a string"))),
        }
    };
    for k in ["title", "click", "icon"] {
        if let Some(s) = text(o, k)? {
            set_text(fields, k, s);
        }
    }
    match o.remove("priority") {
        None | Some(Value::Null) => {}
        Some(Value::Number(n)) => {
            fields.insert("priority".into(), priority_of(&n.to_string())?.into());
        }
        Some(Value::String(s)) => {
            fields.insert("priority".into(), priority_of(&s)?.into());
        }
        Some(_) => return Err(bad_priority("a non-number")),
    }
    match o.remove("tags") {
        None | Some(Value::Null) => {}
        Some(Value::Array(a)) => {
            let tags: Option<Vec<String>> = a
                .into_iter()
                .map(|t| t.as_str().map(str::to_string))
                .collect();
            let tags = tags
                .ok_or_else(|| Error::BadRequest("\"tags\" must be an array of strings".into()))?;
            set_tags(fields, tags);
        }
        Some(Value::String(s)) => set_tags(fields, split_tags(&s)),
        Some(_) => return Err(Error::BadRequest("\"tags\" must be an array".into())),
    }
    match o.remove("actions") {
        None | Some(Value::Null) => {}
        Some(Value::Array(a)) => {
            fields.insert("actions".into(), check_actions(a)?.into());
        }
        Some(_) => {
            return Err(Error::BadRequest(
                "\"actions\" must be an array of action objects".into(),
            ));
        }
    }
    match o.remove("markdown") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => {}
        Some(Value::Bool(true)) => {
            fields.insert("content_type".into(), "text/markdown".into());
        }
        Some(_) => {
            return Err(Error::BadRequest(
                "\"markdown\" must be true or false".into(),
            ));
        }
    }
    if o.get("firebase").is_some_and(|f| f != &Value::Bool(false)) {
        return Err(unsupported("Firebase", "the field \"firebase\""));
    }
    Ok(())
}

/// Publishes the message and answers with ntfy's message object.
async fn publish(
    hub: &Hub,
    caller: &crate::auth::Caller,
    peer: SocketAddr,
    topic: &str,
    message: String,
    mut fields: Map<String, Value>,
    persist: bool,
) -> Result<Resp, Error> {
    // The message first, as ntfy's answers have it.
    fields.shift_insert(0, "message".into(), message.into());
    let data = Value::Object(fields).to_string();
    let max = hub.publish_limits().max_event_bytes;
    if data.len() as u64 > max {
        return Err(Error::PayloadTooLarge(format!(
            "the message is {} bytes, more than limits.max_event_bytes ({max}); ntfy would make \
             it an attachment, which runnel does not have",
            data.len()
        )));
    }
    let ev = NewEvent {
        topics: vec![topic.to_string()],
        event: Some(MESSAGE_EVENT.into()),
        data,
        json: true,
        retry: None,
        persist,
        idempotency_key: None,
        origin: None,
    };
    let data = ev.data.clone();
    let out = hub.publish(caller, vec![ev], peer).await?;
    let Some(p) = out.answers.first() else {
        return Err(Error::unavailable("the publish gave no answer"));
    };
    let stored = ntfy::Msg {
        id: &p.id,
        time_ms: crate::time::unix_ms(),
        event: Some(MESSAGE_EVENT),
        data: &data,
        json: true,
    };
    let answer = ntfy::message_object(&stored, topic);
    Ok(json_response(StatusCode::OK, &Value::Object(answer)))
}

/// The fields given as headers or query parameters (all but the message).
fn from_params(p: &Params) -> Result<Map<String, Value>, Error> {
    for (feature, names) in UNSUPPORTED {
        for n in *names {
            if p.get(&[n]).is_some() {
                return Err(unsupported(feature, &format!("the parameter {n:?}")));
            }
        }
    }
    if let Some(f) = p.get(FIREBASE)
        && !matches!(f.to_ascii_lowercase().as_str(), "no" | "false" | "0")
    {
        // `Firebase: no` asks for what runnel does anyway.
        return Err(unsupported(
            "Firebase",
            "Firebase: no is the only value accepted",
        ));
    }
    let mut m = Map::new();
    if let Some(t) = p.get(TITLE) {
        set_text(&mut m, "title", t);
    }
    if let Some(v) = p.get(PRIORITY) {
        m.insert("priority".into(), priority_of(&v)?.into());
    }
    if let Some(v) = p.get(TAGS) {
        set_tags(&mut m, split_tags(&v));
    }
    for (k, names) in [("click", CLICK), ("icon", ICON)] {
        if let Some(v) = p.get(names) {
            set_text(&mut m, k, v);
        }
    }
    if let Some(v) = p.get(ACTIONS) {
        m.insert("actions".into(), actions(&v)?.into());
    }
    if let Some(v) = p.get(MARKDOWN)
        && yes_no(&v, "markdown")?
    {
        m.insert("content_type".into(), "text/markdown".into());
    }
    Ok(m)
}

fn set_text(m: &mut Map<String, Value>, k: &str, v: String) {
    if v.is_empty() {
        m.remove(k);
    } else {
        m.insert(k.into(), v.into());
    }
}

fn set_tags(m: &mut Map<String, Value>, tags: Vec<String>) {
    if tags.is_empty() {
        m.remove("tags");
    } else {
        m.insert("tags".into(), tags.into());
    }
}

fn split_tags(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

/// `Cache: no` publishes live only (not kept in the log).
fn cache(p: &Params) -> Result<bool, Error> {
    p.get(CACHE).map_or(Ok(true), |v| yes_no(&v, "cache"))
}

fn yes_no(v: &str, what: &str) -> Result<bool, Error> {
    match v.to_ascii_lowercase().as_str() {
        "yes" | "true" | "1" => Ok(true),
        "no" | "false" | "0" => Ok(false),
        _ => Err(Error::BadRequest(format!("{what}={v:?}: use yes or no"))),
    }
}

/// `Content-Type: text/markdown` on the body also makes it markdown.
fn is_markdown_body(parts: &Parts) -> bool {
    parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().to_ascii_lowercase().starts_with("text/markdown"))
}

/// 1–5, or ntfy's names for them.
pub(super) fn priority_of(v: &str) -> Result<u8, Error> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "min" => Ok(1),
        "2" | "low" => Ok(2),
        "" | "3" | "default" => Ok(3),
        "4" | "high" => Ok(4),
        "5" | "max" | "urgent" => Ok(5),
        other => Err(bad_priority(other)),
    }
}

fn bad_priority(what: &str) -> Error {
    Error::BadRequest(format!(
        "priority {what:?} is not one of 1-5, min, low, default, high, max, urgent"
    ))
}

fn unsupported(feature: &str, what: &str) -> Error {
    Error::BadRequest(format!(
        "{feature} are not supported by runnel's ntfy API ({what})"
    ))
}

/// The topic of `PUT`/`POST /<topic>`, checked.
pub(super) fn path_topic(t: &str) -> Result<&str, Error> {
    if reserved(t) {
        return Err(super::reserved_error(t));
    }
    super::check_topic(t)?;
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_by_number_and_name() {
        for (v, p) in [("urgent", 5), ("MAX", 5), ("high", 4), ("3", 3), ("min", 1)] {
            assert_eq!(priority_of(v).unwrap(), p, "{v}");
        }
        assert!(priority_of("6").is_err() && priority_of("loud").is_err());
    }
}
