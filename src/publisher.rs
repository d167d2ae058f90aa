//! From an accepted publish to its fan-out: ids, the log write, group commit, ordering.
//!
//! A publish takes the sequencer lock just long enough to number its events and encode each
//! once, queues them as a job for the commit thread, and waits. The commit thread takes every
//! job waiting (`sync = batch`, `none`) or one (`always`), writes all their events to the log
//! in one atomic sled batch, flushes it once, fans the events out in id order, and answers
//! each publisher. So:
//! - an event is on disk before anyone receives it and before its publisher is answered
//!   (`always`/`batch`; with `none` the answer does not wait for the flush);
//! - concurrent publishes share one log write and one flush (group commit), and no request
//!   task ever waits on the disk or on another publisher's write;
//! - fan-out order is id order, which is also replay order.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use crate::broker::Broker;
use crate::config::SyncMode;
use crate::error::Error;
use crate::event::{Event, NewEvent, Published};
use crate::sse;
use crate::store::{Append, SharedLog};

/// The publishing side of the hub: numbers events and hands them to the commit thread.
#[derive(Clone)]
pub(crate) struct Publisher {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    wake: Condvar,
    log: SharedLog,
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
    events: Vec<Arc<Event>>,
    /// Per event: written to the log (`persist`), or live only.
    persist: Vec<bool>,
    time_ms: u64,
    reply: oneshot::Sender<Result<Vec<usize>, Error>>,
}

impl Publisher {
    /// Starts the commit thread. Ids continue after the store's last one.
    pub fn start(log: SharedLog, broker: Broker, sync: SyncMode) -> std::io::Result<Publisher> {
        let inner = Arc::new(Inner {
            state: Mutex::new(State {
                next_seq: log.last_seq() + 1,
                jobs: VecDeque::new(),
                stopping: false,
            }),
            wake: Condvar::new(),
            log,
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
            // Held for numbering and encoding: microseconds, never across an await. Queueing
            // under the lock keeps job order (and so log and fan-out order) equal to id order.
            let mut st = self.inner.lock();
            if st.stopping {
                return Err(Error::unavailable("the hub is shutting down"));
            }
            let first = st.next_seq;
            let ids = self.inner.log.ids();
            let outgoing: Vec<Arc<Event>> = events
                .iter()
                .zip(first..)
                .map(|(ev, seq)| {
                    let frame = sse::encode_event(
                        &ids.format(seq),
                        &ev.topics,
                        ev.event.as_deref(),
                        ev.retry,
                        &ev.data,
                    );
                    Arc::new(Event::new(seq, ev.topics.clone(), frame))
                })
                .collect();
            st.next_seq = first + events.len() as u64;
            let answers: Vec<(String, Vec<String>)> = outgoing
                .iter()
                .map(|e| (ids.format(e.seq), e.topics.clone()))
                .collect();
            st.jobs.push_back(Job {
                events: outgoing,
                persist: events.iter().map(|e| e.persist).collect(),
                time_ms: crate::time::unix_ms(),
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
            let done = self.commit(&jobs);
            for job in jobs {
                match &done {
                    Ok(()) => {
                        let delivered = job.events.iter().map(|e| self.broker.fan_out(e)).collect();
                        let _ = job.reply.send(Ok(delivered));
                    }
                    Err(e) => {
                        let _ = job.reply.send(Err(Error::unavailable(e.clone())));
                    }
                }
            }
        }
    }

    /// Writes the jobs' events to the log in one batch and flushes it (per the sync mode).
    /// Live-only events are not written; the high-water mark keeps their ids from being
    /// reused after a restart.
    fn commit(&self, jobs: &[Job]) -> Result<(), String> {
        let mut appends = Vec::new();
        let mut live_only = None;
        for job in jobs {
            for (ev, &persist) in job.events.iter().zip(&job.persist) {
                if persist {
                    appends.push(Append {
                        event: ev,
                        time_ms: job.time_ms,
                    });
                } else {
                    live_only = Some(ev.seq);
                }
            }
        }
        if appends.is_empty() && live_only.is_none() {
            return Ok(());
        }
        self.log.append(&appends, live_only).map_err(|e| {
            tracing::error!(error = %e, "log write failed");
            format!("the event log cannot be written: {e}")
        })?;
        if self.sync != SyncMode::None && !appends.is_empty() {
            self.log.flush().map_err(|e| {
                tracing::error!(error = %e, "log flush failed");
                format!("the event log cannot be flushed: {e}")
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::BrokerLimits;
    use crate::config::StoreConfig;
    use crate::store::{Log, SledLog};

    async fn flushes_for_32_concurrent(sync: SyncMode) -> u64 {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SledLog::open(dir.path(), &StoreConfig::default()).unwrap());
        store.set_slow_flush(50);
        let broker = Broker::new(BrokerLimits::small(), 0);
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
        store.stats().flushes
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
