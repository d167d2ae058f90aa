//! Every `channel` and `pattern` rule on one RESP3 connection, whose pushes come through a
//! bounded queue and are published in batches.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::{FutureExt as _, StreamExt as _};
use redis::aio::{AsyncPushSender, MultiplexedConnection, SendError};
use redis::{AsyncConnectionConfig, PushInfo, PushKind};
use tokio::sync::mpsc;

use super::source::{BATCH, connected, dropped, keep_connected, publish};
use crate::auth::Caller;
use crate::config::Source;
use crate::event::NewEvent;
use crate::hub::{Hub, SourceStatus};
use crate::ingress::rule::Rule;
use crate::shutdown::Shutdown;

/// A pub/sub connection quiet this long is pinged.
const PING_EVERY: Duration = Duration::from_secs(15);
/// Pub/sub messages waiting for the hub, at most, and their bytes: more are dropped and
/// counted. Room for over a second of 10k messages/s while a slow disk (an SD card) flushes;
/// the bytes are Redis's own soft limit for a subscriber's buffer (`client-output-buffer-limit`).
const QUEUE: usize = 16_384;
const QUEUE_BYTES: usize = 8 << 20;
/// How long a batch waits for more messages after its first: a few ms of latency (the
/// budget is 20 ms) for far fewer flushes at a steady low rate.
const LINGER: Duration = Duration::from_millis(5);

/// A subscribed connection, its queue of messages, and the bytes waiting in it.
type Subscribed = (
    MultiplexedConnection,
    mpsc::Receiver<PushInfo>,
    Arc<AtomicUsize>,
);

/// The connection's end of the queue of messages for the hub. When Redis sends faster than
/// the hub publishes, a message that does not fit (by count or by bytes) is dropped and
/// counted (pub/sub is at most once) instead of held in memory without a bound. The
/// connection is the queue's only sender, and the last place is kept for the
/// `Disconnection` push, so that the end of the connection always gets through.
struct QueueSender {
    tx: mpsc::Sender<PushInfo>,
    /// The bytes of the messages in the queue (the receiver takes off what it reads).
    waiting: Arc<AtomicUsize>,
    max_bytes: usize,
    status: Arc<SourceStatus>,
}

impl AsyncPushSender for QueueSender {
    fn send(&self, p: PushInfo) -> Result<(), SendError> {
        let size = push_size(&p);
        let full =
            self.tx.capacity() <= 1 || self.waiting.load(Ordering::Relaxed) + size > self.max_bytes;
        if p.kind != PushKind::Disconnection && full {
            self.status.overflow.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        self.waiting.fetch_add(size, Ordering::Relaxed);
        self.tx.try_send(p).map_err(|_| SendError)
    }
}

/// About what a push holds in memory: its strings and a little for the rest.
fn push_size(p: &PushInfo) -> usize {
    let strings: usize = p
        .data
        .iter()
        .map(|v| match v {
            redis::Value::BulkString(b) => b.len(),
            _ => 0,
        })
        .sum();
    strings + 128
}

/// `first` and what follows it within `LINGER` (or at once, up to `BATCH`): one batch, so
/// that a steady trickle shares flushes instead of paying one each. True if the connection
/// ended meanwhile.
async fn gather<S>(messages: &mut S, first: redis::Msg) -> (Vec<redis::Msg>, bool)
where
    S: futures_util::Stream<Item = redis::Msg> + Unpin,
{
    let mut batch = vec![first];
    let deadline = tokio::time::Instant::now() + LINGER;
    while batch.len() < BATCH {
        // What is ready now, outside tokio's cooperative budget (which would cut a batch
        // at about 128 polls).
        match tokio::task::unconstrained(messages.next()).now_or_never() {
            Some(Some(m)) => {
                batch.push(m);
                continue;
            }
            Some(None) => return (batch, true),
            None => {}
        }
        match tokio::time::timeout_at(deadline, messages.next()).await {
            Ok(Some(m)) => batch.push(m),
            Ok(None) => return (batch, true),
            Err(_) => break,
        }
    }
    (batch, false)
}

/// Every `channel` and `pattern` rule, on one pub/sub connection.
pub(super) struct PubSubTask {
    pub(super) hub: Hub,
    pub(super) client: redis::Client,
    pub(super) rules: Vec<Rule>,
    pub(super) status: Arc<SourceStatus>,
}

impl PubSubTask {
    pub(super) async fn run(self, stop: Shutdown) {
        let caller = Caller::internal("redis-ingress");
        keep_connected(&self.status, &stop, || self.serve(&caller)).await;
    }

    /// One connection: subscribe, then publish what arrives, a batch at a time.
    async fn serve(&self, caller: &Caller) -> redis::RedisResult<()> {
        let (mut conn, mut rx, waiting) = self.connect().await?;
        connected(&self.status);
        // The connection ends with a `Disconnection` push from the library.
        let messages = futures_util::stream::poll_fn(move |cx| {
            let p = rx.poll_recv(cx);
            if let std::task::Poll::Ready(Some(p)) = &p {
                waiting.fetch_sub(push_size(p), Ordering::Relaxed);
            }
            p
        })
        .take_while(|p| std::future::ready(p.kind != PushKind::Disconnection))
        .filter_map(|p| std::future::ready(redis::Msg::from_push_info(p)));
        let mut messages = std::pin::pin!(messages);
        // A quiet connection is asked now and then whether it is still there: a network
        // path that died silently would otherwise look connected until TCP gives up.
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.tick().await;
        loop {
            let first = tokio::select! {
                m = messages.next() => match m {
                    Some(m) => m,
                    None => break,
                },
                _ = ping.tick() => {
                    let _: redis::Value = redis::cmd("PING").query_async(&mut conn).await?;
                    continue;
                }
            };
            let (batch, ended) = gather(&mut messages, first).await;
            let events = self.events(&batch);
            publish(&self.hub, caller, &self.status, events).await;
            if ended {
                break;
            }
            ping.reset();
        }
        Ok(())
    }

    /// Subscribes on a RESP3 connection whose messages come through a bounded queue (see
    /// [`QueueSender`]).
    async fn connect(&self) -> redis::RedisResult<Subscribed> {
        let (tx, rx) = mpsc::channel::<PushInfo>(QUEUE);
        let waiting = Arc::new(AtomicUsize::new(0));
        let sender = QueueSender {
            tx,
            waiting: waiting.clone(),
            max_bytes: QUEUE_BYTES,
            status: self.status.clone(),
        };
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(Duration::from_secs(5)))
            .set_push_sender(sender);
        let mut conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        for r in &self.rules {
            match &r.source {
                Source::Channel(c) => conn.subscribe(c).await?,
                Source::Pattern(p) => conn.psubscribe(p.as_str()).await?,
                Source::Stream(_) => {}
            }
        }
        Ok((conn, rx, waiting))
    }

    /// The events some messages become, under every rule each matches.
    fn events(&self, batch: &[redis::Msg]) -> Vec<NewEvent> {
        let max = self.hub.publish_limits().max_event_bytes;
        let mut out = Vec::with_capacity(batch.len());
        for m in batch {
            self.status.received.fetch_add(1, Ordering::Relaxed);
            let channel = m.get_channel_name();
            let pattern: Option<String> = m.get_pattern().ok().flatten();
            for r in &self.rules {
                let matches = match (&r.source, &pattern) {
                    (Source::Pattern(p), Some(pat)) => p.as_str() == pat,
                    (Source::Channel(c), None) => c == channel,
                    _ => false,
                };
                if !matches {
                    continue;
                }
                match r.event(channel, m.get_payload_bytes(), &[], max) {
                    Ok(e) => out.push(e),
                    Err(why) => dropped(&self.status, channel, &why),
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(payload: &[u8]) -> PushInfo {
        PushInfo {
            kind: PushKind::Message,
            data: vec![
                redis::Value::BulkString(b"news".to_vec()),
                redis::Value::BulkString(payload.to_vec()),
            ],
        }
    }

    #[test]
    fn a_full_queue_drops_and_counts_but_keeps_a_place_for_the_end() {
        let (tx, mut rx) = mpsc::channel(4);
        let q = QueueSender {
            tx,
            waiting: Arc::new(AtomicUsize::new(0)),
            max_bytes: 1 << 20,
            status: Arc::new(SourceStatus::default()),
        };
        for _ in 0..10 {
            assert!(q.send(message(b"x")).is_ok());
        }
        assert_eq!(q.status.overflow.load(Ordering::Relaxed), 7);
        let end = PushInfo {
            kind: PushKind::Disconnection,
            data: vec![],
        };
        assert!(q.send(end).is_ok(), "the last place is the end's");
        let size = push_size(&message(b"x"));
        assert_eq!(q.waiting.load(Ordering::Relaxed), 3 * size + 128);
        let kinds: Vec<PushKind> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|p| p.kind)
            .collect();
        assert_eq!(kinds.len(), 4);
        assert_eq!(kinds[3], PushKind::Disconnection);
    }

    #[test]
    fn the_queue_holds_so_many_bytes() {
        let (tx, _rx) = mpsc::channel(100);
        let big = message(&[b'x'; 1000]);
        let q = QueueSender {
            tx,
            waiting: Arc::new(AtomicUsize::new(0)),
            max_bytes: 2 * push_size(&big),
            status: Arc::new(SourceStatus::default()),
        };
        for _ in 0..3 {
            q.send(big.clone()).unwrap();
        }
        assert_eq!(q.status.overflow.load(Ordering::Relaxed), 1);
        // What the hub took off makes room again.
        q.waiting.fetch_sub(push_size(&big), Ordering::Relaxed);
        q.send(big).unwrap();
        assert_eq!(q.status.overflow.load(Ordering::Relaxed), 1);
    }
}
