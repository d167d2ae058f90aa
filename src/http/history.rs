//! `GET /history` (SPEC §5.7).

use std::str::FromStr;

use http::StatusCode;
use http::request::Parts;
use serde_json::{Value, json};

use super::Resp;
use super::body::{json_response, query};
use crate::config::Dur;
use crate::error::Error;
use crate::hub::{HistoryQuery, Hub, MAX_LIMIT};

pub(super) async fn history(hub: &Hub, parts: Parts) -> Result<Resp, Error> {
    let caller = super::caller(&parts)?;
    let q = history_query(&parts)?;
    let h = hub.history(&caller, q).await?;
    let events: Vec<Value> = h
        .events
        .iter()
        .map(|e| {
            json!({
                "id": e.id,
                "event": e.event,
                "topics": e.topics,
                "data": e.data_value(),
                "time": crate::time::rfc3339(e.time_ms),
            })
        })
        .collect();
    let mut v = json!({"events": events, "next": h.next});
    if let Some((reason, id)) = h.reset {
        v["reset"] = json!({"reason": reason.as_str(), "last_event_id": id});
    }
    Ok(json_response(StatusCode::OK, &v))
}

/// `topic` (repeatable), `after` or `since` (a duration back from now, or an RFC 3339
/// time), `limit` (default 100, at most 1000).
fn history_query(parts: &Parts) -> Result<HistoryQuery, Error> {
    let mut q = HistoryQuery {
        topics: Vec::new(),
        after: None,
        since_ms: None,
        limit: 100,
    };
    for (k, v) in query(parts) {
        match k.as_str() {
            "topic" => q.topics.push(v),
            "after" => q.after = Some(v),
            "since" => q.since_ms = Some(since(&v)?),
            "limit" => {
                q.limit = v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| {
                        Error::BadRequest(format!(
                            "limit={v:?}: use a whole number from 1 to {MAX_LIMIT}"
                        ))
                    })?
                    .min(MAX_LIMIT);
            }
            other => {
                return Err(Error::BadRequest(format!(
                    "unknown query parameter {other:?} (known: topic, after, since, limit)"
                )));
            }
        }
    }
    if q.after.is_some() && q.since_ms.is_some() {
        return Err(Error::BadRequest(
            "use after=<id> or since=<time>, not both".into(),
        ));
    }
    Ok(q)
}

/// `since`: a duration back from now (`10m`, `24h`) or an RFC 3339 time.
fn since(v: &str) -> Result<u64, Error> {
    if let Ok(d) = Dur::from_str(v) {
        return Ok(crate::time::unix_ms().saturating_sub(d.as_millis()));
    }
    crate::time::parse_rfc3339(v).ok_or_else(|| {
        Error::BadRequest(format!(
            "since={v:?}: use a duration back from now (like 10m or 24h) or an RFC 3339 time \
             (like 2026-12-06T08:00:00Z)"
        ))
    })
}
