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
mod upgrade;

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
    /// The highest seq of an event the log held at open, retained or pruned since (a hub
    /// of a cluster reads the cluster's log on from there).
    fn written(&self) -> u64;
    /// Events up to `through` are missing and will not come: a client resuming before it
    /// is told (`reset`, `pruned`), as after retention. Durable at once.
    fn mark_gap(&self, through: u64) -> Result<(), StoreError>;
    /// Makes sure no seq up to `seq` is given again after a restart, even one that follows
    /// a crash which lost unflushed events. Cheap when `seq` is already reserved: the log
    /// reserves ahead, in blocks, so it writes rarely.
    fn reserve(&self, seq: u64) -> Result<(), StoreError>;
    /// At a clean stop: the last seq used, so that the next start continues right after it.
    fn settle(&self, last_used: u64) -> Result<(), StoreError>;
    /// Adds the events of one publish (in seq order, after every event appended before;
    /// their seqs reserved), which reach the disk whole or not at all. Readers see them at
    /// once; they are durable after the next flush.
    fn append(&self, events: &[Arc<Event>]) -> Result<(), StoreError>;
    /// Writes what was appended and makes it durable.
    fn flush(&self) -> Result<(), StoreError>;
    /// The position of the newest event appended from `source` (see `event::Origin`), as
    /// written: what a crash lost is not there.
    fn origin(&self, source: &str) -> Result<Option<String>, StoreError>;
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
    pub events: Vec<Arc<Event>>,
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
    /// Events retained (one on several topics counts once per topic), and the bytes of
    /// their records.
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

    /// Event `seq` on `topics`, with `data`, published at `time_ms`.
    pub fn event(log: &dyn Log, seq: u64, topics: &[&str], data: &str, time_ms: u64) -> Arc<Event> {
        let e = crate::event::NewEvent {
            topics: topics.iter().map(|t| (*t).to_string()).collect(),
            event: None,
            data: data.to_string(),
            json: false,
            retry: None,
            persist: true,
            idempotency_key: None,
            origin: None,
        };
        Arc::new(Event::new(seq, log.ids().format(seq), time_ms, e))
    }

    /// Appends events, each flushed on its own (as a commit group of one).
    pub fn append_all(log: &dyn Log, events: &[Arc<Event>]) {
        for e in events {
            log.reserve(e.seq).unwrap();
            log.append(std::slice::from_ref(e)).unwrap();
            log.flush().unwrap();
        }
    }
}
