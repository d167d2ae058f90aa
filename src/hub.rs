//! The hub: every long-lived part of a running runnel behind one cheap-to-clone handle.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use crate::auth::Auth;
use crate::broker::{Broker, BrokerLimits, Counters};
use crate::config::Config;
use crate::idempotency::Idempotency;
use crate::message::PublishLimits;
use crate::publisher::Publisher;
use crate::store::Store;

/// Shared state, passed explicitly to every handler (no globals).
#[derive(Clone)]
pub struct Hub {
    inner: Arc<HubInner>,
}

pub struct HubInner {
    pub config: Config,
    pub auth: Auth,
    pub store: Store,
    pub broker: Broker,
    pub publisher: Publisher,
    pub idempotency: Idempotency,
    /// The certificate in use, with `[tls]`.
    pub tls: Option<crate::tls::Tls>,
    pub started: Instant,
    draining: AtomicBool,
    request_prefix: u32,
    request_seq: AtomicU64,
}

impl std::ops::Deref for Hub {
    type Target = HubInner;
    fn deref(&self) -> &HubInner {
        &self.inner
    }
}

impl Hub {
    /// Opens the store and starts the publisher. `config` must be validated.
    pub fn open(config: Config) -> anyhow::Result<Hub> {
        use anyhow::Context as _;
        let auth = Auth::new(&config)?;
        let tls = config.tls.as_ref().map(crate::tls::Tls::load).transpose()?;
        let store = Store::open(&config.data_dir, &config.store)?;
        let counters = Arc::new(Counters::default());
        let broker = Broker::new(
            BrokerLimits {
                max_connections: config.limits.max_connections,
                max_per_user: config.limits.max_connections_per_user,
                max_per_ip: config.limits.max_connections_per_ip,
                max_topics: config.limits.max_topics_per_stream,
                stream_queue: config.limits.stream_queue,
                heartbeat_ms: config.stream.heartbeat.as_millis(),
                single_connection_per_user: config.limits.single_connection_per_user,
                session_ttl_ms: config.auth.session_ttl.as_millis(),
            },
            counters,
            store.last_seq(),
        );
        let publisher = Publisher::start(store.clone(), broker.clone(), config.store.sync)
            .context("cannot start the commit thread")?;
        Ok(Hub {
            inner: Arc::new(HubInner {
                config,
                auth,
                store,
                broker,
                publisher,
                idempotency: Idempotency::default(),
                tls,
                started: Instant::now(),
                draining: AtomicBool::new(false),
                request_prefix: crate::random_u32(),
                request_seq: AtomicU64::new(0),
            }),
        })
    }

    pub fn publish_limits(&self) -> PublishLimits {
        PublishLimits {
            max_event_bytes: self.config.limits.max_event_bytes.0,
        }
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// A fresh request id: a random per-process prefix and a counter.
    pub fn next_request_id(&self) -> String {
        let n = self.request_seq.fetch_add(1, Ordering::Relaxed);
        format!("{:08x}{n:06x}", self.request_prefix)
    }
}
