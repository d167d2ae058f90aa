//! `/stats` (JSON) and `/metrics` (Prometheus text), both built from the same snapshot.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use serde_json::{Value, json};

use crate::hub::Hub;

/// The process's resident memory in bytes, from `/proc/self/status` (0 where unavailable).
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

pub fn stats_json(hub: &Hub) -> Value {
    let b = hub.broker.snapshot();
    let c = hub.broker.counters();
    let s = hub.store.stats();
    let per_topic: serde_json::Map<String, Value> = b
        .per_topic
        .iter()
        .map(|(t, n)| (t.clone(), Value::from(*n)))
        .collect();
    json!({
        "connections": {
            "total": b.connections,
            "max": hub.config.limits.max_connections,
            "users": b.users,
        },
        "topics": {
            "total": b.per_topic.len(),
            "subscriptions": b.subscriptions,
            "per_topic": per_topic,
        },
        "events": {
            "published": c.published.load(Ordering::Relaxed),
            "delivered": c.delivered.load(Ordering::Relaxed),
            "replayed": c.replayed.load(Ordering::Relaxed),
            "dropped_slow_streams": c.dropped_slow_streams.load(Ordering::Relaxed),
        },
        "store": {
            "events": s.events,
            "bytes": s.bytes,
            "disk_bytes": hub.store.disk_bytes(),
            "counted": s.ready,
            "healthy": hub.store.is_healthy(),
            "flushes": hub.store.flushes(),
        },
        "memory": { "rss_bytes": rss_bytes() },
        "uptime_s": hub.started.elapsed().as_secs(),
        "version": env!("CARGO_PKG_VERSION"),
    })
}

pub fn metrics_text(hub: &Hub) -> String {
    let b = hub.broker.snapshot();
    let c = hub.broker.counters();
    let s = hub.store.stats();
    let mut out = String::with_capacity(2048);
    let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    };
    metric(
        "runnel_connections",
        "gauge",
        "Open SSE streams.",
        b.connections as u64,
    );
    metric(
        "runnel_connections_max",
        "gauge",
        "limits.max_connections.",
        hub.config.limits.max_connections as u64,
    );
    metric(
        "runnel_users",
        "gauge",
        "Distinct users with an open stream.",
        b.users as u64,
    );
    metric(
        "runnel_topics",
        "gauge",
        "Topics with at least one stream.",
        b.per_topic.len() as u64,
    );
    metric(
        "runnel_subscriptions",
        "gauge",
        "Topic subscriptions over all streams.",
        b.subscriptions as u64,
    );
    metric(
        "runnel_events_published_total",
        "counter",
        "Events accepted for publishing.",
        c.published.load(Ordering::Relaxed),
    );
    metric(
        "runnel_events_delivered_total",
        "counter",
        "Events queued to streams (one per stream).",
        c.delivered.load(Ordering::Relaxed),
    );
    metric(
        "runnel_events_replayed_total",
        "counter",
        "Events sent from the log on resume.",
        c.replayed.load(Ordering::Relaxed),
    );
    metric(
        "runnel_streams_dropped_slow_total",
        "counter",
        "Streams closed because their queue overflowed.",
        c.dropped_slow_streams.load(Ordering::Relaxed),
    );
    metric(
        "runnel_streams_opened_total",
        "counter",
        "Streams opened since start.",
        c.streams_opened.load(Ordering::Relaxed),
    );
    metric(
        "runnel_store_events",
        "gauge",
        "Events in the replay log.",
        s.events,
    );
    metric(
        "runnel_store_bytes",
        "gauge",
        "Bytes of events in the replay log.",
        s.bytes,
    );
    metric(
        "runnel_store_flushes_total",
        "counter",
        "Log flushes (group commit: one per batch of publishes).",
        hub.store.flushes(),
    );
    metric(
        "runnel_store_healthy",
        "gauge",
        "1 if the last log write succeeded.",
        u64::from(hub.store.is_healthy()),
    );
    metric(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory.",
        rss_bytes(),
    );
    metric(
        "runnel_uptime_seconds",
        "gauge",
        "Seconds since start.",
        hub.started.elapsed().as_secs(),
    );
    out
}
