//! The hub: the one API every front door calls (SPEC §5 without the HTTP).
//!
//! A front door (the HTTP API, and later WebSocket, ntfy, Redis ingress) turns its protocol
//! into a [`Caller`](crate::auth::Caller) and calls in here: publish events, open a stream,
//! change subscriptions, list and close connections, read stats and health. The parts behind
//! it (the log, the broker, the publisher, the idempotency cache) are private to the hub.
//!
//! - this file: the handle, start-up, health, request ids, shutdown;
//! - `publish`: permissions and idempotency around the publisher;
//! - `subscribe`: streams and sessions; `history`: pages of retained events; `ops`:
//!   connections and stats;
//! - `maintenance`: the background tasks (heartbeat clock, retention, the log count).

mod cluster;
mod history;
mod maintenance;
mod ops;
mod publish;
mod sources;
mod subscribe;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use anyhow::Context as _;

pub(crate) use history::{HistoryQuery, MAX_LIMIT, StartAt};
pub(crate) use ops::Stats;
pub(crate) use publish::Outcome;
pub(crate) use sources::{SourceSnapshot, SourceStatus};
pub(crate) use subscribe::SessionChange;

use crate::auth::Auth;
use crate::broker::{Broker, BrokerLimits};
use crate::cluster::Cluster;
use crate::config::Config;
use crate::event::Ending;
use crate::idempotency::Idempotency;
use crate::message::PublishLimits;
use crate::publisher::{Publisher, Timing};
use crate::store::{SharedLog, SledLog};
use crate::stream::Streams;
use crate::tls::Tls;

/// The running hub: cheap to clone, passed explicitly to every front door (no globals).
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    auth: Auth,
    log: SharedLog,
    broker: Broker,
    streams: Streams,
    publisher: Publisher,
    idempotency: Idempotency,
    /// The certificate in use, with `[tls]`.
    tls: Option<Tls>,
    started: Instant,
    draining: AtomicBool,
    request_prefix: u32,
    request_seq: AtomicU64,
    /// Outside sources (Redis ingress) and their state.
    sources: sources::Sources,
    /// With `[cluster]`: the cluster's log this hub publishes through and follows.
    cluster: Option<cluster::Link>,
}

/// What `/health` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Health {
    Ok,
    /// Shutting down.
    Draining,
    /// The last write or flush of the log failed.
    StoreFailed,
    /// Serving, but outside sources are down (their names).
    Degraded(Vec<String>),
}

impl Hub {
    /// Opens the store and starts the publisher. `config` must be validated. With a
    /// cluster, the hub's log is a copy of the cluster's (SPEC §11.3).
    pub fn open_in(config: Config, cluster: Option<Cluster>) -> anyhow::Result<Hub> {
        let auth = Auth::new(&config)?;
        let tls = config.tls.as_ref().map(Tls::load).transpose()?;
        let (dir, store) = (&config.data_dir, &config.store);
        let log: SharedLog = match &cluster {
            Some(c) => Arc::new(SledLog::open_in_cluster(dir, store, c.incarnation())?),
            None => Arc::new(SledLog::open(dir, store)?),
        };
        // A hub of a cluster fans out from the newest event its log holds: the follower
        // publishes what comes after it.
        let fanned = if cluster.is_some() {
            log.written()
        } else {
            log.last_seq()
        };
        let sources = sources::Sources::default();
        let cluster = cluster.map(|c| {
            let status = sources.add(format!("cluster {}", c.url()));
            cluster::Link::new(c, fanned, status)
        });
        let limits = &config.limits;
        let broker = Broker::new(
            BrokerLimits {
                max_connections: limits.max_connections,
                max_per_user: limits.max_connections_per_user,
                max_per_ip: limits.max_connections_per_ip,
                max_topics: limits.max_topics_per_stream,
                stream_queue: limits.stream_queue,
                heartbeat_ms: config.stream.heartbeat.as_millis(),
                single_connection_per_user: limits.single_connection_per_user,
                session_ttl_ms: config.auth.session_ttl.as_millis(),
            },
            fanned,
        );
        let streams = Streams::new(
            broker.clone(),
            log.clone(),
            limits.max_topics_per_stream,
            config.stream.retry.as_millis(),
        );
        let timing = Timing {
            flush_interval: config.store.flush_interval.0,
            commit_delay: config.store.commit_delay.0,
        };
        let publisher = Publisher::start(log.clone(), broker.clone(), config.store.sync, timing)
            .context("cannot start the commit thread")?;
        Ok(Hub {
            inner: Arc::new(Inner {
                config,
                auth,
                log,
                broker,
                streams,
                publisher,
                idempotency: Idempotency::default(),
                tls,
                started: Instant::now(),
                draining: AtomicBool::new(false),
                request_prefix: crate::random::random_u32(),
                request_seq: AtomicU64::new(0),
                sources,
                cluster,
            }),
        })
    }

    /// The configuration the hub runs with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Who is calling: every front door authenticates through this.
    pub fn auth(&self) -> &Auth {
        &self.inner.auth
    }

    /// The certificate in use, with `[tls]`.
    pub fn tls(&self) -> Option<&Tls> {
        self.inner.tls.as_ref()
    }

    /// The limits every publish is checked against while parsing.
    pub fn publish_limits(&self) -> PublishLimits {
        PublishLimits {
            max_event_bytes: self.inner.config.limits.max_event_bytes.0,
        }
    }

    pub fn health(&self) -> Health {
        if self.inner.draining.load(Ordering::Relaxed) {
            Health::Draining
        } else if !self.inner.log.is_healthy() {
            Health::StoreFailed
        } else {
            let down: Vec<String> = self
                .sources()
                .into_iter()
                .filter(|s| !s.up)
                .map(|s| s.name)
                .collect();
            if down.is_empty() {
                Health::Ok
            } else {
                Health::Degraded(down)
            }
        }
    }

    /// A fresh request id: a random per-process prefix and a counter.
    pub fn next_request_id(&self) -> String {
        let n = self.inner.request_seq.fetch_add(1, Ordering::Relaxed);
        format!("{:08x}{n:06x}", self.inner.request_prefix)
    }

    /// Shutdown, first step: `/health` says draining, new streams are refused, and every
    /// open stream gets `shutdown` after what is queued for it, then ends.
    pub fn close_streams(&self) {
        self.inner.draining.store(true, Ordering::Relaxed);
        self.inner.broker.close_all(Ending::Shutdown);
    }

    /// Shutdown, last step (blocking): finishes the publishes under way, stops the commit
    /// thread, and flushes the log. Returns whether the flush succeeded.
    pub fn stop_and_flush(&self) -> bool {
        self.inner.publisher.stop();
        let log = &self.inner.log;
        match log
            .flush()
            .and_then(|()| log.settle(self.inner.publisher.last_used()))
        {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = %e, "final flush failed");
                false
            }
        }
    }
}
