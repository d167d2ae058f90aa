//! How the sled log lays out its keys and records (data directory format 2).
//!
//! Keys (one tree, so a write group is one atomic `apply_batch`):
//! - `r` + topic + `0x00` + last seq (u64 big-endian) → a *run*: the events of one topic
//!   written together (a commit group, an interval under `sync = "none"`, or runs merged by
//!   compaction), in seq order. An event on several topics is in a run of each. Replaying a
//!   topic reads only its runs after the client's id, so the cost follows what is replayed;
//!   retention removes whole runs, one key for many events. Runs are keyed by their last
//!   seq so that compaction can replace runs by one under the last one's key: a reader
//!   walking a topic's runs forward then meets the merged run after whatever it read, and
//!   never steps over merged events.
//! - `p` + topic → seq: the newest event retention removed from that topic. Events at or
//!   below it are gone for readers even while their run stays (a run is deleted once all its
//!   events are), and a client whose id is older learns of the gap (`reset`, `pruned`).
//! - `m` + name → metadata: `incarnation`, `format`, `seq_hw` (the sequence high-water mark).
//! - `o` + source → the position in an outside source (a Redis Stream's entry id) of the
//!   newest event taken from it, written in the same batch as that event.
//!
//! A run: `version (2)`, then varints `count`, `last seq - first seq`, `first time` (Unix
//! ms), `last time - first time`; then each event: varints `seq - first seq`,
//! `time - first time`, a flags byte (1: an event type, 2: a retry, 4: several topics, 8:
//! the data is a JSON value other than a string), the
//! event type and the topics as length-prefixed text when present, the retry, and the data
//! (length-prefixed). Ids are not stored: they follow from the seq.

use crate::event::{Event, NewEvent};
use crate::store::Ids;

pub(super) const RUN: u8 = b'r';
const PRUNED: u8 = b'p';
const META: u8 = b'm';
const ORIGIN: u8 = b'o';
pub(super) const RUN_VERSION: u8 = 2;

const HAS_EVENT: u8 = 1;
const HAS_RETRY: u8 = 2;
const SEVERAL_TOPICS: u8 = 4;
const JSON_DATA: u8 = 8;

/// `r` + topic + `0x00`: where a topic's runs start.
pub(super) fn run_prefix(topic: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(topic.len() + 10);
    k.push(RUN);
    k.extend_from_slice(topic.as_bytes());
    k.push(0);
    k
}

pub(super) fn run_key(topic: &str, last_seq: u64) -> Vec<u8> {
    let mut k = run_prefix(topic);
    k.extend_from_slice(&last_seq.to_be_bytes());
    k
}

/// `r` + topic + `0x00` + seq → (topic, seq).
pub(super) fn split_run_key(k: &[u8]) -> Option<(&str, u64)> {
    let at = k.len().checked_sub(9)?;
    if k.first() != Some(&RUN) || k.get(at) != Some(&0) {
        return None;
    }
    Some((std::str::from_utf8(&k[1..at]).ok()?, seq_of(&k[at + 1..])?))
}

pub(super) fn pruned_key(topic: &str) -> Vec<u8> {
    let mut k = vec![PRUNED];
    k.extend_from_slice(topic.as_bytes());
    k
}

/// `p` + topic → topic.
pub(super) fn split_pruned_key(k: &[u8]) -> Option<&str> {
    std::str::from_utf8(k.strip_prefix(&[PRUNED])?).ok()
}

pub(super) fn meta_key(name: &str) -> Vec<u8> {
    let mut k = vec![META];
    k.extend_from_slice(name.as_bytes());
    k
}

pub(super) fn origin_key(source: &str) -> Vec<u8> {
    let mut k = vec![ORIGIN];
    k.extend_from_slice(source.as_bytes());
    k
}

pub(super) fn seq_of(b: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(b.try_into().ok()?))
}

/// Encodes a run of events (in seq order, at least one) for `topic`.
pub(super) fn encode_run(topic: &str, events: &[&Event]) -> Vec<u8> {
    let (first, last) = (events[0], events[events.len() - 1]);
    let mut v = Vec::with_capacity(16 + events.iter().map(|e| e.data.len() + 8).sum::<usize>());
    v.push(RUN_VERSION);
    put(&mut v, events.len() as u64);
    put(&mut v, last.seq - first.seq);
    put(&mut v, first.time_ms);
    put(&mut v, last.time_ms.saturating_sub(first.time_ms));
    for e in events {
        put(&mut v, e.seq - first.seq);
        put(&mut v, e.time_ms.saturating_sub(first.time_ms));
        let several = !(e.topics.len() == 1 && e.topics[0] == topic);
        let flags = u8::from(e.event.is_some()) * HAS_EVENT
            + u8::from(e.retry.is_some()) * HAS_RETRY
            + u8::from(several) * SEVERAL_TOPICS
            + u8::from(e.json) * JSON_DATA;
        v.push(flags);
        if let Some(t) = &e.event {
            put_text(&mut v, t);
        }
        if several {
            put(&mut v, e.topics.len() as u64);
            for t in &e.topics {
                put_text(&mut v, t);
            }
        }
        if let Some(r) = e.retry {
            put(&mut v, r);
        }
        put_text(&mut v, &e.data);
    }
    v
}

/// Decodes a run's events (the last seq from its key), keeping those `keep(seq)` accepts;
/// `None` for a damaged run.
pub(super) fn decode_run(
    topic: &str,
    last_seq: u64,
    b: &[u8],
    ids: Ids,
    mut keep: impl FnMut(u64) -> bool,
) -> Option<Vec<Event>> {
    let mut r = Reader(b.strip_prefix(&[RUN_VERSION])?);
    let count = r.varint()?;
    let first_seq = last_seq.checked_sub(r.varint()?)?;
    let first_time = r.varint()?;
    r.varint()?;
    let mut out = Vec::new();
    for _ in 0..count {
        let seq = first_seq.checked_add(r.varint()?)?;
        let time_ms = first_time.checked_add(r.varint()?)?;
        let flags = r.byte()?;
        let event = if flags & HAS_EVENT != 0 {
            Some(r.text()?)
        } else {
            None
        };
        let topics = if flags & SEVERAL_TOPICS != 0 {
            let n = r.varint()?;
            (0..n).map(|_| r.text()).collect::<Option<Vec<_>>>()?
        } else {
            vec![topic.to_string()]
        };
        let retry = if flags & HAS_RETRY != 0 {
            Some(r.varint()?)
        } else {
            None
        };
        let data = r.text()?;
        if keep(seq) {
            let e = NewEvent {
                topics,
                event,
                data,
                json: flags & JSON_DATA != 0,
                retry,
                persist: true,
                idempotency_key: None,
                origin: None,
            };
            out.push(Event::new(seq, ids.format(seq), time_ms, e));
        }
    }
    Some(out)
}

/// The seqs and times of a run's events (the last seq from its key), for retention (no
/// text is copied).
pub(super) fn run_times(last_seq: u64, b: &[u8]) -> Option<Vec<(u64, u64)>> {
    let mut r = Reader(b.strip_prefix(&[RUN_VERSION])?);
    let count = r.varint()?;
    let first_seq = last_seq.checked_sub(r.varint()?)?;
    let first_time = r.varint()?;
    r.varint()?;
    let mut out = Vec::with_capacity(usize::try_from(count).ok()?.min(4096));
    for _ in 0..count {
        let seq = first_seq.checked_add(r.varint()?)?;
        let time = first_time.checked_add(r.varint()?)?;
        let flags = r.byte()?;
        if flags & HAS_EVENT != 0 {
            r.skip_text()?;
        }
        if flags & SEVERAL_TOPICS != 0 {
            for _ in 0..r.varint()? {
                r.skip_text()?;
            }
        }
        if flags & HAS_RETRY != 0 {
            r.varint()?;
        }
        r.skip_text()?;
        out.push((seq, time));
    }
    Some(out)
}

/// LEB128: seven bits a byte, low bits first.
fn put(v: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        v.push((n as u8) | 0x80);
        n >>= 7;
    }
    v.push(n as u8);
}

fn put_text(v: &mut Vec<u8>, s: &str) {
    put(v, s.len() as u64);
    v.extend_from_slice(s.as_bytes());
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(*b)
    }

    fn varint(&mut self) -> Option<u64> {
        let mut n = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            n |= u64::from(b & 0x7f).checked_shl(shift)?;
            if b & 0x80 == 0 {
                return Some(n);
            }
        }
        None
    }

    fn bytes(&mut self) -> Option<&[u8]> {
        let len = usize::try_from(self.varint()?).ok()?;
        if len > self.0.len() {
            return None;
        }
        let (b, rest) = self.0.split_at(len);
        self.0 = rest;
        Some(b)
    }

    fn text(&mut self) -> Option<String> {
        self.bytes()
            .and_then(|b| std::str::from_utf8(b).ok())
            .map(str::to_string)
    }

    fn skip_text(&mut self) -> Option<()> {
        self.bytes().map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(seq: u64, topics: &[&str], event: Option<&str>, data: &str, time: u64) -> Event {
        let ids = Ids { incarnation: 7 };
        let e = NewEvent {
            topics: topics.iter().map(|t| (*t).to_string()).collect(),
            event: event.map(Into::into),
            data: data.into(),
            json: data.starts_with('{'),
            retry: seq.is_multiple_of(2).then_some(250),
            persist: true,
            idempotency_key: None,
            origin: None,
        };
        Event::new(seq, ids.format(seq), time, e)
    }

    #[test]
    fn runs_roundtrip() {
        let a = ev(10, &["t"], None, "one", 1000);
        let b = ev(12, &["t", "u/v"], Some("up"), "{\"two\":2}", 1500);
        let c = ev(300, &["t"], Some("x"), "", 99_000);
        let run = encode_run("t", &[&a, &b, &c]);
        let got = decode_run("t", 300, &run, Ids { incarnation: 7 }, |_| true).unwrap();
        for (g, w) in got.iter().zip([&a, &b, &c]) {
            assert_eq!(
                (
                    g.seq, &g.id, &g.topics, &g.event, &g.data, g.retry, g.time_ms
                ),
                (
                    w.seq, &w.id, &w.topics, &w.event, &w.data, w.retry, w.time_ms
                )
            );
        }
        let later = decode_run("t", 300, &run, Ids { incarnation: 7 }, |s| s > 10).unwrap();
        assert_eq!(later.len(), 2);
        assert_eq!(
            run_times(300, &run).unwrap(),
            [(10, 1000), (12, 1500), (300, 99_000)]
        );
        // Damage is reported, never a panic.
        for cut in 0..run.len() {
            assert!(decode_run("t", 300, &run[..cut], Ids { incarnation: 7 }, |_| true).is_none());
            assert!(run_times(300, &run[..cut]).is_none());
        }
    }

    #[test]
    fn keys_split_back() {
        assert_eq!(split_run_key(&run_key("a/b", 9)), Some(("a/b", 9)));
        assert_eq!(split_pruned_key(&pruned_key("a/b")), Some("a/b"));
        let mut v = Vec::new();
        for n in [0, 1, 127, 128, 300, u64::MAX] {
            v.clear();
            put(&mut v, n);
            assert_eq!(Reader(&v).varint(), Some(n));
        }
    }
}
