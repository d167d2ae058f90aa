//! Retention (SPEC §7), per topic by count, then by age, then by the log's total size.
//!
//! Pruning moves a topic's prune mark: readers skip events at or below it, and a client
//! behind it is told (`reset`, `pruned`). Runs whose events are all at or below the mark
//! are deleted whole; one that straddles it stays until the mark passes it.
//!
//! Small runs (one event each, under `sync = "batch"` at a low rate) are not merged into
//! larger ones: sled charges a rewrite and the deletes far more than it saves (measured in
//! docs/BENCHMARKS.md), and on a log of any size the data directory stays small anyway.

use super::record::{pruned_key, run_key, run_times, split_run_key};
use super::{Pruned, SledLog, StoreError};

impl SledLog {
    /// One retention pass.
    pub(super) fn retain(&self, now_ms: u64) -> Result<Pruned, StoreError> {
        let mut pruned = Pruned::default();
        let over = {
            let mut st = self.state();
            if !st.counted {
                return Ok(pruned);
            }
            let dirty = std::mem::take(&mut st.dirty);
            let over: Vec<(String, u64)> = dirty
                .iter()
                .filter_map(|t| {
                    let n = st.topics.get(t).map_or(0, |x| x.count);
                    (n > self.retention_events).then(|| (t.clone(), n - self.retention_events))
                })
                .collect();
            over
        };
        for (t, excess) in over {
            let cut = self.prune_count(&t, excess)?;
            pruned.by_count += cut;
            if cut < excess {
                // Some of its events are not written yet (`sync = "none"`): next time.
                self.state().dirty.insert(t);
            }
        }
        pruned.by_age += self.prune_age(now_ms.saturating_sub(self.retention_age_ms))?;
        if self.state().bytes > self.max_bytes {
            // Cut to 90 % so a log at its limit is not pruned again on every publish.
            pruned.by_size += self.prune_size(self.max_bytes / 10 * 9)?;
        }
        Ok(pruned)
    }

    /// Removes the `n` oldest retained events of a topic from it.
    fn prune_count(&self, topic: &str, n: u64) -> Result<u64, StoreError> {
        let mark = self.mark_of(topic);
        let mut seen = 0;
        for item in self.runs_after(topic, mark) {
            let (last, v) = item?;
            let times = run_times(last, &v).ok_or(StoreError::Corrupt(last))?;
            for (seq, _) in times.into_iter().filter(|(s, _)| *s > mark) {
                seen += 1;
                if seen == n {
                    return self.cut(topic, seq);
                }
            }
        }
        Ok(0)
    }

    /// Removes events published before `cutoff` (Unix ms) from every topic.
    fn prune_age(&self, cutoff: u64) -> Result<u64, StoreError> {
        let old: Vec<String> = {
            let st = self.state();
            st.topics
                .iter()
                .filter(|(_, x)| x.count > 0 && x.oldest_time < cutoff)
                .map(|(t, _)| t.clone())
                .collect()
        };
        let mut removed = 0;
        for topic in old {
            let mark = self.mark_of(&topic);
            let mut cut_at = None;
            'runs: for item in self.runs_after(&topic, mark) {
                let (last, v) = item?;
                for (seq, time) in run_times(last, &v).ok_or(StoreError::Corrupt(last))? {
                    if seq <= mark {
                        continue;
                    }
                    if time >= cutoff {
                        break 'runs;
                    }
                    cut_at = Some(seq);
                }
            }
            if let Some(seq) = cut_at {
                removed += self.cut(&topic, seq)?;
            }
        }
        Ok(removed)
    }

    /// Removes the oldest runs of the whole log until it holds at most `target` bytes.
    fn prune_size(&self, target: u64) -> Result<u64, StoreError> {
        let mut removed = 0;
        loop {
            let oldest = {
                let st = self.state();
                if st.bytes <= target {
                    return Ok(removed);
                }
                st.topics
                    .iter()
                    .filter(|(_, x)| x.count > 0)
                    .min_by_key(|(_, x)| x.oldest_seq)
                    .map(|(t, _)| t.clone())
            };
            let Some(topic) = oldest else {
                return Ok(removed);
            };
            let mark = self.mark_of(&topic);
            let first = self.runs_after(&topic, mark).next().transpose()?;
            let Some((last, _)) = first else {
                // Counted but no run: the count is stale; forget it.
                self.state().topics.entry(topic).or_default().count = 0;
                continue;
            };
            removed += self.cut(&topic, last)?;
        }
    }

    /// Moves a topic's prune mark to `mark`: deletes the runs wholly at or below it, and
    /// returns how many retained events went.
    fn cut(&self, topic: &str, mark: u64) -> Result<u64, StoreError> {
        let old = self.mark_of(topic);
        if mark <= old {
            return Ok(0);
        }
        let (mut removed, mut freed) = (0u64, 0u64);
        let mut dead = Vec::new();
        for item in self.runs_after(topic, old) {
            let (last, v) = item?;
            let times = run_times(last, &v).ok_or(StoreError::Corrupt(last))?;
            removed += times.iter().filter(|(s, _)| *s > old && *s <= mark).count() as u64;
            if last <= mark {
                dead.push(run_key(topic, last));
                freed += v.len() as u64;
            }
            if last >= mark {
                break;
            }
        }
        // The mark first, then the runs it covers: a crash between leaves pruned runs that
        // the next pass removes, never a gap that a reader behind the mark is not told of.
        // (Plain writes: sled's atomic batch would cost a page of its own.)
        self.db.insert(pruned_key(topic), &mark.to_be_bytes()[..])?;
        for k in dead {
            self.db.remove(k)?;
        }
        let next = self.first_retained(topic, mark)?;
        let mut st = self.state();
        st.bytes = st.bytes.saturating_sub(freed);
        let t = st.topics.entry(topic.to_string()).or_default();
        t.pruned = mark;
        t.count = t.count.saturating_sub(removed);
        t.bytes = t.bytes.saturating_sub(freed);
        (t.oldest_seq, t.oldest_time) = next.unwrap_or((u64::MAX, u64::MAX));
        Ok(removed)
    }

    /// The topic's prune mark.
    fn mark_of(&self, topic: &str) -> u64 {
        self.state().topics.get(topic).map_or(0, |t| t.pruned)
    }

    /// The topic's runs that hold events after `seq`, oldest first, as (last seq, run).
    fn runs_after(
        &self,
        topic: &str,
        seq: u64,
    ) -> impl Iterator<Item = Result<(u64, sled::IVec), StoreError>> + use<> {
        self.db
            .range(run_key(topic, seq.saturating_add(1))..=run_key(topic, u64::MAX))
            .map(|item| {
                let (k, v) = item?;
                let last = split_run_key(&k).map_or(0, |(_, s)| s);
                Ok((last, v))
            })
    }

    /// The seq and time of the topic's oldest event after `mark`, if any.
    pub(super) fn first_retained(
        &self,
        topic: &str,
        mark: u64,
    ) -> Result<Option<(u64, u64)>, StoreError> {
        for item in self.runs_after(topic, mark) {
            let (last, v) = item?;
            let times = run_times(last, &v).ok_or(StoreError::Corrupt(last))?;
            if let Some(first) = times.into_iter().find(|(s, _)| *s > mark) {
                return Ok(Some(first));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ByteSize, Dur, StoreConfig};
    use crate::store::testing::{append_all, event};
    use crate::store::{Log, ReadLimit, Selector, wait_released};

    const ALL: ReadLimit = ReadLimit {
        events: 100_000,
        bytes: 1 << 30,
    };

    fn seqs(log: &SledLog, topics: &[&str], after: u64) -> Vec<u64> {
        let topics: Vec<String> = topics.iter().map(|t| (*t).to_string()).collect();
        let sel = Selector::new(&topics, None, false);
        let chunk = log.read(&sel, after, u64::MAX - 1, ALL).unwrap();
        chunk.events.iter().map(|e| e.seq).collect()
    }

    fn runs_of(log: &SledLog, topic: &str) -> usize {
        log.runs_after(topic, 0).count()
    }

    /// A log that retention emptied still knows, after a restart, the newest event it held:
    /// a hub of a cluster reads the shared log on from there, not from the start.
    #[test]
    fn the_newest_event_held_is_known_after_retention_took_all() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = StoreConfig {
            retention_age: Dur(std::time::Duration::from_secs(60)),
            ..StoreConfig::default()
        };
        let store = SledLog::open(dir.path(), &cfg).unwrap();
        store.count_existing().unwrap();
        let then = crate::time::unix_ms() - 3_600_000;
        let events: Vec<_> = (1..=5)
            .map(|s| event(&store, s, &["a"], "x", then))
            .collect();
        append_all(&store, &events);
        let pruned = store.enforce_retention(crate::time::unix_ms()).unwrap();
        assert_eq!(pruned.by_age, 5);
        assert!(seqs(&store, &["a"], 0).is_empty());
        drop(store);
        assert!(wait_released(dir.path(), std::time::Duration::from_secs(5)));
        let store = SledLog::open(dir.path(), &cfg).unwrap();
        assert_eq!(store.written(), 5);
    }

    /// After retention (by count and by size), the in-memory counts equal a fresh count of
    /// what the log holds.
    #[test]
    fn accounting_matches_the_log_after_pruning() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = StoreConfig {
            retention_events: 1500,
            max_disk: ByteSize(1 << 20),
            ..StoreConfig::default()
        };
        let store = SledLog::open(dir.path(), &cfg).unwrap();
        store.count_existing().unwrap();
        let data = "z".repeat(300);
        let now = crate::time::unix_ms();
        let events: Vec<_> = (1..=6000u64)
            .map(|seq| {
                let topics: &[&str] = match seq % 3 {
                    0 => &["a"],
                    1 => &["b"],
                    _ => &["a", "c"],
                };
                event(&store, seq, topics, &data, now)
            })
            .collect();
        // Commit groups of 10.
        for group in events.chunks(10) {
            store.reserve(group[9].seq).unwrap();
            store.append(group).unwrap();
            store.flush().unwrap();
        }
        let pruned = store.enforce_retention(now).unwrap();
        assert!(pruned.by_count > 0 && pruned.by_size > 0, "{pruned:?}");
        let live = store.stats();
        let counts: Vec<u64> = ["a", "b", "c"]
            .iter()
            .map(|t| store.state().topics[*t].count)
            .collect();
        assert!(live.bytes <= 1 << 20);
        for (t, n) in ["a", "b", "c"].iter().zip(&counts) {
            assert_eq!(seqs(&store, &[t], 0).len() as u64, *n, "topic {t}");
            assert!(*n <= 1500);
        }
        drop(store);
        assert!(wait_released(dir.path(), std::time::Duration::from_secs(5)));
        let reopened = SledLog::open(dir.path(), &cfg).unwrap();
        reopened.count_existing().unwrap();
        assert_eq!(reopened.stats().bytes, live.bytes);
        for (t, n) in ["a", "b", "c"].iter().zip(&counts) {
            assert_eq!(reopened.state().topics[*t].count, *n, "topic {t}");
        }
    }

    /// Retention by age, with the clock handed in: nothing goes before `retention_age`,
    /// everything older goes after, and a reader behind it is told (`pruned`).
    #[test]
    fn events_older_than_retention_age_go() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = StoreConfig {
            retention_age: Dur::secs(3600),
            ..StoreConfig::default()
        };
        let store = SledLog::open(dir.path(), &cfg).unwrap();
        store.count_existing().unwrap();
        let t0 = 1_000_000_000_000;
        let old: Vec<_> = (1..=3)
            .map(|s| event(&store, s, &["a"], "old", t0))
            .collect();
        append_all(&store, &old);
        append_all(&store, &[event(&store, 4, &["a"], "new", t0 + 1_800_000)]);
        let sel = Selector::new(&["a".into()], None, false);
        let at = |now| store.enforce_retention(now).unwrap().by_age;
        assert_eq!(at(t0 + 3_599_999), 0, "not old enough yet");
        assert!(!store.pruned_since(&sel, 0).unwrap());
        assert_eq!(at(t0 + 3_600_001), 3, "the three old ones");
        assert!(
            store.pruned_since(&sel, 2).unwrap(),
            "a reader at 2 missed 3"
        );
        assert!(!store.pruned_since(&sel, 3).unwrap());
        assert_eq!(seqs(&store, &["a"], 0), [4]);
        assert_eq!(at(t0 + 1_800_000 + 3_600_001), 1);
        assert_eq!(seqs(&store, &["a"], 0), Vec::<u64>::new());
    }

    /// Count retention is exact per topic even inside a run, and whole runs go once all
    /// their events are pruned.
    #[test]
    fn count_retention_is_exact_inside_runs() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = StoreConfig {
            retention_events: 5,
            ..StoreConfig::default()
        };
        let store = SledLog::open(dir.path(), &cfg).unwrap();
        store.count_existing().unwrap();
        let evs: Vec<_> = (1..=8).map(|s| event(&store, s, &["t"], "x", 1)).collect();
        store.reserve(8).unwrap();
        store.append(&evs[..4]).unwrap();
        store.flush().unwrap();
        store.append(&evs[4..]).unwrap();
        store.flush().unwrap();
        assert_eq!(store.enforce_retention(2).unwrap().by_count, 3);
        assert_eq!(seqs(&store, &["t"], 0), [4, 5, 6, 7, 8]);
        assert_eq!(runs_of(&store, "t"), 2, "the first run still holds event 4");
        store.append(&[event(&store, 9, &["t"], "x", 1)]).unwrap();
        store.flush().unwrap();
        assert_eq!(store.enforce_retention(2).unwrap().by_count, 1);
        assert_eq!(seqs(&store, &["t"], 0), [5, 6, 7, 8, 9]);
        assert_eq!(runs_of(&store, "t"), 2, "the first run went whole");
    }
}
