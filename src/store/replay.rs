//! Reading the sled log for a resuming stream: from the recent events in memory when they
//! reach back far enough (the usual case: clients that dropped off a moment ago), else each
//! topic's runs from the client's id on (wildcards: every known topic they match) and the
//! events not flushed yet, merged in seq order.

use std::collections::HashMap;
use std::sync::Arc;

use super::record::{decode_run, run_key, split_run_key};
use super::{Chunk, ReadLimit, Selector, SledLog, StoreError};
use crate::event::Event;

impl SledLog {
    pub(super) fn read_runs(
        &self,
        sel: &Selector,
        after: u64,
        until: u64,
        max: ReadLimit,
    ) -> Result<Chunk, StoreError> {
        // The topics to read with their prune marks, and the waiting events of the range.
        let (topics, pending) = {
            let st = self.state();
            let mark = |t: &str| st.topics.get(t).map_or(0, |x| x.pruned);
            let mut topics: Vec<(String, u64)> =
                sel.exact.iter().map(|t| (t.clone(), mark(t))).collect();
            if !sel.wildcards.is_empty() {
                for (t, x) in &st.topics {
                    if !sel.exact.contains(t) && sel.wants(t) {
                        topics.push((t.clone(), x.pruned));
                    }
                }
            }
            let pending: Vec<Arc<Event>> = st
                .pending
                .iter()
                .filter(|e| e.seq > after && e.seq <= until)
                .cloned()
                .collect();
            (topics, pending)
        };
        if let Some(chunk) = self.read_recent(&topics, after, until, max) {
            return Ok(chunk);
        }
        let mut events: Vec<Arc<Event>> = Vec::new();
        // A topic that yields fewer than `max.events` events has nothing more up to `until`.
        let mut exhausted = true;
        for (topic, mark) in &topics {
            let from = after.max(*mark);
            let n = self.read_topic(topic, from, until, max.events, &mut events)?;
            exhausted &= n < max.events;
        }
        events.extend(pending.into_iter().filter(|e| {
            e.topics
                .iter()
                .any(|t| topics.iter().any(|(w, mark)| w == t && e.seq > *mark))
        }));
        events.sort_unstable_by_key(|e| e.seq);
        events.dedup_by_key(|e| e.seq);
        // Only the first `max.events` merged events are certainly complete across topics:
        // every topic that stopped early read at least that many.
        let truncated = events.len() > max.events;
        events.truncate(max.events);
        let mut chunk = Chunk {
            next_after: after,
            ..Chunk::default()
        };
        let mut bytes = 0;
        for e in events {
            if bytes >= max.bytes {
                return Ok(chunk);
            }
            bytes += e.size_hint();
            chunk.next_after = e.seq;
            chunk.events.push(e);
        }
        if exhausted && !truncated {
            chunk.done = true;
            chunk.next_after = until;
        }
        Ok(chunk)
    }

    /// The chunk from the recent events, if they hold every persisted event after `after`.
    fn read_recent(
        &self,
        topics: &[(String, u64)],
        after: u64,
        until: u64,
        max: ReadLimit,
    ) -> Option<Chunk> {
        let recent = self.recent();
        if recent.events.front().is_none_or(|e| e.seq > after + 1) {
            return None;
        }
        let marks: HashMap<&str, u64> = topics.iter().map(|(t, m)| (t.as_str(), *m)).collect();
        let wanted = |e: &Event| {
            e.topics
                .iter()
                .any(|t| marks.get(t.as_str()).is_some_and(|m| e.seq > *m))
        };
        let from = recent.events.partition_point(|e| e.seq <= after);
        let mut chunk = Chunk {
            next_after: after,
            ..Chunk::default()
        };
        let mut bytes = 0;
        for e in recent.events.range(from..) {
            if e.seq > until {
                break;
            }
            if chunk.events.len() >= max.events || bytes >= max.bytes {
                return Some(chunk);
            }
            if wanted(e) {
                bytes += e.size_hint();
                chunk.events.push(e.clone());
            }
            chunk.next_after = e.seq;
        }
        chunk.done = true;
        chunk.next_after = until;
        Some(chunk)
    }

    /// Appends the events of `topic` after `after` up to `until` (whole runs, so at least
    /// `want` events if there are that many); returns how many.
    fn read_topic(
        &self,
        topic: &str,
        after: u64,
        until: u64,
        want: usize,
        out: &mut Vec<Arc<Event>>,
    ) -> Result<usize, StoreError> {
        let mut n = 0;
        // Runs are keyed by their last seq: the first that ends after `after` is where the
        // topic's events after it start.
        // A topic's runs hold disjoint, increasing seqs: once one reaches `until`, the rest
        // are later.
        for item in self
            .db
            .range(run_key(topic, after + 1)..=run_key(topic, u64::MAX))
        {
            let (k, v) = item?;
            let last = split_run_key(&k).map_or(0, |(_, s)| s);
            let evs = decode_run(topic, last, &v, self.ids, |s| s > after && s <= until)
                .ok_or(StoreError::Corrupt(last))?;
            n += evs.len();
            out.extend(evs.into_iter().map(Arc::new));
            if n >= want || last >= until {
                break;
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StoreConfig;
    use crate::store::testing::{append_all, event};
    use crate::store::{Log, wait_released};

    fn read_all(log: &SledLog, topics: &[&str], after: u64) -> Vec<u64> {
        let topics: Vec<String> = topics.iter().map(|t| (*t).to_string()).collect();
        let sel = Selector::new(&topics, None, false);
        let (mut out, mut at) = (Vec::new(), after);
        loop {
            let max = ReadLimit {
                events: 7,
                bytes: 1 << 20,
            };
            let chunk = log.read(&sel, at, 300, max).unwrap();
            out.extend(chunk.events.iter().map(|e| e.seq));
            at = chunk.next_after;
            if chunk.done {
                return out;
            }
        }
    }

    /// Reads served from the recent events in memory and from the runs on disk agree, in
    /// small chunks, for exact topics and patterns.
    #[test]
    fn memory_and_disk_reads_agree() {
        let dir = tempfile::tempdir().unwrap();
        let log = SledLog::open(dir.path(), &StoreConfig::default()).unwrap();
        let evs: Vec<_> = (1..=300)
            .map(|s| {
                let topics: &[&str] = match s % 4 {
                    0 => &["a"],
                    1 => &["b/x"],
                    2 => &["a", "b/y"],
                    _ => &["c"],
                };
                event(&log, s, topics, "d", 1)
            })
            .collect();
        append_all(&log, &evs);
        let cases: [(&[&str], u64); 4] =
            [(&["a"], 0), (&["b/*"], 17), (&["a", "c"], 250), (&["*"], 0)];
        let from_memory: Vec<Vec<u64>> = cases.iter().map(|(t, a)| read_all(&log, t, *a)).collect();
        assert_eq!(from_memory[3].len(), 300);
        assert_eq!(
            from_memory[0],
            (1..=300)
                .filter(|s| s % 4 == 0 || s % 4 == 2)
                .collect::<Vec<_>>()
        );
        drop(log);
        assert!(wait_released(dir.path(), std::time::Duration::from_secs(5)));
        let log = SledLog::open(dir.path(), &StoreConfig::default()).unwrap();
        assert!(
            log.recent().events.is_empty(),
            "a new process reads the disk"
        );
        for ((t, a), mem) in cases.iter().zip(&from_memory) {
            assert_eq!(&read_all(&log, t, *a), mem, "{t:?} after {a}");
        }
    }
}
