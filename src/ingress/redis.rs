//! The Redis side of ingress: one pub/sub connection for every `channel` and `pattern` rule,
//! and one connection per `stream` rule. Each task reconnects with capped backoff while the
//! hub serves on, logs once when an outage starts and once when it ends, and reports its
//! state to the hub (`/health`, `/stats`, `/metrics`). Messages read together are published
//! together, as one batch, in the order Redis gave them.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::{FutureExt as _, StreamExt as _};
use redis::aio::{AsyncPushSender, MultiplexedConnection, SendError};
use redis::streams::StreamReadReply;
use redis::{AsyncConnectionConfig, PushInfo, PushKind};
use tokio::sync::mpsc;

use super::{Dropped, Rule};
use crate::auth::Caller;
use crate::config::Source;
use crate::event::{NewEvent, Origin};
use crate::hub::{Hub, SourceStatus};
use crate::shutdown::Shutdown;

/// Most messages published as one batch.
const BATCH: usize = 256;
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
/// How long one `XREADGROUP` waits for entries.
const BLOCK_MS: usize = 2000;
/// Backoff between connection attempts: from this, doubling, up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Starts the ingress tasks `[redis]` asks for (none without rules).
pub fn spawn(hub: &Hub, shutdown: &Shutdown) {
    let cfg = &hub.config().redis;
    let (Some(url), false) = (&cfg.url, cfg.ingress.is_empty()) else {
        return;
    };
    let ca = cfg.ca_file.as_deref();
    // Pub/sub messages arrive as RESP3 pushes (see `PubSubTask::connect`).
    let sep = if url.expose().contains('?') { '&' } else { '?' };
    let resp3 = format!("{}{sep}protocol=resp3", url.expose());
    let (client, pushes) = match (
        crate::cluster::client(url.expose(), ca),
        crate::cluster::client(&resp3, ca),
    ) {
        (Ok(c), Ok(p)) => (c, p),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(url = %url.masked(), error = %e, "redis ingress cannot start");
            return;
        }
    };
    let rules: Vec<Rule> = cfg.ingress.iter().filter_map(Rule::compile).collect();
    let (pubsub, streams): (Vec<Rule>, Vec<Rule>) = rules
        .into_iter()
        .partition(|r| !matches!(r.source, Source::Stream(_)));
    if !pubsub.is_empty() {
        let names: Vec<String> = pubsub.iter().map(Rule::name).collect();
        let status = hub.add_source(names.join(", "));
        let task = PubSubTask {
            hub: hub.clone(),
            client: pushes,
            rules: pubsub,
            status,
        };
        tokio::spawn(task.run(shutdown.clone()));
    }
    for rule in streams {
        let status = hub.add_source(rule.name());
        let task = StreamTask {
            hub: hub.clone(),
            client: client.clone(),
            rule,
            status,
        };
        tokio::spawn(task.run(shutdown.clone()));
    }
}

/// Capped exponential backoff with jitter.
struct Backoff(Duration);

impl Backoff {
    fn new() -> Backoff {
        Backoff(FIRST_BACKOFF)
    }

    fn next(&mut self) -> Duration {
        let d = self.0;
        self.0 = (self.0 * 2).min(MAX_BACKOFF);
        // Up to a quarter more, so that hubs restarted together do not retry in step.
        let jitter = u64::from(crate::random::random_u32()) % (d.as_millis() as u64 / 4 + 1);
        d + Duration::from_millis(jitter)
    }
}

/// A source's connection is made: it is up (logged when it was not).
fn connected(status: &SourceStatus) {
    if !status.up.swap(true, Ordering::Relaxed) {
        tracing::info!(source = %status.name, "redis ingress connected");
    }
}

/// Keeps a source connected until shutdown. `serve` makes one connection and uses it until it
/// ends (calling [`connected`] once it is made). An outage (a connection lost, or the first
/// attempt failing) is logged and counted once, not at every retry; retries back off, from the
/// start again after each connection that was made.
async fn keep_connected<F, Fut>(status: &SourceStatus, stop: &Shutdown, mut serve: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = redis::RedisResult<()>>,
{
    let mut backoff = Backoff::new();
    let mut first = true;
    loop {
        let ended = tokio::select! {
            _ = stop.wait() => return,
            r = serve() => r,
        };
        let was_up = status.up.swap(false, Ordering::Relaxed);
        if was_up || first {
            status.outages.fetch_add(1, Ordering::Relaxed);
            let why = ended
                .err()
                .map_or_else(|| "closed".to_string(), |e| e.to_string());
            tracing::warn!(source = %status.name, error = %why,
                "redis ingress is not connected; retrying");
        }
        first = false;
        if was_up {
            backoff = Backoff::new();
        }
        tokio::select! {
            _ = stop.wait() => return,
            _ = tokio::time::sleep(backoff.next()) => {}
        }
    }
}

/// The address publishes from ingress count as (publishes from one source share flushes).
fn from() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))
}

/// Publishes `events` as one batch; true if the log holds them.
async fn publish(hub: &Hub, caller: &Caller, status: &SourceStatus, events: Vec<NewEvent>) -> bool {
    if events.is_empty() {
        return true;
    }
    let n = events.len() as u64;
    match hub.publish(caller, events, from()).await {
        Ok(_) => {
            status.published.fetch_add(n, Ordering::Relaxed);
            true
        }
        Err(e) => {
            tracing::warn!(source = %status.name, error = %e, events = n,
                "redis ingress could not publish");
            false
        }
    }
}

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

/// Counts and logs a dropped message.
fn dropped(status: &SourceStatus, channel: &str, why: &Dropped) {
    let counter = match why {
        Dropped::TooLarge(_) => &status.too_large,
        Dropped::NotText | Dropped::Invalid(_) => &status.invalid,
    };
    counter.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(source = %status.name, channel, reason = %why, "redis message dropped");
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
struct PubSubTask {
    hub: Hub,
    client: redis::Client,
    rules: Vec<Rule>,
    status: Arc<SourceStatus>,
}

impl PubSubTask {
    async fn run(self, stop: Shutdown) {
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

/// One `stream` rule: a consumer group's reader. Entries are acknowledged once the log holds
/// their events; the log also keeps the newest entry id published (in the same write), so
/// an entry redelivered after a crash is acknowledged without being published again.
struct StreamTask {
    hub: Hub,
    client: redis::Client,
    rule: Rule,
    status: Arc<SourceStatus>,
}

impl StreamTask {
    async fn run(self, stop: Shutdown) {
        let caller = Caller::internal("redis-ingress");
        keep_connected(&self.status, &stop, || self.serve(&caller)).await;
    }

    fn stream(&self) -> &str {
        match &self.rule.source {
            Source::Stream(s) => s,
            _ => "",
        }
    }

    /// Connects, makes sure the group exists, reads this consumer's pending entries (those
    /// delivered before a crash), then new ones, until the connection fails.
    async fn serve(&self, caller: &Caller) -> redis::RedisResult<()> {
        let config = AsyncConnectionConfig::new().set_response_timeout(None);
        let mut conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let (stream, group) = (self.stream(), self.rule.group.as_str());
        let created: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(stream)
            .arg(group)
            .arg("$")
            .arg("MKSTREAM")
            .query_async(&mut conn)
            .await;
        match created {
            Err(e) if e.code() != Some("BUSYGROUP") => return Err(e),
            _ => {}
        }
        connected(&self.status);
        // One consumer per data directory: after a restart it finds its own pending entries.
        let consumer = format!("runnel-{:08x}", self.hub.log_incarnation());
        let source = format!("redis-stream:{stream}");
        // The newest entry the log holds from this stream: read once per connection, then
        // kept up to date here (this task is the stream's only publisher).
        let mut last = match self.hub.origin_position(&source).await {
            Ok(p) => p.and_then(|p| entry_id(&p)),
            Err(e) => {
                return Err(redis::RedisError::from((
                    redis::ErrorKind::Client,
                    "cannot read the log",
                    e.to_string(),
                )));
            }
        };
        // "0": this consumer's pending entries, from the start; then ">": new ones.
        let mut cursor = "0".to_string();
        loop {
            let mut cmd = redis::cmd("XREADGROUP");
            cmd.arg("GROUP")
                .arg(group)
                .arg(&consumer)
                .arg("COUNT")
                .arg(BATCH);
            if cursor == ">" {
                cmd.arg("BLOCK").arg(BLOCK_MS);
            }
            cmd.arg("STREAMS").arg(stream).arg(&cursor);
            let reply: Option<StreamReadReply> = cmd.query_async(&mut conn).await?;
            let entries = reply
                .and_then(|r| r.keys.into_iter().next())
                .map(|k| k.ids)
                .unwrap_or_default();
            if entries.is_empty() {
                cursor = ">".into();
                continue;
            }
            if cursor != ">" {
                cursor = entries[entries.len() - 1].id.clone();
            }
            let ids: Vec<String> = entries.iter().map(|e| e.id.clone()).collect();
            let done = self
                .publish_entries(caller, &source, &mut last, entries)
                .await;
            if !done {
                // Not acknowledged: they stay pending, and are read again after a reconnect.
                return Err(redis::RedisError::from((
                    redis::ErrorKind::Client,
                    "publishing failed; the entries stay pending",
                )));
            }
            let _: usize = redis::cmd("XACK")
                .arg(stream)
                .arg(group)
                .arg(&ids)
                .query_async(&mut conn)
                .await?;
        }
    }

    /// Publishes what is new among `entries` (newer than `last`, which it moves on); true
    /// when the log holds it (or nothing was new), so they may be acknowledged.
    async fn publish_entries(
        &self,
        caller: &Caller,
        source: &str,
        last: &mut Option<(u64, u64)>,
        entries: Vec<redis::streams::StreamId>,
    ) -> bool {
        let max = self.hub.publish_limits().max_event_bytes;
        let mut events = Vec::with_capacity(entries.len());
        for entry in entries {
            self.status.received.fetch_add(1, Ordering::Relaxed);
            if let (Some(last), Some(id)) = (*last, entry_id(&entry.id))
                && id <= last
            {
                self.status.duplicates.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let fields: Vec<(String, Vec<u8>)> = entry
                .map
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), bytes_of(v)?)))
                .collect();
            let text: Vec<(&str, &str)> = fields
                .iter()
                .filter_map(|(k, v)| Some((k.as_str(), std::str::from_utf8(v).ok()?)))
                .collect();
            let payload = fields.iter().find(|(k, _)| *k == self.rule.field);
            let made = match payload {
                Some((_, p)) => self.rule.event(self.stream(), p, &text, max),
                None => Err(Dropped::Invalid(format!(
                    "entry {} has no field {:?}",
                    entry.id, self.rule.field
                ))),
            };
            match made {
                Ok(mut e) => {
                    e.origin = Some(Origin {
                        source: source.to_string(),
                        position: entry.id.clone(),
                    });
                    events.push(e);
                }
                Err(why) => dropped(&self.status, self.stream(), &why),
            }
        }
        let newest = events
            .last()
            .and_then(|e| e.origin.as_ref())
            .and_then(|o| entry_id(&o.position));
        let done = publish(&self.hub, caller, &self.status, events).await;
        if done && newest.is_some() {
            *last = newest;
        }
        done
    }
}

/// A stream entry id, `<ms>-<seq>`, as numbers that order like Redis orders them.
fn entry_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// A field's value as bytes.
fn bytes_of(v: &redis::Value) -> Option<Vec<u8>> {
    match v {
        redis::Value::BulkString(b) => Some(b.clone()),
        redis::Value::SimpleString(s) => Some(s.clone().into_bytes()),
        redis::Value::Int(i) => Some(i.to_string().into_bytes()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_ids_order_as_numbers() {
        assert!(entry_id("1700000000000-10") > entry_id("1700000000000-9"));
        assert!(entry_id("1700000000001-0") > entry_id("1700000000000-99"));
        assert_eq!(entry_id("x"), None);
    }

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

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let mut b = Backoff::new();
        let first = b.next();
        assert!(first >= FIRST_BACKOFF && first <= FIRST_BACKOFF * 5 / 4);
        for _ in 0..20 {
            b.next();
        }
        let capped = b.next();
        assert!(capped >= MAX_BACKOFF && capped <= MAX_BACKOFF * 5 / 4);
    }
}
