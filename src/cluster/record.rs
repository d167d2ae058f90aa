//! The entries of the cluster's log: an event as stored, a publish read back, a control.

use redis::Value;
use serde::{Deserialize, Serialize};

use super::ClusterError;
use crate::event::{NewEvent, Origin};

/// What the cluster's log holds: publishes, and changes every hub applies.
#[derive(Debug, Clone)]
pub enum Item {
    Events(Entry),
    /// A control entry: its writer and its JSON body.
    Control {
        writer: String,
        body: String,
    },
}

/// One publish read back from the cluster's log.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The seq of its first event; the others follow.
    pub first: u64,
    pub time_ms: u64,
    /// `<node>:<n>`: the hub that appended it and which of its publishes it was.
    pub writer: String,
    pub events: Vec<NewEvent>,
}

/// An event as the cluster's log stores it.
#[derive(Serialize, Deserialize)]
pub(super) struct Rec {
    t: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    e: Option<String>,
    d: String,
    #[serde(default, skip_serializing_if = "is_false")]
    j: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    r: Option<u64>,
    /// Live only (not written to the hubs' logs).
    #[serde(default, skip_serializing_if = "is_false")]
    l: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    o: Option<(String, String)>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

pub(super) fn rec_of(e: &NewEvent) -> Rec {
    Rec {
        t: e.topics.clone(),
        e: e.event.clone(),
        d: e.data.clone(),
        j: e.json,
        r: e.retry,
        l: !e.persist,
        o: e.origin
            .as_ref()
            .map(|o| (o.source.clone(), o.position.clone())),
    }
}

fn event_of(r: Rec) -> NewEvent {
    NewEvent {
        topics: r.t,
        event: r.e,
        data: r.d,
        json: r.j,
        retry: r.r,
        persist: !r.l,
        idempotency_key: None,
        origin: r.o.map(|(source, position)| Origin { source, position }),
    }
}

/// `<seq>-0` → seq.
pub(super) fn first_seq(id: &str) -> Option<u64> {
    id.split_once('-')?.0.parse().ok()
}

pub(super) fn item_of(e: redis::streams::StreamId) -> Result<Item, ClusterError> {
    let bad = || ClusterError::Malformed(e.id.clone());
    let text = |k: &str| -> Option<String> {
        match e.map.get(k)? {
            Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
            Value::SimpleString(s) => Some(s.clone()),
            _ => None,
        }
    };
    if let Some(body) = text("c") {
        return Ok(Item::Control {
            writer: text("w").unwrap_or_default(),
            body,
        });
    }
    let first = first_seq(&e.id).ok_or_else(bad)?;
    let time_ms = text("t").and_then(|t| t.parse().ok()).ok_or_else(bad)?;
    let writer = text("w").unwrap_or_default();
    let recs: Vec<Rec> = text("e")
        .and_then(|b| serde_json::from_str(&b).ok())
        .ok_or_else(bad)?;
    let valid =
        |r: &Rec| !r.t.is_empty() && r.t.iter().all(|t| crate::topic::validate_topic(t).is_ok());
    if recs.is_empty() || !recs.iter().all(valid) {
        return Err(bad());
    }
    Ok(Item::Events(Entry {
        first,
        time_ms,
        writer,
        events: recs.into_iter().map(event_of).collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_survive_the_record_both_ways() {
        let e = NewEvent {
            topics: vec!["a".into(), "user/x".into()],
            event: Some("t".into()),
            data: "{\"k\":1}".into(),
            json: true,
            retry: Some(5),
            persist: false,
            idempotency_key: Some("dropped".into()),
            origin: Some(Origin {
                source: "redis-stream:s".into(),
                position: "1-0".into(),
            }),
        };
        let back =
            event_of(serde_json::from_str(&serde_json::to_string(&rec_of(&e)).unwrap()).unwrap());
        assert_eq!(
            back,
            NewEvent {
                idempotency_key: None,
                ..e
            }
        );
        assert_eq!(first_seq("42-0"), Some(42));
        assert_eq!(first_seq("x"), None);
    }

    fn entry(id: &str, fields: &[(&str, &str)]) -> redis::streams::StreamId {
        redis::streams::StreamId {
            id: id.into(),
            map: fields
                .iter()
                .map(|(k, v)| ((*k).to_string(), Value::BulkString(v.as_bytes().to_vec())))
                .collect(),
            milliseconds_elapsed_from_delivery: None,
            delivered_count: None,
        }
    }

    #[test]
    fn entries_are_events_or_controls_and_what_no_hub_wrote_is_refused() {
        let ok = entry(
            "7-0",
            &[("t", "5"), ("w", "ab:1"), ("e", r#"[{"t":["a"],"d":"x"}]"#)],
        );
        match item_of(ok).unwrap() {
            Item::Events(e) => {
                assert_eq!((e.first, e.time_ms, e.writer.as_str()), (7, 5, "ab:1"));
                assert_eq!(e.events[0].topics, ["a"]);
                assert!(e.events[0].persist);
            }
            other => panic!("{other:?}"),
        }
        let c = entry("7-1", &[("c", r#"{"op":"close","id":"x"}"#), ("w", "ab:c")]);
        assert!(matches!(item_of(c).unwrap(), Item::Control { .. }));
        for bad in [
            entry("7-0", &[("t", "5"), ("e", r#"[{"t":["a b"],"d":"x"}]"#)]),
            entry("7-0", &[("t", "5"), ("e", r#"[{"t":[],"d":"x"}]"#)]),
            entry("7-0", &[("t", "5"), ("e", "[]")]),
            entry("7-0", &[("t", "5"), ("e", "not json")]),
            entry("7-0", &[("e", r#"[{"t":["a"],"d":"x"}]"#)]),
            entry("x-0", &[("t", "5"), ("e", r#"[{"t":["a"],"d":"x"}]"#)]),
        ] {
            assert!(item_of(bad.clone()).is_err(), "{bad:?}");
        }
    }
}
