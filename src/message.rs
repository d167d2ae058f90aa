//! Publish requests (SPEC §5.2) turned into events: `POST /publish` JSON (one object or an
//! atomic array), `POST /publish/{topic}` with a raw body, and `POST /notify`.
//!
//! Pure functions from bytes to [`NewEvent`]s, so they are easy to test and to fuzz; the
//! permission check and the publishing itself are the hub's.

use serde::{Deserialize, Deserializer};
use serde_json::Value;

pub use crate::event::NewEvent;

use crate::error::Error;
use crate::sse;
use crate::topic;

/// Most topics one event may name.
pub const MAX_EVENT_TOPICS: usize = 64;
/// Most events in one batch.
pub const MAX_BATCH: usize = 1000;
/// Longest `event` type and `idempotency_key`.
const MAX_NAME: usize = 200;
/// Longest `retry` a publisher may ask for, in ms (a day).
const MAX_RETRY_MS: u64 = 86_400_000;

/// The limits a publish is checked against.
#[derive(Debug, Clone, Copy)]
pub struct PublishLimits {
    pub max_event_bytes: u64,
}

/// Where an event goes: the target fields shared by `/publish` and `/notify`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Target {
    topic: Option<String>,
    topics: Option<Vec<String>>,
    user: Option<String>,
    broadcast: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishBody {
    topic: Option<String>,
    topics: Option<Vec<String>>,
    user: Option<String>,
    broadcast: Option<bool>,
    event: Option<String>,
    #[serde(default, deserialize_with = "present")]
    data: Option<Value>,
    retry: Option<u64>,
    persist: Option<bool>,
    idempotency_key: Option<String>,
}

/// `data: null` is present (and sent as `null`); only a missing field is `None`.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// Parses `POST /publish`. Returns the events and whether the body was a batch (array).
pub fn parse_publish(body: &[u8], limits: PublishLimits) -> Result<(Vec<NewEvent>, bool), Error> {
    let v: Value = parse_json(body)?;
    match v {
        Value::Array(items) => {
            if items.is_empty() {
                return Err(Error::BadRequest("the batch is empty".into()));
            }
            if items.len() > MAX_BATCH {
                return Err(Error::PayloadTooLarge(format!(
                    "a batch holds at most {MAX_BATCH} events, got {}",
                    items.len()
                )));
            }
            let events = items
                .into_iter()
                .enumerate()
                .map(|(i, item)| {
                    one(item, limits).map_err(|e| prefix(e, &format!("batch item {i}: ")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok((events, true))
        }
        Value::Object(_) => Ok((vec![one(v, limits)?], false)),
        _ => Err(Error::BadRequest(
            "the body must be a JSON object or an array of objects".into(),
        )),
    }
}

fn one(v: Value, limits: PublishLimits) -> Result<NewEvent, Error> {
    if !v.is_object() {
        return Err(Error::BadRequest("each event must be a JSON object".into()));
    }
    let b: PublishBody = from_value(v)?;
    let topics = resolve_target(Target {
        topic: b.topic,
        topics: b.topics,
        user: b.user,
        broadcast: b.broadcast,
    })?;
    let data = b.data.ok_or_else(|| {
        Error::BadRequest("\"data\" is missing (browsers drop events without data)".into())
    })?;
    let mut ev = build(
        topics,
        b.event,
        sse::data_text(&data),
        b.retry,
        b.persist,
        b.idempotency_key,
        limits,
    )?;
    ev.json = !data.is_string();
    Ok(ev)
}

/// Parses `POST /publish/{topic}`: the body is the data, options come from the query.
pub fn parse_raw(
    topic: &str,
    query: &[(String, String)],
    body: &[u8],
    limits: PublishLimits,
) -> Result<NewEvent, Error> {
    let topics = resolve_target(Target {
        topic: Some(topic.to_string()),
        ..Target::default()
    })?;
    let data = std::str::from_utf8(body)
        .map_err(|e| Error::BadRequest(format!("the body is not UTF-8 text: {e}")))?;
    // One line break at the end is the line's end, not data: `echo hi | curl --data-binary
    // @-` and `runnel pub` publish the same `hi`.
    let data = data
        .strip_suffix("\r\n")
        .or_else(|| data.strip_suffix('\n'))
        .unwrap_or(data);
    let (mut event, mut retry, mut persist, mut key) = (None, None, None, None);
    for (k, v) in query {
        match k.as_str() {
            "event" => event = Some(v.clone()),
            "retry" => {
                retry = Some(v.parse::<u64>().map_err(|_| {
                    Error::BadRequest(format!("retry={v:?} is not a number of milliseconds"))
                })?)
            }
            "persist" => {
                persist = Some(match v.as_str() {
                    "true" | "1" | "yes" => true,
                    "false" | "0" | "no" => false,
                    _ => {
                        return Err(Error::BadRequest(format!(
                            "persist={v:?}: use true or false"
                        )));
                    }
                })
            }
            "idempotency_key" => key = Some(v.clone()),
            other => {
                return Err(Error::BadRequest(format!(
                    "unknown query parameter {other:?} (known: event, retry, persist, \
                     idempotency_key)"
                )));
            }
        }
    }
    build(topics, event, data.to_string(), retry, persist, key, limits)
}

/// The fields of a notification; the event's data is these, as posted.
const NOTIFY_FIELDS: &[&str] = &["title", "content", "type", "auto_hide", "duration"];
const NOTIFY_OPTIONS: &[&str] = &["retry", "persist", "idempotency_key"];
const TARGET_FIELDS: &[&str] = &["topic", "topics", "user", "broadcast"];

/// Parses `POST /notify`: `{title, content, type, auto_hide, duration}` plus an optional
/// target (default: broadcast), sent as `event: notification`.
pub fn parse_notify(body: &[u8], limits: PublishLimits) -> Result<NewEvent, Error> {
    let v = parse_json(body)?;
    let Value::Object(map) = v else {
        return Err(Error::BadRequest("the body must be a JSON object".into()));
    };
    let mut data = serde_json::Map::new();
    let mut target = serde_json::Map::new();
    let mut options = serde_json::Map::new();
    for (k, v) in map {
        if NOTIFY_FIELDS.contains(&k.as_str()) {
            data.insert(k, v);
        } else if TARGET_FIELDS.contains(&k.as_str()) {
            target.insert(k, v);
        } else if NOTIFY_OPTIONS.contains(&k.as_str()) {
            options.insert(k, v);
        } else {
            return Err(Error::BadRequest(format!(
                "unknown field {k:?}; a notification has title, content, type, auto_hide, \
                 duration, an optional target (topic, topics, user, broadcast) and retry, \
                 persist, idempotency_key"
            )));
        }
    }
    check_notification(&data)?;
    let target: Target = from_value(Value::Object(target))?;
    let no_target = target.topic.is_none()
        && target.topics.is_none()
        && target.user.is_none()
        && target.broadcast.is_none();
    let topics = if no_target {
        vec![topic::BROADCAST.to_string()]
    } else {
        resolve_target(target)?
    };
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Options {
        retry: Option<u64>,
        persist: Option<bool>,
        idempotency_key: Option<String>,
    }
    let o: Options = from_value(Value::Object(options))?;
    let data = serde_json::to_string(&Value::Object(data)).unwrap_or_default();
    let mut ev = build(
        topics,
        Some("notification".into()),
        data,
        o.retry,
        o.persist,
        o.idempotency_key,
        limits,
    )?;
    ev.json = true;
    Ok(ev)
}

/// The notification's own fields: a non-empty title or content, a known type, a boolean
/// `auto_hide`, a whole-millisecond `duration`.
fn check_notification(data: &serde_json::Map<String, Value>) -> Result<(), Error> {
    let text = |k: &str| match data.get(k) {
        None | Some(Value::String(_)) => Ok(()),
        Some(_) => Err(Error::BadRequest(format!("\"{k}\" must be a string"))),
    };
    text("title")?;
    text("content")?;
    let has_text = ["title", "content"].iter().any(|k| {
        data.get(*k)
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
    });
    if !has_text {
        return Err(Error::BadRequest(
            "a notification needs a non-empty \"title\" or \"content\"".into(),
        ));
    }
    if let Some(t) = data.get("type") {
        match t.as_str() {
            Some("info" | "success" | "warning" | "error") => {}
            _ => {
                return Err(Error::BadRequest(
                    "\"type\" must be one of info, success, warning, error".into(),
                ));
            }
        }
    }
    if data.get("auto_hide").is_some_and(|v| !v.is_boolean()) {
        return Err(Error::BadRequest(
            "\"auto_hide\" must be true or false".into(),
        ));
    }
    if data.get("duration").is_some_and(|v| !v.is_u64()) {
        return Err(Error::BadRequest(
            "\"duration\" must be a whole number of milliseconds".into(),
        ));
    }
    Ok(())
}

/// Deserializes with the field's name in the error (`retry: invalid type ...`).
fn from_value<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, Error> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            Error::BadRequest(e.inner().to_string())
        } else {
            Error::BadRequest(format!("\"{path}\": {}", e.inner()))
        }
    })
}

fn parse_json(body: &[u8]) -> Result<Value, Error> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(Error::InvalidJson(
            "the body is empty; expected JSON".into(),
        ));
    }
    serde_json::from_slice(body).map_err(|e| Error::InvalidJson(format!("invalid JSON: {e}")))
}

/// Exactly one of `topic`, `topics`, `user`, `broadcast: true`, turned into topic names.
fn resolve_target(t: Target) -> Result<Vec<String>, Error> {
    let given = usize::from(t.topic.is_some())
        + usize::from(t.topics.is_some())
        + usize::from(t.user.is_some())
        + usize::from(t.broadcast == Some(true));
    if given == 0 {
        return Err(Error::BadRequest(
            "name a target: \"topic\", \"topics\", \"user\" or \"broadcast\": true".into(),
        ));
    }
    if given > 1 {
        return Err(Error::BadRequest(
            "name only one target: \"topic\", \"topics\", \"user\" or \"broadcast\"".into(),
        ));
    }
    let mut topics = if let Some(t) = t.topic {
        vec![t]
    } else if let Some(ts) = t.topics {
        if ts.is_empty() {
            return Err(Error::BadRequest("\"topics\" is empty".into()));
        }
        if ts.len() > MAX_EVENT_TOPICS {
            return Err(Error::BadRequest(format!(
                "an event names at most {MAX_EVENT_TOPICS} topics"
            )));
        }
        ts
    } else if let Some(u) = t.user {
        let personal = topic::personal_topic(&u);
        topic::validate_topic(&personal)
            .map_err(|e| Error::InvalidTopic(format!("user {u:?} gives an invalid {e}")))?;
        return Ok(vec![personal]);
    } else {
        return Ok(vec![topic::BROADCAST.to_string()]);
    };
    for t in &topics {
        topic::validate_topic(t)?;
        if topic::is_reserved(t) {
            return Err(Error::Forbidden(format!(
                "topic {t:?} is reserved for the hub (names starting with '$'); use \
                 \"broadcast\": true to reach every stream"
            )));
        }
    }
    topic::dedup(&mut topics);
    Ok(topics)
}

fn build(
    topics: Vec<String>,
    event: Option<String>,
    data: String,
    retry: Option<u64>,
    persist: Option<bool>,
    idempotency_key: Option<String>,
    limits: PublishLimits,
) -> Result<NewEvent, Error> {
    if let Some(e) = &event {
        if e.is_empty() || e.len() > MAX_NAME {
            return Err(Error::BadRequest(format!(
                "\"event\" must be 1-{MAX_NAME} bytes"
            )));
        }
        if e.chars().any(char::is_control) {
            return Err(Error::BadRequest(
                "\"event\" must not contain control characters such as CR or LF".into(),
            ));
        }
    }
    if let Some(r) = retry
        && r > MAX_RETRY_MS
    {
        return Err(Error::BadRequest(format!(
            "\"retry\" is at most {MAX_RETRY_MS} ms"
        )));
    }
    if let Some(k) = &idempotency_key
        && (k.is_empty() || k.len() > MAX_NAME || k.chars().any(char::is_control))
    {
        return Err(Error::BadRequest(format!(
            "\"idempotency_key\" must be 1-{MAX_NAME} bytes without control characters"
        )));
    }
    if data.len() as u64 > limits.max_event_bytes {
        return Err(Error::PayloadTooLarge(format!(
            "the event's data is {} bytes; limits.max_event_bytes is {}",
            data.len(),
            crate::config::ByteSize(limits.max_event_bytes)
        )));
    }
    Ok(NewEvent {
        topics,
        event,
        data,
        json: false,
        retry,
        persist: persist.unwrap_or(true),
        idempotency_key,
        origin: None,
    })
}

fn prefix(e: Error, p: &str) -> Error {
    match e {
        Error::BadRequest(m) => Error::BadRequest(format!("{p}{m}")),
        Error::InvalidTopic(m) => Error::InvalidTopic(format!("{p}{m}")),
        Error::Forbidden(m) => Error::Forbidden(format!("{p}{m}")),
        Error::PayloadTooLarge(m) => Error::PayloadTooLarge(format!("{p}{m}")),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: PublishLimits = PublishLimits {
        max_event_bytes: 1024,
    };

    fn publish(s: &str) -> Result<Vec<NewEvent>, Error> {
        parse_publish(s.as_bytes(), L).map(|(e, _)| e)
    }

    #[test]
    fn targets() {
        assert_eq!(
            publish(r#"{"topic":"a","data":1}"#).unwrap()[0].topics,
            ["a"]
        );
        assert_eq!(
            publish(r#"{"topics":["a","b","a"],"data":1}"#).unwrap()[0].topics,
            ["a", "b"]
        );
        assert_eq!(
            publish(r#"{"user":"alice","data":1}"#).unwrap()[0].topics,
            ["user/alice"]
        );
        assert_eq!(
            publish(r#"{"broadcast":true,"data":1}"#).unwrap()[0].topics,
            ["$broadcast"]
        );
        assert!(matches!(
            publish(r#"{"data":1}"#),
            Err(Error::BadRequest(_))
        ));
        assert!(matches!(
            publish(r#"{"topic":"a","user":"b","data":1}"#),
            Err(Error::BadRequest(_))
        ));
        assert!(matches!(
            publish(r#"{"topic":"$x","data":1}"#),
            Err(Error::Forbidden(_))
        ));
        assert!(matches!(
            publish(r#"{"topic":"../etc","data":1}"#),
            Err(Error::InvalidTopic(_))
        ));
        assert!(matches!(
            publish(r#"{"user":"a/../b","data":1}"#),
            Err(Error::InvalidTopic(_))
        ));
    }

    #[test]
    fn data_and_fields() {
        let e = &publish(r#"{"topic":"a","data":{"x":[1, 2]},"event":"u","retry":5}"#).unwrap()[0];
        assert_eq!(e.data, r#"{"x":[1,2]}"#);
        assert_eq!(e.event.as_deref(), Some("u"));
        assert_eq!(e.retry, Some(5));
        assert!(e.persist);
        assert_eq!(
            publish(r#"{"topic":"a","data":null}"#).unwrap()[0].data,
            "null"
        );
        assert!(publish(r#"{"topic":"a"}"#).is_err());
        assert!(
            publish(r#"{"topic":"a","data":1,"evnt":"x"}"#)
                .unwrap_err()
                .to_string()
                .contains("evnt")
        );
        assert!(publish("{\"topic\":\"a\",\"data\":1,\"event\":\"a\\nb\"}").is_err());
        assert!(matches!(
            publish(&format!(r#"{{"topic":"a","data":"{}"}}"#, "x".repeat(1025))),
            Err(Error::PayloadTooLarge(_))
        ));
    }

    #[test]
    fn batches() {
        let (ev, batch) =
            parse_publish(br#"[{"topic":"a","data":1},{"topic":"b","data":2}]"#, L).unwrap();
        assert!(batch);
        assert_eq!(ev.len(), 2);
        let e = publish(r#"[{"topic":"a","data":1},{"topic":"b b","data":2}]"#).unwrap_err();
        assert!(e.to_string().starts_with("batch item 1"), "{e}");
        assert!(publish("[]").is_err());
        assert!(matches!(publish("[1]"), Err(Error::BadRequest(_))));
        assert!(matches!(publish("{"), Err(Error::InvalidJson(_))));
        assert!(matches!(publish(""), Err(Error::InvalidJson(_))));
        assert!(matches!(publish("42"), Err(Error::BadRequest(_))));
    }

    #[test]
    fn raw() {
        let q = vec![("event".to_string(), "ping".to_string())];
        let e = parse_raw("a", &q, b"hello\nworld", L).unwrap();
        assert_eq!(e.data, "hello\nworld");
        assert_eq!(parse_raw("a", &[], b"hi\n", L).unwrap().data, "hi");
        assert_eq!(parse_raw("a", &[], b"hi\r\n", L).unwrap().data, "hi");
        assert_eq!(parse_raw("a", &[], b"hi\n\n", L).unwrap().data, "hi\n");
        assert_eq!(parse_raw("a", &[], b"\n", L).unwrap().data, "");
        assert_eq!(e.event.as_deref(), Some("ping"));
        assert!(parse_raw("a", &[], &[0xff, 0xfe], L).is_err());
        let q = vec![("evnt".to_string(), "x".to_string())];
        assert!(parse_raw("a", &q, b"x", L).is_err());
    }

    #[test]
    fn notify() {
        let e = parse_notify(
            br#"{"title":"Hi","type":"success","auto_hide":true,"duration":3000,"user":"bob"}"#,
            L,
        )
        .unwrap();
        assert_eq!(e.topics, ["user/bob"]);
        assert_eq!(e.event.as_deref(), Some("notification"));
        let v: Value = serde_json::from_str(&e.data).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"title":"Hi","type":"success","auto_hide":true,"duration":3000})
        );
        let e = parse_notify(br#"{"content":"x"}"#, L).unwrap();
        assert_eq!(e.topics, ["$broadcast"]);
        assert!(parse_notify(br#"{"title":"x","type":"fatal"}"#, L).is_err());
        assert!(parse_notify(br#"{"title":"x","duration":-1}"#, L).is_err());
        assert!(parse_notify(br#"{"title":"x","auto_hide":"yes"}"#, L).is_err());
        assert!(parse_notify(br#"{"type":"info"}"#, L).is_err());
        assert!(parse_notify(br#"{"title":"x","colour":"red"}"#, L).is_err());
    }
}
