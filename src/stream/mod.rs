//! Streams (SPEC §5.1, §5.3): what a subscriber receives, whatever the transport.
//!
//! Opening a stream checks the caller's topics, registers it with the broker (from then on
//! it receives every new event), and decides how it resumes: from the client's id, from the
//! start (`earliest`, or after a `reset`), or not at all. A [`Subscription`] then yields,
//! in one format, the opening (`connected`, perhaps `reset`), the replay from the log up to
//! the registration point, and the live events after it: no gap, no duplicate.
//!
//! - `open`: the checks and the resume decision;
//! - `replay`: reading the log off the async workers, and the race with retention.
//!
//! A front door writes what [`Subscription::poll_next`] yields (the SSE body of `http`, the
//! connection writer of `server`), and drops the subscription when its client leaves.

mod open;
mod replay;
#[cfg(test)]
mod tests;

use std::net::IpAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;

use crate::broker::{Broker, Subscriber};
use crate::event::{Ending, EventFilter, Format};
use crate::store::SharedLog;

use replay::Replay;
use replay::Skip;

/// What a client asks of a stream, from whichever front door.
#[derive(Debug, Clone)]
pub(crate) struct StreamRequest {
    /// Topics and patterns named by the client.
    pub named: Vec<String>,
    /// Where to resume: an event id, `earliest`, or nothing (live only).
    pub last_event_id: Option<String>,
    pub ip: IpAddr,
    pub format: Format,
    /// A front door's choice among the events the stream would receive (ntfy's filters).
    pub filter: Option<EventFilter>,
}

/// Opens streams: the hub's parts a stream needs, and the settings it uses.
pub(crate) struct Streams {
    broker: Broker,
    log: SharedLog,
    max_topics: usize,
    retry_ms: u64,
}

impl Streams {
    pub fn new(broker: Broker, log: SharedLog, max_topics: usize, retry_ms: u64) -> Streams {
        Streams {
            broker,
            log,
            max_topics,
            retry_ms,
        }
    }
}

/// One open stream: its opening, then the replay, then live events, in its format, until
/// the hub closes it. Dropping it (the client left) unregisters the stream.
pub(crate) struct Subscription {
    broker: Broker,
    sub: Arc<Subscriber>,
    format: Format,
    /// The first write: the format's opening, `connected`, and a `reset` if one is due.
    opening: Option<Bytes>,
    /// What is still to be read from the log before live events: the replay of the opening,
    /// then (chained to it) those of topics a WebSocket connection subscribed to later.
    replay: Option<Box<Replay>>,
    /// For the log line when it ends: what it receives, since when, events sent.
    topics: Box<str>,
    opened: std::time::Instant,
    sent: u64,
    /// The replay failed: the stream ended for that.
    failed: bool,
}

impl Subscription {
    /// The next bytes to write, or `None` once the stream has ended.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        if let Some(first) = self.opening.take() {
            return Poll::Ready(Some(first));
        }
        while let Some(replay) = &mut self.replay {
            let receives = self.sub.receives();
            let counters = self.broker.counters();
            match replay.poll_next(
                cx,
                self.format,
                (receives.as_deref(), self.sub.filter()),
                counters,
                &mut self.sent,
            ) {
                Poll::Ready(Ok(Some(chunk))) => return Poll::Ready(Some(chunk)),
                Poll::Ready(Ok(None)) => self.replay = replay.then.take(),
                Poll::Ready(Err(e)) => {
                    // The client reconnects with its last id and tries again.
                    tracing::warn!(conn = %self.sub.id, error = %e, "replay failed; ending stream");
                    self.replay = None;
                    self.failed = true;
                    self.sub.close(None, true);
                }
                Poll::Pending => return Poll::Pending,
            }
        }
        let now = self.broker.now_ms();
        self.sub.poll_next(cx, now, self.format, &mut self.sent)
    }
}

impl Subscription {
    /// Replays `next` after what is being replayed (a WebSocket's new topics).
    fn replay_after(&mut self, next: Replay) {
        let mut slot = &mut self.replay;
        while let Some(r) = slot {
            slot = &mut r.then;
        }
        *slot = Some(Box::new(next));
    }

    /// The topics it opened with, and the seq after which it has (or will have, once its
    /// replay is done) every event on them: where its replay starts, or the point it went
    /// live (read now: later than its registration, which only ever leaves out less).
    pub fn opening_cover(&self) -> (Vec<String>, u64) {
        let since = match &self.replay {
            Some(r) => r.start(),
            None => self.broker.fanned_through(),
        };
        let topics = self.topics.split(',').filter(|t| !t.is_empty());
        (topics.map(str::to_string).collect(), since)
    }

    /// How it is written.
    pub fn format(&self) -> Format {
        self.format
    }

    /// The public connection id.
    pub fn id(&self) -> &str {
        &self.sub.id
    }

    /// The broker's coarse clock (ms since start): cheap to read on every wake.
    pub fn now_ms(&self) -> u64 {
        self.broker.now_ms()
    }

    /// The hub ended the connection (its last message may still be unwritten).
    pub fn is_ending(&self) -> bool {
        self.sub.ended().is_some()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.broker.unregister(&self.sub);
        let why = match self.sub.ended() {
            Some(Ending::Closed(r)) => r.as_str(),
            Some(Ending::Shutdown) => "shutdown",
            None if self.failed => "replay_failed",
            None => "client_left",
        };
        tracing::info!(
            conn = %self.sub.id,
            user = self.sub.user.as_deref().unwrap_or("-"),
            topics = %self.topics,
            secs = self.opened.elapsed().as_secs(),
            events = self.sent,
            why,
            "stream closed"
        );
    }
}
