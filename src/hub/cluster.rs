//! A hub in a cluster (SPEC §11.3): publishing through the cluster's log, and following it.
//!
//! A publish is appended to the cluster's log (a Redis Stream, see `cluster`) and answered
//! once this hub has read it back and published it like its own: written to its log and
//! fanned out to its streams, as every other hub does. So every hub publishes every event,
//! in the stream's order, with the seq the stream gave it, and a hub's answers, replays and
//! `/history` include what it published itself.
//!
//! The follower reads the stream from the newest event its log holds; after a restart or an
//! outage it catches up from there. If the stream was trimmed past that point, the events
//! in between are lost to this hub: its log marks the gap, and a client resuming inside it
//! gets `reset` (`pruned`), as after retention.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{oneshot, watch};

use super::{Hub, SourceStatus};
use crate::cluster::{Cluster, ClusterError, Item, Reader};
use crate::error::Error;
use crate::event::CloseReason;
use crate::event::{NewEvent, Published};
use crate::shutdown::Shutdown;

/// Entries read at once.
const READ_COUNT: usize = 512;
/// How long one read waits for an entry.
const READ_BLOCK: Duration = Duration::from_secs(2);
/// How long a publish waits for this hub to have published it after Redis took it.
const APPLY_WAIT: Duration = Duration::from_secs(10);
/// How long a stream resuming from an id this hub has not reached yet waits for it.
const CATCH_UP_WAIT: Duration = Duration::from_secs(5);

/// The hub's side of the cluster.
pub(super) struct Link {
    pub cluster: Cluster,
    /// Publishes of this hub waiting to be read back, by writer name.
    waiters: Mutex<HashMap<String, oneshot::Sender<Vec<Published>>>>,
    next_writer: AtomicU64,
    /// The newest seq this hub has published from the cluster's log.
    applied: watch::Sender<u64>,
    /// The follower's connection, for `/health`.
    pub status: Arc<SourceStatus>,
}

impl Link {
    pub fn new(cluster: Cluster, written: u64, status: Arc<SourceStatus>) -> Link {
        Link {
            cluster,
            waiters: Mutex::new(HashMap::new()),
            next_writer: AtomicU64::new(0),
            applied: watch::Sender::new(written),
            status,
        }
    }

    fn waiters(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, oneshot::Sender<Vec<Published>>>> {
        self.waiters.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Hub {
    fn link(&self) -> Option<&Link> {
        self.inner.cluster.as_ref()
    }

    /// Publishes through the cluster's log: 503 while Redis does not take it; answered once
    /// this hub has published it (or, if that takes long, with what Redis gave it).
    pub(super) async fn publish_in_cluster(
        &self,
        link: &Link,
        events: Vec<NewEvent>,
    ) -> Result<Vec<Published>, Error> {
        let n = link.next_writer.fetch_add(1, Ordering::Relaxed);
        let writer = format!("{}:{n}", link.cluster.node());
        let (tx, rx) = oneshot::channel();
        link.waiters().insert(writer.clone(), tx);
        let first = match link
            .cluster
            .append(&events, crate::time::unix_ms(), &writer)
            .await
        {
            Ok(first) => first,
            Err(e) => {
                link.waiters().remove(&writer);
                return Err(Error::Unavailable {
                    message: format!("the cluster's Redis did not take the publish: {e}"),
                    retry_after: Some(1),
                });
            }
        };
        if let Ok(Ok(published)) = tokio::time::timeout(APPLY_WAIT, rx).await {
            return Ok(published);
        }
        link.waiters().remove(&writer);
        let ids = self.inner.log.ids();
        Ok(events
            .into_iter()
            .zip(first..)
            .map(|(e, seq)| Published {
                id: ids.format(seq),
                topics: e.topics,
                delivered: 0,
            })
            .collect())
    }

    /// Waits (a little) until this hub has published the cluster's events up to `seq`, so a
    /// client moving here from a hub ahead of it resumes without a gap. False if it has not.
    pub(super) async fn caught_up(&self, seq: u64) -> bool {
        let Some(link) = self.link() else {
            return true;
        };
        let mut rx = link.applied.subscribe();
        let r = tokio::time::timeout(CATCH_UP_WAIT, rx.wait_for(|a| *a >= seq)).await;
        matches!(r, Ok(Ok(_)))
    }

    /// Starts following the cluster's log, until shutdown.
    pub(super) fn spawn_follower(&self, shutdown: &Shutdown) {
        if self.link().is_none() {
            return;
        }
        let hub = self.clone();
        let stop = shutdown.clone();
        self.spawn_connection_list(shutdown);
        tokio::spawn(async move {
            let mut wait = Duration::from_millis(100);
            let mut first = true;
            loop {
                let Some(link) = hub.link() else { return };
                let ended = tokio::select! {
                    _ = stop.wait() => return,
                    r = hub.follow(link) => r,
                };
                let was_up = link.status.up.swap(false, Ordering::Relaxed);
                if was_up || first {
                    link.status.outages.fetch_add(1, Ordering::Relaxed);
                    let why = ended
                        .err()
                        .map_or_else(|| "closed".into(), |e| e.to_string());
                    tracing::warn!(error = %why,
                        "not following the cluster's log (streams stay open); retrying");
                }
                if was_up {
                    wait = Duration::from_millis(100);
                }
                first = false;
                tokio::select! {
                    _ = stop.wait() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        });
    }

    /// Connects and publishes what the cluster's log holds after what this hub has, then
    /// follows it, until the connection fails.
    async fn follow(&self, link: &Link) -> Result<(), ClusterError> {
        let mut after = *link.applied.borrow();
        let mut reader = link.cluster.reader(after).await?;
        if !link.status.up.swap(true, Ordering::Relaxed) {
            tracing::info!(applied = after, "following the cluster's log");
        }
        self.check_gap(link, &mut reader, after, None).await?;
        loop {
            let items = link
                .cluster
                .read(&mut reader, READ_COUNT, READ_BLOCK)
                .await?;
            let next = items.iter().find_map(|i| match i {
                Item::Events(e) if e.first > after => Some(e.first),
                _ => None,
            });
            if let Some(n) = next
                && n > after + 1
            {
                self.check_gap(link, &mut reader, after, Some(n)).await?;
            }
            after = self.apply(link, items, after).await?;
        }
    }

    /// Marks the events between `after` and the stream's oldest entry as missing when the
    /// stream was trimmed past them (`next`: the first entry read after `after`).
    async fn check_gap(
        &self,
        link: &Link,
        reader: &mut Reader,
        after: u64,
        next: Option<u64>,
    ) -> Result<(), ClusterError> {
        let Some(oldest) = link.cluster.oldest(reader).await? else {
            return Ok(());
        };
        let trimmed = oldest > after + 1 && next.is_none_or(|n| oldest >= n);
        if trimmed {
            tracing::warn!(
                from = after + 1,
                to = oldest - 1,
                "the cluster's log no longer holds events this hub missed: clients resuming \
                 among them get a reset"
            );
            let log = self.inner.log.clone();
            tokio::task::spawn_blocking(move || log.mark_gap(oldest - 1))
                .await
                .map_err(|e| ClusterError::Hub(e.to_string()))?
                .map_err(|e| ClusterError::Hub(e.to_string()))?;
        }
        Ok(())
    }

    /// Publishes entries read from the cluster's log, in order, as the hub's own; answers
    /// this hub's waiting publishes. Returns the newest seq applied.
    async fn apply(
        &self,
        link: &Link,
        items: Vec<Item>,
        mut after: u64,
    ) -> Result<u64, ClusterError> {
        let mut queued = Vec::with_capacity(items.len());
        let mut upto = after;
        for item in items {
            match item {
                Item::Events(e) if e.first > upto => {
                    upto = e.first + e.events.len() as u64 - 1;
                    let fut = self.inner.publisher.apply(e.first, e.time_ms, e.events);
                    queued.push((e.writer, upto, fut));
                }
                Item::Events(_) => {}
                Item::Control { writer, body } => {
                    // After the events before it: those queued are published first.
                    self.finish(link, std::mem::take(&mut queued), &mut after)
                        .await?;
                    if !writer.starts_with(&format!("{}:", link.cluster.node())) {
                        self.control(&body);
                    }
                }
            }
        }
        self.finish(link, queued, &mut after).await?;
        Ok(after)
    }

    /// Waits for queued publishes to be done, in order, and answers this hub's own.
    async fn finish(
        &self,
        link: &Link,
        queued: Vec<(
            String,
            u64,
            impl Future<Output = Result<Vec<Published>, Error>>,
        )>,
        after: &mut u64,
    ) -> Result<(), ClusterError> {
        for (writer, last, fut) in queued {
            let published = fut
                .await
                .map_err(|e| ClusterError::Hub(format!("this hub could not publish it: {e}")))?;
            link.status
                .received
                .fetch_add(published.len() as u64, Ordering::Relaxed);
            link.status
                .published
                .fetch_add(published.len() as u64, Ordering::Relaxed);
            if let Some(tx) = link.waiters().remove(&writer) {
                let _ = tx.send(published);
            }
            *after = last;
            link.applied.send_replace(last);
        }
        Ok(())
    }

    /// Applies a change another hub made (see [`Control`]).
    fn control(&self, body: &str) {
        let broker = &self.inner.broker;
        match serde_json::from_str::<Control>(body) {
            Ok(Control::Close { id }) => {
                broker.close_stream(&id, CloseReason::ClosedByAdmin);
            }
            Ok(Control::Session { user, topics, add }) => {
                if add {
                    let _ = broker.session_subscribe(&user, &topics);
                } else {
                    broker.session_unsubscribe(&user, &topics);
                }
            }
            Ok(Control::Stream { id, topics, add }) => {
                let _ = if add {
                    broker.stream_subscribe(&id, &topics)
                } else {
                    broker.stream_unsubscribe(&id, &topics)
                };
            }
            Err(e) => {
                tracing::warn!(error = %e, body, "an unknown control entry in the cluster's log")
            }
        }
    }

    /// Tells every other hub of a change made here.
    pub(super) async fn tell_cluster(&self, c: &Control) -> Result<(), Error> {
        let Some(link) = self.link() else {
            return Ok(());
        };
        let body = serde_json::to_string(c).unwrap_or_default();
        let writer = format!("{}:c", link.cluster.node());
        link.cluster
            .append_control(&body, &writer)
            .await
            .map_err(|e| Error::Unavailable {
                message: format!("the cluster's Redis did not take the change: {e}"),
                retry_after: Some(1),
            })
    }

    /// Whether another hub of the cluster lists a connection with this id.
    pub(super) async fn elsewhere(&self, id: &str) -> bool {
        let Some(link) = self.link() else {
            return false;
        };
        let Ok(others) = link.cluster.other_connections().await else {
            return false;
        };
        others.iter().any(|(_, list)| {
            serde_json::from_str::<Vec<serde_json::Value>>(list)
                .is_ok_and(|l| l.iter().any(|c| c["id"] == id))
        })
    }

    /// `/connections` of every other hub: each connection's JSON, named with its hub.
    pub(crate) async fn other_connections(&self) -> Vec<serde_json::Value> {
        let Some(link) = self.link() else {
            return Vec::new();
        };
        let others = link.cluster.other_connections().await.unwrap_or_default();
        let mut out = Vec::new();
        for (_, list) in others {
            if let Ok(l) = serde_json::from_str::<Vec<serde_json::Value>>(&list) {
                out.extend(l);
            }
        }
        out
    }

    /// This hub's name in the cluster.
    pub(crate) fn node(&self) -> Option<&str> {
        self.link().map(|l| l.cluster.node())
    }

    /// Publishes this hub's connections for the others, every `CONNECTIONS_EVERY`.
    pub(super) fn spawn_connection_list(&self, shutdown: &Shutdown) {
        if self.link().is_none() {
            return;
        }
        let (hub, stop) = (self.clone(), shutdown.clone());
        tokio::spawn(async move {
            let mut iv = tokio::time::interval(CONNECTIONS_EVERY);
            loop {
                tokio::select! {
                    _ = stop.wait() => return,
                    _ = iv.tick() => {}
                }
                let Some(link) = hub.link() else { return };
                let list: Vec<serde_json::Value> = hub
                    .connections()
                    .iter()
                    .map(|c| hub.connection_json(c))
                    .collect();
                let json = serde_json::to_string(&list).unwrap_or_default();
                let _ = link
                    .cluster
                    .put_connections(json, CONNECTIONS_EVERY * 3)
                    .await;
            }
        });
    }
}

/// How often a hub publishes its connection list; it expires after three times that.
const CONNECTIONS_EVERY: Duration = Duration::from_secs(2);

/// A change one hub makes that every hub applies, in the cluster's order.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(super) enum Control {
    /// `DELETE /connections/{id}`.
    Close { id: String },
    /// A user's session gains or loses topics.
    Session {
        user: String,
        topics: Vec<String>,
        add: bool,
    },
    /// One stream, by connection id, gains or loses topics.
    Stream {
        id: String,
        topics: Vec<String>,
        add: bool,
    },
}
