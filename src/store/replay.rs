//! Reading the sled log for a resuming stream: exact topics through their index, wildcards
//! by a bounded scan of the log.

use super::record::{Record, event_key, index_key, meta_key, pruned_key, seq_of};
use super::{Chunk, ReadLimit, Selector, SledLog, StoreError};

impl SledLog {
    /// Exact topics: merge each topic's index range.
    pub(super) fn read_indexed(
        &self,
        sel: &Selector,
        after: u64,
        until: u64,
        max: ReadLimit,
    ) -> Result<Chunk, StoreError> {
        let db = &self.db;
        let mut seqs = Vec::new();
        // A topic that yields fewer than `max.events` keys has nothing more up to `until`.
        let mut exhausted = true;
        for t in &sel.exact {
            let range = db.range(index_key(t, after + 1)..=index_key(t, until));
            let mut n = 0;
            for k in range.keys().take(max.events) {
                let k = k?;
                if let Some(seq) = k.len().checked_sub(8).and_then(|at| seq_of(&k[at..])) {
                    seqs.push(seq);
                }
                n += 1;
            }
            exhausted &= n < max.events;
        }
        seqs.sort_unstable();
        seqs.dedup();
        // Only the first `max.events` merged seqs are certainly complete across topics.
        let truncated = seqs.len() > max.events;
        seqs.truncate(max.events);
        let mut chunk = Chunk {
            next_after: after,
            ..Chunk::default()
        };
        let mut bytes = 0;
        for seq in seqs {
            if bytes >= max.bytes {
                return Ok(chunk);
            }
            // An index entry without its event means retention removed the event meanwhile.
            if let Some(v) = db.get(event_key(seq))? {
                let ev = Record::event(seq, v).ok_or(StoreError::Corrupt(seq))?;
                bytes += ev.sse().len();
                chunk.events.push(ev);
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
    pub(super) fn read_scan(
        &self,
        sel: &Selector,
        after: u64,
        until: u64,
        max: ReadLimit,
    ) -> Result<Chunk, StoreError> {
        const MAX_SCANNED: usize = 4096;
        let mut chunk = Chunk {
            next_after: after,
            ..Chunk::default()
        };
        let mut bytes = 0;
        let range = self.db.range(event_key(after + 1)..=event_key(until));
        for (scanned, item) in range.enumerate() {
            if scanned >= MAX_SCANNED || chunk.events.len() >= max.events || bytes >= max.bytes {
                return Ok(chunk);
            }
            let (k, v) = item?;
            let seq = seq_of(&k[1..]).unwrap_or(0);
            let rec = Record::decode(&v).ok_or(StoreError::Corrupt(seq))?;
            if rec.topics.iter().any(|t| sel.wants(t)) {
                let ev = Record::event(seq, v.clone()).ok_or(StoreError::Corrupt(seq))?;
                bytes += ev.sse().len();
                chunk.events.push(ev);
            }
            chunk.next_after = seq;
        }
        chunk.done = true;
        chunk.next_after = until;
        Ok(chunk)
    }

    /// The prune marks: per topic for exact topics, the global one for wildcards.
    pub(super) fn pruned_after(&self, sel: &Selector, after: u64) -> Result<bool, StoreError> {
        let db = &self.db;
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
}
