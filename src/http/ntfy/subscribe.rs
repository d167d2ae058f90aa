//! ntfy's subscribe API: `GET /<topic>[,<topic>...]/json|sse|raw|ws` with `since=` (an id,
//! a Unix time, a duration, `all`, `latest`, `none`), `poll=1`, and the `id`, `message`,
//! `title`, `priority` and `tags` filters. A stream is one of runnel's streams in one of
//! ntfy's formats (`crate::ntfy`); `poll=1` reads the log a page at a time and ends.

use std::net::SocketAddr;
use std::str::FromStr;

use bytes::BytesMut;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use http::request::Parts;
use http::{Response, StatusCode};

use crate::auth::Caller;
use crate::config::Dur;
use crate::error::Error;
use crate::event::{Event, EventFilter, Format};
use crate::http::body::query;
use crate::http::{Body, Resp};
use crate::hub::{HistoryQuery, Hub, MAX_LIMIT, StartAt};
use crate::ntfy::{self, Wire};
use crate::stream::StreamRequest;
use crate::topic::Pattern;

/// Where a subscription starts.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Since {
    /// Live only (`none`, the default without `poll=1`).
    None,
    /// Everything retained (`all`, the default with `poll=1`).
    All,
    /// After this event id.
    Id(String),
    Start(StartAt),
}

/// What a subscribe request asks for.
struct Ask {
    since: Option<Since>,
    poll: bool,
    filter: Option<EventFilter>,
}

/// `GET /<topics>/<format>`.
pub(super) async fn subscribe(
    hub: &Hub,
    parts: &Parts,
    peer: SocketAddr,
    topics: Vec<String>,
    wire: Wire,
) -> Result<Resp, Error> {
    let caller = crate::http::caller(parts)?;
    let ask = ask(parts)?;
    // On `/sse`, a browser's `EventSource` reconnects with the last id it saw.
    let last_event_id = parts
        .headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|s| !s.is_empty() && wire == Wire::Sse)
        .map(|s| Since::Id(s.to_string()));
    let since = last_event_id.or(ask.since.clone());
    if ask.poll {
        if wire == Wire::Ws {
            return Err(Error::BadRequest(
                "poll=1 reads with /json, /sse or /raw, not /ws".into(),
            ));
        }
        return poll(
            hub,
            &caller,
            topics,
            since.unwrap_or(Since::All),
            &ask,
            wire,
        )
        .await;
    }
    let last_event_id = match since.unwrap_or(Since::None) {
        Since::None => None,
        Since::All => Some("earliest".to_string()),
        Since::Id(id) => Some(id),
        Since::Start(start) => Some(hub.start_point(&caller, &topics, start).await?),
    };
    let req = StreamRequest {
        named: topics,
        last_event_id,
        ip: peer.ip(),
        format: Format::Ntfy(wire),
        filter: ask.filter,
    };
    if wire == Wire::Ws {
        return crate::http::ws::upgrade_stream(hub, parts, caller, req).await;
    }
    let mut resp = Response::new(Body::Stream(hub.subscribe(&caller, req).await?));
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type(wire)));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(resp)
}

fn content_type(wire: Wire) -> &'static str {
    match wire {
        Wire::Json => "application/x-ndjson; charset=utf-8",
        Wire::Sse => "text/event-stream; charset=utf-8",
        Wire::Raw | Wire::Ws => "text/plain; charset=utf-8",
    }
}

/// `poll=1`: what the log holds from `since` on, filtered, in one answer.
async fn poll(
    hub: &Hub,
    caller: &Caller,
    topics: Vec<String>,
    since: Since,
    ask: &Ask,
    wire: Wire,
) -> Result<Resp, Error> {
    let after = match since {
        Since::None => None,
        Since::All => Some("earliest".to_string()),
        Since::Id(id) => Some(id),
        Since::Start(start) => Some(hub.start_point(caller, &topics, start).await?),
    };
    let patterns: Vec<Pattern> = topics.iter().filter_map(|t| Pattern::new(t).ok()).collect();
    let mut out = BytesMut::new();
    let mut after = after;
    while let Some(from) = after.take() {
        let page = hub
            .history(
                caller,
                HistoryQuery {
                    topics: topics.clone(),
                    after: Some(from),
                    since_ms: None,
                    limit: MAX_LIMIT,
                },
            )
            .await?;
        for e in &page.events {
            if ask.filter.as_ref().is_none_or(|f| f.keeps(e)) {
                out.extend_from_slice(&e.encoded_for(Format::Ntfy(wire), Some(&patterns)));
            }
        }
        after = page.next;
    }
    let mut resp = Response::new(Body::Full(Some(out.freeze())));
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type(wire)));
    Ok(resp)
}

/// The query: `since`, `poll`, the filters; other parameters (`auth`, ntfy's `scheduled`)
/// are not this function's.
fn ask(parts: &Parts) -> Result<Ask, Error> {
    let mut since = None;
    let mut poll = false;
    let mut id = None;
    let mut message = None;
    let mut title = None;
    let mut priorities: Option<Vec<u8>> = None;
    let mut tags: Option<Vec<String>> = None;
    for (k, v) in query(parts) {
        match k.to_ascii_lowercase().as_str() {
            "since" => since = Some(parse_since(&v)?),
            "poll" | "po" => poll = matches!(v.as_str(), "1" | "true" | "yes"),
            "id" => id = Some(v),
            "message" => message = Some(v),
            "title" => title = Some(v),
            "priority" | "prio" | "p" => {
                let list = v
                    .split(',')
                    .map(|p| super::publish::priority_of(p.trim()))
                    .collect::<Result<Vec<u8>, Error>>()?;
                priorities = Some(list);
            }
            "tags" | "tag" | "ta" => {
                tags = Some(
                    v.split(',')
                        .map(|t| t.trim().to_string())
                        .filter(|t| !t.is_empty())
                        .collect(),
                );
            }
            _ => {}
        }
    }
    let any = id.is_some()
        || message.is_some()
        || title.is_some()
        || priorities.is_some()
        || tags.is_some();
    let filter = any.then(|| {
        EventFilter::new(move |e: &Event| {
            if id.as_ref().is_some_and(|id| *id != e.id) {
                return false;
            }
            let seen = ntfy::seen(&e.ntfy());
            message.as_ref().is_none_or(|m| *m == seen.message)
                && title
                    .as_ref()
                    .is_none_or(|t| Some(t) == seen.title.as_ref())
                && priorities
                    .as_ref()
                    .is_none_or(|ps| ps.contains(&seen.priority))
                && tags
                    .as_ref()
                    .is_none_or(|ts| ts.iter().all(|t| seen.tags.contains(t)))
        })
    });
    Ok(Ask {
        since,
        poll,
        filter,
    })
}

/// `since=`: `all`, `none`, `latest`, a Unix time in seconds, a duration back from now
/// (`10m`, `2h`, `1d`), or an event id.
fn parse_since(v: &str) -> Result<Since, Error> {
    let v = v.trim();
    Ok(match v {
        "" => {
            return Err(Error::BadRequest(
                "since= is empty: use an id, a Unix time, a duration (10m), all, latest or none"
                    .into(),
            ));
        }
        "all" => Since::All,
        "none" => Since::None,
        "latest" => Since::Start(StartAt::Latest),
        _ if v.bytes().all(|b| b.is_ascii_digit()) => {
            let secs: u64 = v
                .parse()
                .map_err(|_| Error::BadRequest(format!("since={v:?} is too large")))?;
            Since::Start(StartAt::Time(secs.saturating_mul(1000)))
        }
        _ => match Dur::from_str(v) {
            Ok(d) if v.as_bytes()[0].is_ascii_digit() => Since::Start(StartAt::Time(
                crate::time::unix_ms().saturating_sub(d.as_millis()),
            )),
            _ => Since::Id(v.to_string()),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_every_form() {
        assert_eq!(parse_since("all").unwrap(), Since::All);
        assert_eq!(parse_since("none").unwrap(), Since::None);
        assert_eq!(
            parse_since("latest").unwrap(),
            Since::Start(StartAt::Latest)
        );
        assert_eq!(
            parse_since("1700000000").unwrap(),
            Since::Start(StartAt::Time(1_700_000_000_000))
        );
        let Since::Start(StartAt::Time(t)) = parse_since("10m").unwrap() else {
            panic!("a duration is a time");
        };
        let ago = crate::time::unix_ms() - t;
        assert!((599_000..=601_000).contains(&ago), "{ago}");
        assert_eq!(
            parse_since("0badc0de-0000000000000003").unwrap(),
            Since::Id("0badc0de-0000000000000003".into())
        );
        assert!(parse_since("").is_err());
    }
}
