//! Operations (SPEC §5.6): open connections, closing one, and the figures behind `/stats`
//! and `/metrics`.

use std::sync::atomic::Ordering;

use serde_json::{Value, json};

use super::Hub;
use super::cluster::Control;
use crate::broker::{BrokerSnapshot, ConnectionInfo};
use crate::error::Error;
use crate::event::CloseReason;
use crate::store::StoreStats;

/// Everything `/stats` and `/metrics` show, read at one moment.
#[derive(Debug, Clone)]
pub(crate) struct Stats {
    pub streams: BrokerSnapshot,
    pub max_connections: usize,
    pub published: u64,
    pub delivered: u64,
    pub replayed: u64,
    pub dropped_slow_streams: u64,
    pub streams_opened: u64,
    pub store: StoreStats,
    /// Bytes the process sent to the block device since it started: the log's writes.
    pub written_bytes: u64,
    pub rss_bytes: u64,
    pub uptime_s: u64,
    /// Outside sources (Redis ingress).
    pub sources: Vec<super::SourceSnapshot>,
}

impl Hub {
    /// The open streams, oldest first.
    pub fn connections(&self) -> Vec<ConnectionInfo> {
        self.inner.broker.connections()
    }

    /// One connection as `/connections` shows it; in a cluster, with the hub it is on.
    pub(crate) fn connection_json(&self, c: &ConnectionInfo) -> Value {
        let mut v = json!({
            "id": c.id,
            "user": c.user,
            "ip": c.ip.to_string(),
            "topics": c.topics,
            "connected_at": c.connected_at,
            "queued": c.queued,
            "transport": c.transport,
        });
        if let Some(node) = self.node() {
            v["hub"] = json!(node);
        }
        v
    }

    /// `/connections`: this hub's open streams, oldest first; in a cluster, then every other
    /// hub's, as each last published its list (every two seconds).
    pub async fn all_connections(&self) -> Vec<Value> {
        let mut list: Vec<Value> = self
            .connections()
            .iter()
            .map(|c| self.connection_json(c))
            .collect();
        list.extend(self.other_connections().await);
        list
    }

    /// Ends one stream with `closed` (`closed_by_admin`), on whichever hub of a cluster it is.
    pub async fn close_connection(&self, id: &str) -> Result<(), Error> {
        if self
            .inner
            .broker
            .close_stream(id, CloseReason::ClosedByAdmin)
        {
            Ok(())
        } else if self.elsewhere(id).await {
            self.tell_cluster(&Control::Close { id: id.to_string() })
                .await
        } else {
            Err(Error::NotFound(format!("no open stream has id {id:?}")))
        }
    }

    pub fn stats(&self) -> Stats {
        let b = &self.inner.broker;
        let c = b.counters();
        let n = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            streams: b.snapshot(),
            max_connections: self.inner.config.limits.max_connections,
            published: n(&c.published),
            delivered: n(&c.delivered),
            replayed: n(&c.replayed),
            dropped_slow_streams: n(&c.dropped_slow_streams),
            streams_opened: n(&c.streams_opened),
            store: self.inner.log.stats(),
            written_bytes: written_bytes(),
            rss_bytes: rss_bytes(),
            uptime_s: self.inner.started.elapsed().as_secs(),
            sources: self.sources(),
        }
    }
}

/// The process's resident memory in bytes, from `/proc/self/status` (0 where unavailable).
fn rss_bytes() -> u64 {
    proc_field("/proc/self/status", "VmRSS:").map_or(0, |kb| kb * 1024)
}

/// What the process caused to be written to the block device, from `/proc/self/io` (0 where
/// unavailable). The log is the only thing the hub writes, so this is the log's cost in disk
/// writes: what wears an SD card.
fn written_bytes() -> u64 {
    proc_field("/proc/self/io", "write_bytes:").unwrap_or(0)
}

/// A number from a `/proc` file's `name value [unit]` line.
fn proc_field(file: &str, name: &str) -> Option<u64> {
    let s = std::fs::read_to_string(file).ok()?;
    let v = s.lines().find_map(|l| l.strip_prefix(name))?;
    v.trim().trim_end_matches("kB").trim().parse().ok()
}
