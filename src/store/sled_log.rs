//! The log of a single hub, in one sled tree (the layout is in `record`).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use super::record::{
    EVENT, INDEX, Record, event_key, index_key, meta_key, seq_of, split_index_key,
};
use super::{Append, Chunk, Ids, Log, Pruned, ReadLimit, Selector, StoreError, StoreStats};
use crate::config::StoreConfig;

pub(crate) struct SledLog {
    pub(super) db: sled::Db,
    /// The sled directory (`<data_dir>/log`).
    path: PathBuf,
    ids: Ids,
    last_seq: u64,
    pub(super) retention_events: u64,
    pub(super) retention_age_ms: u64,
    pub(super) max_bytes: u64,
    acct: Mutex<Accounting>,
    healthy: AtomicBool,
    flushes: AtomicU64,
    /// Tests make flushes slow to observe group commit.
    #[cfg(test)]
    slow_flush_ms: AtomicU64,
}

/// In-memory counts of what the log holds, so retention knows where to cut without
/// scanning.
#[derive(Default)]
pub(super) struct Accounting {
    pub(super) per_topic: HashMap<String, u64>,
    pub(super) events: u64,
    pub(super) bytes: u64,
    /// Topics appended to since the last retention pass.
    pub(super) dirty: HashSet<String>,
    pub(super) ready: bool,
}

impl SledLog {
    /// Opens (or creates) the log under `dir`.
    pub fn open(dir: &Path, cfg: &StoreConfig) -> Result<SledLog, StoreError> {
        let path = dir.join("log");
        let open_err = |reason: String| StoreError::Open {
            path: dir.display().to_string(),
            reason,
        };
        std::fs::create_dir_all(dir).map_err(|e| open_err(e.to_string()))?;
        let existed = path.join("conf").exists();
        let db = sled::Config::new()
            .path(&path)
            .cache_capacity(cfg.cache.0)
            .flush_every_ms(Some(500))
            .open()
            .map_err(|e| {
                let s = e.to_string();
                if s.contains("WouldBlock") || s.contains("lock") {
                    open_err(format!(
                        "{s} (is another runnel using this data directory?)"
                    ))
                } else {
                    open_err(s)
                }
            })?;
        let incarnation = match db.get(meta_key("incarnation"))? {
            Some(v) if v.len() == 4 => u32::from_be_bytes([v[0], v[1], v[2], v[3]]),
            // sled recovers a damaged log by cutting it at the damage: a log that existed
            // but lost even its first record would silently start empty.
            _ if existed => {
                return Err(open_err(
                    "the log exists but runnel's metadata is missing: it is damaged (or not \
                     runnel's). Move the data directory away to start with an empty log"
                        .into(),
                ));
            }
            _ => {
                let mut inc = 0;
                while inc == 0 {
                    inc = crate::random::random_u32();
                }
                db.insert(meta_key("incarnation"), &inc.to_be_bytes())?;
                db.flush()?;
                inc
            }
        };
        let last_event = db
            .scan_prefix([EVENT])
            .keys()
            .next_back()
            .transpose()?
            .and_then(|k| seq_of(&k[1..]))
            .unwrap_or(0);
        let high_water = db
            .get(meta_key("seq_hw"))?
            .and_then(|v| seq_of(&v))
            .unwrap_or(0);
        Ok(SledLog {
            db,
            path,
            ids: Ids { incarnation },
            last_seq: last_event.max(high_water),
            retention_events: cfg.retention_events,
            retention_age_ms: cfg.retention_age.as_millis(),
            max_bytes: cfg.max_disk.0,
            acct: Mutex::new(Accounting::default()),
            healthy: AtomicBool::new(true),
            flushes: AtomicU64::new(0),
            #[cfg(test)]
            slow_flush_ms: AtomicU64::new(0),
        })
    }

    // Short, non-async critical sections only.
    pub(super) fn acct(&self) -> MutexGuard<'_, Accounting> {
        self.acct.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn mark(&self, ok: bool) {
        self.healthy.store(ok, Ordering::Relaxed);
    }

    #[cfg(test)]
    pub(crate) fn set_slow_flush(&self, ms: u64) {
        self.slow_flush_ms.store(ms, Ordering::Relaxed);
    }
}

impl Log for SledLog {
    fn ids(&self) -> Ids {
        self.ids
    }

    fn last_seq(&self) -> u64 {
        self.last_seq
    }

    fn append(&self, group: &[Append<'_>], high_water: Option<u64>) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        let mut sizes = Vec::with_capacity(group.len());
        for a in group {
            let ev = a.event;
            let rec = Record::encode(a.time_ms, &ev.topics, ev.sse());
            sizes.push(rec.len() as u64);
            // The index entry carries the record's size and topic count, so retention can
            // drop a single-topic event without reading its record.
            let mut meta = [0u8; 5];
            meta[..4].copy_from_slice(&u32::try_from(rec.len()).unwrap_or(u32::MAX).to_be_bytes());
            meta[4] = u8::try_from(ev.topics.len()).unwrap_or(u8::MAX);
            batch.insert(&event_key(ev.seq)[..], rec);
            for t in &ev.topics {
                batch.insert(index_key(t, ev.seq), &meta[..]);
            }
        }
        if let Some(hw) = high_water {
            batch.insert(meta_key("seq_hw"), &hw.to_be_bytes()[..]);
        }
        if let Err(e) = self.db.apply_batch(batch) {
            self.mark(false);
            return Err(e.into());
        }
        let mut acct = self.acct();
        for (a, size) in group.iter().zip(sizes) {
            for t in &a.event.topics {
                *acct.per_topic.entry(t.clone()).or_default() += 1;
                if !acct.dirty.contains(t.as_str()) {
                    acct.dirty.insert(t.clone());
                }
            }
            acct.events += 1;
            acct.bytes += size;
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.flushes.fetch_add(1, Ordering::Relaxed);
        #[cfg(test)]
        std::thread::sleep(std::time::Duration::from_millis(
            self.slow_flush_ms.load(Ordering::Relaxed),
        ));
        match self.db.flush() {
            Ok(_) => {
                self.mark(true);
                Ok(())
            }
            Err(e) => {
                self.mark(false);
                Err(e.into())
            }
        }
    }

    fn read(
        &self,
        sel: &Selector,
        after: u64,
        until: u64,
        max: ReadLimit,
    ) -> Result<Chunk, StoreError> {
        if after >= until {
            return Ok(Chunk {
                next_after: after,
                done: true,
                ..Chunk::default()
            });
        }
        if sel.wildcards.is_empty() {
            self.read_indexed(sel, after, until, max)
        } else {
            self.read_scan(sel, after, until, max)
        }
    }

    fn pruned_since(&self, sel: &Selector, after: u64) -> Result<bool, StoreError> {
        self.pruned_after(sel, after)
    }

    /// Counts events and bytes from the records, per-topic counts from the index.
    fn count_existing(&self) -> Result<(), StoreError> {
        let last = self.last_seq;
        let (mut events, mut bytes) = (0u64, 0u64);
        for item in self.db.range(event_key(0)..=event_key(last)) {
            let (_, v) = item?;
            events += 1;
            bytes += v.len() as u64;
        }
        // A topic's count is its index entries: retention by count removes an event from one
        // topic while another topic may keep it.
        let mut per_topic: HashMap<String, u64> = HashMap::new();
        for k in self.db.scan_prefix([INDEX]).keys() {
            let k = k?;
            let Some((topic, seq)) = split_index_key(&k) else {
                continue;
            };
            if seq <= last {
                *per_topic.entry(topic.to_string()).or_default() += 1;
            }
        }
        let mut a = self.acct();
        for (t, n) in per_topic {
            *a.per_topic.entry(t.clone()).or_default() += n;
            a.dirty.insert(t);
        }
        a.events += events;
        a.bytes += bytes;
        a.ready = true;
        Ok(())
    }

    fn enforce_retention(&self, now_ms: u64) -> Result<Pruned, StoreError> {
        self.retain(now_ms)
    }

    fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    fn stats(&self) -> StoreStats {
        let (events, bytes, counted) = {
            let a = self.acct();
            (a.events, a.bytes, a.ready)
        };
        StoreStats {
            events,
            bytes,
            disk_bytes: dir_size(&self.path),
            counted,
            healthy: self.is_healthy(),
            flushes: self.flushes.load(Ordering::Relaxed),
        }
    }
}

/// The bytes the files under `dir` take (what `du --apparent-size` counts).
fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}
