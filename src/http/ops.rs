//! Operations (SPEC §5.6): `/health`, and for admins `/stats`, `/metrics` (public when
//! configured) and `/connections`.

use std::fmt::Write as _;

use http::StatusCode;
use http::request::Parts;
use serde_json::{Value, json};

use super::Resp;
use super::body::{json_response, no_content, text_response};
use crate::auth::Caller;
use crate::error::Error;
use crate::hub::{Health, Hub, Stats};

pub(super) fn health(hub: &Hub) -> Resp {
    let (status, word, down) = match hub.health() {
        Health::Ok => (StatusCode::OK, "ok", None),
        Health::Draining => (StatusCode::SERVICE_UNAVAILABLE, "draining", None),
        Health::StoreFailed => (StatusCode::SERVICE_UNAVAILABLE, "store_failed", None),
        // The hub serves; what an outside source would bring is late until it is back.
        Health::Degraded(down) => (StatusCode::OK, "degraded", Some(down)),
    };
    let mut v = json!({"status": word});
    if let Some(down) = down {
        v["down"] = json!(down);
    }
    json_response(status, &v)
}

/// `GET /stats`, `GET /metrics`, `GET /connections`.
pub(super) async fn read(hub: &Hub, parts: &Parts, path: &str) -> Result<Resp, Error> {
    if !(path == "/metrics" && hub.auth().public_metrics()) {
        admin(parts)?;
    }
    Ok(match path {
        "/stats" => json_response(StatusCode::OK, &stats_json(&hub.stats())),
        "/metrics" => text_response(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            metrics_text(&hub.stats()),
        ),
        _ => connections(hub).await,
    })
}

/// `DELETE /connections/{id}`: the stream gets `closed` and ends.
pub(super) async fn close_connection(hub: &Hub, parts: &Parts, id: &str) -> Result<Resp, Error> {
    admin(parts)?;
    hub.close_connection(id).await?;
    Ok(no_content())
}

fn admin(parts: &Parts) -> Result<Caller, Error> {
    let c = super::caller(parts)?;
    if c.is_admin() {
        Ok(c)
    } else {
        Err(c.refuse("this endpoint is for admins".into()))
    }
}

async fn connections(hub: &Hub) -> Resp {
    let list = hub.all_connections().await;
    json_response(StatusCode::OK, &json!({"connections": list}))
}

fn stats_json(s: &Stats) -> Value {
    let per_topic: serde_json::Map<String, Value> = s
        .streams
        .per_topic
        .iter()
        .map(|(t, n)| (t.clone(), Value::from(*n)))
        .collect();
    json!({
        "connections": {
            "total": s.streams.connections,
            "sse": s.streams.connections - s.streams.websockets,
            "websocket": s.streams.websockets,
            "max": s.max_connections,
            "users": s.streams.users,
        },
        "topics": {
            "total": s.streams.per_topic.len(),
            "subscriptions": s.streams.subscriptions,
            "per_topic": per_topic,
        },
        "events": {
            "published": s.published,
            "delivered": s.delivered,
            "replayed": s.replayed,
            "dropped_slow_streams": s.dropped_slow_streams,
        },
        "store": {
            "events": s.store.events,
            "bytes": s.store.bytes,
            "disk_bytes": s.store.disk_bytes,
            "counted": s.store.counted,
            "healthy": s.store.healthy,
            "flushes": s.store.flushes,
            "written_bytes": s.written_bytes,
        },
        "memory": { "rss_bytes": s.rss_bytes },
        "ingress": s.sources.iter().map(|i| json!({
            "source": i.name,
            "up": i.up,
            "received": i.received,
            "published": i.published,
            "dropped_too_large": i.too_large,
            "dropped_overflow": i.overflow,
            "dropped_invalid": i.invalid,
            "duplicates": i.duplicates,
            "outages": i.outages,
        })).collect::<Vec<_>>(),
        "uptime_s": s.uptime_s,
        "version": env!("CARGO_PKG_VERSION"),
    })
}

/// Prometheus text format: one `# HELP`, `# TYPE` and sample per metric.
fn metrics_text(s: &Stats) -> String {
    let mut out = String::with_capacity(2048);
    for (name, kind, help, value) in metrics(s) {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    }
    ingress_metrics(&mut out, &s.sources);
    out
}

/// One sample per ingress source of each figure, labelled with the source.
fn ingress_metrics(out: &mut String, sources: &[crate::hub::SourceSnapshot]) {
    if sources.is_empty() {
        return;
    }
    type Figure = fn(&crate::hub::SourceSnapshot) -> u64;
    let figures: [(&str, &str, &str, Figure); 6] = [
        (
            "runnel_ingress_up",
            "gauge",
            "1 if the ingress source is connected",
            |s| u64::from(s.up),
        ),
        (
            "runnel_ingress_received_total",
            "counter",
            "messages read from the source",
            |s| s.received,
        ),
        (
            "runnel_ingress_published_total",
            "counter",
            "messages published as events",
            |s| s.published,
        ),
        (
            "runnel_ingress_dropped_total",
            "counter",
            "messages dropped (too large, not text, no topic)",
            |s| s.too_large + s.invalid + s.overflow,
        ),
        (
            "runnel_ingress_duplicates_total",
            "counter",
            "stream entries redelivered and recognised as published",
            |s| s.duplicates,
        ),
        (
            "runnel_ingress_outages_total",
            "counter",
            "times the connection was lost or could not be made",
            |s| s.outages,
        ),
    ];
    for (name, kind, help, f) in figures {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for s in sources {
            let label = s.name.replace('\\', "\\\\").replace('"', "\\\"");
            let _ = writeln!(out, "{name}{{source=\"{label}\"}} {}", f(s));
        }
    }
}

/// Every metric: name, type, help, value (one line each, so each name sits by its value).
#[rustfmt::skip]
fn metrics(s: &Stats) -> [(&'static str, &'static str, &'static str, u64); 19] {
    let b = &s.streams;
    [
        ("runnel_connections", "gauge", "Open SSE streams and WebSocket connections.", b.connections as u64),
        ("runnel_websocket_connections", "gauge", "Open WebSocket connections (counted in runnel_connections too).", b.websockets as u64),
        ("runnel_connections_max", "gauge", "limits.max_connections.", s.max_connections as u64),
        ("runnel_users", "gauge", "Distinct users with an open stream.", b.users as u64),
        ("runnel_topics", "gauge", "Topics with at least one stream.", b.per_topic.len() as u64),
        ("runnel_subscriptions", "gauge", "Topic subscriptions over all streams.", b.subscriptions as u64),
        ("runnel_events_published_total", "counter", "Events accepted for publishing.", s.published),
        ("runnel_events_delivered_total", "counter", "Events queued to streams (one per stream).", s.delivered),
        ("runnel_events_replayed_total", "counter", "Events sent from the log on resume.", s.replayed),
        ("runnel_streams_dropped_slow_total", "counter", "Streams closed because their queue overflowed.", s.dropped_slow_streams),
        ("runnel_streams_opened_total", "counter", "Streams opened since start.", s.streams_opened),
        ("runnel_store_events", "gauge", "Events in the replay log.", s.store.events),
        ("runnel_store_bytes", "gauge", "Bytes of events in the replay log.", s.store.bytes),
        ("runnel_store_disk_bytes", "gauge", "Bytes the replay log takes on disk.", s.store.disk_bytes),
        ("runnel_store_flushes_total", "counter", "Log flushes (group commit: one per batch of publishes).", s.store.flushes),
        ("runnel_store_written_bytes_total", "counter", "Bytes the hub sent to the block device (its log writes and flushes).", s.written_bytes),
        ("runnel_store_healthy", "gauge", "1 if the last log write succeeded.", u64::from(s.store.healthy)),
        ("process_resident_memory_bytes", "gauge", "Resident memory.", s.rss_bytes),
        ("runnel_uptime_seconds", "gauge", "Seconds since start.", s.uptime_s),
    ]
}
