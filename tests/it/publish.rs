//! SPEC §5.2: every way to publish, and what the publisher is told.

use std::time::Duration;

use crate::common::*;
use serde_json::{Value, json};

#[tokio::test]
async fn answer_names_id_topics_and_delivered() {
    let hub = TestHub::start().await;
    let r = hub.publish(json!({"topic": "nobody", "data": 1})).await;
    assert_eq!(r["delivered"], 0);
    assert_eq!(r["topics"], json!(["nobody"]));
    let id = r["id"].as_str().unwrap();
    let r2 = hub.publish(json!({"topic": "nobody", "data": 2})).await;
    let id2 = r2["id"].as_str().unwrap();
    assert!(id2 > id, "ids increase (as strings too): {id} then {id2}");
}

#[tokio::test]
async fn user_target_goes_to_the_personal_topic() {
    let hub = TestHub::start().await;
    let mut s = hub.sse("/events/user%2Falice").await;
    s.connected().await;
    let r = hub.publish(json!({"user": "alice", "data": "hi"})).await;
    assert_eq!(r["topics"], json!(["user/alice"]));
    assert_eq!(r["delivered"], 1);
    assert_eq!(s.next().await.data, "hi");
}

#[tokio::test]
async fn a_batch_is_atomic_and_answers_in_order() {
    let hub = TestHub::start().await;
    let mut s = hub.sse("/events?topic=a&topic=b").await;
    s.connected().await;
    let r = hub
        .post_json(
            "/publish",
            &json!([
                {"topic": "a", "data": 1},
                {"topic": "b", "event": "e", "data": 2},
                {"broadcast": true, "data": 3}
            ]),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let answers = r.json();
    let answers = answers.as_array().unwrap();
    assert_eq!(answers.len(), 3);
    for (i, ev) in ["1", "2", "3"].iter().enumerate() {
        let e = s.next().await;
        assert_eq!(&e.data, ev);
        assert_eq!(e.id.as_deref(), answers[i]["id"].as_str());
    }
    // One bad item: nothing of the batch is published.
    let bad = hub
        .post_json(
            "/publish",
            &json!([{"topic": "a", "data": "x"}, {"topic": "no spaces", "data": "y"}]),
        )
        .await;
    bad.assert_error(400, "invalid_topic");
    assert!(
        bad.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("batch item 1")
    );
    s.assert_quiet(Duration::from_millis(300)).await;
    let mut replay = Sse::open(hub.addr, "/events?topic=a&last_event_id=earliest", &[]).await;
    replay.connected().await;
    // Topic `a` and the broadcast (every stream receives it); nothing of the failed batch.
    assert_eq!(replay.next().await.data, "1");
    assert_eq!(replay.next().await.data, "3");
    replay.assert_quiet(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn persist_false_is_live_only() {
    let hub = TestHub::start().await;
    let mut s = hub.sse("/events?topic=live").await;
    s.connected().await;
    hub.publish(json!({"topic": "live", "data": "kept"})).await;
    let r = hub
        .publish(json!({"topic": "live", "data": "fleeting", "persist": false}))
        .await;
    assert_eq!(r["delivered"], 1);
    hub.publish(json!({"topic": "live", "data": "kept too"}))
        .await;
    assert_eq!(s.next().await.data, "kept");
    assert_eq!(s.next().await.data, "fleeting");
    assert_eq!(s.next().await.data, "kept too");
    let mut replay = hub.sse("/events?topic=live&last_event_id=earliest").await;
    replay.connected().await;
    assert_eq!(replay.next().await.data, "kept");
    assert_eq!(replay.next().await.data, "kept too");
    replay.assert_quiet(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn idempotency_key_publishes_once() {
    let hub = TestHub::start().await;
    let mut s = hub.sse("/events?topic=pay").await;
    s.connected().await;
    let body = json!({"topic": "pay", "data": "charge", "idempotency_key": "order-17"});
    let first = hub.post_json("/publish", &body).await;
    let again = hub.post_json("/publish", &body).await;
    assert_eq!(first.status, 200);
    assert_eq!(again.status, 200);
    assert_eq!(
        first.json(),
        again.json(),
        "the retry gets the first answer"
    );
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(s.next().await.data, "charge");
    s.assert_quiet(Duration::from_millis(300)).await;
    // Another key publishes again.
    let other = hub
        .publish(json!({"topic": "pay", "data": "charge", "idempotency_key": "order-18"}))
        .await;
    assert_ne!(other["id"], first.json()["id"]);
    // In a batch, a seen key is answered from memory and only the rest is published.
    let r = hub
        .post_json(
            "/publish",
            &json!([
                {"topic": "pay", "data": "charge", "idempotency_key": "order-17"},
                {"topic": "pay", "data": "new"}
            ]),
        )
        .await
        .json();
    assert_eq!(r[0], first.json());
    assert_eq!(s.next().await.data, "charge"); // order-18
    assert_eq!(s.next().await.data, "new");
    let dup = hub
        .post_json(
            "/publish",
            &json!([
                {"topic": "pay", "data": 1, "idempotency_key": "k"},
                {"topic": "pay", "data": 2, "idempotency_key": "k"}
            ]),
        )
        .await;
    dup.assert_error(400, "bad_request");
}

#[tokio::test]
async fn raw_publish_uses_the_body_as_data() {
    let hub = TestHub::start().await;
    let mut s = hub.sse("/events/logs/app").await;
    s.connected().await;
    let r = request(
        hub.addr,
        "POST",
        "/publish/logs%2Fapp?event=line",
        &[("content-type", "text/plain")],
        b"first line\nsecond line",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["topics"], json!(["logs/app"]));
    let e = s.next().await;
    assert_eq!(e.event.as_deref(), Some("line"));
    assert_eq!(e.data, "first line\nsecond line");
    // Any content type, JSON included, is just data here.
    let r = request(
        hub.addr,
        "POST",
        "/publish/logs/app",
        &[("content-type", "application/json")],
        br#"{"raw": true}"#,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(s.next().await.data, r#"{"raw": true}"#);
}

#[tokio::test]
async fn notify_sends_a_notification_event() {
    let hub = TestHub::start().await;
    let mut s = hub.sse("/events").await;
    s.connected().await;
    let n = json!({"title": "Backup done", "content": "42 files", "type": "success",
                   "auto_hide": true, "duration": 4000});
    let r = hub.post_json("/notify", &n).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["topics"], json!(["$broadcast"]));
    let e = s.next().await;
    assert_eq!(e.event.as_deref(), Some("notification"));
    assert_eq!(e.json(), n);
    // With a target.
    let mut bob = hub.sse("/events/user%2Fbob").await;
    bob.connected().await;
    let r = hub
        .post_json("/notify", &json!({"title": "for bob", "user": "bob"}))
        .await;
    assert_eq!(r.json()["topics"], json!(["user/bob"]));
    assert_eq!(bob.next().await.json(), json!({"title": "for bob"}));
    let bad = hub
        .post_json("/notify", &json!({"title": "x", "type": "panic"}))
        .await;
    bad.assert_error(400, "bad_request");
}

#[tokio::test]
async fn concurrent_publishers_all_get_distinct_increasing_ids() {
    let hub = TestHub::start().await;
    let mut tasks = Vec::new();
    for p in 0..8 {
        let addr = hub.addr;
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..25 {
                let r = request(
                    addr,
                    "POST",
                    "/publish",
                    &[("content-type", "application/json")],
                    json!({"topic": "c", "data": format!("{p}-{i}")})
                        .to_string()
                        .as_bytes(),
                )
                .await;
                assert_eq!(r.status, 200);
                ids.push(r.json()["id"].as_str().unwrap().to_string());
            }
            ids
        }));
    }
    let mut all: Vec<String> = Vec::new();
    for t in tasks {
        let ids = t.await.unwrap();
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "one publisher's ids increase"
        );
        all.extend(ids);
    }
    let n = all.len();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), n, "no id given twice");
    let stats: Value = hub.get("/stats").await.json();
    assert_eq!(stats["events"]["published"], 200);
}
