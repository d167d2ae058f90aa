//! How the sled log lays out its keys and records.
//!
//! Keys (one tree, so a publish batch is one atomic `apply_batch`):
//! - `e` + seq (u64 big-endian) → the event record: time, topics, and its SSE frame;
//! - `t` + topic + `0x00` + seq → the record's size and topic count: the per-topic index,
//!   so replaying a topic reads only that topic's events after the client's id (cost
//!   proportional to what is replayed), and retention can drop a single-topic event unread;
//! - `p` + topic → seq: the newest event retention removed from that topic, so a client whose
//!   id is older learns of the gap (`event: reset`, reason `pruned`);
//! - `m` + name → store metadata (incarnation, sequence high-water mark, global prune mark).

use bytes::Bytes;

use crate::event::Event;

pub(super) const EVENT: u8 = b'e';
pub(super) const INDEX: u8 = b't';
const PRUNED: u8 = b'p';
const META: u8 = b'm';
const RECORD_VERSION: u8 = 1;

pub(super) fn event_key(seq: u64) -> [u8; 9] {
    let mut k = [EVENT; 9];
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

pub(super) fn index_prefix(topic: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(topic.len() + 10);
    k.push(INDEX);
    k.extend_from_slice(topic.as_bytes());
    k.push(0);
    k
}

pub(super) fn index_key(topic: &str, seq: u64) -> Vec<u8> {
    let mut k = index_prefix(topic);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// `t` + topic + 0 + seq → (topic, seq).
pub(super) fn split_index_key(k: &[u8]) -> Option<(&str, u64)> {
    let at = k.len().checked_sub(9)?;
    if k.first() != Some(&INDEX) || k.get(at) != Some(&0) {
        return None;
    }
    Some((std::str::from_utf8(&k[1..at]).ok()?, seq_of(&k[at + 1..])?))
}

pub(super) fn pruned_key(topic: &str) -> Vec<u8> {
    let mut k = vec![PRUNED];
    k.extend_from_slice(topic.as_bytes());
    k
}

pub(super) fn meta_key(name: &str) -> Vec<u8> {
    let mut k = vec![META];
    k.extend_from_slice(name.as_bytes());
    k
}

pub(super) fn seq_of(b: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(b.try_into().ok()?))
}

/// A decoded event record: `version, time_ms (u64 LE), n_topics (u16 LE),
/// n × (len u8, topic), frame`.
pub(super) struct Record<'a> {
    pub(super) time_ms: u64,
    pub(super) topics: Vec<&'a str>,
}

impl<'a> Record<'a> {
    pub(super) fn encode(time_ms: u64, topics: &[String], frame: &[u8]) -> Vec<u8> {
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

    pub(super) fn decode(b: &'a [u8]) -> Option<Record<'a>> {
        Self::decode_with_offset(b).map(|(r, _)| r)
    }

    /// The event a record holds, sharing the record's memory for its frame (no copy).
    pub(super) fn event(seq: u64, v: sled::IVec) -> Option<Event> {
        let (rec, at) = Record::decode_with_offset(&v)?;
        let topics = rec.topics.iter().map(|t| (*t).to_string()).collect();
        Some(Event::new(seq, topics, Bytes::from_owner(v).slice(at..)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_roundtrip() {
        let frame = Bytes::from_static(b"id: 1\ndata: x\n\n");
        let rec = Record::encode(42, &["a".into(), "b/c".into()], &frame);
        let r = Record::decode(&rec).unwrap();
        assert_eq!(r.time_ms, 42);
        assert_eq!(r.topics, vec!["a", "b/c"]);
        let ev = Record::event(7, sled::IVec::from(rec)).unwrap();
        assert_eq!(
            (ev.seq, &ev.topics[..], ev.sse()),
            (7, &["a".to_string(), "b/c".to_string()][..], &frame)
        );
        assert!(Record::decode(&[1, 2, 3]).is_none());
        assert!(Record::decode(&[1, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0, 9]).is_none());
    }
}
