//! SPEC §5.1: opening streams, the first frames, topics, fan-out, heartbeat.

use std::time::Duration;

use crate::common::*;
use serde_json::json;

#[tokio::test]
async fn stream_headers_and_first_frames() {
    let hub = TestHub::start().await;
    let mut s = hub.sse("/events?topic=news&topic=sport").await;
    assert_eq!(s.status, 200);
    assert_eq!(s.header("content-type"), Some("text/event-stream"));
    assert_eq!(s.header("cache-control"), Some("no-cache"));
    assert_eq!(s.header("x-accel-buffering"), Some("no"));
    assert!(s.header("x-request-id").is_some());

    let first = s.next().await;
    assert_eq!(first.retry, Some(200), "retry frame first: {first:?}");
    assert!(first.id.is_none() && first.event.is_none());
    let c = s.next().await;
    assert!(c.is_control("connected"), "{c:?}");
    let d = c.json();
    assert!(d["connection_id"].as_str().is_some_and(|s| s.len() > 20));
    assert_eq!(d["user"], json!(null));
    assert_eq!(d["topics"], json!(["news", "sport", "$broadcast"]));
    assert_eq!(d["last_event_id"], json!(null));
}

#[tokio::test]
async fn path_topic_and_query_topics_combine() {
    let hub = TestHub::start().await;
    let mut s = hub.sse("/events/user%2Falice?topic=a/b").await;
    let d = s.connected().await;
    assert_eq!(d["topics"], json!(["user/alice", "a/b", "$broadcast"]));
    let mut s2 = hub.sse("/events/deep/topic:x@y").await;
    assert_eq!(s2.connected().await["topics"][0], "deep/topic:x@y");
}

#[tokio::test]
async fn subscribed_before_connected_is_sent() {
    // SPEC: an event published after a client has read `connected` reaches it.
    let hub = TestHub::start().await;
    for i in 0..20 {
        let mut s = hub.sse("/events?topic=race").await;
        s.connected().await;
        hub.publish(json!({"topic": "race", "data": i})).await;
        let e = s.next().await;
        assert_eq!(e.data, i.to_string());
    }
}

#[tokio::test]
async fn events_reach_only_their_topics() {
    let hub = TestHub::start().await;
    let mut a = hub.sse("/events?topic=a").await;
    let mut b = hub.sse("/events?topic=b").await;
    a.connected().await;
    b.connected().await;
    let r = hub
        .publish(json!({"topic": "a", "event": "update", "data": {"x": 1}}))
        .await;
    assert_eq!(r["delivered"], 1);
    assert_eq!(r["topics"], json!(["a"]));
    let e = a.next().await;
    assert_eq!(e.event.as_deref(), Some("update"));
    assert_eq!(e.data, r#"{"x":1}"#);
    assert_eq!(e.id.as_deref(), r["id"].as_str());
    b.assert_quiet(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn multi_topic_event_is_delivered_once_per_stream() {
    let hub = TestHub::start().await;
    let mut both = hub.sse("/events?topic=a&topic=b").await;
    let mut only_b = hub.sse("/events?topic=b").await;
    both.connected().await;
    only_b.connected().await;
    let r = hub
        .publish(json!({"topics": ["a", "b"], "data": "once"}))
        .await;
    assert_eq!(r["delivered"], 2, "{r}");
    assert_eq!(both.next().await.data, "once");
    assert_eq!(only_b.next().await.data, "once");
    hub.publish(json!({"topic": "b", "data": "next"})).await;
    // The next thing on `both` is the next event, not a duplicate.
    assert_eq!(both.next().await.data, "next");
}

#[tokio::test]
async fn broadcast_reaches_every_stream_even_without_topics() {
    let hub = TestHub::start().await;
    let mut none = hub.sse("/events").await;
    let mut some = hub.sse("/events?topic=x").await;
    assert_eq!(none.connected().await["topics"], json!(["$broadcast"]));
    some.connected().await;
    let r = hub.publish(json!({"broadcast": true, "data": "all"})).await;
    assert_eq!(r["delivered"], 2);
    assert_eq!(none.next().await.data, "all");
    assert_eq!(some.next().await.data, "all");
}

#[tokio::test]
async fn wildcard_subscriptions_match_patterns() {
    let hub = TestHub::start().await;
    let mut s = hub.sse("/events?topic=sensors/*").await;
    s.connected().await;
    hub.publish(json!({"topic": "sensors/kitchen/temp", "data": 21}))
        .await;
    hub.publish(json!({"topic": "lights/kitchen", "data": "on"}))
        .await;
    hub.publish(json!({"topic": "sensors/hall", "data": 19}))
        .await;
    assert_eq!(s.next().await.data, "21");
    assert_eq!(s.next().await.data, "19");
}

#[tokio::test]
async fn data_encoding_rules() {
    let hub = TestHub::start().await;
    let mut s = hub.sse("/events?topic=t").await;
    s.connected().await;
    hub.publish(json!({"topic": "t", "data": "plain text"}))
        .await;
    hub.publish(json!({"topic": "t", "data": "two\nlines"}))
        .await;
    hub.publish(json!({"topic": "t", "data": [1, {"a": "b"}]}))
        .await;
    hub.publish(json!({"topic": "t", "data": 3.5})).await;
    hub.publish(json!({"topic": "t", "data": null})).await;
    let got: Vec<String> = [(); 5].iter().map(|_| String::new()).collect();
    let mut got = got;
    for g in got.iter_mut() {
        let e = s.next().await;
        assert!(e.event.is_none(), "no event type by default");
        *g = e.data;
    }
    assert_eq!(
        got,
        [
            "plain text",
            "two\nlines",
            r#"[1,{"a":"b"}]"#,
            "3.5",
            "null"
        ]
    );
}

#[tokio::test]
async fn retry_field_is_passed_on() {
    let hub = TestHub::start().await;
    let mut s = hub.sse("/events?topic=t").await;
    s.connected().await;
    hub.publish(json!({"topic": "t", "data": 1, "retry": 1500}))
        .await;
    assert_eq!(s.next().await.retry, Some(1500));
}

#[tokio::test]
async fn idle_streams_get_keepalives() {
    let hub = TestHub::start_with(|c| {
        c.stream.heartbeat = runnel::config::Dur(Duration::from_millis(200));
    })
    .await;
    let mut s = hub.sse("/events?topic=quiet").await;
    s.connected().await;
    let mut comments = 0;
    let start = std::time::Instant::now();
    while comments < 3 {
        let item = s.next_item_within(Duration::from_secs(2)).await.unwrap();
        assert_eq!(item.comment.as_deref(), Some("keepalive"), "{item:?}");
        comments += 1;
    }
    // Three heartbeats of 200 ms: well under 2 s, and not a flood either.
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(400), "{took:?}");
}

#[tokio::test]
async fn a_busy_stream_gets_no_keepalive() {
    let hub = TestHub::start_with(|c| {
        c.stream.heartbeat = runnel::config::Dur(Duration::from_millis(300));
    })
    .await;
    let mut s = hub.sse("/events?topic=busy").await;
    s.connected().await;
    for i in 0..12 {
        hub.publish(json!({"topic": "busy", "data": i})).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for i in 0..12 {
        let item = s.next_item_within(Duration::from_secs(2)).await.unwrap();
        assert_eq!(
            item.data,
            i.to_string(),
            "no keepalive between events: {item:?}"
        );
    }
}

#[tokio::test]
async fn waiting_events_go_out_together_and_in_order() {
    let hub = TestHub::start().await;
    let mut s = hub.sse("/events?topic=burst").await;
    s.connected().await;
    let batch: Vec<_> = (0..200)
        .map(|i| json!({"topic": "burst", "data": i}))
        .collect();
    hub.publish(json!(batch)).await;
    for i in 0..200 {
        assert_eq!(s.next().await.data, i.to_string());
    }
}

#[tokio::test]
async fn a_client_leaving_unregisters_its_stream() {
    let hub = TestHub::start().await;
    let mut s = hub.sse("/events?topic=bye").await;
    s.connected().await;
    assert_eq!(hub.get("/stats").await.json()["connections"]["total"], 1);
    s.close();
    assert!(
        eventually(Duration::from_secs(5), async || {
            hub.get("/stats").await.json()["connections"]["total"] == 0
        })
        .await,
        "stream still registered after the client left"
    );
}

/// Frames name their topics in `topic:` fields; `envelope=1` folds them, with the data, into
/// one JSON object for browsers (live and replayed alike).
#[tokio::test]
async fn frames_carry_topics_and_envelope_shows_them() {
    let hub = TestHub::start().await;
    let mut plain = hub.sse("/events?topic=a&topic=b").await;
    plain.connected().await;
    let first = hub
        .publish(json!({"topics": ["a", "b"], "event": "up", "data": "line1\nline2"}))
        .await;
    let e = plain.next().await;
    assert_eq!(e.topics, ["a", "b"]);
    assert_eq!(e.data, "line1\nline2");
    assert_eq!(e.event.as_deref(), Some("up"));

    let mut wrapped = hub
        .sse("/events?topic=a&envelope=1&last_event_id=earliest")
        .await;
    wrapped.connected().await;
    let replayed = wrapped.next().await;
    assert_eq!(replayed.id.as_deref(), first["id"].as_str());
    assert_eq!(
        replayed.json(),
        json!({"topics": ["a", "b"], "data": "line1\nline2"})
    );
    assert_eq!(replayed.event.as_deref(), Some("up"));
    hub.publish(json!({"topic": "a", "data": {"n": 1}})).await;
    let live = wrapped.next().await;
    assert_eq!(live.json(), json!({"topics": ["a"], "data": "{\"n\":1}"}));
    assert!(
        live.topics.is_empty(),
        "the topic fields are folded into the data"
    );
}
