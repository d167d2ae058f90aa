//! A stream's replay: the events it missed, read from the log in chunks on a blocking
//! thread (a sled read may wait on the disk, and must not hold an async worker), encoded
//! in the stream's format on the way out.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use tokio::task::JoinHandle;

use crate::broker::Counters;
use crate::event::{Control, EventFilter, Format, ResetReason};
use crate::store::{Chunk, ReadLimit, Selector, SharedLog, StoreError};
use crate::topic::Pattern;

/// One read: at most this many events and about this many bytes.
const CHUNK: ReadLimit = ReadLimit {
    events: 256,
    bytes: 64 * 1024,
};

/// What one read found: the chunk, and whether retention removed events the client had
/// not seen (only checked while continuity from the client's id is promised).
type Step = Result<(Chunk, bool), StoreError>;

/// What a stream still has to replay from the log before it goes live.
pub(super) struct Replay {
    log: SharedLog,
    selector: Arc<Selector>,
    /// Last seq already covered.
    after: u64,
    /// Replay up to and including this seq; later events arrive live.
    until: u64,
    /// The client's `Last-Event-ID` when the replay continues from it (no reset was sent):
    /// then each chunk is checked for events retention removed meanwhile.
    continues_from: Option<String>,
    /// The read under way.
    reading: Option<JoinHandle<Step>>,
    /// The last chunk was read: nothing is left.
    finished: bool,
    /// Sent before the first chunk: a `reset` decided when the replay was asked for.
    first: Option<Bytes>,
    /// What to replay after this one (the topics a WebSocket subscribed to meanwhile).
    pub then: Option<Box<Replay>>,
    /// Events the connection has already, left out: those on one of these topics (or
    /// patterns) after its seq (a WebSocket's replay of topics it adds).
    skip: Option<Box<Skip>>,
}

/// The topics a connection has received every event of after a seq, and who it is (for
/// what a pattern delivers).
pub(super) struct Skip {
    pub covered: Vec<(String, u64)>,
    pub user: Option<String>,
    pub admin: bool,
}

impl Skip {
    /// Did the connection get `e` already, through a topic it had?
    fn has(&self, e: &crate::event::Event) -> bool {
        e.topics.iter().any(|t| {
            crate::topic::visible_to(t, self.user.as_deref(), self.admin)
                && self.covered.iter().any(|(c, since)| {
                    e.seq > *since
                        && (c == t
                            || (c.contains('*')
                                && crate::topic::Pattern::new(c).is_ok_and(|p| p.matches(t))))
                })
        })
    }
}

impl Replay {
    pub fn new(
        log: SharedLog,
        selector: Selector,
        after: u64,
        until: u64,
        continues_from: Option<String>,
    ) -> Replay {
        Replay {
            log,
            selector: Arc::new(selector),
            after,
            until,
            continues_from,
            reading: None,
            finished: false,
            first: None,
            then: None,
            skip: None,
        }
    }

    /// The same replay, leaving out the events `skip` says the connection has.
    pub fn skipping(mut self, skip: Skip) -> Replay {
        if !skip.covered.is_empty() {
            self.skip = Some(Box::new(skip));
        }
        self
    }

    /// Where the replay starts (the connection has every later event once it is done).
    pub fn start(&self) -> u64 {
        self.after
    }

    /// The same replay, with `first` sent before it (a `reset`).
    pub fn after_message(mut self, first: Bytes) -> Replay {
        self.first = Some(first);
        self
    }

    /// The next replayed bytes, `None` once the replay is done, or why the log failed.
    pub fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        format: Format,
        (receives, filter): (Option<&[Pattern]>, Option<&EventFilter>),
        counters: &Counters,
        sent: &mut u64,
    ) -> Poll<Result<Option<Bytes>, String>> {
        if let Some(first) = self.first.take() {
            return Poll::Ready(Ok(Some(first)));
        }
        loop {
            if self.finished {
                return Poll::Ready(Ok(None));
            }
            let reading = self.reading.get_or_insert_with(|| {
                let (log, sel) = (self.log.clone(), self.selector.clone());
                let (after, until, check) = (self.after, self.until, self.continues_from.is_some());
                tokio::task::spawn_blocking(move || read(&*log, &sel, after, until, check))
            });
            let step = match std::pin::Pin::new(reading).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(r) => r,
            };
            self.reading = None;
            let (chunk, gap) = match step {
                Ok(Ok(found)) => found,
                Ok(Err(e)) => return Poll::Ready(Err(e.to_string())),
                Err(e) => return Poll::Ready(Err(e.to_string())),
            };
            if gap {
                // Retention raced the replay: say so, and start over from what is kept.
                self.after = 0;
                let reset = Control::Reset {
                    reason: ResetReason::Pruned,
                    last_event_id: self.continues_from.take(),
                };
                return Poll::Ready(Ok(Some(reset.encode(format))));
            }
            self.after = chunk.next_after;
            self.finished = chunk.done;
            let mut chunk = chunk;
            if let Some(skip) = &self.skip {
                chunk.events.retain(|e| !skip.has(e));
            }
            if let Some(f) = filter {
                chunk.events.retain(|e| f.keeps(e));
            }
            if !chunk.events.is_empty() {
                counters
                    .replayed
                    .fetch_add(chunk.events.len() as u64, Ordering::Relaxed);
                *sent += chunk.events.len() as u64;
                return Poll::Ready(Ok(Some(join(&chunk, format, receives))));
            }
        }
    }
}

use std::future::Future as _;

/// One chunk, and the check for events retention removed after `after`: retention removes
/// the oldest events first, so if nothing after `after` was removed by now, this chunk is
/// complete.
fn read(log: &dyn crate::store::Log, sel: &Selector, after: u64, until: u64, check: bool) -> Step {
    let chunk = log.read(sel, after, until, CHUNK)?;
    let gap = check && log.pruned_since(sel, after)?;
    Ok((chunk, gap))
}

/// The chunk's events in `format`, as one write.
fn join(chunk: &Chunk, format: Format, receives: Option<&[Pattern]>) -> Bytes {
    if let [one] = &chunk.events[..] {
        return one.encoded_for(format, receives);
    }
    let mut b = BytesMut::with_capacity(chunk.events.iter().map(|e| e.size_hint()).sum());
    for e in &chunk.events {
        b.put_slice(&e.encoded_for(format, receives));
    }
    b.freeze()
}
