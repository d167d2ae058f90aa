//! What travels from publishers and the log to the streams: events, encoded once per wire
//! format and shared by every stream that receives them, and the hub's own messages
//! (`connected`, `reset`, `closed`, `shutdown`), built here and nowhere else.

use std::fmt;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use serde_json::{Value, json};

mod control;

pub use control::{CloseReason, Control, Ending, ResetReason};

use crate::ntfy::{self, Wire};
use crate::sse;
use crate::topic::{self, Pattern};
use crate::ws;

/// An event to publish, validated (from any front door).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    pub topics: Vec<String>,
    pub event: Option<String>,
    /// The data as text: a JSON string's text, or any other JSON value in compact form
    /// (then `json` is set), or raw text.
    pub data: String,
    /// `data` is a JSON value other than a string (a number, an object...), as published.
    pub json: bool,
    pub retry: Option<u64>,
    pub persist: bool,
    pub idempotency_key: Option<String>,
    /// Where an ingress took it from: the log keeps the newest position of each source in
    /// the same write as the event, so a redelivered message is recognised after a crash.
    pub origin: Option<Origin>,
}

/// A message's place in an outside source (a Redis Stream's entry id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The source, e.g. `redis-stream:<name>`.
    pub source: String,
    pub position: String,
}

/// What a publisher is told about one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub id: String,
    pub topics: Vec<String>,
    /// Streams the event was queued for.
    pub delivered: usize,
}

/// How a stream puts events on the wire. Each event is encoded at most once per format,
/// however many streams use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `text/event-stream`.
    Sse,
    /// SSE whose data is `{"topics": [...], "data": "..."}` (`envelope=1`), for browsers,
    /// whose `EventSource` hides the `topic:` fields.
    SseEnvelope,
    /// WebSocket text frames, one JSON object each (SPEC §5.8); the heartbeat is a ping.
    Ws,
    /// ntfy's subscribe API (SPEC §11.1), on one of its wires.
    Ntfy(Wire),
}

impl Format {
    /// How many of runnel's own formats there are (each event's cache has a slot for each;
    /// ntfy's are allocated only for events an ntfy stream reads).
    const NATIVE: usize = 3;

    /// ntfy's wire, for ntfy's formats.
    pub fn ntfy(self) -> Option<Wire> {
        match self {
            Format::Ntfy(w) => Some(w),
            Format::Sse | Format::SseEnvelope | Format::Ws => None,
        }
    }

    /// Carried by a WebSocket connection.
    pub fn is_websocket(self) -> bool {
        matches!(self, Format::Ws | Format::Ntfy(Wire::Ws))
    }

    /// An event names (some of) the topics the stream receives it on, so the stream's
    /// topics are kept compiled beside its queue (see [`Event::encoded_for`]).
    pub fn names_topics(self) -> bool {
        matches!(self, Format::Ws | Format::Ntfy(_))
    }

    /// How `/connections` names the transport.
    pub fn transport(self) -> &'static str {
        match self {
            Format::Sse | Format::SseEnvelope => "sse",
            Format::Ws => "ws",
            Format::Ntfy(Wire::Json) => "ntfy-json",
            Format::Ntfy(Wire::Sse) => "ntfy-sse",
            Format::Ntfy(Wire::Raw) => "ntfy-raw",
            Format::Ntfy(Wire::Ws) => "ntfy-ws",
        }
    }

    /// What a stream of this format sends before anything else.
    pub fn opening(self, retry_ms: u64) -> Bytes {
        match self {
            Format::Sse | Format::SseEnvelope | Format::Ntfy(Wire::Sse) => {
                sse::retry_frame(retry_ms)
            }
            Format::Ws | Format::Ntfy(_) => Bytes::new(),
        }
    }

    /// What an idle stream of this format sends every heartbeat; `receives` names the
    /// stream's topics (ntfy's `keepalive` event carries them).
    pub fn keepalive(self, receives: Option<&[Pattern]>) -> Bytes {
        match self {
            Format::Sse | Format::SseEnvelope => sse::keepalive(),
            Format::Ws => ws::ping_frame(),
            Format::Ntfy(wire) => {
                let topics = ntfy::pattern_list(receives);
                ntfy::notice(wire, "keepalive", &topics, crate::time::unix_ms())
            }
        }
    }
}

/// A front door's own choice among the events a stream receives (ntfy's filters): events
/// it refuses are neither queued nor replayed to the stream.
#[derive(Clone)]
pub struct EventFilter(Arc<dyn Fn(&Event) -> bool + Send + Sync>);

impl EventFilter {
    pub fn new(keep: impl Fn(&Event) -> bool + Send + Sync + 'static) -> EventFilter {
        EventFilter(Arc::new(keep))
    }

    /// Does the stream get `e`?
    pub fn keeps(&self, e: &Event) -> bool {
        (self.0)(e)
    }
}

impl fmt::Debug for EventFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EventFilter")
    }
}

/// A numbered event: what it carries, where it sits in the log, and its encodings, each
/// built on first use and then shared by every stream that receives the event.
#[derive(Debug)]
pub struct Event {
    pub seq: u64,
    /// The public id (`Last-Event-ID`).
    pub id: String,
    pub topics: Vec<String>,
    /// The event type (`event:`), if any.
    pub event: Option<String>,
    /// The data as text (a JSON value as published, or raw text).
    pub data: String,
    /// `data` is a JSON value other than a string.
    pub json: bool,
    pub retry: Option<u64>,
    /// When it was published (Unix ms).
    pub time_ms: u64,
    /// See [`NewEvent::origin`]; not kept in the event's record.
    pub origin: Option<Box<Origin>>,
    encodings: [OnceLock<Bytes>; Format::NATIVE],
    /// ntfy's encodings (one per wire), allocated when an ntfy stream first reads the event:
    /// most events never meet one, and the log keeps thousands in memory.
    ntfy_encodings: OnceLock<Box<[OnceLock<Bytes>; ntfy::WIRES]>>,
}

impl Event {
    /// The event `seq` (public id `id`), published at `time_ms`, carrying `e`.
    pub fn new(seq: u64, id: String, time_ms: u64, e: NewEvent) -> Event {
        Event {
            seq,
            id,
            topics: e.topics,
            event: e.event,
            data: e.data,
            json: e.json,
            retry: e.retry,
            time_ms,
            origin: e.origin.map(Box::new),
            encodings: Default::default(),
            ntfy_encodings: OnceLock::new(),
        }
    }

    /// The data as the JSON value published: a string for text.
    pub fn data_value(&self) -> Value {
        if self.json {
            serde_json::from_str(&self.data).unwrap_or_else(|_| Value::String(self.data.clone()))
        } else {
            Value::String(self.data.clone())
        }
    }

    /// The event in a stream's format.
    pub fn encoded(&self, format: Format) -> Bytes {
        let cached = match format {
            Format::Sse => &self.encodings[0],
            Format::SseEnvelope => &self.encodings[1],
            Format::Ws => &self.encodings[2],
            Format::Ntfy(wire) => &self.ntfy_encodings.get_or_init(Default::default)[wire as usize],
        };
        cached
            .get_or_init(|| match format {
                Format::Sse => sse::encode_event(
                    &self.id,
                    &self.topics,
                    self.event.as_deref(),
                    self.retry,
                    &self.data,
                ),
                Format::SseEnvelope => {
                    let wrapped = json!({"topics": self.topics, "data": self.data});
                    sse::encode_event(
                        &self.id,
                        &[],
                        self.event.as_deref(),
                        self.retry,
                        &wrapped.to_string(),
                    )
                }
                Format::Ws => self.ws_frame(&self.topics),
                Format::Ntfy(wire) => {
                    let topic = self.topics.first().map_or("", String::as_str);
                    ntfy::encode_event(wire, &self.ntfy(), topic)
                }
            })
            .clone()
    }

    /// The event in a stream's format, for a stream that receives `receives` (topics and
    /// patterns): over WebSocket, `topics` names only those of the event's topics the
    /// connection receives; through ntfy, `topic` is the first of them. Only an event on
    /// several topics, reaching a stream that does not receive them all, gets an encoding of
    /// its own; every other one shares [`Event::encoded`].
    pub fn encoded_for(&self, format: Format, receives: Option<&[Pattern]>) -> Bytes {
        let (true, Some(receives), [_, _, ..]) =
            (format.names_topics(), receives, &self.topics[..])
        else {
            return self.encoded(format);
        };
        let kept: Vec<String> = self
            .topics
            .iter()
            .filter(|t| topic::any_matches(receives, t))
            .cloned()
            .collect();
        if let Some(wire) = format.ntfy() {
            return match kept.first() {
                Some(t) if *t != self.topics[0] => ntfy::encode_event(wire, &self.ntfy(), t),
                _ => self.encoded(format),
            };
        }
        if kept.len() == self.topics.len() || kept.is_empty() {
            return self.encoded(format);
        }
        self.ws_frame(&kept)
    }

    /// `{"type": "event", "id", "event"?, "topics", "data"}` in a text frame; `data` is the
    /// JSON value as published (its compact text is inlined, not parsed again).
    fn ws_frame(&self, topics: &[String]) -> Bytes {
        let quote = |s: &str| Value::String(s.to_string()).to_string();
        let mut j = String::with_capacity(self.data.len() + self.id.len() + 64);
        j.push_str("{\"type\":\"event\",\"id\":");
        j.push_str(&quote(&self.id));
        if let Some(e) = &self.event {
            j.push_str(",\"event\":");
            j.push_str(&quote(e));
        }
        j.push_str(",\"topics\":");
        j.push_str(&serde_json::to_string(topics).unwrap_or_else(|_| "[]".into()));
        j.push_str(",\"data\":");
        if self.json {
            j.push_str(&self.data);
        } else {
            j.push_str(&quote(&self.data));
        }
        j.push('}');
        ws::text_frame(j.as_bytes())
    }

    /// What ntfy's API reads of the event.
    pub fn ntfy(&self) -> ntfy::Msg<'_> {
        ntfy::Msg {
            id: &self.id,
            time_ms: self.time_ms,
            event: self.event.as_deref(),
            data: &self.data,
            json: self.json,
        }
    }

    /// About the bytes of the event on the wire (to bound joined writes and reads).
    pub fn size_hint(&self) -> usize {
        let topics: usize = self.topics.iter().map(|t| t.len() + 8).sum();
        self.data.len() + self.id.len() + topics + 16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_read_as_before() {
        let f = Control::Closed(CloseReason::SlowReader).encode(Format::Sse);
        assert_eq!(
            &f[..],
            b"event: closed\ndata: {\"reason\":\"slow_reader\",\"message\":\"this stream fell \
              behind; reconnect with Last-Event-ID\"}\n\n"
        );
        let f = Control::Reset {
            reason: ResetReason::Pruned,
            last_event_id: Some("x".into()),
        }
        .encode(Format::SseEnvelope);
        assert_eq!(
            &f[..],
            b"event: reset\ndata: {\"reason\":\"pruned\",\"last_event_id\":\"x\"}\n\n"
        );
    }

    fn event(data: &str) -> Event {
        let e = NewEvent {
            topics: vec!["a".into(), "b/c".into()],
            event: Some("up".into()),
            data: data.into(),
            json: false,
            retry: Some(5),
            persist: true,
            idempotency_key: None,
            origin: None,
        };
        Event::new(1, "1".into(), 0, e)
    }

    #[test]
    fn encodings_are_built_once_and_shared() {
        let ev = event("x\ny");
        let first = ev.encoded(Format::Sse);
        assert_eq!(
            first.as_ptr(),
            ev.encoded(Format::Sse).as_ptr(),
            "one encoding"
        );
        assert_eq!(
            &first[..],
            b"id: 1\ntopic: a\ntopic: b/c\nevent: up\nretry: 5\ndata: x\ndata: y\n\n"
        );
        let env = ev.encoded(Format::SseEnvelope);
        assert_eq!(env.as_ptr(), ev.encoded(Format::SseEnvelope).as_ptr());
        assert_eq!(
            &env[..],
            &b"id: 1\nevent: up\nretry: 5\ndata: {\"topics\":[\"a\",\"b/c\"],\"data\":\"x\\ny\"}\n\n"[..]
        );
    }

    /// The WebSocket payload of a frame the hub built (unmasked, one frame).
    fn ws_text(frame: &[u8]) -> &str {
        let (at, len) = match frame[1] {
            126 => (4, usize::from(u16::from_be_bytes([frame[2], frame[3]]))),
            n => (2, usize::from(n)),
        };
        std::str::from_utf8(&frame[at..at + len]).unwrap()
    }

    #[test]
    fn websocket_events_are_json_messages_shared_unless_topics_differ() {
        let mut ev = event("x\ny");
        let f = ev.encoded(Format::Ws);
        assert_eq!(f[0], 0x81, "a final text frame");
        assert_eq!(
            ws_text(&f),
            r#"{"type":"event","id":"1","event":"up","topics":["a","b/c"],"data":"x\ny"}"#
        );
        let pats =
            |ps: &[&str]| -> Vec<Pattern> { ps.iter().map(|p| Pattern::new(p).unwrap()).collect() };
        let shared = ev.encoded_for(Format::Ws, Some(&pats(&["a", "b/*"])));
        assert_eq!(shared.as_ptr(), f.as_ptr(), "receives them all: shared");
        let one = ev.encoded_for(Format::Ws, Some(&pats(&["a"])));
        assert!(ws_text(&one).contains(r#""topics":["a"],"#));
        assert_eq!(
            ev.encoded_for(Format::Sse, Some(&pats(&["a"]))),
            ev.encoded(Format::Sse)
        );
        ev = event(r#"{"k":[1,2]}"#);
        ev.json = true;
        assert!(ws_text(&ev.encoded(Format::Ws)).ends_with(r#""data":{"k":[1,2]}}"#));
    }

    #[test]
    fn websocket_endings_carry_their_close_codes() {
        let f = Control::Closed(CloseReason::SlowReader).encode(Format::Ws);
        let text = ws_text(&f);
        assert!(
            text.starts_with(r#"{"type":"closed","reason":"slow_reader""#),
            "{text}"
        );
        let close = &f[2 + text.len()..];
        assert_eq!(close[0], 0x88);
        assert_eq!(&close[2..4], &1013u16.to_be_bytes());
        for (c, code) in [
            (Control::Shutdown, 1012u16),
            (Control::Closed(CloseReason::TokenExpired), 1008),
            (Control::Closed(CloseReason::ClosedByAdmin), 1000),
            (Control::Closed(CloseReason::Replaced), 1000),
        ] {
            let f = c.encode(Format::Ws);
            let close = &f[2 + ws_text(&f).len()..];
            assert_eq!(&close[2..4], &code.to_be_bytes(), "{c:?}");
        }
        let reset = Control::Reset {
            reason: ResetReason::UnknownId,
            last_event_id: None,
        };
        let f = reset.encode(Format::Ws);
        assert_eq!(
            ws_text(&f),
            r#"{"type":"reset","reason":"unknown_id","last_event_id":null}"#
        );
        assert_eq!(f.len(), 2 + ws_text(&f).len(), "no close after a reset");
        assert_eq!(&Format::Ws.keepalive(None)[..], &[0x89, 0]);
        assert!(Format::Ws.opening(100).is_empty());
    }
}
