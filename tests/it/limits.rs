//! SPEC §6.1: limits on open streams: in all, per IP, per user, and one stream per user.

use std::time::Duration;

use crate::common::*;
use serde_json::json;

#[tokio::test]
async fn connection_limits() {
    let hub = TestHub::start_with(|c| {
        c.limits.max_connections = 2;
    })
    .await;
    let mut a = hub.sse("/events").await;
    let mut b = hub.sse("/events").await;
    a.connected().await;
    b.connected().await;
    let c = hub.sse("/events").await;
    assert_eq!(c.status, 503);
    assert_eq!(c.error_json()["error"]["code"], "unavailable");
    assert!(c.header("retry-after").is_some());
    // HEAD says so too, so that runnel.js can show the reason instead of retrying blind.
    let head = request(hub.addr, "HEAD", "/events", &[], b"").await;
    assert_eq!(head.status, 503);
    assert!(head.header("retry-after").is_some());
    a.close();
    assert!(
        eventually(Duration::from_secs(5), async || {
            hub.sse("/events").await.status == 200
        })
        .await
    );

    let hub = TestHub::start_with(|c| c.limits.max_connections_per_ip = 1).await;
    let mut a = hub.sse("/events").await;
    a.connected().await;
    let b = hub.sse("/events").await;
    assert_eq!(b.status, 429);
    assert_eq!(b.error_json()["error"]["code"], "too_many_requests");
    let head = request(hub.addr, "HEAD", "/events", &[], b"").await;
    assert_eq!(head.status, 429);
}

#[tokio::test]
async fn single_connection_per_user_replaces_the_older_stream() {
    let hub = TestHub::start_with(|c| {
        secured(c);
        c.limits.single_connection_per_user = true;
    })
    .await;
    let alice = bearer(&jwt(json!({"sub": "alice"})));
    let mut first = stream_as(&hub, "/events", &[("authorization", &alice)]).await;
    first.connected().await;
    let mut second = stream_as(&hub, "/events", &[("authorization", &alice)]).await;
    second.connected().await;
    let closed = first.next().await;
    assert!(closed.is_control("closed"), "{closed:?}");
    assert_eq!(closed.json()["reason"], "replaced");
    assert!(first.rest(Duration::from_secs(5)).await.is_empty());
    publish_as(
        &hub,
        &[("x-api-key", "backend-key")],
        json!({"user": "alice", "data": "hi"}),
    )
    .await;
    assert_eq!(second.next().await.data, "hi");
    // Another user is not affected.
    let bob = bearer(&jwt(json!({"sub": "bob"})));
    let mut b = stream_as(&hub, "/events", &[("authorization", &bob)]).await;
    b.connected().await;
    second.assert_quiet(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn per_user_connection_limit() {
    let hub = TestHub::start_with(|c| {
        secured(c);
        c.limits.max_connections_per_user = 2;
    })
    .await;
    let alice = bearer(&jwt(json!({"sub": "alice"})));
    let mut a = stream_as(&hub, "/events", &[("authorization", &alice)]).await;
    let mut b = stream_as(&hub, "/events", &[("authorization", &alice)]).await;
    a.connected().await;
    b.connected().await;
    let c = stream_as(&hub, "/events", &[("authorization", &alice)]).await;
    assert_eq!(c.status, 429);
    assert!(c.header("retry-after").is_some());
    let bob = bearer(&jwt(json!({"sub": "bob"})));
    assert_eq!(
        stream_as(&hub, "/events", &[("authorization", &bob)])
            .await
            .status,
        200
    );
}
