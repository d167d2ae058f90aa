//! Retention (SPEC §7): per topic by count, then by age, then by the log's total size.
//! Deletes go in batches of at most 512 events, so publishes are never held up for long.

use std::collections::HashMap;

use super::record::{
    EVENT, Record, event_key, index_key, index_prefix, meta_key, pruned_key, seq_of,
};
use super::{Pruned, SledLog, StoreError};

impl SledLog {
    /// One retention pass: count per topic, then age, then total size. Deletes in small
    /// batches, so publishes are never held up for long.
    pub(super) fn retain(&self, now_ms: u64) -> Result<Pruned, StoreError> {
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
                    (n > self.retention_events).then(|| (t, n - self.retention_events))
                })
                .collect()
        };
        for (t, excess) in over {
            pruned.by_count += self.prune_topic(&t, excess)?;
        }
        let cutoff = now_ms.saturating_sub(self.retention_age_ms);
        pruned.by_age += self.prune_oldest(|rec, _| rec.time_ms < cutoff)?;
        let max = self.max_bytes;
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
        let db = &self.db;
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
        let db = &self.db;
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
mod tests {
    use super::*;
    use crate::config::{ByteSize, Dur, StoreConfig};
    use crate::store::testing::{append_all, event};
    use crate::store::{Log, ReadLimit, Selector, wait_released};

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
        for seq in 1..=6000u64 {
            let topics: &[&str] = match seq % 3 {
                0 => &["a"],
                1 => &["b"],
                _ => &["a", "c"],
            };
            append_all(&store, &[event(&store, seq, topics, &data)], now);
        }
        let pruned = store.enforce_retention(now).unwrap();
        assert!(pruned.by_count > 0 && pruned.by_size > 0, "{pruned:?}");
        let live = store.stats();
        let counts = store.acct().per_topic.clone();
        assert!(live.bytes <= 1 << 20);
        drop(store);
        assert!(wait_released(dir.path(), std::time::Duration::from_secs(5)));
        let reopened = SledLog::open(dir.path(), &cfg).unwrap();
        reopened.count_existing().unwrap();
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
        let old: Vec<_> = (1..=3).map(|s| event(&store, s, &["a"], "old")).collect();
        append_all(&store, &old, t0);
        append_all(&store, &[event(&store, 4, &["a"], "new")], t0 + 1_800_000);
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
        let max = ReadLimit {
            events: 10,
            bytes: 1 << 20,
        };
        let left = store.read(&sel, 0, 4, max).unwrap();
        let seqs: Vec<u64> = left.events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [4]);
        assert_eq!(at(t0 + 1_800_000 + 3_600_001), 1);
    }
}
