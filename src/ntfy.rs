//! ntfy's message object (SPEC §11.1): how an event reads through ntfy's subscribe API, on
//! each of its wires (`/json`, `/sse`, `/raw`, `/ws`), and what ntfy's filters see of it.
//!
//! The mapping: a message published through ntfy's API is stored as an event with
//! `event: message` whose data is the message object without the fields the event itself
//! carries (`id`, `time`, `event`, `topic`). Reading any event through ntfy rebuilds the
//! object: an ntfy-shaped event gives its fields back; any other event becomes a message
//! whose `message` is its data as text. Ids are the event's, so `since=<id>` resumes exactly.
//!
//! Like `sse` and `ws`, this is framing only: the HTTP side (publishing, the routes, ntfy's
//! parameters) is `http::ntfy`.

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::{Map, Value};

use crate::topic::Pattern;
use crate::ws;

/// The event type an ntfy message is stored under.
pub const MESSAGE_EVENT: &str = "message";

/// How many wires there are.
pub const WIRES: usize = 4;

/// ntfy's wire formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// `/json`: one JSON object a line.
    Json,
    /// `/sse`: `text/event-stream`, the object as `data:`.
    Sse,
    /// `/raw`: the message text alone, a line each.
    Raw,
    /// `/ws`: one object a text frame.
    Ws,
}

/// What ntfy reads of an event (the event's own fields: this module knows no more of it).
#[derive(Debug, Clone, Copy)]
pub struct Msg<'a> {
    pub id: &'a str,
    /// Unix ms.
    pub time_ms: u64,
    pub event: Option<&'a str>,
    pub data: &'a str,
    /// `data` is a JSON value other than a string.
    pub json: bool,
}

/// The fields of an ntfy-shaped event (its data object), or `None` for any other event.
pub fn fields(e: &Msg<'_>) -> Option<Map<String, Value>> {
    if e.event != Some(MESSAGE_EVENT) || !e.json || !e.data.starts_with('{') {
        return None;
    }
    match serde_json::from_str::<Value>(e.data) {
        Ok(Value::Object(m)) if m.get("message").is_some_and(Value::is_string) => Some(m),
        _ => None,
    }
}

/// The message object of `e` read on `topic`.
pub fn message_object(e: &Msg<'_>, topic: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("id".into(), e.id.into());
    m.insert("time".into(), (e.time_ms / 1000).into());
    m.insert("event".into(), MESSAGE_EVENT.into());
    m.insert("topic".into(), topic.into());
    match fields(e) {
        Some(f) => {
            for (k, v) in f {
                if !matches!(k.as_str(), "id" | "time" | "event" | "topic") {
                    m.insert(k, v);
                }
            }
        }
        None => {
            m.insert("message".into(), e.data.into());
        }
    }
    m
}

/// What ntfy's filters (`message`, `title`, `priority`, `tags`) look at.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Seen {
    pub message: String,
    pub title: Option<String>,
    /// 1–5; a message without one has the default, 3.
    pub priority: u8,
    pub tags: Vec<String>,
}

/// The filterable fields of `e`.
pub fn seen(e: &Msg<'_>) -> Seen {
    let Some(f) = fields(e) else {
        return Seen {
            message: e.data.to_string(),
            priority: 3,
            ..Seen::default()
        };
    };
    let text = |k: &str| f.get(k).and_then(Value::as_str).map(str::to_string);
    Seen {
        message: text("message").unwrap_or_default(),
        title: text("title"),
        priority: f
            .get("priority")
            .and_then(Value::as_u64)
            .and_then(|p| u8::try_from(p).ok())
            .filter(|p| (1..=5).contains(p))
            .unwrap_or(3),
        tags: f
            .get("tags")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// An event on `wire`, read on `topic`.
pub fn encode_event(wire: Wire, e: &Msg<'_>, topic: &str) -> Bytes {
    let m = message_object(e, topic);
    if wire == Wire::Raw {
        let text = m.get("message").and_then(Value::as_str).unwrap_or_default();
        let mut line = raw_line(text);
        line.push('\n');
        return Bytes::from(line);
    }
    let json = Value::Object(m).to_string();
    frame(wire, &json, Some(e.id), None)
}

/// ntfy's `open` or `keepalive` event for a subscription to `topics`.
pub fn notice(wire: Wire, kind: &str, topics: &str, time_ms: u64) -> Bytes {
    if wire == Wire::Raw {
        return Bytes::from_static(b"\n");
    }
    let v = serde_json::json!({
        "id": crate::random::random_hex(6),
        "time": time_ms / 1000,
        "event": kind,
        "topic": topics,
    });
    let mut b = BytesMut::from(&frame(wire, &v.to_string(), None, Some(kind))[..]);
    if wire == Wire::Ws && kind == "keepalive" {
        // The connection's liveness check also needs a pong back.
        b.put_slice(&ws::ping_frame());
    }
    b.freeze()
}

/// The topics a subscription reads, as ntfy names them in `open` and `keepalive`: those it
/// named (not the broadcast or a personal topic, which every stream receives).
pub fn topic_list<'a>(topics: impl IntoIterator<Item = &'a str>) -> String {
    topics
        .into_iter()
        .filter(|t| valid_topic(t))
        .collect::<Vec<_>>()
        .join(",")
}

/// The topics of [`topic_list`] from a stream's compiled patterns.
pub fn pattern_list(receives: Option<&[Pattern]>) -> String {
    topic_list(receives.unwrap_or_default().iter().map(Pattern::as_str))
}

/// An ntfy topic name: 1 to 64 of `A-Z a-z 0-9 - _`.
pub fn valid_topic(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 64
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A JSON text in `wire`'s framing. Message events carry their id on `/sse`, so a browser's
/// `EventSource` resumes with `Last-Event-ID`; other events are named there.
fn frame(wire: Wire, json: &str, id: Option<&str>, event: Option<&str>) -> Bytes {
    match wire {
        Wire::Json | Wire::Raw => {
            let mut b = BytesMut::with_capacity(json.len() + 1);
            b.put_slice(json.as_bytes());
            b.put_u8(b'\n');
            b.freeze()
        }
        Wire::Sse => {
            let mut s = String::with_capacity(json.len() + 48);
            if let Some(id) = id {
                s.push_str("id: ");
                s.push_str(id);
                s.push('\n');
            }
            if let Some(ev) = event {
                s.push_str("event: ");
                s.push_str(ev);
                s.push('\n');
            }
            s.push_str("data: ");
            s.push_str(json);
            s.push_str("\n\n");
            Bytes::from(s)
        }
        Wire::Ws => ws::text_frame(json.as_bytes()),
    }
}

/// `/raw` puts one message on one line.
fn raw_line(text: &str) -> String {
    text.replace(['\r', '\n'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event<'a>(event: Option<&'a str>, data: &'a str, json: bool) -> Msg<'a> {
        Msg {
            id: "abc-7",
            time_ms: 1_700_000_000_500,
            event,
            data,
            json,
        }
    }

    #[test]
    fn ntfy_shaped_events_give_their_fields_back() {
        let e = event(
            Some("message"),
            r#"{"message":"Backup done","title":"NAS","priority":4,"tags":["ok"]}"#,
            true,
        );
        let line = encode_event(Wire::Json, &e, "alerts");
        assert_eq!(
            &line[..],
            br#"{"id":"abc-7","time":1700000000,"event":"message","topic":"alerts","message":"Backup done","title":"NAS","priority":4,"tags":["ok"]}
"#
        );
        let s = seen(&e);
        assert_eq!((s.priority, s.title.as_deref()), (4, Some("NAS")));
        assert_eq!(s.tags, ["ok"]);
    }

    #[test]
    fn native_events_are_messages_of_their_data() {
        for e in [
            event(None, "plain\ntext", false),
            event(Some("message"), r#"{"no_message":1}"#, true),
            event(Some("other"), r#"{"message":"x"}"#, true),
        ] {
            let m = message_object(&e, "alerts");
            assert_eq!(m["message"], Value::String(e.data.to_string()));
            assert_eq!(seen(&e).priority, 3);
        }
        let raw = encode_event(Wire::Raw, &event(None, "a\nb", false), "alerts");
        assert_eq!(&raw[..], b"a b\n");
        let sse = encode_event(Wire::Sse, &event(None, "x", false), "alerts");
        assert!(
            sse.starts_with(b"id: abc-7\ndata: {\"id\":\"abc-7\""),
            "{sse:?}"
        );
    }

    #[test]
    fn notices_name_their_kind_and_topics() {
        let open = notice(Wire::Sse, "open", "a,b", 2_000);
        let text = std::str::from_utf8(&open).unwrap();
        assert!(text.starts_with("event: open\ndata: {\"id\":"), "{text}");
        assert!(text.ends_with(",\"time\":2,\"event\":\"open\",\"topic\":\"a,b\"}\n\n"));
        assert_eq!(&notice(Wire::Raw, "keepalive", "a", 0)[..], b"\n");
        let ka = notice(Wire::Ws, "keepalive", "a", 0);
        assert!(
            ka.ends_with(&ws::ping_frame()),
            "a keepalive frame, then a ping"
        );
        assert_eq!(topic_list(["a", "$broadcast", "user/x", "b_c"]), "a,b_c");
        assert!(valid_topic("Backups-2_x") && !valid_topic("a/b") && !valid_topic(""));
        assert!(!valid_topic(&"x".repeat(65)));
    }
}
