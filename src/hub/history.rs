//! History (SPEC §5.7): the retained events of some topics, a page at a time, for pages that
//! load recent events when they open and for scripts that poll.

use std::sync::Arc;

use super::Hub;
use crate::auth::Caller;
use crate::error::Error;
use crate::event::{Event, ResetReason};
use crate::store::{Log, ReadLimit, Resume, Selector};
use crate::topic;

/// What `GET /history` asks for.
#[derive(Debug, Clone)]
pub(crate) struct HistoryQuery {
    pub topics: Vec<String>,
    /// Events after this id (or, without, from the oldest retained).
    pub after: Option<String>,
    /// Only events published at or after this time (Unix ms).
    pub since_ms: Option<u64>,
    pub limit: usize,
}

/// One page of history.
#[derive(Debug)]
pub(crate) struct History {
    /// Oldest first.
    pub events: Vec<Arc<Event>>,
    /// The id to pass as `after` for the next page, when there may be one.
    pub next: Option<String>,
    /// Set when `after` was pruned or foreign: the page starts at the oldest retained event.
    pub reset: Option<(ResetReason, String)>,
}

/// Most events in one page.
pub(crate) const MAX_LIMIT: usize = 1000;

impl Hub {
    /// A page of the topics' retained events, with the read permissions of a stream.
    pub async fn history(&self, caller: &Caller, q: HistoryQuery) -> Result<History, Error> {
        let HistoryQuery {
            mut topics,
            after,
            since_ms,
            limit,
        } = q;
        if !caller.may_stream() {
            return Err(Error::Unauthorized("credentials are required".into()));
        }
        topic::dedup(&mut topics);
        if topics.is_empty() {
            return Err(Error::BadRequest(
                "name at least one topic: ?topic=...".into(),
            ));
        }
        let max = self.inner.config.limits.max_topics_per_stream;
        if topics.len() > max {
            return Err(Error::BadRequest(format!(
                "at most {max} topics (limits.max_topics_per_stream), got {}",
                topics.len()
            )));
        }
        // Every stream receives `$broadcast`, so its history is anyone's who may stream.
        let named: Vec<String> = topics
            .iter()
            .filter(|t| *t != topic::BROADCAST)
            .cloned()
            .collect();
        caller.check_readable(&named)?;
        let sel = Selector::new(&topics, caller.user.clone(), caller.admin);
        let until = self.inner.broker.fanned_through();
        let log = self.inner.log.clone();
        let limit = limit.clamp(1, MAX_LIMIT);
        tokio::task::spawn_blocking(move || page(&*log, &sel, after, since_ms, until, limit))
            .await
            .map_err(|e| Error::unavailable(format!("the history read failed: {e}")))?
    }
}

/// Reads one page (blocking: the log may wait on the disk).
fn page(
    log: &dyn Log,
    sel: &Selector,
    after: Option<String>,
    since_ms: Option<u64>,
    until: u64,
    limit: usize,
) -> Result<History, Error> {
    let failed = |e: crate::store::StoreError| {
        Error::unavailable(format!("the event log cannot be read: {e}"))
    };
    let (mut at, reset) = match after.as_deref().map(|id| (id, log.ids().parse(id))) {
        None => (0, None),
        Some((id, Resume::After(seq))) if seq > until => {
            (0, Some((ResetReason::UnknownId, id.to_string())))
        }
        Some((id, Resume::Unknown)) => (0, Some((ResetReason::UnknownId, id.to_string()))),
        Some((id, Resume::After(seq))) => {
            if seq > 0 && log.pruned_since(sel, seq).map_err(failed)? {
                (0, Some((ResetReason::Pruned, id.to_string())))
            } else {
                (seq, None)
            }
        }
    };
    // One more than the page, to know whether a next page exists.
    let mut events: Vec<Arc<Event>> = Vec::new();
    loop {
        let max = ReadLimit {
            events: limit + 1 - events.len(),
            bytes: 1 << 20,
        };
        let chunk = log.read(sel, at, until, max).map_err(failed)?;
        let since = since_ms.unwrap_or(0);
        events.extend(chunk.events.into_iter().filter(|e| e.time_ms >= since));
        at = chunk.next_after;
        if chunk.done || events.len() > limit {
            break;
        }
    }
    let more = events.len() > limit;
    events.truncate(limit);
    let next = if more {
        events.last().map(|e| e.id.clone())
    } else {
        None
    };
    Ok(History {
        events,
        next,
        reset,
    })
}

/// Where a stream starts when it asks for events by time or for the newest one (ntfy's
/// `since=<time>` and `since=latest`) rather than after an id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StartAt {
    /// The first event published at or after this time (Unix ms).
    Time(u64),
    /// The newest retained event.
    Latest,
}

impl Hub {
    /// The id a stream on `topics` resumes after to begin at `start`: just before the event
    /// found, or (none found) the newest id now, so that nothing published meanwhile is
    /// missed. Checked as history is; the log is scanned off the async workers.
    pub async fn start_point(
        &self,
        caller: &Caller,
        topics: &[String],
        start: StartAt,
    ) -> Result<String, Error> {
        if !caller.may_stream() {
            return Err(Error::Unauthorized("credentials are required".into()));
        }
        caller.check_readable(topics)?;
        let sel = Selector::new(topics, caller.user.clone(), caller.admin);
        let until = self.inner.broker.fanned_through();
        let log = self.inner.log.clone();
        let seq = tokio::task::spawn_blocking(move || find_start(&*log, &sel, until, start))
            .await
            .map_err(|e| Error::unavailable(format!("the log read failed: {e}")))?
            .map_err(|e| Error::unavailable(format!("the event log cannot be read: {e}")))?;
        Ok(self.inner.log.ids().format(seq))
    }
}

/// The seq to resume after (blocking).
fn find_start(
    log: &dyn Log,
    sel: &Selector,
    until: u64,
    start: StartAt,
) -> Result<u64, crate::store::StoreError> {
    let mut at = 0;
    let mut latest = None;
    loop {
        let max = ReadLimit {
            events: 1024,
            bytes: 1 << 20,
        };
        let chunk = log.read(sel, at, until, max)?;
        for e in &chunk.events {
            match start {
                StartAt::Time(ms) if e.time_ms >= ms => return Ok(e.seq - 1),
                StartAt::Time(_) => {}
                StartAt::Latest => latest = Some(e.seq),
            }
        }
        at = chunk.next_after;
        if chunk.done {
            return Ok(latest.map_or(until, |s| s - 1));
        }
    }
}
