//! From an accepted publish to its fan-out: ids, the log write, group commit, ordering.
//!
//! A publish takes the sequencer lock just long enough to number its events, encode each
//! once, and append them to the log (one atomic sled batch), then queues a job for the
//! commit thread and waits. The commit thread takes every job waiting (`sync = batch`) or one
//! (`always`), flushes the log once for all of them, fans their events out in id order, and
//! answers each publisher. So:
//! - an event is on disk before anyone receives it and before its publisher is answered
//!   (`always`/`batch`; with `none` the answer does not wait for the flush);
//! - concurrent publishes share one flush (group commit);
//! - fan-out order is id order, which is also replay order.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::broker::{Broker, Outgoing, unix_ms};
use crate::config::SyncMode;
use crate::error::Error;
use crate::message::NewEvent;
use crate::sse;
use crate::store::{Append, Store};

/// What a publisher is told about one event.
#[derive(Debug, Clone)]
pub struct Published {
    pub id: String,
    pub topics: Vec<String>,
    /// Streams the event was queued for.
    pub delivered: usize,
}

#[derive(Clone)]
pub struct Publisher {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    wake: Condvar,
    store: Store,
    broker: Broker,
    sync: SyncMode,
    thread: Mutex<Option<JoinHandle<()>>>,
}

struct State {
    next_seq: u64,
    jobs: VecDeque<Job>,
    stopping: bool,
}

struct Job {
    events: Vec<Outgoing>,
    needs_flush: bool,
    reply: oneshot::Sender<Result<Vec<usize>, Error>>,
}

impl Publisher {
    /// Starts the commit thread. Ids continue after the store's last one.
    pub fn start(store: Store, broker: Broker, sync: SyncMode) -> std::io::Result<Publisher> {
        let inner = Arc::new(Inner {
            state: Mutex::new(State {
                next_seq: store.last_seq() + 1,
                jobs: VecDeque::new(),
                stopping: false,
            }),
            wake: Condvar::new(),
            store,
            broker,
            sync,
            thread: Mutex::new(None),
        });
        let worker = inner.clone();
        let handle = std::thread::Builder::new()
            .name("runnel-commit".into())
            .spawn(move || worker.run())?;
        *inner.thread.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
        Ok(Publisher { inner })
    }

    /// Publishes events as one atomic unit and waits until they are durable (per the sync
    /// mode) and fanned out.
    pub async fn publish(&self, events: Vec<NewEvent>) -> Result<Vec<Published>, Error> {
        let (tx, rx) = oneshot::channel();
        let answers = {
            // Held for numbering, encoding and the in-memory log write: microseconds, never
            // across an await. Appending under the lock keeps log order equal to id order.
            let mut st = self.inner.lock();
            if st.stopping {
                return Err(Error::unavailable("the hub is shutting down"));
            }
            let first = st.next_seq;
            let now = unix_ms();
            let outgoing: Vec<Outgoing> = events
                .iter()
                .zip(first..)
                .map(|(ev, seq)| Outgoing {
                    seq,
                    topics: ev.topics.clone(),
                    frame: sse::encode_event(
                        &self.inner.store.format_id(seq),
                        ev.event.as_deref(),
                        ev.retry,
                        &ev.data,
                    ),
                })
                .collect();
            let last = first + events.len() as u64 - 1;
            st.next_seq = last + 1;
            let appends: Vec<Append<'_>> = events
                .iter()
                .zip(&outgoing)
                .filter(|(ev, _)| ev.persist)
                .map(|(_, o)| Append {
                    seq: o.seq,
                    time_ms: now,
                    topics: &o.topics,
                    frame: &o.frame,
                })
                .collect();
            let live_only = appends.len() < events.len();
            let needs_flush = !appends.is_empty();
            // Live-only events are not in the log; the high-water mark keeps their ids from
            // being reused after a restart.
            if needs_flush || live_only {
                self.inner
                    .store
                    .append(&appends, live_only.then_some(last))
                    .map_err(|e| {
                        tracing::error!(error = %e, "log write failed");
                        Error::unavailable(format!("the event log cannot be written: {e}"))
                    })?;
            }
            let answers: Vec<(String, Vec<String>)> = outgoing
                .iter()
                .map(|o| (self.inner.store.format_id(o.seq), o.topics.clone()))
                .collect();
            drop(appends);
            st.jobs.push_back(Job {
                events: outgoing,
                needs_flush,
                reply: tx,
            });
            answers
        };
        self.inner.wake.notify_one();
        let delivered = rx
            .await
            .map_err(|_| Error::unavailable("the hub is shutting down"))??;
        self.inner
            .broker
            .counters()
            .published
            .fetch_add(answers.len() as u64, Ordering::Relaxed);
        Ok(answers
            .into_iter()
            .zip(delivered)
            .map(|((id, topics), delivered)| Published {
                id,
                topics,
                delivered,
            })
            .collect())
    }

    /// Finishes the jobs already queued, refuses new ones, and stops the commit thread.
    pub fn stop(&self) {
        self.inner.lock().stopping = true;
        self.inner.wake.notify_all();
        let handle = self
            .inner
            .thread
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The commit loop.
    fn run(&self) {
        loop {
            let jobs: Vec<Job> = {
                let mut st = self.lock();
                while st.jobs.is_empty() && !st.stopping {
                    st = self.wake.wait(st).unwrap_or_else(|e| e.into_inner());
                }
                if st.jobs.is_empty() {
                    return;
                }
                match self.sync {
                    SyncMode::Always => st.jobs.pop_front().into_iter().collect(),
                    SyncMode::Batch | SyncMode::None => st.jobs.drain(..).collect(),
                }
            };
            let flushed = if self.sync != SyncMode::None && jobs.iter().any(|j| j.needs_flush) {
                self.store.flush().map_err(|e| {
                    tracing::error!(error = %e, "log flush failed");
                    e.to_string()
                })
            } else {
                Ok(())
            };
            for job in jobs {
                if job.needs_flush
                    && let Err(e) = &flushed
                {
                    let _ = job.reply.send(Err(Error::unavailable(format!(
                        "the event log cannot be flushed: {e}"
                    ))));
                    continue;
                }
                let delivered = job.events.iter().map(|e| self.broker.fan_out(e)).collect();
                let _ = job.reply.send(Ok(delivered));
            }
        }
    }
}

/// A frame for a control event sent at shutdown.
pub fn shutdown_frame() -> Bytes {
    sse::control_frame(
        "shutdown",
        &serde_json::json!({"reason": "shutdown",
            "message": "the hub is shutting down; reconnect with Last-Event-ID"}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::{BrokerLimits, Counters};
    use crate::config::StoreConfig;

    async fn flushes_for_32_concurrent(sync: SyncMode) -> u64 {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreConfig::default()).unwrap();
        store.set_slow_flush(50);
        let limits = BrokerLimits {
            max_connections: 10,
            max_per_user: 10,
            max_per_ip: 10,
            max_topics: 10,
            stream_queue: 10,
            heartbeat_ms: 1000,
            single_connection_per_user: false,
            session_ttl_ms: 1000,
        };
        let broker = Broker::new(limits, Arc::new(Counters::default()), 0);
        let publisher = Publisher::start(store.clone(), broker, sync).unwrap();
        let tasks: Vec<_> = (0..32)
            .map(|i| {
                let p = publisher.clone();
                tokio::spawn(async move {
                    p.publish(vec![NewEvent {
                        topics: vec!["t".into()],
                        event: None,
                        data: format!("{i}"),
                        retry: None,
                        persist: true,
                        idempotency_key: None,
                    }])
                    .await
                    .unwrap()
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        publisher.stop();
        store.flushes()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_publishes_share_one_flush() {
        // The first publish starts a (slow) flush; the 31 that arrive meanwhile share the
        // next one.
        let batch = flushes_for_32_concurrent(SyncMode::Batch).await;
        assert!(batch <= 3, "group commit: {batch} flushes for 32 publishes");
        let always = flushes_for_32_concurrent(SyncMode::Always).await;
        assert_eq!(always, 32, "one flush per publish with sync = always");
        let none = flushes_for_32_concurrent(SyncMode::None).await;
        assert_eq!(none, 0, "no flush before the answer with sync = none");
    }
}
