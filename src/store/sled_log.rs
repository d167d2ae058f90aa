//! The log of a single hub, in one sled tree (the layout is in `record`).
//!
//! Appended events wait in memory until the next [`Log::flush`], which writes them as runs
//! (one key per topic for the whole group) in one atomic batch and makes them durable: under
//! `sync = "batch"` the commit thread flushes each commit group, under `"none"` once per
//! `store.flush_interval`. Readers see waiting events too, so a stream that resumes never
//! misses one that was already fanned out. sled's own background flusher is off: every write
//! to the disk is one of ours, which is what an SD card's wear follows.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard};

use super::record::{
    RUN, encode_run, meta_key, origin_key, pruned_key, run_key, seq_of, split_pruned_key,
    split_run_key,
};
use super::{Chunk, Ids, Log, Pruned, ReadLimit, Selector, StoreError, StoreStats, upgrade};
use crate::config::StoreConfig;
use crate::event::Event;

pub(crate) struct SledLog {
    pub(super) db: sled::Db,
    /// The sled directory (`<data_dir>/log`).
    path: PathBuf,
    pub(super) ids: Ids,
    last_seq: u64,
    /// The highest seq of an event in the log at open.
    written: u64,
    /// Events up to this seq may be missing (a hub of a cluster that fell too far behind):
    /// a client resuming before it is told (`m gap`).
    gap: AtomicU64,
    /// No seq up to this one is given again after a restart (`m seq_reserved`, durable).
    reserved: AtomicU64,
    pub(super) retention_events: u64,
    pub(super) retention_age_ms: u64,
    pub(super) max_bytes: u64,
    state: Mutex<State>,
    /// The latest events written (or waiting to be), shared with the streams that received
    /// them live: a stream that resumes a little behind reads them from here, already
    /// encoded, instead of decoding the log once per stream.
    recent: RwLock<Recent>,
    healthy: AtomicBool,
    flushes: AtomicU64,
    /// Tests make flushes slow to observe group commit.
    #[cfg(test)]
    slow_flush_ms: AtomicU64,
}

/// What the log holds, in memory: per topic counts and prune marks (so retention knows where
/// to cut without scanning, and wildcard readers know the topics), and the events appended
/// since the last flush.
#[derive(Default)]
pub(super) struct State {
    pub topics: BTreeMap<String, Topic>,
    /// Bytes of all runs.
    pub bytes: u64,
    /// Topics appended to since the last retention pass.
    pub dirty: HashSet<String>,
    /// False until the start-up count has seen what the log held.
    pub counted: bool,
    pub pending: Vec<Arc<Event>>,
    /// A waiting publish spans several topics: its runs must be written atomically.
    pub pending_spans_topics: bool,
}

/// Seqs are reserved this many at a time (one durable write per block).
const RESERVE_BLOCK: u64 = 1 << 16;

/// The latest persisted events, oldest first: every persisted event from the first one on.
#[derive(Default)]
pub(super) struct Recent {
    pub events: VecDeque<Arc<Event>>,
    bytes: usize,
}

/// How many recent events are kept in memory, at most, and their bytes.
const RECENT_EVENTS: usize = 4096;
const RECENT_BYTES: usize = 1 << 20;

impl Recent {
    fn push(&mut self, e: &Arc<Event>) {
        self.bytes += e.size_hint();
        self.events.push_back(e.clone());
        while self.events.len() > RECENT_EVENTS || self.bytes > RECENT_BYTES {
            match self.events.pop_front() {
                Some(old) => self.bytes -= old.size_hint(),
                None => break,
            }
        }
    }
}

/// One topic's part of the log.
#[derive(Debug, Clone)]
pub(super) struct Topic {
    /// Events retained on it (above the prune mark).
    pub count: u64,
    /// Bytes of its runs.
    pub bytes: u64,
    /// Events at or below this seq are pruned (0: none).
    pub pruned: u64,
    /// The seq and time of its oldest retained event (`u64::MAX` when none or not known
    /// yet), for retention by age and by size.
    pub oldest_seq: u64,
    pub oldest_time: u64,
}

impl Default for Topic {
    fn default() -> Self {
        Topic {
            count: 0,
            bytes: 0,
            pruned: 0,
            oldest_seq: u64::MAX,
            oldest_time: u64::MAX,
        }
    }
}

impl SledLog {
    /// Opens (or creates) the log under `dir`, upgrading a format 1 directory in place.
    pub fn open(dir: &Path, cfg: &StoreConfig) -> Result<SledLog, StoreError> {
        Self::open_as(dir, cfg, None)
    }

    /// Opens the log of a hub in a cluster, whose ids carry the cluster's `incarnation`.
    /// A log of another incarnation (the hub's own from before it joined, or a cluster's
    /// whose Redis lost its data) is moved aside to `log-<incarnation>` and an empty one made:
    /// the cluster's log fills it.
    pub fn open_in_cluster(
        dir: &Path,
        cfg: &StoreConfig,
        incarnation: u32,
    ) -> Result<SledLog, StoreError> {
        let log = Self::open_as(dir, cfg, Some(incarnation))?;
        let had = log.ids.incarnation;
        if had == incarnation {
            return Ok(log);
        }
        drop(log);
        crate::store::wait_released(dir, std::time::Duration::from_secs(5));
        let aside = dir.join(format!("log-{had:08x}"));
        tracing::warn!(aside = %aside.display(),
            "the data directory holds a log of another incarnation than the cluster's: \
             moved aside, and an empty copy of the cluster's log started");
        std::fs::rename(dir.join("log"), &aside).map_err(|e| StoreError::Open {
            path: dir.display().to_string(),
            reason: format!("cannot move the old log aside: {e}"),
        })?;
        Self::open_as(dir, cfg, Some(incarnation))
    }

    /// Opens the log; a new one gets `incarnation`, or a random one.
    fn open_as(dir: &Path, cfg: &StoreConfig, new_inc: Option<u32>) -> Result<SledLog, StoreError> {
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
            .flush_every_ms(None)
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
        let ids = Ids {
            incarnation: incarnation(&db, existed, new_inc).map_err(|e| match e {
                StoreError::Open { reason, .. } => open_err(reason),
                other => other,
            })?,
        };
        match upgrade::format_of(&db)? {
            Some(upgrade::FORMAT) => {}
            Some(other) => {
                return Err(open_err(format!(
                    "the data directory has format {other}, newer than this runnel's \
                     ({}): run the runnel that wrote it, or move the directory away",
                    upgrade::FORMAT
                )));
            }
            None if upgrade::has_v1(&db)? => {
                tracing::info!("the data directory has format 1 (runnel 0.1.0): upgrading it");
                let moved = upgrade::from_v1(&db, ids)?;
                tracing::info!(moved, "data directory upgraded to format 2");
            }
            None => {
                upgrade::mark_current(&db)?;
                db.flush()?;
            }
        }
        let (topics, last_run) = topics_and_marks(&db)?;
        // The newest event the log held: still in a run, or pruned by retention since.
        let written = topics.values().map(|t| t.pruned).fold(last_run, u64::max);
        // Format 1's high-water mark of live-only events, and the reservation.
        let meta = |name| -> Result<u64, StoreError> {
            Ok(db
                .get(meta_key(name))?
                .and_then(|v| seq_of(&v))
                .unwrap_or(0))
        };
        let last_seq = last_run.max(meta("seq_hw")?).max(meta("seq_reserved")?);
        let gap = meta("gap")?;
        let log = SledLog {
            db,
            path,
            ids,
            last_seq,
            written,
            gap: AtomicU64::new(gap),
            reserved: AtomicU64::new(last_seq),
            retention_events: cfg.retention_events,
            retention_age_ms: cfg.retention_age.as_millis(),
            max_bytes: cfg.max_disk.0,
            state: Mutex::new(State {
                topics,
                ..State::default()
            }),
            recent: RwLock::new(Recent::default()),
            healthy: AtomicBool::new(true),
            flushes: AtomicU64::new(0),
            #[cfg(test)]
            slow_flush_ms: AtomicU64::new(0),
        };
        // The next block of seqs, before any is used.
        log.write_reservation(last_seq + RESERVE_BLOCK)?;
        Ok(log)
    }

    // Short, non-async critical sections only.
    pub(super) fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn recent(&self) -> RwLockReadGuard<'_, Recent> {
        self.recent.read().unwrap_or_else(|e| e.into_inner())
    }

    fn mark(&self, ok: bool) {
        self.healthy.store(ok, Ordering::Relaxed);
    }

    #[cfg(test)]
    pub(crate) fn set_slow_flush(&self, ms: u64) {
        self.slow_flush_ms.store(ms, Ordering::Relaxed);
    }

    /// Writes `m seq_reserved` and makes it durable.
    fn write_reservation(&self, upto: u64) -> Result<(), StoreError> {
        self.db
            .insert(meta_key("seq_reserved"), &upto.to_be_bytes())?;
        self.db.flush()?;
        self.reserved.store(upto, Ordering::Relaxed);
        Ok(())
    }

    /// Writes the waiting events as runs, one per topic, in one atomic batch.
    fn write_pending(&self) -> Result<(), StoreError> {
        let (events, atomic) = {
            let mut st = self.state();
            (
                std::mem::take(&mut st.pending),
                std::mem::take(&mut st.pending_spans_topics),
            )
        };
        if events.is_empty() {
            return Ok(());
        }
        let mut by_topic: BTreeMap<&str, Vec<&Event>> = BTreeMap::new();
        for e in &events {
            for t in &e.topics {
                by_topic.entry(t).or_default().push(e);
            }
        }
        let runs: Vec<(Vec<u8>, Vec<u8>)> = by_topic
            .iter()
            .map(|(topic, evs)| {
                (
                    run_key(topic, evs[evs.len() - 1].seq),
                    encode_run(topic, evs),
                )
            })
            .collect();
        let sizes: Vec<(&str, u64)> = by_topic
            .keys()
            .zip(&runs)
            .map(|(t, (_, run))| (*t, run.len() as u64))
            .collect();
        // Where events came from outside: the newest position per source, in the same
        // batch as the events, so that they are on the disk together or not at all.
        let mut marks: BTreeMap<&str, &str> = BTreeMap::new();
        for e in &events {
            if let Some(o) = &e.origin {
                marks.insert(&o.source, &o.position);
            }
        }
        // Each publish must reach the disk whole. When every one was on a single topic, its
        // events are all in one run, and plain inserts keep it whole; a publish spanning
        // topics (or carrying a mark) needs sled's atomic batch, whose manifest costs a
        // second page per flush.
        let written = if atomic || !marks.is_empty() {
            let mut batch = sled::Batch::default();
            for (k, run) in runs {
                batch.insert(k, run);
            }
            for (source, position) in marks {
                batch.insert(origin_key(source), position.as_bytes());
            }
            self.db.apply_batch(batch)
        } else {
            runs.into_iter()
                .try_for_each(|(k, run)| self.db.insert(k, run).map(drop))
        };
        if let Err(e) = written {
            self.mark(false);
            return Err(e.into());
        }
        let mut st = self.state();
        for (topic, size) in sizes {
            st.bytes += size;
            st.topics.entry(topic.to_string()).or_default().bytes += size;
        }
        Ok(())
    }
}

/// The store's incarnation: read, or made for a new log.
fn incarnation(db: &sled::Db, existed: bool, new_inc: Option<u32>) -> Result<u32, StoreError> {
    match db.get(meta_key("incarnation"))? {
        Some(v) if v.len() == 4 => Ok(u32::from_be_bytes([v[0], v[1], v[2], v[3]])),
        // sled recovers a damaged log by cutting it at the damage: a log that existed but
        // lost even its first record would silently start empty.
        _ if existed => Err(StoreError::Open {
            path: String::new(),
            reason: "the log exists but runnel's metadata is missing: it is damaged (or not \
                     runnel's). Move the data directory away to start with an empty log"
                .into(),
        }),
        _ => {
            let mut inc = new_inc.unwrap_or(0);
            while inc == 0 {
                inc = crate::random::random_u32();
            }
            db.insert(meta_key("incarnation"), &inc.to_be_bytes())?;
            db.flush()?;
            Ok(inc)
        }
    }
}

/// Every topic with runs or a prune mark, and the highest seq in any run. One seek per
/// topic: start-up does not read the events.
fn topics_and_marks(db: &sled::Db) -> Result<(BTreeMap<String, Topic>, u64), StoreError> {
    let mut topics: BTreeMap<String, Topic> = BTreeMap::new();
    let mut last = 0;
    let mut from = vec![RUN];
    while let Some(k) = db.range(from.clone()..).keys().next().transpose()? {
        let Some((topic, _)) = split_run_key(&k) else {
            break;
        };
        // Past the topic's runs: `r` + topic + `0x01`.
        let mut end = super::record::run_prefix(topic);
        end.pop();
        end.push(1);
        // Its last run is keyed by the topic's highest seq.
        if let Some(lk) = db
            .range(from.clone()..end.clone())
            .keys()
            .next_back()
            .transpose()?
        {
            last = last.max(split_run_key(&lk).map_or(0, |(_, s)| s));
        }
        topics.entry(topic.to_string()).or_default();
        from = end;
    }
    for item in db.scan_prefix(pruned_key("")) {
        let (k, v) = item?;
        if let (Some(t), Some(seq)) = (split_pruned_key(&k), seq_of(&v)) {
            topics.entry(t.to_string()).or_default().pruned = seq;
        }
    }
    Ok((topics, last))
}

impl Log for SledLog {
    fn ids(&self) -> Ids {
        self.ids
    }

    fn last_seq(&self) -> u64 {
        self.last_seq
    }

    fn reserve(&self, seq: u64) -> Result<(), StoreError> {
        if seq <= self.reserved.load(Ordering::Relaxed) {
            return Ok(());
        }
        self.flushes.fetch_add(1, Ordering::Relaxed);
        self.write_reservation(seq + RESERVE_BLOCK)
            .inspect_err(|_| self.mark(false))
    }

    fn written(&self) -> u64 {
        self.written
    }

    fn mark_gap(&self, through: u64) -> Result<(), StoreError> {
        if through <= self.gap.load(Ordering::Relaxed) {
            return Ok(());
        }
        self.db.insert(meta_key("gap"), &through.to_be_bytes())?;
        self.db.flush()?;
        self.gap.store(through, Ordering::Relaxed);
        Ok(())
    }

    fn settle(&self, last_used: u64) -> Result<(), StoreError> {
        self.write_reservation(last_used.max(self.last_seq))
    }

    fn append(&self, events: &[Arc<Event>]) -> Result<(), StoreError> {
        let mut st = self.state();
        for e in events {
            for t in &e.topics {
                let topic = st.topics.entry(t.clone()).or_default();
                if topic.count == 0 {
                    (topic.oldest_seq, topic.oldest_time) = (e.seq, e.time_ms);
                }
                topic.count += 1;
                if !st.dirty.contains(t.as_str()) {
                    st.dirty.insert(t.clone());
                }
            }
        }
        let first = events.first().and_then(|e| e.topics.first());
        let spans = events
            .iter()
            .any(|e| e.topics.len() > 1 || e.topics.first() != first);
        st.pending_spans_topics |= spans;
        st.pending.extend(events.iter().cloned());
        drop(st);
        let mut recent = self.recent.write().unwrap_or_else(|e| e.into_inner());
        for e in events {
            recent.push(e);
        }
        Ok(())
    }

    fn origin(&self, source: &str) -> Result<Option<String>, StoreError> {
        let v = self.db.get(origin_key(source))?;
        Ok(v.map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.write_pending()?;
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
        self.read_runs(sel, after, until, max)
    }

    fn pruned_since(&self, sel: &Selector, after: u64) -> Result<bool, StoreError> {
        if after < self.gap.load(Ordering::Relaxed) {
            return Ok(true);
        }
        let st = self.state();
        let cut = |t: &Topic| t.pruned > after;
        if sel.exact.iter().any(|t| st.topics.get(t).is_some_and(cut)) {
            return Ok(true);
        }
        Ok(!sel.wildcards.is_empty() && st.topics.iter().any(|(t, x)| cut(x) && sel.wants(t)))
    }

    /// Counts the events and bytes of the runs found at open (reading them), so retention
    /// knows them. Runs written since hold only later seqs and are counted as they come.
    fn count_existing(&self) -> Result<(), StoreError> {
        let marks: HashMap<String, u64> = {
            let st = self.state();
            st.topics
                .iter()
                .map(|(t, x)| (t.clone(), x.pruned))
                .collect()
        };
        // Per topic: retained events, bytes, and the oldest retained event (seq, time).
        type Found = (u64, u64, Option<(u64, u64)>);
        let mut counts: HashMap<String, Found> = HashMap::new();
        let mut total = 0;
        for item in self.db.scan_prefix([RUN]) {
            let (k, v) = item?;
            let Some((topic, last)) = split_run_key(&k) else {
                continue;
            };
            if last > self.last_seq {
                continue;
            }
            let mark = marks.get(topic).copied().unwrap_or(0);
            let times = super::record::run_times(last, &v).ok_or(StoreError::Corrupt(last))?;
            let c = counts.entry(topic.to_string()).or_default();
            let mut live = times.into_iter().filter(|(s, _)| *s > mark).peekable();
            c.2 = c.2.or(live.peek().copied());
            c.0 += live.count() as u64;
            c.1 += v.len() as u64;
            total += v.len() as u64;
        }
        let mut st = self.state();
        for (t, (n, bytes, oldest)) in counts {
            let topic = st.topics.entry(t.clone()).or_default();
            topic.count += n;
            topic.bytes += bytes;
            if let Some((seq, time)) = oldest.filter(|(s, _)| *s < topic.oldest_seq) {
                (topic.oldest_seq, topic.oldest_time) = (seq, time);
            }
            st.dirty.insert(t);
        }
        st.bytes += total;
        st.counted = true;
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
            let st = self.state();
            let events = st.topics.values().map(|t| t.count).sum();
            (events, st.bytes, st.counted)
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
