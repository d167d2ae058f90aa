//! Reading the sled log for a resuming stream: each topic's runs from the client's id on
//! (wildcards: every known topic they match), and the events not flushed yet, merged in seq
//! order.

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
