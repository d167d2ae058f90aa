//! The replay log (SPEC §7), in one sled tree.
//!
//! Keys (one tree, so a publish batch is one atomic `apply_batch`):
//! - `e` + seq (u64 big-endian) → the event record: time, topics, and its SSE frame;
//! - `t` + topic + `0x00` + seq → empty: the per-topic index, so replaying a topic reads
//!   only that topic's events after the client's id (cost proportional to what is replayed);
//! - `p` + topic → seq: the newest event retention removed from that topic, so a client whose
//!   id is older learns of the gap (`event: reset`, reason `pruned`);
//! - `m` + name → store metadata (incarnation, sequence high-water mark, global prune mark).
//!
//! Event ids are `<incarnation>-<seq>` in fixed-width hex: the incarnation is random per data
//! directory, so an id from a wiped store is recognised as foreign; the seq is strictly
//! increasing, and fixed width makes the ids sort as strings too.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

use crate::config::StoreConfig;
use crate::topic::{self, Pattern};

const EVENT: u8 = b'e';
const INDEX: u8 = b't';
const PRUNED: u8 = b'p';
const META: u8 = b'm';
const RECORD_VERSION: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the store in {path}: {reason}")]
    Open { path: String, reason: String },
    #[error("store error: {0}")]
    Sled(#[from] sled::Error),
    #[error("corrupt record at seq {0}")]
    Corrupt(u64),
}

/// How a client's `Last-Event-ID` relates to this store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// `earliest`, or an id of this store: replay what comes after this seq.
    After(u64),
    /// Not an id of this store (another incarnation, or garbage).
    Unknown,
}

/// Which topics a replay covers: exact topics use the index, wildcards scan the log.
#[derive(Debug, Clone, Default)]
pub struct Selector {
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

    fn wants(&self, topic: &str) -> bool {
        if self.exact.iter().any(|t| t == topic) {
            return true;
        }
        let allowed = match topic::personal_owner(topic) {
            Some(owner) => self.admin || self.user.as_deref() == Some(owner),
            None => true,
        };
        allowed && self.wildcards.iter().any(|p| p.matches(topic))
    }
}

/// One replay step.
#[derive(Debug, Default)]
pub struct Chunk {
    pub frames: Vec<Bytes>,
    /// Resume the next chunk after this seq.
    pub next_after: u64,
    /// Nothing is left up to the replay's end.
    pub done: bool,
}

/// An event as the log stores it.
pub struct Append<'a> {
    pub seq: u64,
    pub time_ms: u64,
    pub topics: &'a [String],
    pub frame: &'a Bytes,
}

/// Totals for `/stats`; `ready` is false until the start-up scan has counted the old log.
#[derive(Debug, Clone, Copy, Default)]
pub struct StoreStats {
    pub events: u64,
    pub bytes: u64,
    pub disk_bytes: u64,
    pub ready: bool,
}

/// What one retention pass removed.
#[derive(Debug, Default, Clone, Copy)]
pub struct Pruned {
    pub by_count: u64,
    pub by_age: u64,
    pub by_size: u64,
}

/// The store handle: cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    incarnation: u32,
    last_seq: u64,
    retention_events: u64,
    retention_age_ms: u64,
    max_bytes: u64,
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
struct Accounting {
    per_topic: HashMap<String, u64>,
    events: u64,
    bytes: u64,
    /// Topics appended to since the last retention pass.
    dirty: HashSet<String>,
    ready: bool,
}

impl Store {
    /// Opens (or creates) the log under `dir`.
    pub fn open(dir: &Path, cfg: &StoreConfig) -> Result<Store, StoreError> {
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
                    inc = crate::random_u32();
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
        let last_seq = last_event.max(high_water);
        Ok(Store {
            inner: Arc::new(Inner {
                db,
                incarnation,
                last_seq,
                retention_events: cfg.retention_events,
                retention_age_ms: cfg.retention_age.as_millis(),
                max_bytes: cfg.max_disk.0,
                acct: Mutex::new(Accounting::default()),
                healthy: AtomicBool::new(true),
                flushes: AtomicU64::new(0),
                #[cfg(test)]
                slow_flush_ms: AtomicU64::new(0),
            }),
        })
    }

    /// Counts what the log held at open (events and bytes from the records, per-topic
    /// counts from the index), so retention and `/stats` know it. Runs in the background
    /// after start-up: serving does not wait.
    pub fn scan_existing(&self) -> Result<(), StoreError> {
        let last = self.inner.last_seq;
        let (mut events, mut bytes) = (0u64, 0u64);
        for item in self.inner.db.range(event_key(0)..=event_key(last)) {
            let (_, v) = item?;
            events += 1;
            bytes += v.len() as u64;
        }
        // A topic's count is its index entries: retention by count removes an event from one
        // topic while another topic may keep it.
        let mut per_topic: HashMap<String, u64> = HashMap::new();
        for k in self.inner.db.scan_prefix([INDEX]).keys() {
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

    // Short, non-async critical sections only.
    fn acct(&self) -> MutexGuard<'_, Accounting> {
        self.inner.acct.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn incarnation(&self) -> u32 {
        self.inner.incarnation
    }

    /// The highest seq used before this process started.
    pub fn last_seq(&self) -> u64 {
        self.inner.last_seq
    }

    /// False after a write or flush failed (reported by `/health`).
    pub fn is_healthy(&self) -> bool {
        self.inner.healthy.load(Ordering::Relaxed)
    }

    fn mark(&self, ok: bool) {
        self.inner.healthy.store(ok, Ordering::Relaxed);
    }

    /// The public id of a seq.
    pub fn format_id(&self, seq: u64) -> String {
        format_id(self.inner.incarnation, seq)
    }

    /// Interprets a client's `Last-Event-ID`.
    pub fn parse_id(&self, id: &str) -> Resume {
        if id == "earliest" {
            return Resume::After(0);
        }
        match parse_id(id) {
            Some((inc, seq)) if inc == self.inner.incarnation => Resume::After(seq),
            _ => Resume::Unknown,
        }
    }

    /// Writes events (and, for live-only events, the sequence high-water mark) in one atomic
    /// batch. Durable after the next [`Store::flush`].
    pub fn append(&self, events: &[Append<'_>], high_water: Option<u64>) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        let mut sizes = Vec::with_capacity(events.len());
        for ev in events {
            let rec = Record::encode(ev.time_ms, ev.topics, ev.frame);
            sizes.push(rec.len() as u64);
            // The index entry carries the record's size and topic count, so retention can
            // drop a single-topic event without reading its record.
            let mut meta = [0u8; 5];
            meta[..4].copy_from_slice(&u32::try_from(rec.len()).unwrap_or(u32::MAX).to_be_bytes());
            meta[4] = u8::try_from(ev.topics.len()).unwrap_or(u8::MAX);
            batch.insert(&event_key(ev.seq)[..], rec);
            for t in ev.topics {
                batch.insert(index_key(t, ev.seq), &meta[..]);
            }
        }
        if let Some(hw) = high_water {
            batch.insert(meta_key("seq_hw"), &hw.to_be_bytes()[..]);
        }
        if let Err(e) = self.inner.db.apply_batch(batch) {
            self.mark(false);
            return Err(e.into());
        }
        let mut a = self.acct();
        for (ev, size) in events.iter().zip(sizes) {
            for t in ev.topics {
                *a.per_topic.entry(t.clone()).or_default() += 1;
                if !a.dirty.contains(t.as_str()) {
                    a.dirty.insert(t.clone());
                }
            }
            a.events += 1;
            a.bytes += size;
        }
        Ok(())
    }

    /// Flushes done by [`Store::flush`] since start (group commit shows as fewer flushes
    /// than publishes).
    pub fn flushes(&self) -> u64 {
        self.inner.flushes.load(Ordering::Relaxed)
    }

    /// Makes everything appended so far durable.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.inner.flushes.fetch_add(1, Ordering::Relaxed);
        #[cfg(test)]
        std::thread::sleep(std::time::Duration::from_millis(
            self.inner.slow_flush_ms.load(Ordering::Relaxed),
        ));
        match self.inner.db.flush() {
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

    /// True if retention removed an event on these topics that a client at `after` has not
    /// seen: it must be told (`reset`, reason `pruned`).
    pub fn pruned_since(&self, sel: &Selector, after: u64) -> Result<bool, StoreError> {
        let db = &self.inner.db;
        if !sel.wildcards.is_empty() {
            let mark = db.get(meta_key("pruned"))?.and_then(|v| seq_of(&v));
            if mark.is_some_and(|m| m > after) {
                return Ok(true);
            }
        }
        for t in &sel.exact {
            if db
                .get(pruned_key(t))?
                .and_then(|v| seq_of(&v))
                .is_some_and(|m| m > after)
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Reads the next events after `after`, up to `until`, on the selector's topics, in seq
    /// order: at most `max_events` events and about `max_bytes` bytes.
    pub fn replay_chunk(
        &self,
        sel: &Selector,
        after: u64,
        until: u64,
        max_events: usize,
        max_bytes: usize,
    ) -> Result<Chunk, StoreError> {
        if after >= until {
            return Ok(Chunk {
                next_after: after,
                done: true,
                ..Chunk::default()
            });
        }
        if sel.wildcards.is_empty() {
            self.replay_indexed(sel, after, until, max_events, max_bytes)
        } else {
            self.replay_scan(sel, after, until, max_events, max_bytes)
        }
    }

    /// Exact topics: merge each topic's index range.
    fn replay_indexed(
        &self,
        sel: &Selector,
        after: u64,
        until: u64,
        max_events: usize,
        max_bytes: usize,
    ) -> Result<Chunk, StoreError> {
        let db = &self.inner.db;
        let mut seqs = Vec::new();
        // A topic that yields fewer than `max_events` keys has nothing more up to `until`.
        let mut exhausted = true;
        for t in &sel.exact {
            let range = db.range(index_key(t, after + 1)..=index_key(t, until));
            let mut n = 0;
            for k in range.keys().take(max_events) {
                let k = k?;
                if let Some(seq) = k.len().checked_sub(8).and_then(|at| seq_of(&k[at..])) {
                    seqs.push(seq);
                }
                n += 1;
            }
            exhausted &= n < max_events;
        }
        seqs.sort_unstable();
        seqs.dedup();
        // Only the first `max_events` merged seqs are certainly complete across topics.
        let truncated = seqs.len() > max_events;
        seqs.truncate(max_events);
        let mut chunk = Chunk {
            next_after: after,
            ..Chunk::default()
        };
        let mut bytes = 0;
        for seq in seqs {
            if bytes >= max_bytes {
                return Ok(chunk);
            }
            // An index entry without its event means retention removed the event meanwhile.
            if let Some(v) = db.get(event_key(seq))? {
                let frame = Record::frame_of(v).ok_or(StoreError::Corrupt(seq))?;
                bytes += frame.len();
                chunk.frames.push(frame);
            }
            chunk.next_after = seq;
        }
        if exhausted && !truncated {
            chunk.done = true;
            chunk.next_after = until;
        }
        Ok(chunk)
    }

    /// Wildcards: scan the log after `after` and keep what the selector wants.
    fn replay_scan(
        &self,
        sel: &Selector,
        after: u64,
        until: u64,
        max_events: usize,
        max_bytes: usize,
    ) -> Result<Chunk, StoreError> {
        const MAX_SCANNED: usize = 4096;
        let mut chunk = Chunk {
            next_after: after,
            ..Chunk::default()
        };
        let mut bytes = 0;
        let range = self.inner.db.range(event_key(after + 1)..=event_key(until));
        for (scanned, item) in range.enumerate() {
            if scanned >= MAX_SCANNED || chunk.frames.len() >= max_events || bytes >= max_bytes {
                return Ok(chunk);
            }
            let (k, v) = item?;
            let seq = seq_of(&k[1..]).unwrap_or(0);
            let rec = Record::decode(&v).ok_or(StoreError::Corrupt(seq))?;
            if rec.topics.iter().any(|t| sel.wants(t)) {
                let frame = Record::frame_of(v.clone()).ok_or(StoreError::Corrupt(seq))?;
                bytes += frame.len();
                chunk.frames.push(frame);
            }
            chunk.next_after = seq;
        }
        chunk.done = true;
        chunk.next_after = until;
        Ok(chunk)
    }

    /// Totals for `/stats`.
    pub fn stats(&self) -> StoreStats {
        let a = self.acct();
        StoreStats {
            events: a.events,
            bytes: a.bytes,
            disk_bytes: 0,
            ready: a.ready,
        }
    }

    /// Bytes sled uses on disk (walks the files: for `/stats`, not hot paths).
    pub fn disk_bytes(&self) -> u64 {
        self.inner.db.size_on_disk().unwrap_or(0)
    }

    /// One retention pass: count per topic, then age, then total size. Deletes in small
    /// batches, so publishes are never held up for long.
    pub fn enforce_retention(&self, now_ms: u64) -> Result<Pruned, StoreError> {
        let mut pruned = Pruned::default();
        let over: Vec<(String, u64)> = {
            let mut a = self.acct();
            if !a.ready {
                return Ok(pruned);
            }
            let dirty = std::mem::take(&mut a.dirty);
            dirty
                .into_iter()
                .filter_map(|t| {
                    let n = a.per_topic.get(&t).copied().unwrap_or(0);
                    (n > self.inner.retention_events).then(|| (t, n - self.inner.retention_events))
                })
                .collect()
        };
        for (t, excess) in over {
            pruned.by_count += self.prune_topic(&t, excess)?;
        }
        let cutoff = now_ms.saturating_sub(self.inner.retention_age_ms);
        pruned.by_age += self.prune_oldest(|rec, _| rec.time_ms < cutoff)?;
        let max = self.inner.max_bytes;
        if self.acct().bytes > max {
            // Cut to 90 % so a log at its limit is not pruned again on every publish.
            let target = max / 10 * 9;
            pruned.by_size += self.prune_oldest(|_, total| total > target)?;
        }
        Ok(pruned)
    }

    /// Removes the `n` oldest events of one topic from that topic; an event left on no topic
    /// is removed from the log.
    fn prune_topic(&self, t: &str, n: u64) -> Result<u64, StoreError> {
        let db = &self.inner.db;
        let mut removed = 0;
        while removed < n {
            let take = usize::try_from((n - removed).min(512)).unwrap_or(512);
            let keys: Vec<(sled::IVec, sled::IVec)> = db
                .scan_prefix(index_prefix(t))
                .take(take)
                .collect::<Result<_, _>>()?;
            if keys.is_empty() {
                break;
            }
            let mut batch = sled::Batch::default();
            let mut max_seq = 0;
            let mut freed = (0u64, 0u64);
            for (k, meta) in &keys {
                let Some(seq) = k.len().checked_sub(8).and_then(|at| seq_of(&k[at..])) else {
                    continue;
                };
                max_seq = max_seq.max(seq);
                batch.remove(k.clone());
                if let [a, b, c, d, 1] = meta[..] {
                    // On this topic only: the record goes too, unread.
                    batch.remove(&event_key(seq)[..]);
                    freed.0 += 1;
                    freed.1 += u64::from(u32::from_be_bytes([a, b, c, d]));
                    continue;
                }
                if let Some(v) = db.get(event_key(seq))? {
                    let rec = Record::decode(&v).ok_or(StoreError::Corrupt(seq))?;
                    let mut still_indexed = false;
                    for other in rec.topics.iter().filter(|o| **o != t) {
                        if db.contains_key(index_key(other, seq))? {
                            still_indexed = true;
                            break;
                        }
                    }
                    if !still_indexed {
                        batch.remove(&event_key(seq)[..]);
                        freed.0 += 1;
                        freed.1 += v.len() as u64;
                    }
                }
            }
            batch.insert(pruned_key(t), &max_seq.to_be_bytes()[..]);
            db.apply_batch(batch)?;
            removed += keys.len() as u64;
            let mut a = self.acct();
            if let Some(c) = a.per_topic.get_mut(t) {
                *c = c.saturating_sub(keys.len() as u64);
            }
            a.events = a.events.saturating_sub(freed.0);
            a.bytes = a.bytes.saturating_sub(freed.1);
        }
        Ok(removed)
    }

    /// Removes events from the oldest while `cond(record, total_bytes)` holds.
    fn prune_oldest(&self, cond: impl Fn(&Record<'_>, u64) -> bool) -> Result<u64, StoreError> {
        let db = &self.inner.db;
        let mut removed = 0;
        loop {
            let mut batch = sled::Batch::default();
            // Per topic: the newest seq removed and how many.
            let mut marks: HashMap<String, (u64, u64)> = HashMap::new();
            let mut n = 0u64;
            let mut freed = 0u64;
            let mut total = self.acct().bytes;
            let mut max_seq = 0;
            for item in db.scan_prefix([EVENT]).take(512) {
                let (k, v) = item?;
                let seq = seq_of(&k[1..]).unwrap_or(0);
                let rec = Record::decode(&v).ok_or(StoreError::Corrupt(seq))?;
                if !cond(&rec, total) {
                    break;
                }
                batch.remove(k);
                for t in &rec.topics {
                    let ik = index_key(t, seq);
                    // Count retention may have taken the event off this topic already.
                    let indexed = db.contains_key(&ik)?;
                    batch.remove(ik);
                    let m = marks.entry((*t).to_string()).or_default();
                    *m = (seq, m.1 + u64::from(indexed));
                }
                n += 1;
                freed += v.len() as u64;
                total = total.saturating_sub(v.len() as u64);
                max_seq = seq;
            }
            if n == 0 {
                return Ok(removed);
            }
            for (t, (seq, _)) in &marks {
                batch.insert(pruned_key(t), &seq.to_be_bytes()[..]);
            }
            batch.insert(meta_key("pruned"), &max_seq.to_be_bytes()[..]);
            db.apply_batch(batch)?;
            removed += n;
            let mut a = self.acct();
            a.events = a.events.saturating_sub(n);
            a.bytes = a.bytes.saturating_sub(freed);
            for (t, (_, count)) in marks {
                if let Some(c) = a.per_topic.get_mut(&t) {
                    *c = c.saturating_sub(count);
                }
            }
        }
    }
}

#[cfg(test)]
impl Store {
    pub(crate) fn set_slow_flush(&self, ms: u64) {
        self.inner.slow_flush_ms.store(ms, Ordering::Relaxed);
    }
}

/// `<incarnation>-<seq>`, fixed-width hex.
/// Waits (up to `within`) until no process or thread holds the log's file lock in `dir`,
/// and says whether it is free. A dropped store is not closed at once: sled's flusher
/// thread lets go of the lock a moment later, and an in-process restart (tests, embedding)
/// must not see "another runnel is using this data directory" for it.
pub fn wait_released(dir: &Path, within: std::time::Duration) -> bool {
    use std::os::fd::AsRawFd;
    let Ok(file) = std::fs::File::open(dir.join("log").join("db")) else {
        return true; // no log yet, so nothing holds it
    };
    let until = std::time::Instant::now() + within;
    loop {
        // sled takes an exclusive flock(2) on this file; ours conflicts until it is gone.
        // SAFETY: a plain syscall on a descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            // SAFETY: as above; closing the file would release it too.
            unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_UN) };
            return true;
        }
        if std::time::Instant::now() >= until {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

pub fn format_id(incarnation: u32, seq: u64) -> String {
    format!("{incarnation:08x}-{seq:016x}")
}

/// The inverse of [`format_id`]; `None` for anything else.
pub fn parse_id(id: &str) -> Option<(u32, u64)> {
    let (inc, seq) = id.split_once('-')?;
    if inc.len() != 8 || seq.len() != 16 {
        return None;
    }
    let hex = |s: &str| s.bytes().all(|b| b.is_ascii_hexdigit());
    if !hex(inc) || !hex(seq) {
        return None;
    }
    Some((
        u32::from_str_radix(inc, 16).ok()?,
        u64::from_str_radix(seq, 16).ok()?,
    ))
}

fn event_key(seq: u64) -> [u8; 9] {
    let mut k = [EVENT; 9];
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn index_prefix(topic: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(topic.len() + 10);
    k.push(INDEX);
    k.extend_from_slice(topic.as_bytes());
    k.push(0);
    k
}

fn index_key(topic: &str, seq: u64) -> Vec<u8> {
    let mut k = index_prefix(topic);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// `t` + topic + 0 + seq → (topic, seq).
fn split_index_key(k: &[u8]) -> Option<(&str, u64)> {
    let at = k.len().checked_sub(9)?;
    if k.first() != Some(&INDEX) || k.get(at) != Some(&0) {
        return None;
    }
    Some((std::str::from_utf8(&k[1..at]).ok()?, seq_of(&k[at + 1..])?))
}

fn pruned_key(topic: &str) -> Vec<u8> {
    let mut k = vec![PRUNED];
    k.extend_from_slice(topic.as_bytes());
    k
}

fn meta_key(name: &str) -> Vec<u8> {
    let mut k = vec![META];
    k.extend_from_slice(name.as_bytes());
    k
}

fn seq_of(b: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(b.try_into().ok()?))
}

/// A decoded event record: `version, time_ms (u64 LE), n_topics (u16 LE),
/// n × (len u8, topic), frame`.
struct Record<'a> {
    time_ms: u64,
    topics: Vec<&'a str>,
}

impl<'a> Record<'a> {
    fn encode(time_ms: u64, topics: &[String], frame: &[u8]) -> Vec<u8> {
        let mut v = Vec::with_capacity(
            11 + topics.iter().map(|t| t.len() + 1).sum::<usize>() + frame.len(),
        );
        v.push(RECORD_VERSION);
        v.extend_from_slice(&time_ms.to_le_bytes());
        v.extend_from_slice(&(topics.len() as u16).to_le_bytes());
        for t in topics {
            // Topics are at most 200 bytes (validated on publish).
            v.push(t.len() as u8);
            v.extend_from_slice(t.as_bytes());
        }
        v.extend_from_slice(frame);
        v
    }

    /// Decodes the header; returns the record and the offset of the frame.
    fn decode_with_offset(b: &'a [u8]) -> Option<(Record<'a>, usize)> {
        if b.first() != Some(&RECORD_VERSION) || b.len() < 11 {
            return None;
        }
        let time_ms = u64::from_le_bytes(b[1..9].try_into().ok()?);
        let n = u16::from_le_bytes(b[9..11].try_into().ok()?) as usize;
        let mut at = 11;
        let mut topics = Vec::with_capacity(n);
        for _ in 0..n {
            let len = *b.get(at)? as usize;
            let t = std::str::from_utf8(b.get(at + 1..at + 1 + len)?).ok()?;
            topics.push(t);
            at += 1 + len;
        }
        Some((Record { time_ms, topics }, at))
    }

    fn decode(b: &'a [u8]) -> Option<Record<'a>> {
        Self::decode_with_offset(b).map(|(r, _)| r)
    }

    /// The frame of a record, sharing the record's memory (no copy).
    fn frame_of(v: sled::IVec) -> Option<Bytes> {
        let (_, at) = Record::decode_with_offset(&v)?;
        Some(Bytes::from_owner(v).slice(at..))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_roundtrip_and_sort() {
        let a = format_id(0xdead_beef, 9);
        let b = format_id(0xdead_beef, 10);
        assert!(a < b);
        assert_eq!(parse_id(&a), Some((0xdead_beef, 9)));
        for bad in [
            "",
            "x",
            "deadbeef-9",
            "deadbeef-000000000000000g",
            "deadbeef+0000000000000009",
        ] {
            assert_eq!(parse_id(bad), None, "{bad}");
        }
    }

    /// `wait_released` sees sled's lock while a store is open and its release after.
    #[test]
    fn wait_released_sees_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let short = std::time::Duration::from_millis(50);
        assert!(wait_released(dir.path(), short), "no log yet");
        let store = Store::open(dir.path(), &StoreConfig::default()).unwrap();
        assert!(
            !wait_released(dir.path(), short),
            "an open store holds the lock"
        );
        drop(store);
        assert!(wait_released(dir.path(), std::time::Duration::from_secs(5)));
        Store::open(dir.path(), &StoreConfig::default()).unwrap();
    }

    /// After retention (by count and by size), the in-memory counts equal a fresh count of
    /// what the log holds.
    #[test]
    fn accounting_matches_the_log_after_pruning() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = StoreConfig {
            retention_events: 1500,
            max_disk: crate::config::ByteSize(1 << 20),
            ..StoreConfig::default()
        };
        let store = Store::open(dir.path(), &cfg).unwrap();
        store.scan_existing().unwrap();
        let data = "z".repeat(300);
        for seq in 1..=6000u64 {
            let topics: Vec<String> = match seq % 3 {
                0 => vec!["a".into()],
                1 => vec!["b".into()],
                _ => vec!["a".into(), "c".into()],
            };
            let frame = crate::sse::encode_event(&store.format_id(seq), &topics, None, None, &data);
            let ev = Append {
                seq,
                time_ms: crate::broker::unix_ms(),
                topics: &topics,
                frame: &frame,
            };
            store.append(&[ev], None).unwrap();
        }
        let pruned = store.enforce_retention(crate::broker::unix_ms()).unwrap();
        assert!(pruned.by_count > 0 && pruned.by_size > 0, "{pruned:?}");
        let live = store.stats();
        let counts = store.acct().per_topic.clone();
        assert!(live.bytes <= 1 << 20);
        drop(store);
        assert!(wait_released(dir.path(), std::time::Duration::from_secs(5)));
        let reopened = Store::open(dir.path(), &cfg).unwrap();
        reopened.scan_existing().unwrap();
        let fresh = reopened.stats();
        assert_eq!((live.events, live.bytes), (fresh.events, fresh.bytes));
        let fresh_counts = reopened.acct().per_topic.clone();
        for t in ["a", "b", "c"] {
            assert_eq!(
                counts.get(t).copied().unwrap_or(0),
                fresh_counts.get(t).copied().unwrap_or(0),
                "topic {t}"
            );
            assert!(fresh_counts.get(t).copied().unwrap_or(0) <= 1500);
        }
    }

    #[test]
    fn record_roundtrip() {
        let frame = Bytes::from_static(b"id: 1\ndata: x\n\n");
        let rec = Record::encode(42, &["a".into(), "b/c".into()], &frame);
        let r = Record::decode(&rec).unwrap();
        assert_eq!(r.time_ms, 42);
        assert_eq!(r.topics, vec!["a", "b/c"]);
        assert_eq!(Record::frame_of(sled::IVec::from(rec)).unwrap(), frame);
        assert!(Record::decode(&[1, 2, 3]).is_none());
        assert!(Record::decode(&[1, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0, 9]).is_none());
    }
}
