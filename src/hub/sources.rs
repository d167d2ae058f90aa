//! Outside sources feeding the hub (SPEC §11.2: Redis ingress): each reports here whether
//! it is connected and what it did, for `/health`, `/stats` and `/metrics`. The hub knows
//! only these counters, not the sources.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::Hub;
use crate::error::Error;

/// One source's state, updated by the source's task.
#[derive(Debug, Default)]
pub(crate) struct SourceStatus {
    /// How `/health` and `/stats` name it, e.g. `redis pattern follower:*`.
    pub name: String,
    /// Connected and reading.
    pub up: AtomicBool,
    /// Messages read.
    pub received: AtomicU64,
    /// Messages published as events.
    pub published: AtomicU64,
    /// Messages dropped: larger than `limits.max_event_bytes`.
    pub too_large: AtomicU64,
    /// Messages dropped: not UTF-8, or a topic or user their rule could not make.
    pub invalid: AtomicU64,
    /// Redeliveries recognised as already published (streams).
    pub duplicates: AtomicU64,
    /// Messages dropped: they came faster than the hub publishes and its queue was full
    /// (pub/sub).
    pub overflow: AtomicU64,
    /// Times the connection was lost or could not be made.
    pub outages: AtomicU64,
}

/// A copy of one source's state.
#[derive(Debug, Clone)]
pub(crate) struct SourceSnapshot {
    pub name: String,
    pub up: bool,
    pub received: u64,
    pub published: u64,
    pub too_large: u64,
    pub invalid: u64,
    pub duplicates: u64,
    pub overflow: u64,
    pub outages: u64,
}

/// The sources the hub has.
#[derive(Default)]
pub(super) struct Sources(Mutex<Vec<Arc<SourceStatus>>>);

impl Sources {
    /// Registers a source; it starts down.
    pub fn add(&self, name: String) -> Arc<SourceStatus> {
        let s = Arc::new(SourceStatus {
            name,
            ..SourceStatus::default()
        });
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(s.clone());
        s
    }
}

impl Hub {
    /// Registers a source; it starts down.
    pub fn add_source(&self, name: String) -> Arc<SourceStatus> {
        self.inner.sources.add(name)
    }

    /// Every source's state, in the order they were added.
    pub fn sources(&self) -> Vec<SourceSnapshot> {
        let all = self
            .inner
            .sources
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        all.iter()
            .map(|s| SourceSnapshot {
                name: s.name.clone(),
                up: s.up.load(Ordering::Relaxed),
                received: n(&s.received),
                published: n(&s.published),
                too_large: n(&s.too_large),
                invalid: n(&s.invalid),
                duplicates: n(&s.duplicates),
                overflow: n(&s.overflow),
                outages: n(&s.outages),
            })
            .collect()
    }

    /// The log's incarnation (random per data directory): a stable name for this hub's
    /// consumer in a Redis consumer group.
    pub fn log_incarnation(&self) -> u32 {
        self.inner.log.ids().incarnation
    }

    /// The newest position the log holds from `source` (see `event::Origin`).
    pub async fn origin_position(&self, source: &str) -> Result<Option<String>, Error> {
        let (log, source) = (self.inner.log.clone(), source.to_string());
        tokio::task::spawn_blocking(move || log.origin(&source))
            .await
            .map_err(|e| Error::unavailable(format!("the log read failed: {e}")))?
            .map_err(|e| Error::unavailable(format!("the event log cannot be read: {e}")))
    }
}
