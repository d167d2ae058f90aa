//! The replay log (SPEC §7): what every publish is written to before fan-out, and what a
//! resuming stream reads.
//!
//! The hub sees the log only through [`Log`]: append a group of events, flush, read after a
//! seq, say whether retention cut into a range, enforce retention, count what is there.
//! [`SledLog`] is the engine of a single hub; another engine (the shared log of several
//! hubs, SPEC §11.3) implements the same trait.
//!
//! - [`ids`]: event ids and how a client's `Last-Event-ID` relates to a store;
//! - `sled_log`: opening the sled tree, appending, flushing, counting;
//! - `record`: its key layout and record format; `replay` and `retention`: reading and pruning;
//! - `lock`: the data directory's lock.

mod ids;
mod lock;
mod record;
mod replay;
mod retention;
mod sled_log;

use std::sync::Arc;

pub(crate) use ids::{Ids, Resume};
pub use ids::{format_id, parse_id};
pub(crate) use lock::wait_released;
pub(crate) use sled_log::SledLog;

use crate::event::Event;
use crate::topic::{self, Pattern};

/// The log as the hub uses it. Calls may block on the disk: callers on the async runtime
/// run them on a blocking thread (the publisher has a thread of its own).
pub(crate) trait Log: Send + Sync {
    /// The ids of this store.
    fn ids(&self) -> Ids;
    /// The highest seq used before this process started; new events continue after it.
    fn last_seq(&self) -> u64;
    /// Writes a group of events atomically, and for live-only events the sequence
    /// high-water mark (so their seqs are not reused). Durable after the next flush.
    fn append(&self, group: &[Append<'_>], high_water: Option<u64>) -> Result<(), StoreError>;
    /// Makes everything appended so far durable.
    fn flush(&self) -> Result<(), StoreError>;
    /// The next events after `after`, up to `until`, on the selector's topics, in seq order.
    fn read(
        &self,
        sel: &Selector,
        after: u64,
        until: u64,
        max: ReadLimit,
    ) -> Result<Chunk, StoreError>;
    /// True if retention removed an event on these topics that a client at `after` has not
    /// seen: it must be told (`reset`, reason `pruned`).
    fn pruned_since(&self, sel: &Selector, after: u64) -> Result<bool, StoreError>;
    /// Counts what the log held at open, so retention and `/stats` know it (slow on a large
    /// log: run in the background after start-up).
    fn count_existing(&self) -> Result<(), StoreError>;
    /// One retention pass: count per topic, then age, then total size.
    fn enforce_retention(&self, now_ms: u64) -> Result<Pruned, StoreError>;
    /// False after a write or flush failed (reported by `/health`).
    fn is_healthy(&self) -> bool;
    /// Totals for `/stats` and `/metrics` (may walk the data directory: not for hot paths).
    fn stats(&self) -> StoreStats;
}

/// The log, shared by the hub's parts.
pub(crate) type SharedLog = Arc<dyn Log>;

/// An event as the log stores it.
pub(crate) struct Append<'a> {
    pub event: &'a Event,
    pub time_ms: u64,
}

/// How much one [`Log::read`] returns at most.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReadLimit {
    pub events: usize,
    /// About this many bytes of SSE frames.
    pub bytes: usize,
}

/// One read of the log.
#[derive(Debug, Default)]
pub(crate) struct Chunk {
    pub events: Vec<Event>,
    /// Read on after this seq.
    pub next_after: u64,
    /// Nothing is left up to the read's end.
    pub done: bool,
}

/// Which topics a read covers: exact topics use the index, wildcards scan the log.
#[derive(Debug, Clone, Default)]
pub(crate) struct Selector {
    pub exact: Vec<String>,
    pub wildcards: Vec<Pattern>,
    /// Whose personal topics a wildcard may match (besides admins, who match all).
    pub user: Option<String>,
    pub admin: bool,
}

impl Selector {
    /// Splits a stream's topic list into exact topics and wildcard patterns.
    pub fn new(topics: &[String], user: Option<String>, admin: bool) -> Selector {
        let mut s = Selector {
            user,
            admin,
            ..Selector::default()
        };
        for t in topics {
            match Pattern::new(t) {
                Ok(p) if p.is_wildcard() => s.wildcards.push(p),
                _ => s.exact.push(t.clone()),
            }
        }
        s
    }

    fn wants(&self, t: &str) -> bool {
        self.exact.iter().any(|e| e == t)
            || (topic::visible_to(t, self.user.as_deref(), self.admin)
                && topic::any_matches(&self.wildcards, t))
    }
}

/// Totals for `/stats` and `/metrics`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct StoreStats {
    /// Events retained, and the bytes of their records.
    pub events: u64,
    pub bytes: u64,
    /// What the data directory takes on disk.
    pub disk_bytes: u64,
    /// False until the start-up count has seen the old log.
    pub counted: bool,
    pub healthy: bool,
    /// Flushes since start (group commit shows as fewer flushes than publishes).
    pub flushes: u64,
}

/// What one retention pass removed.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Pruned {
    pub by_count: u64,
    pub by_age: u64,
    pub by_size: u64,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    #[error("cannot open the store in {path}: {reason}")]
    Open { path: String, reason: String },
    #[error("store error: {0}")]
    Sled(#[from] sled::Error),
    #[error("corrupt record at seq {0}")]
    Corrupt(u64),
}

/// Test helpers: events as the publisher builds them.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// Event `seq` on `topics`, with `data`, encoded as the publisher encodes it.
    pub fn event(log: &dyn Log, seq: u64, topics: &[&str], data: &str) -> Event {
        let topics: Vec<String> = topics.iter().map(|t| (*t).to_string()).collect();
        let frame = crate::sse::encode_event(&log.ids().format(seq), &topics, None, None, data);
        Event::new(seq, topics, frame)
    }

    /// Appends events one group each, stamped `time_ms`.
    pub fn append_all(log: &dyn Log, events: &[Event], time_ms: u64) {
        for event in events {
            log.append(&[Append { event, time_ms }], None).unwrap();
        }
    }
}
