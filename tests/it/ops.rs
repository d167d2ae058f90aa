//! SPEC §5.6: health, stats, metrics, connections; request ids; the console page.

use std::time::Duration;

use crate::common::*;
use serde_json::json;

#[tokio::test]
async fn health_is_ok() {
    let hub = TestHub::start().await;
    let r = hub.get("/health").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "ok");
    let head = request(hub.addr, "HEAD", "/health", &[], b"").await;
    assert_eq!(head.status, 200);
}

#[tokio::test]
async fn every_response_has_a_request_id_and_echoes_a_sane_one() {
    let hub = TestHub::start().await;
    let a = hub.get("/health").await;
    let b = hub.get("/nope").await;
    let (ida, idb) = (
        a.header("x-request-id").unwrap(),
        b.header("x-request-id").unwrap(),
    );
    assert_ne!(ida, idb);
    let r = request(
        hub.addr,
        "GET",
        "/health",
        &[("x-request-id", "trace-123")],
        b"",
    )
    .await;
    assert_eq!(r.header("x-request-id"), Some("trace-123"));
    let r = request(
        hub.addr,
        "GET",
        "/health",
        &[("x-request-id", "bad id\u{7f}")],
        b"",
    )
    .await;
    assert_ne!(r.header("x-request-id"), Some("bad id\u{7f}"));
}

#[tokio::test]
async fn stats_counts_streams_topics_and_events() {
    let hub = TestHub::start().await;
    let mut a = hub.sse("/events?topic=news").await;
    let mut b = hub.sse("/events?topic=news&topic=sensors/*").await;
    a.connected().await;
    b.connected().await;
    hub.publish(json!({"topic": "news", "data": 1})).await;
    hub.publish(json!({"topic": "sensors/x", "data": 2})).await;
    a.next().await;
    b.next().await;
    b.next().await;
    let s = hub.get("/stats").await.json();
    assert_eq!(s["connections"]["total"], 2);
    assert_eq!(s["connections"]["max"], 10_000);
    assert_eq!(s["connections"]["users"], 0);
    assert_eq!(
        s["topics"]["per_topic"],
        json!({"$broadcast": 2, "news": 2, "sensors/*": 1})
    );
    assert_eq!(s["topics"]["total"], 3);
    assert_eq!(s["topics"]["subscriptions"], 5);
    assert_eq!(s["events"]["published"], 2);
    assert_eq!(s["events"]["delivered"], 3);
    assert_eq!(s["events"]["dropped_slow_streams"], 0);
    assert_eq!(s["store"]["events"], 2);
    assert!(s["store"]["bytes"].as_u64().unwrap() > 0);
    assert!(s["uptime_s"].is_u64());
}

#[tokio::test]
async fn metrics_are_prometheus_text() {
    let hub = TestHub::start().await;
    let mut a = hub.sse("/events?topic=m").await;
    a.connected().await;
    hub.publish(json!({"topic": "m", "data": 1})).await;
    a.next().await;
    let r = hub.get("/metrics").await;
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let t = r.text();
    for line in [
        "runnel_connections 1",
        "runnel_events_published_total 1",
        "runnel_events_delivered_total 1",
        "# TYPE runnel_events_published_total counter",
        "# TYPE runnel_connections gauge",
    ] {
        assert!(t.lines().any(|l| l == line), "missing {line:?} in\n{t}");
    }
    for l in t.lines().filter(|l| !l.starts_with('#')) {
        let (name, value) = l.split_once(' ').unwrap();
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{l}"
        );
        value.parse::<f64>().unwrap();
    }
}

/// What the log costs the disk, as the hub itself counts it: flushes and the bytes it wrote,
/// in `/stats` and `/metrics`.
#[tokio::test]
async fn the_log_reports_its_flushes_and_bytes_written() {
    let hub = TestHub::start().await;
    let before = hub.get("/stats").await.json()["store"].clone();
    for i in 0..5 {
        hub.publish(json!({"topic": "w", "data": i})).await;
    }
    let after = hub.get("/stats").await.json()["store"].clone();
    let n = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k}: {v}"));
    assert_eq!(
        n(&after, "flushes") - n(&before, "flushes"),
        5,
        "one flush per publish"
    );
    // /proc/self/io counts what reached the block device; on a tmpfs it may stay 0.
    assert!(n(&after, "written_bytes") >= n(&before, "written_bytes"));
    let t = hub.get("/metrics").await.text();
    for name in [
        "runnel_store_written_bytes_total",
        "runnel_store_flushes_total",
    ] {
        assert!(
            t.lines().any(|l| l.starts_with(&format!("{name} "))),
            "{name} in\n{t}"
        );
    }
}

#[tokio::test]
async fn connections_are_listed_and_can_be_closed() {
    let hub = TestHub::start().await;
    let mut s = hub.sse("/events?topic=watched").await;
    let id = s.connected().await["connection_id"]
        .as_str()
        .unwrap()
        .to_string();
    let list = hub.get("/connections").await.json();
    let c = &list["connections"][0];
    assert_eq!(c["id"], id.as_str());
    assert_eq!(c["ip"], "127.0.0.1");
    assert_eq!(c["topics"], json!(["watched", "$broadcast"]));
    assert_eq!(c["queued"], 0);
    assert!(c["connected_at"].as_u64().unwrap() > 1_700_000_000_000);

    let r = request(hub.addr, "DELETE", &format!("/connections/{id}"), &[], b"").await;
    assert_eq!(r.status, 204);
    let closed = s.next().await;
    assert!(closed.is_control("closed"), "{closed:?}");
    assert_eq!(closed.json()["reason"], "closed_by_admin");
    assert!(s.rest(Duration::from_secs(5)).await.is_empty());
    assert!(s.ended);

    let r = request(hub.addr, "DELETE", &format!("/connections/{id}"), &[], b"").await;
    r.assert_error(404, "not_found");
    // A guessed id with the right counter but the wrong secret part is not found.
    let forged = format!("{}-{}", id.split('-').next().unwrap(), "0".repeat(32));
    let r = request(
        hub.addr,
        "DELETE",
        &format!("/connections/{forged}"),
        &[],
        b"",
    )
    .await;
    r.assert_error(404, "not_found");
}

#[tokio::test]
async fn the_console_has_an_icon() {
    let hub = TestHub::start().await;
    let r = hub.get("/favicon.ico").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("image/x-icon"));
    assert!(r.body.starts_with(&[0, 0, 1, 0]), "an ICO file");
}

#[tokio::test]
async fn console_page_is_served() {
    let hub = TestHub::start().await;
    let r = hub.get("/").await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    let page = r.text();
    assert!(page.contains("runnel console"));
    // Everything it needs comes from the hub itself (works offline, no CDN).
    assert!(page.contains(r#"from "./runnel.js""#));
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "no outside resources"
    );
    let js = hub.get("/runnel.js").await;
    assert_eq!(js.status, 200);
    assert_eq!(
        js.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert!(js.text().contains("export class Runnel"));
    assert_eq!(js.header("x-content-type-options"), Some("nosniff"));
}

#[tokio::test]
async fn admins_close_connections() {
    let hub = secure_hub().await;
    let alice = bearer(&jwt(json!({"sub": "alice"})));
    let mut s = stream_as(&hub, "/events", &[("authorization", &alice)]).await;
    let id = s.connected().await["connection_id"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/connections/{id}");
    request(hub.addr, "DELETE", &path, &[("authorization", &alice)], b"")
        .await
        .assert_error(403, "forbidden");
    let list = request(
        hub.addr,
        "GET",
        "/connections",
        &[("x-api-key", "admin-key")],
        b"",
    )
    .await
    .json();
    assert_eq!(list["connections"][0]["user"], "alice");
    let r = request(
        hub.addr,
        "DELETE",
        &path,
        &[("x-api-key", "admin-key")],
        b"",
    )
    .await;
    assert_eq!(r.status, 204);
    assert!(s.next().await.is_control("closed"));
}

#[tokio::test]
async fn an_admin_close_of_a_stalled_stream_takes_effect_at_once() {
    let hub = patient_hub().await;
    let (id, _stalled) = stalled_stream(&hub, "big", &jwt(json!({"sub": "alice"}))).await;
    assert_eq!(open_streams(&hub).await, 1);
    let close = format!("/connections/{id}");
    assert_eq!(as_admin(&hub, "DELETE", &close).await.status, 204);
    // Not after its writer gives up on the client: now.
    assert_eq!(open_streams(&hub).await, 0);
    let list = as_admin(&hub, "GET", "/connections").await;
    assert_eq!(list.json()["connections"], json!([]));
    // A second close finds nothing.
    let again = as_admin(&hub, "DELETE", &close).await;
    assert_eq!(again.status, 404);
}
