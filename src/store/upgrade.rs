//! The data directory's format, and the upgrade from format 1 (runnel 0.1.0) in place.
//!
//! Format 1 kept one key per event (`e` + seq → time, topics and the SSE frame) and one index
//! key per topic of it (`t` + topic + `0x00` + seq). Format 2 keeps runs (see `record`). The
//! upgrade moves events a thousand at a time: each step writes their runs and removes their
//! format 1 keys in one atomic batch, so a crash (`kill -9`) leaves every event in one
//! format or the other, and the next start carries on where it stopped. `m format = 2` is
//! written last. Prune marks, the incarnation and the sequence high-water mark keep their
//! meaning, so ids from before the upgrade resume exactly.

use std::collections::BTreeMap;

use super::record::{encode_run, meta_key, run_key, seq_of};
use super::{Ids, StoreError};
use crate::event::{Event, NewEvent};
use crate::sse::Parser;

/// The format this build writes.
pub(super) const FORMAT: u8 = 2;

const V1_EVENT: u8 = b'e';
const V1_INDEX: u8 = b't';
const STEP: usize = 1000;

/// What the directory holds: a fresh log, this format, or format 1 (possibly an upgrade
/// that was interrupted).
pub(super) fn format_of(db: &sled::Db) -> Result<Option<u8>, StoreError> {
    Ok(db.get(meta_key("format"))?.and_then(|v| v.first().copied()))
}

/// Marks a new log as this format.
pub(super) fn mark_current(db: &sled::Db) -> Result<(), StoreError> {
    db.insert(meta_key("format"), &[FORMAT])?;
    Ok(())
}

/// Upgrades a format 1 log in place; returns the events moved.
pub(super) fn from_v1(db: &sled::Db, ids: Ids) -> Result<u64, StoreError> {
    let mut moved = 0;
    loop {
        let n = step(db, ids)?;
        if n == 0 {
            break;
        }
        moved += n;
        tracing::info!(moved, "upgrading the data directory to format 2");
    }
    // Index entries whose record was gone, and format 1's global prune mark.
    let mut batch = sled::Batch::default();
    for k in db.scan_prefix([V1_INDEX]).keys() {
        batch.remove(k?);
    }
    batch.remove(meta_key("pruned"));
    batch.insert(meta_key("format"), &[FORMAT]);
    db.apply_batch(batch)?;
    db.flush()?;
    Ok(moved)
}

/// Moves the oldest thousand format 1 events into runs, in one atomic batch; returns how
/// many moved (0: none was left).
fn step(db: &sled::Db, ids: Ids) -> Result<u64, StoreError> {
    let records: Vec<(sled::IVec, sled::IVec)> = db
        .scan_prefix([V1_EVENT])
        .take(STEP)
        .collect::<Result<_, _>>()?;
    if records.is_empty() {
        return Ok(0);
    }
    let mut batch = sled::Batch::default();
    let mut events = Vec::with_capacity(records.len());
    // Per topic, the events still indexed on it (count retention may have taken an
    // event off one topic and not another).
    let mut runs: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (k, v) in &records {
        let seq = seq_of(&k[1..]).ok_or(StoreError::Corrupt(0))?;
        let ev = v1_event(seq, v, ids).ok_or(StoreError::Corrupt(seq))?;
        for t in &ev.topics {
            let index = v1_index_key(t, seq);
            if db.contains_key(&index)? {
                runs.entry(t.clone()).or_default().push(events.len());
                batch.remove(index);
            }
        }
        batch.remove(k.clone());
        events.push(ev);
    }
    for (topic, at) in &runs {
        let evs: Vec<&Event> = at.iter().map(|i| &events[*i]).collect();
        batch.insert(
            run_key(topic, evs[evs.len() - 1].seq),
            encode_run(topic, &evs),
        );
    }
    db.apply_batch(batch)?;
    db.flush()?;
    Ok(records.len() as u64)
}

/// True if the tree holds format 1 events or index entries.
pub(super) fn has_v1(db: &sled::Db) -> Result<bool, StoreError> {
    Ok(db.scan_prefix([V1_EVENT]).next().transpose()?.is_some()
        || db.scan_prefix([V1_INDEX]).next().transpose()?.is_some())
}

fn v1_index_key(topic: &str, seq: u64) -> Vec<u8> {
    let mut k = vec![V1_INDEX];
    k.extend_from_slice(topic.as_bytes());
    k.push(0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// A format 1 record: `1`, time (u64 LE), topic count (u16 LE), each topic as a length
/// byte and its text, then the event's SSE frame, read back with the SSE parser.
fn v1_event(seq: u64, b: &[u8], ids: Ids) -> Option<Event> {
    if b.first() != Some(&1) || b.len() < 11 {
        return None;
    }
    let time_ms = u64::from_le_bytes(b[1..9].try_into().ok()?);
    let n = u16::from_le_bytes(b[9..11].try_into().ok()?) as usize;
    let mut at = 11;
    let mut topics = Vec::with_capacity(n);
    for _ in 0..n {
        let len = *b.get(at)? as usize;
        topics.push(
            std::str::from_utf8(b.get(at + 1..at + 1 + len)?)
                .ok()?
                .to_string(),
        );
        at += 1 + len;
    }
    let parsed = Parser::default().feed(b.get(at..)?).into_iter().next()?;
    let e = NewEvent {
        topics,
        event: parsed.event,
        data: parsed.data,
        // Format 1 kept only the text: a JSON number and a string of its digits look alike.
        json: false,
        retry: parsed.retry,
        persist: true,
        idempotency_key: None,
        origin: None,
    };
    Some(Event::new(seq, ids.format(seq), time_ms, e))
}
