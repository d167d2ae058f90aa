//! From an accepted publish to its fan-out: ids, the log write, group commit, ordering.
//!
//! A publish takes the sequencer lock just long enough to number its events, queues them as
//! a job for the commit thread, and waits. The commit thread takes every job waiting
//! (`sync = batch`, `none`) or one (`always`), appends their events to the log, flushes once
//! (`always`, `batch`: one write of the whole group, one sync), fans the events out in id
//! order, and answers each publisher. Under `none` it flushes on `store.flush_interval`
//! instead, so the disk sees one write per interval, whatever the publish rate. So:
//! - an event is on disk before anyone receives it and before its publisher is answered
//!   (`always`/`batch`; with `none` the answer does not wait for the flush);
//! - concurrent publishes share one log write and one flush (group commit), and no request
//!   task ever waits on the disk or on another publisher's write. While several connections
//!   publish, a commit waits up to `store.commit_delay` for each of them to have a publish
//!   in it: publishers that wait for their answer cannot otherwise share a flush, and every
//!   flush costs the disk a page whatever it carries;
//! - fan-out order is id order, which is also replay order;
//! - an id is never given twice, even after a crash that lost unflushed events: the log
//!   reserves seqs durably before they are used (see [`Log::reserve`]).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::broker::Broker;
use crate::config::SyncMode;
use crate::error::Error;
use crate::event::{Event, Format, NewEvent, Published};
use crate::store::{Log, SharedLog};

/// When the commit thread flushes: `store.flush_interval` and `store.commit_delay`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    pub flush_interval: Duration,
    pub commit_delay: Duration,
}

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
    /// How often `sync = "none"` flushes.
    flush_interval: Duration,
    /// How long a commit may wait for publishes from the other active connections.
    commit_delay: Duration,
    thread: Mutex<Option<JoinHandle<()>>>,
}

struct State {
    next_seq: u64,
    jobs: VecDeque<Job>,
    stopping: bool,
    /// When each recent source last published.
    sources: HashMap<u64, Instant>,
}

/// A source that published within this long counts as active.
const ACTIVE: Duration = Duration::from_millis(50);

/// A queued job's answers, less what the commit thread says.
struct Pending {
    answers: Vec<(String, Vec<String>)>,
    rx: oneshot::Receiver<Result<Vec<usize>, Error>>,
}

struct Job {
    /// The connection it came over.
    source: u64,
    queued_at: Instant,
    events: Vec<Arc<Event>>,
    /// Per event: written to the log (`persist`), or live only.
    persist: Vec<bool>,
    reply: oneshot::Sender<Result<Vec<usize>, Error>>,
}

impl Publisher {
    /// Starts the commit thread. Ids continue after the store's last one.
    pub fn start(
        log: SharedLog,
        broker: Broker,
        sync: SyncMode,
        timing: Timing,
    ) -> std::io::Result<Publisher> {
        let inner = Arc::new(Inner {
            state: Mutex::new(State {
                next_seq: log.last_seq() + 1,
                jobs: VecDeque::new(),
                stopping: false,
                sources: HashMap::new(),
            }),
            wake: Condvar::new(),
            log,
            broker,
            sync,
            flush_interval: timing.flush_interval,
            commit_delay: timing.commit_delay,
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
    /// mode) and fanned out. `source` tells connections apart (see `store.commit_delay`).
    pub async fn publish(
        &self,
        events: Vec<NewEvent>,
        source: u64,
    ) -> Result<Vec<Published>, Error> {
        // Held for numbering and encoding: microseconds, never across an await. Queueing
        // under the lock keeps job order (and so log and fan-out order) equal to id order.
        let pending = {
            let st = self.inner.lock();
            if st.stopping {
                return Err(Error::unavailable("the hub is shutting down"));
            }
            let first = st.next_seq;
            self.enqueue(st, first, crate::time::unix_ms(), events, source)
        };
        self.answers(pending).await
    }

    /// Publishes events numbered elsewhere (by the cluster's log, SPEC §11.3): `first` is
    /// the seq of the first, and must follow every seq applied before. Queued at once (so
    /// several applied in a row share a commit); the future answers when it is done.
    pub fn apply(
        &self,
        first: u64,
        time_ms: u64,
        events: Vec<NewEvent>,
    ) -> impl Future<Output = Result<Vec<Published>, Error>> + use<> {
        let st = self.inner.lock();
        let queued = if st.stopping {
            drop(st);
            None
        } else {
            Some(self.enqueue(st, first, time_ms, events, 0))
        };
        let this = self.clone();
        async move {
            match queued {
                Some(p) => this.answers(p).await,
                None => Err(Error::unavailable("the hub is shutting down")),
            }
        }
    }

    /// Numbers `events` from `first`, encodes them, and queues them as one job.
    fn enqueue(
        &self,
        mut st: MutexGuard<'_, State>,
        first: u64,
        now: u64,
        events: Vec<NewEvent>,
        source: u64,
    ) -> Pending {
        let (tx, rx) = oneshot::channel();
        st.next_seq = first + events.len() as u64;
        let ids = self.inner.log.ids();
        let persist = events.iter().map(|e| e.persist).collect();
        let outgoing: Vec<Arc<Event>> = events
            .into_iter()
            .zip(first..)
            .map(|(ev, seq)| {
                let id = ids.format(seq);
                let e = Event::new(seq, id, now, ev);
                // Every stream wants the SSE form: build it here, where it paces the
                // publisher, rather than in the first stream to write the event.
                e.encoded(Format::Sse);
                Arc::new(e)
            })
            .collect();
        let answers: Vec<(String, Vec<String>)> = outgoing
            .iter()
            .map(|e| (e.id.clone(), e.topics.clone()))
            .collect();
        st.jobs.push_back(Job {
            source,
            queued_at: Instant::now(),
            events: outgoing,
            persist,
            reply: tx,
        });
        drop(st);
        self.inner.wake.notify_one();
        Pending { answers, rx }
    }

    /// Waits for the commit thread to have written and fanned out a job.
    async fn answers(&self, p: Pending) -> Result<Vec<Published>, Error> {
        let delivered =
            p.rx.await
                .map_err(|_| Error::unavailable("the hub is shutting down"))??;
        self.inner
            .broker
            .counters()
            .published
            .fetch_add(p.answers.len() as u64, Ordering::Relaxed);
        Ok(p.answers
            .into_iter()
            .zip(delivered)
            .map(|((id, topics), delivered)| Published {
                id,
                topics,
                delivered,
            })
            .collect())
    }

    /// The last seq given to an event.
    pub fn last_used(&self) -> u64 {
        self.inner.lock().next_seq - 1
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
        // Under `sync = "none"`: when what was appended since the last flush is due.
        let mut flush_due: Option<Instant> = None;
        loop {
            let jobs: Vec<Job> = {
                let mut st = self.lock();
                while st.jobs.is_empty() && !st.stopping {
                    match flush_due {
                        Some(at) if at <= Instant::now() => break,
                        Some(at) => {
                            let wait = at.saturating_duration_since(Instant::now());
                            st = self
                                .wake
                                .wait_timeout(st, wait)
                                .unwrap_or_else(|e| e.into_inner())
                                .0;
                        }
                        None => st = self.wake.wait(st).unwrap_or_else(|e| e.into_inner()),
                    }
                }
                if st.jobs.is_empty() && st.stopping {
                    return;
                }
                if self.sync == SyncMode::Batch && !st.jobs.is_empty() {
                    st = self.gather(st);
                }
                match self.sync {
                    SyncMode::Always => st.jobs.pop_front().into_iter().collect(),
                    SyncMode::Batch | SyncMode::None => st.jobs.drain(..).collect(),
                }
            };
            if flush_due.is_some_and(|at| at <= Instant::now()) {
                flush_due = None;
                if let Err(e) = self.log.flush() {
                    tracing::error!(error = %e, "log flush failed");
                }
            }
            if jobs.is_empty() {
                continue;
            }
            let done = self.commit(&jobs);
            if done.is_ok() && self.sync == SyncMode::None && flush_due.is_none() {
                flush_due = Some(Instant::now() + self.flush_interval);
            }
            self.answer(jobs, &done);
        }
    }

    /// Group commit across connections: waits (up to `commit_delay` after the oldest job
    /// was queued) until every connection that published lately has a job queued.
    fn gather<'a>(&'a self, mut st: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        let Some(deadline) = st.jobs.front().map(|j| j.queued_at + self.commit_delay) else {
            return st;
        };
        loop {
            let now = Instant::now();
            let State {
                jobs,
                sources,
                stopping,
                ..
            } = &mut *st;
            for job in jobs.iter() {
                sources.insert(job.source, job.queued_at);
            }
            sources.retain(|_, at| now.duration_since(*at) < ACTIVE);
            let queued: HashSet<u64> = jobs.iter().map(|j| j.source).collect();
            if queued.len() >= sources.len() || now >= deadline || *stopping {
                return st;
            }
            st = self
                .wake
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Fans out and answers each job, or tells each why its events were not published.
    fn answer(&self, jobs: Vec<Job>, done: &Result<(), String>) {
        for job in jobs {
            match done {
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

    /// Appends the jobs' events to the log and, except under `sync = "none"`, flushes them
    /// as one write. Live-only events are not written, but their seqs are reserved like the
    /// others, so they are never reused after a restart.
    fn commit(&self, jobs: &[Job]) -> Result<(), String> {
        let highest = jobs
            .iter()
            .flat_map(|j| j.events.iter().map(|e| e.seq))
            .max()
            .unwrap_or(0);
        let log: &dyn Log = &*self.log;
        let failed = |what: &str, e: crate::store::StoreError| {
            tracing::error!(error = %e, "log {what} failed");
            format!("the event log cannot be {what}: {e}")
        };
        log.reserve(highest).map_err(|e| failed("written", e))?;
        let mut wrote = false;
        for job in jobs {
            let persisted: Vec<Arc<Event>> = job
                .events
                .iter()
                .zip(&job.persist)
                .filter(|(_, p)| **p)
                .map(|(e, _)| e.clone())
                .collect();
            if !persisted.is_empty() {
                log.append(&persisted).map_err(|e| failed("written", e))?;
                wrote = true;
            }
        }
        if wrote && self.sync != SyncMode::None {
            log.flush().map_err(|e| failed("flushed", e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::BrokerLimits;
    use crate::config::StoreConfig;
    use crate::store::SledLog;

    async fn flushes_for_32_concurrent(sync: SyncMode) -> u64 {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SledLog::open(dir.path(), &StoreConfig::default()).unwrap());
        store.set_slow_flush(50);
        let broker = Broker::new(BrokerLimits::small(), 0);
        let timing = Timing {
            flush_interval: Duration::from_secs(3600),
            commit_delay: Duration::ZERO,
        };
        let publisher = Publisher::start(store.clone(), broker, sync, timing).unwrap();
        let tasks: Vec<_> = (0..32)
            .map(|i| {
                let p = publisher.clone();
                tokio::spawn(async move {
                    let event = vec![NewEvent {
                        topics: vec!["t".into()],
                        event: None,
                        data: format!("{i}"),
                        json: false,
                        retry: None,
                        persist: true,
                        idempotency_key: None,
                        origin: None,
                    }];
                    p.publish(event, i).await.unwrap()
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
