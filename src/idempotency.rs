//! `idempotency_key` (SPEC §5.2): a retry within five minutes returns the first answer and
//! publishes nothing.
//!
//! Keys are scoped by the caller (user name, or none on an open hub) and kept in memory: a
//! restart forgets them. At most [`MAX_KEYS`] are remembered; beyond that the oldest go first.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::event::Published;

pub const TTL: Duration = Duration::from_secs(300);
pub const MAX_KEYS: usize = 100_000;

#[derive(Default)]
pub(crate) struct Idempotency {
    inner: Mutex<Cache>,
}

#[derive(Default)]
struct Cache {
    slots: HashMap<String, Slot>,
    /// Insertion order, for expiry and eviction.
    order: VecDeque<(Instant, String)>,
}

enum Slot {
    InProgress(Instant),
    Done(Instant, Published),
}

impl Slot {
    fn since(&self) -> Instant {
        match self {
            Slot::InProgress(t) | Slot::Done(t, _) => *t,
        }
    }
}

/// What a caller should do with a key.
#[derive(Debug, PartialEq)]
pub(crate) enum Begin {
    /// First use: publish, then [`Idempotency::complete`] or [`Idempotency::abort`].
    Fresh,
    /// Seen before: answer with this.
    Done(Published),
    /// A publish with this key is under way right now.
    InProgress,
}

impl Idempotency {
    // Short critical sections over a HashMap; never held across an await.
    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn begin(&self, key: &str) -> Begin {
        self.begin_at(key, Instant::now())
    }

    fn begin_at(&self, key: &str, now: Instant) -> Begin {
        let mut c = self.lock();
        c.expire(now);
        match c.slots.get(key) {
            Some(Slot::Done(_, v)) => return Begin::Done(v.clone()),
            Some(Slot::InProgress(_)) => return Begin::InProgress,
            None => {}
        }
        while c.slots.len() >= MAX_KEYS {
            match c.order.pop_front() {
                Some((_, k)) => {
                    c.slots.remove(&k);
                }
                None => break,
            }
        }
        c.slots.insert(key.to_string(), Slot::InProgress(now));
        c.order.push_back((now, key.to_string()));
        Begin::Fresh
    }

    pub fn complete(&self, key: &str, answer: Published) {
        let mut c = self.lock();
        if let Some(slot) = c.slots.get_mut(key) {
            *slot = Slot::Done(slot.since(), answer);
        }
    }

    pub fn abort(&self, key: &str) {
        self.lock().slots.remove(key);
    }
}

impl Cache {
    fn expire(&mut self, now: Instant) {
        while let Some((t, _)) = self.order.front() {
            if now.duration_since(*t) < TTL {
                break;
            }
            if let Some((t, k)) = self.order.pop_front() {
                // Only remove the slot this order entry created (a key may have been aborted
                // and reused since).
                if self.slots.get(&k).is_some_and(|s| s.since() == t) {
                    self.slots.remove(&k);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle() {
        let idem = Idempotency::default();
        let t0 = Instant::now();
        assert_eq!(idem.begin_at("k", t0), Begin::Fresh);
        assert_eq!(idem.begin_at("k", t0), Begin::InProgress);
        let answer = Published {
            id: "1".into(),
            topics: vec!["t".into()],
            delivered: 0,
        };
        idem.complete("k", answer.clone());
        assert_eq!(idem.begin_at("k", t0 + TTL / 2), Begin::Done(answer));
        assert_eq!(idem.begin_at("k", t0 + TTL), Begin::Fresh);
        idem.abort("k");
        assert_eq!(idem.begin_at("k", t0 + TTL), Begin::Fresh);
    }
}
