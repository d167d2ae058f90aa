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
    pub max_topics: usize,
    pub stream_queue: usize,
    pub heartbeat_ms: u64,
    pub single_connection_per_user: bool,
    pub session_ttl_ms: u64,
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
    /// A user's open streams.
    by_user: HashMap<String, Vec<u64>>,
    per_ip: HashMap<IpAddr, usize>,
    /// Topics users added with `POST /subscribe`, applied to all their streams.
    sessions: HashMap<String, Session>,
    fanned_through: u64,
    closed: bool,
}

struct Entry {
    sub: Arc<Subscriber>,
    /// Everything the stream receives.
    topics: Vec<String>,
    /// What it received without the session: named at open (or added to this stream by
    /// connection id), its personal topic and the broadcast.
    base: Vec<String>,
}

/// A user's session: topics added with `POST /subscribe`.
#[derive(Default)]
struct Session {
    topics: Vec<String>,
    /// Coarse time of the last session call or of the user's last stream closing.
    touched_ms: u64,
}

/// Who is opening a stream and what it receives.
#[derive(Debug, Clone)]
pub struct StreamSpec {
    pub user: Option<String>,
    pub admin: bool,
    pub ip: IpAddr,
    /// The topics the stream names, its personal topic and the broadcast; the user's
    /// session topics are added by the broker.
    pub topics: Vec<String>,
    /// When the stream's credential expires (Unix ms).
    pub expires_at: Option<u64>,
}

/// The broker's side of one open stream.
/// What [`Subscriber::push`] did with an event.
enum Push {
    Queued,
    /// The stream is ending, or already had this event (several of its topics matched).
    Skipped,
    /// The queue was full: the stream is being closed as a slow reader.
    Overflowed,
}

pub struct Subscriber {
    key: u64,
    /// Public, unguessable connection id.
    pub id: String,
    pub user: Option<String>,
    pub admin: bool,
    pub ip: IpAddr,
    /// Unix time in ms.
    pub connected_at: u64,
    /// Unix time in ms when the credential expires: the stream ends then.
    pub expires_at: Option<u64>,
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
    /// Everything the stream receives, session topics included.
    pub topics: Vec<String>,
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

    /// Queues one event.
    fn push(&self, seq: u64, frame: &Bytes, cap: usize, counters: &Counters) -> Push {
        let waker;
        {
            let mut q = self.lock();
            if !matches!(q.state, State::Open) || (seq != 0 && q.last_seq == seq) {
                return Push::Skipped;
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
                return Push::Overflowed;
            }
            q.items.push_back(frame.clone());
            waker = q.waker.take();
        }
        if let Some(w) = waker {
            w.wake();
        }
        Push::Queued
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

    /// Registers a new stream, adding the user's session topics that `may_read` allows.
    /// Fails when the hub is shutting down or a limit is reached.
    pub fn register(
        &self,
        spec: StreamSpec,
        may_read: impl Fn(&str) -> bool,
    ) -> Result<Registration, Error> {
        let limits = &self.inner.limits;
        let mut replaced = Vec::new();
        let mut reg = self.registry();
        if reg.closed {
            return Err(Error::Unavailable {
                message: "the hub is shutting down".into(),
                retry_after: Some(5),
            });
        }
        if let Some(user) = &spec.user {
            let open = reg.by_user.get(user).map_or(0, Vec::len);
            if limits.single_connection_per_user {
                let keys = reg.by_user.get(user).cloned().unwrap_or_default();
                for k in keys {
                    if let Some(e) = reg.remove(k, self.now_ms()) {
                        replaced.push(e.sub);
                    }
                }
            } else if open >= limits.max_per_user {
                return Err(Error::TooManyRequests {
                    message: format!(
                        "user {user:?} already has {open} open streams \
                         (limits.max_connections_per_user)"
                    ),
                    retry_after: 10,
                });
            }
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
            expires_at: spec.expires_at,
            queue: Mutex::new(Queue {
                items: VecDeque::new(),
                waker: None,
                state: State::Open,
                last_seq: 0,
                last_write_ms: self.now_ms(),
            }),
        });
        let mut topics = spec.topics.clone();
        if let Some(user) = &spec.user {
            reg.by_user.entry(user.clone()).or_default().push(key);
            if let Some(session) = reg.sessions.get(user) {
                for t in &session.topics {
                    if !topics.contains(t) && may_read(t) {
                        topics.push(t.clone());
                    }
                }
            }
        }
        *reg.per_ip.entry(spec.ip).or_default() += 1;
        for t in &topics {
            reg.subscribe(t, &sub);
        }
        reg.streams.insert(
            key,
            Entry {
                sub: sub.clone(),
                topics: topics.clone(),
                base: spec.topics,
            },
        );
        let live_from = reg.fanned_through;
        drop(reg);
        for old in replaced {
            old.close(
                Some(sse::control_frame(
                    "closed",
                    &serde_json::json!({"reason": "replaced",
                        "message": "a newer stream of the same user replaced this one"}),
                )),
                true,
            );
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

    /// Removes a stream (its body was dropped: the client left or the stream ended).
    pub fn unregister(&self, sub: &Subscriber) {
        let now = self.now_ms();
        self.registry().remove(sub.key, now);
    }

    /// Adds topics to a user's session and to every open stream of the user. Returns the
    /// session's topics.
    pub fn session_subscribe(&self, user: &str, topics: &[String]) -> Result<Vec<String>, Error> {
        let max = self.inner.limits.max_topics;
        let now = self.now_ms();
        let mut reg = self.registry();
        let session = reg.sessions.entry(user.to_string()).or_default();
        let new: Vec<String> = topics
            .iter()
            .filter(|t| !session.topics.contains(t))
            .cloned()
            .collect();
        if session.topics.len() + new.len() > max {
            return Err(Error::BadRequest(format!(
                "a session holds at most {max} topics (limits.max_topics_per_stream)"
            )));
        }
        session.topics.extend(new);
        session.touched_ms = now;
        let result = session.topics.clone();
        let keys = reg.by_user.get(user).cloned().unwrap_or_default();
        for k in keys {
            reg.add_topics(k, topics, false);
        }
        Ok(result)
    }

    /// Removes topics from a user's session and from the user's open streams (except what a
    /// stream named itself). Returns the session's topics.
    pub fn session_unsubscribe(&self, user: &str, topics: &[String]) -> Vec<String> {
        let now = self.now_ms();
        let mut reg = self.registry();
        let result = match reg.sessions.get_mut(user) {
            Some(s) => {
                s.topics.retain(|t| !topics.contains(t));
                s.touched_ms = now;
                s.topics.clone()
            }
            None => Vec::new(),
        };
        let keys = reg.by_user.get(user).cloned().unwrap_or_default();
        for k in keys {
            reg.remove_topics(k, topics, false);
        }
        result
    }

    /// Adds topics to one stream, found by its connection id. Returns the stream's topics.
    pub fn stream_subscribe(&self, id: &str, topics: &[String]) -> Result<Vec<String>, Error> {
        let max = self.inner.limits.max_topics;
        let mut reg = self.registry();
        let key = reg.key_of(id).ok_or_else(|| no_stream(id))?;
        let e = &reg.streams[&key];
        let named = e.base.len().saturating_sub(2)
            + topics.iter().filter(|t| !e.topics.contains(t)).count();
        if named > max {
            return Err(Error::BadRequest(format!(
                "a stream names at most {max} topics (limits.max_topics_per_stream)"
            )));
        }
        reg.add_topics(key, topics, true);
        Ok(reg.streams[&key].topics.clone())
    }

    /// Removes topics from one stream. Its personal topic and the broadcast stay.
    pub fn stream_unsubscribe(&self, id: &str, topics: &[String]) -> Result<Vec<String>, Error> {
        let mut reg = self.registry();
        let key = reg.key_of(id).ok_or_else(|| no_stream(id))?;
        let sub = &reg.streams[&key].sub;
        let own = sub.user.as_deref().map(topic::personal_topic);
        if let Some(t) = topics
            .iter()
            .find(|t| *t == topic::BROADCAST || Some(t.as_str()) == own.as_deref())
        {
            return Err(Error::BadRequest(format!(
                "{t:?} cannot be unsubscribed: every stream receives the broadcast and its \
                 user's personal topic"
            )));
        }
        reg.remove_topics(key, topics, true);
        Ok(reg.streams[&key].topics.clone())
    }

    /// True if the stream with this id belongs to `user`.
    pub fn stream_owned_by(&self, id: &str, user: &str) -> Option<bool> {
        let reg = self.registry();
        let key = reg.key_of(id)?;
        Some(reg.streams[&key].sub.user.as_deref() == Some(user))
    }

    /// Queues one event for every stream that receives one of its topics, at most once per
    /// stream. Must be called in id order (the publisher's commit thread does).
    pub fn fan_out(&self, ev: &Outgoing) -> usize {
        let cap = self.inner.limits.stream_queue;
        let counters = &*self.inner.counters;
        let mut reg = self.registry();
        let mut n = 0;
        let mut cut = Vec::new();
        let mut count = |s: &Subscriber| match s.push(ev.seq, &ev.frame, cap, counters) {
            Push::Queued => n += 1,
            Push::Skipped => {}
            Push::Overflowed => cut.push(s.key),
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

    /// Advances the coarse clock and sends `: keepalive` to streams silent for a heartbeat.
    pub fn tick(&self) {
        let now = u64::try_from(self.inner.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.inner.now_ms.store(now, Ordering::Relaxed);
        let hb = self.inner.limits.heartbeat_ms;
        let ttl = self.inner.limits.session_ttl_ms;
        let wall = unix_ms();
        let (subs, expired) = {
            let mut reg = self.registry();
            let Registry {
                sessions, by_user, ..
            } = &mut *reg;
            sessions.retain(|user, s| {
                by_user.contains_key(user) || now.saturating_sub(s.touched_ms) < ttl
            });
            let (expired, subs): (Vec<Arc<Subscriber>>, Vec<Arc<Subscriber>>) = reg
                .streams
                .values()
                .map(|e| e.sub.clone())
                .partition(|s| s.expires_at.is_some_and(|exp| exp <= wall));
            // Ended by the hub, so out of the registry now (see `close_stream`).
            for s in &expired {
                reg.remove(s.key, now);
            }
            (subs, expired)
        };
        for s in expired {
            tracing::debug!(conn = %s.id, "credential expired; ending stream");
            s.close(
                Some(sse::control_frame(
                    "closed",
                    &serde_json::json!({"reason": "token_expired",
                        "message": "the stream's credential expired"}),
                )),
                false,
            );
        }
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

    /// Closes one stream by its public id (admin `DELETE /connections/{id}`). Like every
    /// close the hub decides, it leaves the registry at once: its last writes may wait on a
    /// client that does not read, and meanwhile it must neither count nor receive.
    pub fn close_stream(&self, id: &str, frame: Bytes) -> bool {
        let entry = {
            let mut reg = self.registry();
            let now = self.now_ms();
            reg.key_of(id).and_then(|key| reg.remove(key, now))
        };
        match entry {
            Some(e) => {
                e.sub.close(Some(frame), true);
                true
            }
            None => false,
        }
    }

    /// Looks a stream up by its public id.
    pub fn find(&self, id: &str) -> Option<Arc<Subscriber>> {
        let reg = self.registry();
        let key = reg.key_of(id)?;
        Some(reg.streams[&key].sub.clone())
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
            users: reg.by_user.len(),
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
    /// The registry key of a public connection id, if the id is exactly right.
    fn key_of(&self, id: &str) -> Option<u64> {
        let key = u64::from_str_radix(id.split('-').next()?, 16).ok()?;
        let e = self.streams.get(&key)?;
        // The random part makes the id unguessable; compare it in constant time.
        ring_eq(e.sub.id.as_bytes(), id.as_bytes()).then_some(key)
    }

    /// Takes a stream out of every index.
    fn remove(&mut self, key: u64, now_ms: u64) -> Option<Entry> {
        let entry = self.streams.remove(&key)?;
        for t in &entry.topics {
            self.unsubscribe(t, key);
        }
        if let Some(user) = &entry.sub.user
            && let Some(keys) = self.by_user.get_mut(user)
        {
            keys.retain(|k| *k != key);
            if keys.is_empty() {
                self.by_user.remove(user);
                // The session's idle time starts when the user's last stream closes.
                if let Some(s) = self.sessions.get_mut(user) {
                    s.touched_ms = now_ms;
                }
            }
        }
        decrement(&mut self.per_ip, &entry.sub.ip);
        Some(entry)
    }

    /// Adds topics to a stream (and to what it names itself, if `named`).
    fn add_topics(&mut self, key: u64, topics: &[String], named: bool) {
        let Some(e) = self.streams.get_mut(&key) else {
            return;
        };
        let sub = e.sub.clone();
        let mut added = Vec::new();
        for t in topics {
            if named && !e.base.contains(t) {
                e.base.push(t.clone());
            }
            if !e.topics.contains(t) {
                e.topics.push(t.clone());
                added.push(t.clone());
            }
        }
        for t in &added {
            self.subscribe(t, &sub);
        }
    }

    /// Removes topics from a stream; without `named`, topics the stream named stay.
    fn remove_topics(&mut self, key: u64, topics: &[String], named: bool) {
        let Some(e) = self.streams.get_mut(&key) else {
            return;
        };
        let mut removed = Vec::new();
        for t in topics {
            if named {
                e.base.retain(|b| b != t);
            } else if e.base.contains(t) {
                continue;
            }
            if let Some(i) = e.topics.iter().position(|x| x == t) {
                e.topics.remove(i);
                removed.push(t.clone());
            }
        }
        for t in &removed {
            self.unsubscribe(t, key);
        }
    }

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

fn no_stream(id: &str) -> Error {
    Error::NotFound(format!("no open stream has connection_id {id:?}"))
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
