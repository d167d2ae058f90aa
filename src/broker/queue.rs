//! One stream's side of the broker: a bounded queue of what is to be written, the waker of
//! the task that writes it, and how the stream ends.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};

use super::Counters;
use crate::event::{CloseReason, Ending, Event, EventFilter, Format};
use crate::topic::Pattern;

/// Largest write built by joining waiting events.
const COALESCE_LIMIT: usize = 64 * 1024;

/// What waits in a stream's queue.
pub(crate) enum Item {
    Event(Arc<Event>),
    /// The stream was silent for a heartbeat.
    Keepalive,
}

impl Item {
    fn encode(&self, format: Format, receives: Option<&[Pattern]>) -> Bytes {
        match self {
            Item::Event(e) => e.encoded_for(format, receives),
            Item::Keepalive => format.keepalive(receives),
        }
    }

    /// About the size of the item on the wire, to bound joined writes.
    fn size_hint(&self) -> usize {
        match self {
            Item::Event(e) => e.size_hint(),
            Item::Keepalive => 16,
        }
    }
}

/// What [`Subscriber::push`] did with an event.
pub(super) enum Push {
    Queued,
    /// The stream is ending, or already had this event (several of its topics matched).
    Skipped,
    /// The queue was full: the stream is being closed as a slow reader.
    Overflowed,
}

/// The broker's side of one open stream.
pub(crate) struct Subscriber {
    pub(super) key: u64,
    /// Public, unguessable connection id.
    pub id: String,
    pub user: Option<String>,
    pub admin: bool,
    pub ip: IpAddr,
    /// Unix time in ms.
    pub connected_at: u64,
    /// Unix time in ms when the credential expires: the stream ends then.
    pub expires_at: Option<u64>,
    /// How it is written: SSE, WebSocket (SPEC §5.8), or one of ntfy's (SPEC §11.1).
    pub format: Format,
    /// The front door's choice among the events it would receive (ntfy's filters).
    filter: Option<EventFilter>,
    queue: Mutex<Queue>,
}

struct Queue {
    items: VecDeque<Item>,
    waker: Option<Waker>,
    state: State,
    /// Seq of the last event queued, so an event on several topics is queued once.
    last_seq: u64,
    /// Coarse time of the last write, for the heartbeat.
    last_write_ms: u64,
    /// How the hub ended the stream, if it did.
    ended: Option<Ending>,
    /// What a WebSocket or ntfy connection receives (kept by the registry), so that an
    /// event on several topics names only those it receives. `None` for SSE streams.
    receives: Option<Arc<[Pattern]>>,
}

enum State {
    Open,
    /// Ending: send this message (if any) after what is queued, then end.
    Closing(Option<Ending>),
    Done,
}

impl Subscriber {
    pub(super) fn new(
        key: u64,
        spec: &super::StreamSpec,
        connected_at: u64,
        now_ms: u64,
    ) -> Subscriber {
        Subscriber {
            key,
            id: format!("{key:x}-{}", crate::random::random_hex(16)),
            user: spec.user.clone(),
            admin: spec.admin,
            ip: spec.ip,
            connected_at,
            expires_at: spec.expires_at,
            format: spec.format,
            filter: spec.filter.clone(),
            queue: Mutex::new(Queue {
                items: VecDeque::new(),
                waker: None,
                state: State::Open,
                last_seq: 0,
                last_write_ms: now_ms,
                ended: None,
                receives: None,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A poisoned queue lock means a panic while holding it; with panic=abort that
        // cannot happen, and without it the queue is still structurally valid.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// May this stream receive an event on `topic` through a wildcard?
    pub(super) fn may_receive(&self, topic: &str) -> bool {
        crate::topic::visible_to(topic, self.user.as_deref(), self.admin)
    }

    /// The front door's filter, if it has one.
    pub fn filter(&self) -> Option<&EventFilter> {
        self.filter.as_ref()
    }

    /// Queues one event (unless the stream's filter leaves it out).
    pub(super) fn push(&self, event: &Arc<Event>, cap: usize, counters: &Counters) -> Push {
        if self.filter.as_ref().is_some_and(|f| !f.keeps(event)) {
            return Push::Skipped;
        }
        let waker;
        {
            let mut q = self.lock();
            let seq = event.seq;
            if !matches!(q.state, State::Open) || (seq != 0 && q.last_seq == seq) {
                return Push::Skipped;
            }
            q.last_seq = seq;
            if q.items.len() >= cap {
                q.items = VecDeque::new();
                q.state = State::Closing(Some(Ending::Closed(CloseReason::SlowReader)));
                q.ended = Some(Ending::Closed(CloseReason::SlowReader));
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
            q.items.push_back(Item::Event(event.clone()));
            waker = q.waker.take();
        }
        if let Some(w) = waker {
            w.wake();
        }
        Push::Queued
    }

    /// Queues a heartbeat if the stream is open, idle, and was last written before
    /// `silent_since_ms`.
    pub(super) fn keepalive_if_silent(&self, now_ms: u64, heartbeat_ms: u64) {
        let waker = {
            let mut q = self.lock();
            if matches!(q.state, State::Open)
                && q.items.is_empty()
                && now_ms.saturating_sub(q.last_write_ms) >= heartbeat_ms
            {
                q.items.push_back(Item::Keepalive);
                q.waker.take()
            } else {
                None
            }
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Ends the stream after what is already queued (or at once, dropping it), with `last`
    /// as its final message.
    pub fn close(&self, last: Option<Ending>, drop_queued: bool) {
        let waker = {
            let mut q = self.lock();
            if !matches!(q.state, State::Open) {
                return;
            }
            if drop_queued {
                q.items = VecDeque::new();
            }
            q.state = State::Closing(last);
            q.ended = last;
            q.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Items waiting to be written.
    pub fn queued(&self) -> usize {
        self.lock().items.len()
    }

    /// How the hub ended the stream, if it did.
    pub fn ended(&self) -> Option<Ending> {
        self.lock().ended
    }

    /// What the stream receives now, for a format that names topics (the registry sets it).
    /// Compiled here, once per change, so that delivering an event only matches.
    pub(super) fn set_receives(&self, topics: &[String]) {
        if self.format.names_topics() {
            let patterns: Arc<[Pattern]> =
                topics.iter().filter_map(|t| Pattern::new(t).ok()).collect();
            self.lock().receives = Some(patterns);
        }
    }

    /// What a WebSocket or ntfy connection receives now (`None` for SSE).
    pub fn receives(&self) -> Option<Arc<[Pattern]>> {
        self.lock().receives.clone()
    }

    /// The next bytes to write in `format`: every waiting item joined into one write (up to
    /// 64 KiB), the final message, or the end; `sent` counts the events in them. Registers the
    /// waker when there is nothing.
    pub fn poll_next(
        &self,
        cx: &mut Context<'_>,
        now_ms: u64,
        format: Format,
        sent: &mut u64,
    ) -> Poll<Option<Bytes>> {
        let mut q = self.lock();
        if let Some(first) = q.items.pop_front() {
            q.last_write_ms = now_ms;
            let mut size = first.size_hint();
            let mut n = 0;
            for it in &q.items {
                if size + it.size_hint() > COALESCE_LIMIT {
                    break;
                }
                size += it.size_hint();
                n += 1;
            }
            // Encoding happens outside the lock: fan-out must not wait on it.
            let rest: Vec<Item> = q.items.drain(..n).collect();
            let receives = q.receives.clone();
            drop(q);
            let receives = receives.as_deref();
            *sent += std::iter::once(&first)
                .chain(&rest)
                .filter(|i| matches!(i, Item::Event(_)))
                .count() as u64;
            let first = first.encode(format, receives);
            if rest.is_empty() {
                return Poll::Ready(Some(first));
            }
            let mut buf = BytesMut::with_capacity(size + size / 4);
            buf.extend_from_slice(&first);
            for it in rest {
                buf.extend_from_slice(&it.encode(format, receives));
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
            State::Closing(Some(last)) => {
                q.state = State::Closing(None);
                drop(q);
                Poll::Ready(Some(last.control().encode(format)))
            }
            State::Closing(None) | State::Done => Poll::Ready(None),
        }
    }
}
