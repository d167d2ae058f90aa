//! Topics, streams and fan-out (SPEC §8).
//!
//! The broker keeps one [`Subscriber`] per open SSE stream and an index from topic to the
//! streams that receive it. An event arrives already encoded as one `Bytes`; fan-out pushes
//! a clone (a reference count, no copy) into each stream's bounded queue and wakes it. A
//! queue that is full when an event arrives marks its stream as slow: the queue is dropped,
//! the stream ends with `event: closed`, and its client resumes from the log with
//! `Last-Event-ID`. So a stalled reader never holds up a publisher or the other readers, and
//! its memory is bounded by `limits.stream_queue` events.
//!
//! Ordering: fan-out happens for one event at a time, in id order, under the registry lock,
//! and registration takes the same lock. `fanned_through` is therefore an exact boundary: a
//! stream registered at `fanned_through = N` receives every event after N live, and replays
//! the ones up to N from the log — no gap, no duplicate.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};

use crate::error::Error;
use crate::sse;
use crate::topic::{self, Pattern};

/// Largest frame built by joining waiting events for one write.
const COALESCE_LIMIT: usize = 64 * 1024;

/// Counters shown by `/stats` and `/metrics`.
#[derive(Debug, Default)]
pub struct Counters {
    pub published: AtomicU64,
    pub delivered: AtomicU64,
    pub replayed: AtomicU64,
    pub dropped_slow_streams: AtomicU64,
    pub streams_opened: AtomicU64,
}

/// An event ready for fan-out: its position in the log, its topics and its wire bytes.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub seq: u64,
    pub topics: Vec<String>,
    pub frame: Bytes,
}

/// Limits the broker enforces when a stream opens.
#[derive(Debug, Clone)]
pub struct BrokerLimits {
    pub max_connections: usize,
    pub max_per_user: usize,
    pub max_per_ip: usize,
    pub stream_queue: usize,
    pub heartbeat_ms: u64,
}

/// The broker handle: cheap to clone.
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Mutex<Registry>,
    limits: BrokerLimits,
    counters: Arc<Counters>,
    started: Instant,
    /// Coarse clock in ms since start, advanced by [`Broker::tick`]; streams read it when
    /// they write, so the hot path never asks the OS for the time.
    now_ms: AtomicU64,
}

#[derive(Default)]
struct Registry {
    next_key: u64,
    streams: HashMap<u64, Entry>,
    /// Exact topic → the streams that receive it.
    by_topic: HashMap<String, HashMap<u64, Arc<Subscriber>>>,
    /// Wildcard subscriptions, matched against every event's topics.
    wildcards: Vec<(Pattern, Arc<Subscriber>)>,
    per_user: HashMap<String, usize>,
    per_ip: HashMap<IpAddr, usize>,
    fanned_through: u64,
    closed: bool,
}

struct Entry {
    sub: Arc<Subscriber>,
    topics: Vec<String>,
}

/// Who is opening a stream and what it receives.
#[derive(Debug, Clone)]
pub struct StreamSpec {
    pub user: Option<String>,
    pub admin: bool,
    pub ip: IpAddr,
    /// Every topic or pattern the stream receives (named, personal, session, broadcast).
    pub topics: Vec<String>,
}

/// The broker's side of one open stream.
pub struct Subscriber {
    key: u64,
    /// Public, unguessable connection id.
    pub id: String,
    pub user: Option<String>,
    pub admin: bool,
    pub ip: IpAddr,
    /// Unix time in ms.
    pub connected_at: u64,
    queue: Mutex<Queue>,
}

struct Queue {
    items: VecDeque<Bytes>,
    waker: Option<Waker>,
    state: State,
    /// Seq of the last event queued, so an event on several topics is queued once.
    last_seq: u64,
    /// Coarse time of the last write, for the heartbeat.
    last_write_ms: u64,
}

enum State {
    Open,
    /// Ending: send this frame (if any) after what is queued, then end.
    Closing(Option<Bytes>),
    Done,
}

/// What a stream registration returns.
pub struct Registration {
    pub sub: Arc<Subscriber>,
    /// Every event up to this seq was fanned out before the stream existed: replay those.
    pub live_from: u64,
}

impl Subscriber {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A poisoned queue lock means a panic while holding it; with panic=abort that
        // cannot happen, and without it the queue is still structurally valid.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// May this stream receive an event on `topic` through a wildcard? Never someone else's
    /// personal topic unless it is an admin's stream.
    fn may_receive(&self, topic: &str) -> bool {
        match topic::personal_owner(topic) {
            Some(owner) => self.admin || self.user.as_deref() == Some(owner),
            None => true,
        }
    }

    /// Queues one event. Returns whether it was queued.
    fn push(&self, seq: u64, frame: &Bytes, cap: usize, counters: &Counters) -> bool {
        let waker;
        {
            let mut q = self.lock();
            if !matches!(q.state, State::Open) || (seq != 0 && q.last_seq == seq) {
                return false;
            }
            q.last_seq = seq;
            if q.items.len() >= cap {
                q.items = VecDeque::new();
                q.state = State::Closing(Some(sse::control_frame(
                    "closed",
                    &serde_json::json!({"reason": "slow_reader",
                        "message": "this stream fell behind; reconnect with Last-Event-ID"}),
                )));
                counters
                    .dropped_slow_streams
                    .fetch_add(1, Ordering::Relaxed);
                waker = q.waker.take();
                drop(q);
                tracing::info!(conn = %self.id, "slow stream closed: its queue is full");
                if let Some(w) = waker {
                    w.wake();
                }
                return false;
            }
            q.items.push_back(frame.clone());
            waker = q.waker.take();
        }
        if let Some(w) = waker {
            w.wake();
        }
        true
    }

    /// Ends the stream after what is already queued (or at once, dropping it).
    pub fn close(&self, frame: Option<Bytes>, drop_queued: bool) {
        let waker = {
            let mut q = self.lock();
            if !matches!(q.state, State::Open) {
                return;
            }
            if drop_queued {
                q.items = VecDeque::new();
            }
            q.state = State::Closing(frame);
            q.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Events waiting to be written.
    pub fn queued(&self) -> usize {
        self.lock().items.len()
    }

    /// The next bytes to write: every waiting event joined into one frame (up to 64 KiB),
    /// the closing frame, or the end. Registers the waker when there is nothing.
    pub fn poll_next(&self, cx: &mut Context<'_>, now_ms: u64) -> Poll<Option<Bytes>> {
        let mut q = self.lock();
        if let Some(first) = q.items.pop_front() {
            q.last_write_ms = now_ms;
            if q.items.is_empty() || first.len() >= COALESCE_LIMIT {
                return Poll::Ready(Some(first));
            }
            let mut size = first.len();
            let mut n = 0;
            for b in &q.items {
                if size + b.len() > COALESCE_LIMIT {
                    break;
                }
                size += b.len();
                n += 1;
            }
            let mut buf = BytesMut::with_capacity(size);
            buf.extend_from_slice(&first);
            for b in q.items.drain(..n) {
                buf.extend_from_slice(&b);
            }
            return Poll::Ready(Some(buf.freeze()));
        }
        match std::mem::replace(&mut q.state, State::Done) {
            State::Open => {
                q.state = State::Open;
                match &q.waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => q.waker = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
            State::Closing(Some(frame)) => {
                q.state = State::Closing(None);
                Poll::Ready(Some(frame))
            }
            State::Closing(None) | State::Done => Poll::Ready(None),
        }
    }
}

impl Broker {
    pub fn new(limits: BrokerLimits, counters: Arc<Counters>, fanned_through: u64) -> Broker {
        let registry = Registry {
            fanned_through,
            ..Registry::default()
        };
        Broker {
            inner: Arc::new(Inner {
                registry: Mutex::new(registry),
                limits,
                counters,
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

    pub fn counters(&self) -> &Arc<Counters> {
        &self.inner.counters
    }

    /// The coarse clock (ms since the broker started).
    pub fn now_ms(&self) -> u64 {
        self.inner.now_ms.load(Ordering::Relaxed)
    }

    /// Registers a new stream. Fails when the hub is shutting down or a limit is reached.
    pub fn register(&self, spec: StreamSpec) -> Result<Registration, Error> {
        let limits = &self.inner.limits;
        let mut reg = self.registry();
        if reg.closed {
            return Err(Error::Unavailable {
                message: "the hub is shutting down".into(),
                retry_after: Some(5),
            });
        }
        if reg.streams.len() >= limits.max_connections {
            return Err(Error::Unavailable {
                message: format!(
                    "the hub has {} open streams, its limit (limits.max_connections)",
                    reg.streams.len()
                ),
                retry_after: Some(10),
            });
        }
        if let Some(user) = &spec.user
            && reg.per_user.get(user).copied().unwrap_or(0) >= limits.max_per_user
        {
            return Err(Error::TooManyRequests {
                message: format!(
                    "user {user:?} already has {} open streams (limits.max_connections_per_user)",
                    limits.max_per_user
                ),
                retry_after: 10,
            });
        }
        if reg.per_ip.get(&spec.ip).copied().unwrap_or(0) >= limits.max_per_ip {
            return Err(Error::TooManyRequests {
                message: format!(
                    "{} already has {} open streams (limits.max_connections_per_ip)",
                    spec.ip, limits.max_per_ip
                ),
                retry_after: 10,
            });
        }
        reg.next_key += 1;
        let key = reg.next_key;
        let sub = Arc::new(Subscriber {
            key,
            id: format!("{key:x}-{}", crate::random_hex(16)),
            user: spec.user.clone(),
            admin: spec.admin,
            ip: spec.ip,
            connected_at: unix_ms(),
            queue: Mutex::new(Queue {
                items: VecDeque::new(),
                waker: None,
                state: State::Open,
                last_seq: 0,
                last_write_ms: self.now_ms(),
            }),
        });
        if let Some(user) = &spec.user {
            *reg.per_user.entry(user.clone()).or_default() += 1;
        }
        *reg.per_ip.entry(spec.ip).or_default() += 1;
        for t in &spec.topics {
            reg.subscribe(t, &sub);
        }
        reg.streams.insert(
            key,
            Entry {
                sub: sub.clone(),
                topics: spec.topics,
            },
        );
        self.inner
            .counters
            .streams_opened
            .fetch_add(1, Ordering::Relaxed);
        Ok(Registration {
            sub,
            live_from: reg.fanned_through,
        })
    }

    /// Removes a stream (its body was dropped: the client left or the stream ended).
    pub fn unregister(&self, sub: &Subscriber) {
        let mut reg = self.registry();
        let Some(entry) = reg.streams.remove(&sub.key) else {
            return;
        };
        for t in &entry.topics {
            reg.unsubscribe(t, sub.key);
        }
        if let Some(user) = &sub.user {
            decrement(&mut reg.per_user, user);
        }
        decrement(&mut reg.per_ip, &sub.ip);
    }

    /// Queues one event for every stream that receives one of its topics, at most once per
    /// stream. Must be called in id order (the publisher's commit thread does).
    pub fn fan_out(&self, ev: &Outgoing) -> usize {
        let cap = self.inner.limits.stream_queue;
        let counters = &*self.inner.counters;
        let mut reg = self.registry();
        let mut n = 0;
        for t in &ev.topics {
            if let Some(subs) = reg.by_topic.get(t.as_str()) {
                for s in subs.values() {
                    n += usize::from(s.push(ev.seq, &ev.frame, cap, counters));
                }
            }
        }
        for (p, s) in &reg.wildcards {
            if ev.topics.iter().any(|t| p.matches(t) && s.may_receive(t)) {
                n += usize::from(s.push(ev.seq, &ev.frame, cap, counters));
            }
        }
        reg.fanned_through = reg.fanned_through.max(ev.seq);
        counters.delivered.fetch_add(n as u64, Ordering::Relaxed);
        n
    }

    /// Advances the coarse clock and sends `: keepalive` to streams silent for a heartbeat.
    pub fn tick(&self) {
        let now = u64::try_from(self.inner.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.inner.now_ms.store(now, Ordering::Relaxed);
        let hb = self.inner.limits.heartbeat_ms;
        let subs: Vec<Arc<Subscriber>> = {
            let reg = self.registry();
            reg.streams.values().map(|e| e.sub.clone()).collect()
        };
        for s in subs {
            let waker = {
                let mut q = s.lock();
                if matches!(q.state, State::Open)
                    && q.items.is_empty()
                    && now.saturating_sub(q.last_write_ms) >= hb
                {
                    q.items.push_back(sse::keepalive());
                    q.waker.take()
                } else {
                    None
                }
            };
            if let Some(w) = waker {
                w.wake();
            }
        }
    }

    /// Shutdown: refuse new streams and end every open one with `frame` after what is queued.
    pub fn close_all(&self, frame: Bytes) {
        let subs: Vec<Arc<Subscriber>> = {
            let mut reg = self.registry();
            reg.closed = true;
            reg.streams.values().map(|e| e.sub.clone()).collect()
        };
        for s in subs {
            s.close(Some(frame.clone()), false);
        }
    }

    /// Closes one stream by its public id (admin `DELETE /connections/{id}`).
    pub fn close_stream(&self, id: &str, frame: Bytes) -> bool {
        match self.find(id) {
            Some(s) => {
                s.close(Some(frame), true);
                true
            }
            None => false,
        }
    }

    /// Looks a stream up by its public id.
    pub fn find(&self, id: &str) -> Option<Arc<Subscriber>> {
        let key = u64::from_str_radix(id.split('-').next()?, 16).ok()?;
        let reg = self.registry();
        let e = reg.streams.get(&key)?;
        // The random part makes the id unguessable; compare it in constant time.
        ring_eq(e.sub.id.as_bytes(), id.as_bytes()).then(|| e.sub.clone())
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
        let mut wild: HashMap<&str, usize> = HashMap::new();
        for (p, _) in &reg.wildcards {
            *wild.entry(p.as_str()).or_default() += 1;
        }
        per_topic.extend(wild.into_iter().map(|(p, n)| (p.to_string(), n)));
        per_topic.sort();
        BrokerSnapshot {
            connections: reg.streams.len(),
            users: reg.per_user.len(),
            subscriptions: reg.streams.values().map(|e| e.topics.len()).sum(),
            per_topic,
        }
    }

    /// The seq of the last event fanned out.
    pub fn fanned_through(&self) -> u64 {
        self.registry().fanned_through
    }
}

impl Registry {
    fn subscribe(&mut self, t: &str, sub: &Arc<Subscriber>) {
        if t.contains('*') {
            if let Ok(p) = Pattern::new(t) {
                self.wildcards.push((p, sub.clone()));
            }
        } else {
            self.by_topic
                .entry(t.to_string())
                .or_default()
                .insert(sub.key, sub.clone());
        }
    }

    fn unsubscribe(&mut self, t: &str, key: u64) {
        if t.contains('*') {
            self.wildcards
                .retain(|(p, s)| !(s.key == key && p.as_str() == t));
        } else if let Some(m) = self.by_topic.get_mut(t) {
            m.remove(&key);
            if m.is_empty() {
                self.by_topic.remove(t);
            }
        }
    }
}

fn decrement<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, k: &K) {
    if let Some(n) = map.get_mut(k) {
        *n -= 1;
        if *n == 0 {
            map.remove(k);
        }
    }
}

fn ring_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// One row of `GET /connections`.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    pub id: String,
    pub user: Option<String>,
    pub ip: IpAddr,
    pub topics: Vec<String>,
    pub connected_at: u64,
    pub queued: usize,
}

/// Counts for `/stats`.
#[derive(Debug, Clone)]
pub struct BrokerSnapshot {
    pub connections: usize,
    pub users: usize,
    pub subscriptions: usize,
    pub per_topic: Vec<(String, usize)>,
}
