//! SPEC §5.5: sessions: topics taken with `/subscribe` and dropped with `/unsubscribe`, by user
//! or by connection id, on open and later streams, across reconnects, and their expiry.

use std::time::Duration;

use crate::common::*;
use serde_json::json;

#[tokio::test]
async fn session_topics_apply_to_open_and_later_streams_and_survive_a_reconnect() {
    let hub = secure_hub().await;
    let alice = bearer(&jwt(
        json!({"sub": "alice", "subscribe": ["news", "sport", "user/*"]}),
    ));
    let h = [
        ("authorization", alice.as_str()),
        ("content-type", "application/json"),
    ];
    let mut a = stream_as(&hub, "/events", &h[..1]).await;
    a.connected().await;
    let r = request(
        hub.addr,
        "POST",
        "/subscribe",
        &h,
        br#"{"topics":["news"]}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"topics": ["news"]}));
    let pubkey = [("x-api-key", "backend-key")];
    publish_as(&hub, &pubkey, json!({"topic": "news", "data": "n1"})).await;
    assert_eq!(
        a.next().await.data,
        "n1",
        "an open stream gets the session topic"
    );
    // A stream opened later has it too.
    let mut b = stream_as(&hub, "/events", &h[..1]).await;
    assert_eq!(
        b.connected().await["topics"],
        json!(["user/alice", "$broadcast", "news"])
    );
    // A forbidden topic is refused and nothing changes.
    let r = request(
        hub.addr,
        "POST",
        "/subscribe",
        &h,
        br#"{"topics":["sport","secret"]}"#,
    )
    .await;
    r.assert_error(403, "forbidden");
    // Reconnect with Last-Event-ID: the replay covers session topics.
    let last = publish_as(&hub, &pubkey, json!({"topic": "news", "data": "n2"}))
        .await
        .json();
    let seen = b.next().await;
    assert_eq!(seen.id.as_deref(), last["id"].as_str());
    b.close();
    publish_as(
        &hub,
        &pubkey,
        json!({"topic": "news", "data": "while away"}),
    )
    .await;
    let last_id = seen.id.unwrap();
    let mut c = stream_as(
        &hub,
        "/events",
        &[("authorization", &alice), ("last-event-id", &last_id)],
    )
    .await;
    c.connected().await;
    assert_eq!(c.next().await.data, "while away");
    // Unsubscribe: no more news on any of alice's streams.
    let r = request(
        hub.addr,
        "POST",
        "/unsubscribe",
        &h,
        br#"{"topics":["news"]}"#,
    )
    .await;
    assert_eq!(r.json(), json!({"topics": []}));
    publish_as(&hub, &pubkey, json!({"topic": "news", "data": "gone"})).await;
    publish_as(
        &hub,
        &pubkey,
        json!({"user": "alice", "data": "still personal"}),
    )
    .await;
    assert_eq!(a.next().await.data, "n2");
    assert_eq!(a.next().await.data, "while away");
    assert_eq!(a.next().await.data, "still personal");
    // Unsubscribing a topic the stream named itself leaves it alone.
    let mut named = stream_as(&hub, "/events?topic=sport", &h[..1]).await;
    named.connected().await;
    request(
        hub.addr,
        "POST",
        "/subscribe",
        &h,
        br#"{"topics":["sport"]}"#,
    )
    .await;
    request(
        hub.addr,
        "POST",
        "/unsubscribe",
        &h,
        br#"{"topics":["sport"]}"#,
    )
    .await;
    publish_as(&hub, &pubkey, json!({"topic": "sport", "data": "goal"})).await;
    assert_eq!(named.next().await.data, "goal");
    // Someone else's connection id is not yours to change.
    let bob = bearer(&jwt(json!({"sub": "bob"})));
    let mut bs = stream_as(&hub, "/events", &[("authorization", &bob)]).await;
    let bob_conn = bs.connected().await["connection_id"]
        .as_str()
        .unwrap()
        .to_string();
    let body = json!({"topics": ["news"], "connection_id": bob_conn}).to_string();
    let r = request(hub.addr, "POST", "/subscribe", &h, body.as_bytes()).await;
    r.assert_error(404, "not_found");
}

#[tokio::test]
async fn connection_id_subscriptions_on_an_open_hub() {
    let hub = TestHub::start().await;
    let mut s = hub.sse("/events").await;
    let id = s.connected().await["connection_id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = hub
        .post_json(
            "/subscribe",
            &json!({"topics": ["a", "b/*"], "connection_id": id}),
        )
        .await;
    assert_eq!(r.json(), json!({"topics": ["$broadcast", "a", "b/*"]}));
    hub.publish(json!({"topic": "b/x", "data": "bx"})).await;
    assert_eq!(s.next().await.data, "bx");
    let r = hub
        .post_json(
            "/unsubscribe",
            &json!({"topics": ["b/*"], "connection_id": id}),
        )
        .await;
    assert_eq!(r.json(), json!({"topics": ["$broadcast", "a"]}));
    hub.publish(json!({"topic": "b/x", "data": "not any more"}))
        .await;
    hub.publish(json!({"topic": "a", "data": "a"})).await;
    assert_eq!(s.next().await.data, "a");
    hub.post_json(
        "/subscribe",
        &json!({"topics": ["a"], "connection_id": "1-deadbeef"}),
    )
    .await
    .assert_error(404, "not_found");
    hub.post_json("/subscribe", &json!({"topics": ["a"]}))
        .await
        .assert_error(400, "bad_request");
    hub.post_json(
        "/unsubscribe",
        &json!({"topics": ["$broadcast"], "connection_id": id}),
    )
    .await
    .assert_error(400, "bad_request");
    hub.post_json(
        "/subscribe",
        &json!({"topics": ["bad topic"], "connection_id": id}),
    )
    .await
    .assert_error(400, "invalid_topic");
    hub.post_json("/subscribe", &json!({"topic": "a", "connection_id": id}))
        .await
        .assert_error(400, "bad_request");
}

#[tokio::test]
async fn idle_sessions_expire() {
    let hub = TestHub::start_with(|c| {
        secured(c);
        c.auth.session_ttl = runnel::config::Dur(Duration::from_secs(1));
        c.stream.heartbeat = runnel::config::Dur(Duration::from_millis(100));
    })
    .await;
    let alice = bearer(&jwt(json!({"sub": "alice"})));
    let h = [
        ("authorization", alice.as_str()),
        ("content-type", "application/json"),
    ];
    let r = request(
        hub.addr,
        "POST",
        "/subscribe",
        &h,
        br#"{"topics":["news"]}"#,
    )
    .await;
    assert_eq!(r.status, 200);
    // While a stream is open the session stays, however long.
    let mut s = stream_as(&hub, "/events", &h[..1]).await;
    assert!(
        s.connected().await["topics"]
            .as_array()
            .unwrap()
            .contains(&json!("news"))
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut s2 = stream_as(&hub, "/events", &h[..1]).await;
    assert!(
        s2.connected().await["topics"]
            .as_array()
            .unwrap()
            .contains(&json!("news"))
    );
    s.close();
    s2.close();
    // Then, idle for longer than the TTL (counted from the last stream closing), it is
    // forgotten.
    let admin = bearer(&jwt(json!({"sub": "root", "role": "admin"})));
    assert!(
        eventually(Duration::from_secs(5), async || {
            let r = request(hub.addr, "GET", "/stats", &[("authorization", &admin)], b"").await;
            r.json()["connections"]["total"] == 0
        })
        .await
    );
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let mut s = stream_as(&hub, "/events", &h[..1]).await;
    assert_eq!(
        s.connected().await["topics"],
        json!(["user/alice", "$broadcast"])
    );
}
