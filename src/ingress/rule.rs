//! A `[[redis.ingress]]` rule, compiled: what one message becomes, or why it is dropped.

use serde_json::Value;

use crate::config::{EventName, IngressRule, Source, Target};
use crate::event::NewEvent;
use crate::topic;

/// A `[[redis.ingress]]` rule, compiled.
#[derive(Debug, Clone)]
pub(crate) struct Rule {
    pub source: Source,
    target: Target,
    event: Option<EventName>,
    /// Streams: the consumer group, and the entry field holding the payload.
    pub group: String,
    pub field: String,
}

/// Why a message was not published (it is logged and counted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Dropped {
    /// Larger than `limits.max_event_bytes`: never delivered in part.
    TooLarge(usize),
    /// The payload is not UTF-8 text.
    NotText,
    /// The rule made a topic or user that is not one, or a stream entry lacks the field.
    Invalid(String),
}

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dropped::TooLarge(n) => write!(f, "{n} bytes, more than limits.max_event_bytes"),
            Dropped::NotText => f.write_str("the payload is not UTF-8 text"),
            Dropped::Invalid(why) => f.write_str(why),
        }
    }
}

impl Rule {
    /// `r`, which the configuration's validation already compiled once.
    pub fn compile(r: &IngressRule) -> Option<Rule> {
        let (source, target, event) = r.compile().ok()?;
        Some(Rule {
            source,
            target,
            event,
            group: r.group.clone(),
            field: r.field.clone(),
        })
    }

    /// How logs and `/health` name the rule's source.
    pub fn name(&self) -> String {
        match &self.source {
            Source::Channel(c) => format!("redis channel {c}"),
            Source::Pattern(p) => format!("redis pattern {}", p.as_str()),
            Source::Stream(s) => format!("redis stream {s}"),
        }
    }

    /// The event a message on `channel` becomes: `payload` is its data, as sent; `fields`
    /// are a stream entry's other fields (for `event = "{field}"`).
    pub fn event(
        &self,
        channel: &str,
        payload: &[u8],
        fields: &[(&str, &str)],
        max_bytes: u64,
    ) -> Result<NewEvent, Dropped> {
        if payload.len() as u64 > max_bytes {
            return Err(Dropped::TooLarge(payload.len()));
        }
        let data = std::str::from_utf8(payload).map_err(|_| Dropped::NotText)?;
        let captures = match &self.source {
            Source::Pattern(g) => g.captures(channel).ok_or_else(|| {
                Dropped::Invalid(format!("{channel:?} does not match {:?}", g.as_str()))
            })?,
            _ => Vec::new(),
        };
        let topic = match &self.target {
            Target::Topic(t) => {
                let t = t.render(channel, &captures);
                topic::validate_topic(&t)
                    .map_err(|e| Dropped::Invalid(format!("topic {t:?}: {e}")))?;
                t
            }
            Target::User(u) => {
                let u = u.render(channel, &captures);
                let t = topic::personal_topic(&u);
                if u.is_empty() || topic::validate_topic(&t).is_err() {
                    return Err(Dropped::Invalid(format!("{u:?} is not a user name")));
                }
                t
            }
        };
        let parsed: Option<Value> = serde_json::from_str(data).ok();
        let event = match &self.event {
            None => None,
            Some(EventName::Literal(e)) => Some(e.clone()),
            Some(EventName::Field(f)) => fields
                .iter()
                .find(|(k, _)| k == f)
                .map(|(_, v)| (*v).to_string())
                .or_else(|| match parsed.as_ref()?.get(f)? {
                    Value::String(s) => Some(s.clone()),
                    Value::Number(n) => Some(n.to_string()),
                    _ => None,
                })
                .filter(|e| !e.is_empty() && e.len() <= 200 && !e.contains(['\n', '\r'])),
        };
        Ok(NewEvent {
            topics: vec![topic],
            event,
            data: data.to_string(),
            json: parsed.is_some_and(|v| !v.is_string()),
            retry: None,
            persist: true,
            idempotency_key: None,
            origin: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(f: impl FnOnce(&mut IngressRule)) -> Rule {
        let mut r = IngressRule {
            group: "runnel".into(),
            field: "data".into(),
            ..IngressRule::default()
        };
        f(&mut r);
        Rule::compile(&r).expect("a valid rule")
    }

    #[test]
    fn a_pattern_rule_delivers_to_the_user_its_star_matched() {
        let r = rule(|r| {
            r.pattern = Some("follower:*".into());
            r.user = Some("{1}".into());
            r.event = Some("{type}".into());
        });
        let e = r
            .event("follower:42", br#"{"type":"follow","by":7}"#, &[], 1000)
            .unwrap();
        assert_eq!(e.topics, ["user/42"]);
        assert_eq!(e.event.as_deref(), Some("follow"));
        assert!(e.json);
        assert_eq!(e.data, r#"{"type":"follow","by":7}"#);
        let e = r.event("follower:42", b"plain text", &[], 1000).unwrap();
        assert_eq!((e.event, e.json), (None, false), "no JSON, no type");
        let e = r
            .event("follower:42", br#"{"other":1}"#, &[], 1000)
            .unwrap();
        assert_eq!(e.event, None, "a missing field: no type");
        assert_eq!(
            r.event("follower:", b"x", &[], 1000),
            Err(Dropped::Invalid("\"\" is not a user name".into()))
        );
    }

    #[test]
    fn topics_from_templates_literal_events_and_what_is_dropped() {
        let r = rule(|r| {
            r.pattern = Some("app.*.*".into());
            r.topic = Some("apps/{1}/{2}".into());
            r.event = Some("update".into());
        });
        let e = r.event("app.shop.orders.eu", b"1", &[], 1000).unwrap();
        assert_eq!(e.topics, ["apps/shop/orders.eu"]);
        assert_eq!(e.event.as_deref(), Some("update"));
        assert!(e.json, "a number is JSON");
        assert_eq!(
            r.event("app.a.b", &[0xff, 0xfe], &[], 1000),
            Err(Dropped::NotText)
        );
        assert_eq!(
            r.event("app.a.b", b"12345", &[], 4),
            Err(Dropped::TooLarge(5))
        );
        let r = rule(|r| {
            r.stream = Some("jobs".into());
            r.topic = Some("{channel}".into());
            r.event = Some("{kind}".into());
        });
        let e = r
            .event("jobs", b"\"done\"", &[("kind", "finished")], 1000)
            .unwrap();
        assert_eq!(
            (e.topics[0].as_str(), e.event.as_deref()),
            ("jobs", Some("finished"))
        );
        assert!(!e.json, "a JSON string is text");
    }
}
