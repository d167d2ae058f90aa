//! Topics, streams and fan-out (SPEC §8).
//!
//! The broker keeps one [`Subscriber`] per open stream and an index from topic to the
//! streams that receive it. An event arrives already numbered and encoded; fan-out pushes a
//! reference to it (no copy) into each stream's bounded queue and wakes it. A queue that is
//! full when an event arrives marks its stream as slow: the queue is dropped, the stream ends
//! with `closed` (`slow_reader`), and its client resumes from the log with `Last-Event-ID`.
//! So a stalled reader never holds up a publisher or the other readers, and its memory is
//! bounded by `limits.stream_queue` events.
//!
//! Ordering: fan-out happens for one event at a time, in id order, under the registry lock,
//! and registration takes the same lock. `fanned_through` is therefore an exact boundary: a
//! stream registered at `fanned_through = N` receives every event after N live, and replays
//! the ones up to N from the log — no gap, no duplicate.
//!
//! - `queue`: one stream's queue and how it ends; `registry`: the indexes;
//! - `session`: dynamic subscriptions (SPEC §5.4).

mod queue;
mod registry;
mod session;
#[cfg(test)]
mod tests;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::time::Instant;

pub(crate) use queue::Subscriber;
use registry::Registry;

use crate::error::Error;
use crate::event::{CloseReason, Ending, Event, EventFilter, Format};

/// Counters shown by `/stats` and `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub published: AtomicU64,
    pub delivered: AtomicU64,
    pub replayed: AtomicU64,
    pub dropped_slow_streams: AtomicU64,
    pub streams_opened: AtomicU64,
}

/// Limits the broker enforces.
#[derive(Debug, Clone)]
pub(crate) struct BrokerLimits {
    pub max_connections: usize,
    pub max_per_user: usize,
    pub max_per_ip: usize,
    pub max_topics: usize,
    pub stream_queue: usize,
    pub heartbeat_ms: u64,
    pub single_connection_per_user: bool,
    pub session_ttl_ms: u64,
}

#[cfg(test)]
impl BrokerLimits {
    /// Small limits for tests: 10 of everything, a 1 s heartbeat and session TTL.
    pub fn small() -> BrokerLimits {
        BrokerLimits {
            max_connections: 10,
            max_per_user: 10,
            max_per_ip: 10,
            max_topics: 10,
            stream_queue: 10,
            heartbeat_ms: 1000,
            single_connection_per_user: false,
            session_ttl_ms: 1000,
        }
    }
}

/// The broker handle: cheap to clone.
#[derive(Clone)]
pub(crate) struct Broker {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Mutex<Registry>,
    limits: BrokerLimits,
    counters: Counters,
    started: Instant,
    /// Coarse clock in ms since start, advanced by [`Broker::tick`]; streams read it when
    /// they write, so the hot path never asks the OS for the time.
    now_ms: AtomicU64,
}

/// Who is opening a stream and what it receives.
#[derive(Debug, Clone)]
pub(crate) struct StreamSpec {
    pub user: Option<String>,
    pub admin: bool,
    pub ip: IpAddr,
    /// The topics the stream names, its personal topic and the broadcast; the user's
    /// session topics are added by the broker.
    pub topics: Vec<String>,
    /// When the stream's credential expires (Unix ms).
    pub expires_at: Option<u64>,
    /// How it is written (SSE, WebSocket, ntfy).
    pub format: Format,
    /// The front door's choice among the events it receives.
    pub filter: Option<EventFilter>,
}

/// What a stream registration returns.
pub(crate) struct Registration {
    pub sub: Arc<Subscriber>,
    /// Every event up to this seq was fanned out before the stream existed: replay those.
    pub live_from: u64,
    /// Everything the stream receives, session topics included.
    pub topics: Vec<String>,
}

/// One row of `GET /connections`.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionInfo {
    pub id: String,
    pub user: Option<String>,
    pub ip: IpAddr,
    pub topics: Vec<String>,
    pub connected_at: u64,
    pub queued: usize,
    /// `sse`, `ws`, or one of ntfy's (`ntfy-json`...).
    pub transport: &'static str,
}

/// Counts for `/stats`.
#[derive(Debug, Clone)]
pub(crate) struct BrokerSnapshot {
    /// Open streams and WebSocket connections.
    pub connections: usize,
    /// Of which WebSocket connections.
    pub websockets: usize,
    pub users: usize,
    pub subscriptions: usize,
    pub per_topic: Vec<(String, usize)>,
}

impl Broker {
    pub fn new(limits: BrokerLimits, fanned_through: u64) -> Broker {
        let registry = Registry {
            fanned_through,
            ..Registry::default()
        };
        Broker {
            inner: Arc::new(Inner {
                registry: Mutex::new(registry),
                limits,
                counters: Counters::default(),
                started: Instant::now(),
                now_ms: AtomicU64::new(0),
            }),
        }
    }

    // The registry lock guards short, non-async sections (a fan-out of one event, a
    // registration); it is never held across an await, so a std Mutex is right here.
    fn registry(&self) -> MutexGuard<'_, Registry> {
        self.inner
            .registry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    pub fn counters(&self) -> &Counters {
        &self.inner.counters
    }

    /// The coarse clock (ms since the broker started).
    pub fn now_ms(&self) -> u64 {
        self.inner.now_ms.load(Ordering::Relaxed)
    }

    /// Registers a new stream, adding the user's session topics that `may_read` allows.
    /// Fails when the hub is shutting down or a limit is reached.
    pub fn register(
        &self,
        spec: StreamSpec,
        may_read: impl Fn(&str) -> bool,
    ) -> Result<Registration, Error> {
        let mut reg = self.registry();
        let replaced = self.admit(&reg, &spec)?;
        let now = self.now_ms();
        let replaced: Vec<_> = replaced
            .into_iter()
            .filter_map(|k| reg.remove(k, now))
            .collect();
        reg.next_key += 1;
        let sub = Arc::new(Subscriber::new(
            reg.next_key,
            &spec,
            crate::time::unix_ms(),
            now,
        ));
        let mut topics = spec.topics.clone();
        if let Some(session) = spec.user.as_ref().and_then(|u| reg.sessions.get(u)) {
            for t in &session.topics {
                if !topics.contains(t) && may_read(t) {
                    topics.push(t.clone());
                }
            }
        }
        reg.insert(sub.clone(), topics.clone(), spec.topics);
        let live_from = reg.fanned_through;
        drop(reg);
        for old in replaced {
            old.sub
                .close(Some(Ending::Closed(CloseReason::Replaced)), true);
        }
        self.inner
            .counters
            .streams_opened
            .fetch_add(1, Ordering::Relaxed);
        Ok(Registration {
            sub,
            live_from,
            topics,
        })
    }

    /// Would a stream from this user and address be admitted now? (`HEAD /events`: the
    /// limits, without registering anything.)
    pub fn would_admit(&self, user: Option<&str>, ip: std::net::IpAddr) -> Result<(), Error> {
        let spec = StreamSpec {
            user: user.map(str::to_string),
            admin: false,
            ip,
            topics: Vec::new(),
            expires_at: None,
            format: Format::Sse,
            filter: None,
        };
        self.admit(&self.registry(), &spec).map(drop)
    }

    /// May this stream open? Returns the user's streams it replaces
    /// (`single_connection_per_user`).
    fn admit(&self, reg: &Registry, spec: &StreamSpec) -> Result<Vec<u64>, Error> {
        let limits = &self.inner.limits;
        if reg.closed {
            return Err(Error::Unavailable {
                message: "the hub is shutting down".into(),
                retry_after: Some(5),
            });
        }
        let mine = spec
            .user
            .as_ref()
            .and_then(|u| reg.by_user.get(u))
            .cloned()
            .unwrap_or_default();
        let replaced = if limits.single_connection_per_user {
            mine
        } else if mine.len() >= limits.max_per_user {
            return Err(Error::TooManyRequests {
                message: format!(
                    "user {:?} already has {} open streams (limits.max_connections_per_user)",
                    spec.user.as_deref().unwrap_or_default(),
                    mine.len()
                ),
                retry_after: 10,
            });
        } else {
            Vec::new()
        };
        // Streams this one replaces are counted as gone.
        let open = reg.streams.len() - replaced.len();
        if open >= limits.max_connections {
            return Err(Error::Unavailable {
                message: format!(
                    "the hub has {open} open streams, its limit (limits.max_connections)"
                ),
                retry_after: Some(10),
            });
        }
        let same_ip = |k: &u64| reg.streams.get(k).is_some_and(|e| e.sub.ip == spec.ip);
        let from_ip = reg.per_ip.get(&spec.ip).copied().unwrap_or(0)
            - replaced.iter().filter(|k| same_ip(k)).count();
        if from_ip >= limits.max_per_ip {
            return Err(Error::TooManyRequests {
                message: format!(
                    "{} already has {} open streams (limits.max_connections_per_ip)",
                    spec.ip, limits.max_per_ip
                ),
                retry_after: 10,
            });
        }
        Ok(replaced)
    }

    /// Removes a stream (its body was dropped: the client left or the stream ended).
    pub fn unregister(&self, sub: &Subscriber) {
        let now = self.now_ms();
        self.registry().remove(sub.key, now);
    }

    /// Queues one event for every stream that receives one of its topics, at most once per
    /// stream. Must be called in id order (the publisher's commit thread does).
    pub fn fan_out(&self, ev: &Arc<Event>) -> usize {
        let cap = self.inner.limits.stream_queue;
        let counters = &self.inner.counters;
        let mut reg = self.registry();
        let mut n = 0;
        let mut cut = Vec::new();
        let mut count = |s: &Subscriber| match s.push(ev, cap, counters) {
            queue::Push::Queued => n += 1,
            queue::Push::Skipped => {}
            queue::Push::Overflowed => cut.push(s.key),
        };
        for t in &ev.topics {
            if let Some(subs) = reg.by_topic.get(t.as_str()) {
                for s in subs.values() {
                    count(s);
                }
            }
        }
        for (p, s) in &reg.wildcards {
            if ev.topics.iter().any(|t| p.matches(t) && s.may_receive(t)) {
                count(s);
            }
        }
        // A slow stream leaves the registry now: its last writes may wait on a client that
        // does not read (up to limits.write_timeout), and it must not count or receive
        // meanwhile.
        if !cut.is_empty() {
            let now = self.now_ms();
            for k in cut {
                reg.remove(k, now);
            }
        }
        reg.fanned_through = reg.fanned_through.max(ev.seq);
        counters.delivered.fetch_add(n as u64, Ordering::Relaxed);
        n
    }

    /// Advances the coarse clock, forgets idle sessions, ends streams whose credential
    /// expired, and sends a keepalive to streams silent for a heartbeat.
    pub fn tick(&self) {
        self.tick_at(crate::time::unix_ms());
    }

    /// [`Broker::tick`] with the wall clock (for credential expiry) handed in; the coarse
    /// clock is tokio's, so tests can pause it.
    pub(crate) fn tick_at(&self, wall_ms: u64) {
        let now = u64::try_from(self.inner.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.inner.now_ms.store(now, Ordering::Relaxed);
        self.expire_sessions(now);
        let (open, expired): (Vec<_>, Vec<_>) = {
            let mut reg = self.registry();
            let (expired, open): (Vec<Arc<Subscriber>>, Vec<Arc<Subscriber>>) = reg
                .streams
                .values()
                .map(|e| e.sub.clone())
                .partition(|s| s.expires_at.is_some_and(|exp| exp <= wall_ms));
            // Ended by the hub, so out of the registry now (see `close_stream`).
            for s in &expired {
                reg.remove(s.key, now);
            }
            (open, expired)
        };
        for s in expired {
            tracing::debug!(conn = %s.id, "credential expired; ending stream");
            s.close(Some(Ending::Closed(CloseReason::TokenExpired)), false);
        }
        for s in open {
            s.keepalive_if_silent(now, self.inner.limits.heartbeat_ms);
        }
    }

    /// Shutdown: refuse new streams and end every open one with `last` after what is queued.
    pub fn close_all(&self, last: Ending) {
        let subs: Vec<Arc<Subscriber>> = {
            let mut reg = self.registry();
            reg.closed = true;
            reg.streams.values().map(|e| e.sub.clone()).collect()
        };
        for s in subs {
            s.close(Some(last), false);
        }
    }

    /// Closes one stream by its public id (admin `DELETE /connections/{id}`). Like every
    /// close the hub decides, it leaves the registry at once: its last writes may wait on a
    /// client that does not read, and meanwhile it must neither count nor receive.
    pub fn close_stream(&self, id: &str, reason: CloseReason) -> bool {
        let entry = {
            let mut reg = self.registry();
            let now = self.now_ms();
            reg.key_of(id).and_then(|key| reg.remove(key, now))
        };
        match entry {
            Some(e) => {
                e.sub.close(Some(Ending::Closed(reason)), true);
                true
            }
            None => false,
        }
    }

    /// The seq of the last event fanned out: every event up to it is in the log (or was
    /// live-only), and nothing after it has reached a stream.
    pub fn fanned_through(&self) -> u64 {
        self.registry().fanned_through
    }

    /// A snapshot of the open streams, for `/connections`.
    pub fn connections(&self) -> Vec<ConnectionInfo> {
        let reg = self.registry();
        let mut v: Vec<_> = reg
            .streams
            .values()
            .map(|e| ConnectionInfo {
                id: e.sub.id.clone(),
                user: e.sub.user.clone(),
                ip: e.sub.ip,
                topics: e.topics.clone(),
                connected_at: e.sub.connected_at,
                queued: e.sub.queued(),
                transport: e.sub.format.transport(),
            })
            .collect();
        v.sort_by_key(|c| c.connected_at);
        v
    }

    /// Counts for `/stats`.
    pub fn snapshot(&self) -> BrokerSnapshot {
        let reg = self.registry();
        let mut per_topic: Vec<(String, usize)> = reg
            .by_topic
            .iter()
            .map(|(t, s)| (t.clone(), s.len()))
            .collect();
        let mut wild: std::collections::HashMap<&str, usize> = Default::default();
        for (p, _) in &reg.wildcards {
            *wild.entry(p.as_str()).or_default() += 1;
        }
        per_topic.extend(wild.into_iter().map(|(p, n)| (p.to_string(), n)));
        per_topic.sort();
        BrokerSnapshot {
            connections: reg.streams.len(),
            websockets: reg
                .streams
                .values()
                .filter(|e| e.sub.format.is_websocket())
                .count(),
            users: reg.by_user.len(),
            subscriptions: reg.streams.values().map(|e| e.topics.len()).sum(),
            per_topic,
        }
    }
}
