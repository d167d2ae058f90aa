//! Bad input gets a clear JSON error with the right status, and the hub keeps serving.

use crate::common::*;
use serde_json::json;

async fn post(hub: &TestHub, path: &str, ct: Option<&str>, body: &[u8]) -> Resp {
    let headers: Vec<(&str, &str)> = ct.map(|c| vec![("content-type", c)]).unwrap_or_default();
    request(hub.addr, "POST", path, &headers, body).await
}

#[tokio::test]
async fn malformed_and_empty_json() {
    let hub = TestHub::start().await;
    let r = post(&hub, "/publish", Some("application/json"), b"{\"topic\": ").await;
    r.assert_error(400, "invalid_json");
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("line 1")
    );
    post(&hub, "/publish", None, b"")
        .await
        .assert_error(400, "invalid_json");
    post(&hub, "/publish", None, b"\"just a string\"")
        .await
        .assert_error(400, "bad_request");
    post(&hub, "/notify", None, b"[1,2")
        .await
        .assert_error(400, "invalid_json");
}

#[tokio::test]
async fn wrong_content_type_is_415() {
    let hub = TestHub::start().await;
    let body = json!({"topic": "a", "data": 1}).to_string();
    let r = post(
        &hub,
        "/publish",
        Some("application/x-www-form-urlencoded"),
        body.as_bytes(),
    )
    .await;
    r.assert_error(415, "unsupported_media_type");
    post(&hub, "/notify", Some("text/plain"), b"{}")
        .await
        .assert_error(415, "unsupported_media_type");
    // No content type, or a JSON one with parameters, is fine.
    assert_eq!(
        post(&hub, "/publish", None, body.as_bytes()).await.status,
        200
    );
    let r = post(
        &hub,
        "/publish",
        Some("application/json; charset=utf-8"),
        body.as_bytes(),
    )
    .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn missing_or_conflicting_fields() {
    let hub = TestHub::start().await;
    for (body, needle) in [
        (json!({"data": 1}), "target"),
        (json!({"topic": "a"}), "data"),
        (
            json!({"topic": "a", "broadcast": true, "data": 1}),
            "only one",
        ),
        (json!({"topic": "a", "data": 1, "colour": "red"}), "colour"),
        (
            json!({"topic": "a", "data": 1, "event": "a\r\nid: 666"}),
            "control",
        ),
        (json!({"topic": "a", "data": 1, "retry": "soon"}), "retry"),
        (json!({"topics": [], "data": 1}), "empty"),
        (json!([]), "empty"),
    ] {
        let r = hub.post_json("/publish", &body).await;
        r.assert_error(400, "bad_request");
        let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(msg.contains(needle), "{body}: {msg}");
    }
}

#[tokio::test]
async fn bad_topics() {
    let hub = TestHub::start().await;
    for t in [
        "",
        "a b",
        "a//b",
        "../etc/passwd",
        "a/./b",
        "ümlaut",
        &"x".repeat(201),
    ] {
        let r = hub
            .post_json("/publish", &json!({"topic": t, "data": 1}))
            .await;
        r.assert_error(400, "invalid_topic");
    }
    let r = hub
        .post_json("/publish", &json!({"topic": "$sys", "data": 1}))
        .await;
    r.assert_error(403, "forbidden");
    let r = post(&hub, "/publish/..%2F..%2Fetc", None, b"x").await;
    r.assert_error(400, "invalid_topic");
    let r = post(&hub, "/publish/a%FFb", None, b"x").await;
    r.assert_error(400, "invalid_topic");
    let s = hub.sse("/events/a%20b").await;
    assert_eq!(s.status, 400);
    assert_eq!(s.error_json()["error"]["code"], "invalid_topic");
    let s = hub.sse("/events?topic=a/../b").await;
    assert_eq!(s.status, 400);
    let s = hub.sse("/events?topic=").await;
    assert_eq!(s.status, 400);
}

#[tokio::test]
async fn too_many_topics_on_a_stream() {
    let hub = TestHub::start_with(|c| c.limits.max_topics_per_stream = 3).await;
    let s = hub.sse("/events?topic=a&topic=b&topic=c&topic=d").await;
    assert_eq!(s.status, 400);
    assert!(
        s.error_json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_topics_per_stream")
    );
    let mut ok = hub.sse("/events?topic=a&topic=b&topic=c").await;
    assert_eq!(ok.status, 200);
    ok.connected().await;
}

#[tokio::test]
async fn oversized_events_and_bodies_are_413() {
    let hub = TestHub::start_with(|c| {
        c.limits.max_event_bytes = runnel::config::ByteSize(1000);
        c.limits.max_body_bytes = runnel::config::ByteSize(4000);
    })
    .await;
    let r = hub
        .post_json("/publish", &json!({"topic": "a", "data": "x".repeat(1001)}))
        .await;
    r.assert_error(413, "payload_too_large");
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_event_bytes")
    );
    let r = post(&hub, "/publish/a", None, &[b'x'; 1001]).await;
    r.assert_error(413, "payload_too_large");
    // Declared too large: refused from the headers.
    let r = post(&hub, "/publish/a", None, &[b'x'; 5000]).await;
    r.assert_error(413, "payload_too_large");
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_body_bytes")
    );
    // Chunked, with no length: refused once the limit is crossed.
    let mut raw = b"POST /publish/a HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n".to_vec();
    for _ in 0..5 {
        raw.extend_from_slice(b"3e8\r\n");
        raw.extend_from_slice(&[b'y'; 1000]);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let r = parse_response(&raw_request(hub.addr, &raw).await).unwrap();
    r.assert_error(413, "payload_too_large");
    // A batch within the body limit whose events are each small is fine.
    let batch: Vec<_> = (0..3).map(|i| json!({"topic": "a", "data": i})).collect();
    assert_eq!(hub.post_json("/publish", &json!(batch)).await.status, 200);
}

#[tokio::test]
async fn wrong_method_is_405_with_allow() {
    let hub = TestHub::start().await;
    for (m, path, allow) in [
        ("DELETE", "/publish", "POST"),
        ("GET", "/publish", "POST"),
        ("POST", "/events", "GET, HEAD"),
        ("PUT", "/events/a", "GET, HEAD"),
        ("GET", "/auth/cookie", "POST, DELETE"),
        ("POST", "/health", "GET"),
        ("GET", "/notify", "POST"),
        ("GET", "/connections/x", "DELETE"),
    ] {
        let r = request(hub.addr, m, path, &[], b"").await;
        r.assert_error(405, "method_not_allowed");
        assert_eq!(r.header("allow"), Some(allow), "{m} {path}");
    }
}

#[tokio::test]
async fn unknown_routes_are_404() {
    let hub = TestHub::start().await;
    for path in [
        "/nope",
        "/events2",
        "/publishx",
        "/api/v1/events",
        "/%2e%2e/etc/passwd",
    ] {
        hub.get(path).await.assert_error(404, "not_found");
    }
}

#[tokio::test]
async fn bad_raw_publish_input() {
    let hub = TestHub::start().await;
    post(&hub, "/publish/a", None, &[0xff, 0xfe, 0x00])
        .await
        .assert_error(400, "bad_request");
    post(&hub, "/publish/a?retry=soon", None, b"x")
        .await
        .assert_error(400, "bad_request");
    post(&hub, "/publish/a?persist=maybe", None, b"x")
        .await
        .assert_error(400, "bad_request");
    post(&hub, "/publish/a?evnt=x", None, b"x")
        .await
        .assert_error(400, "bad_request");
    post(&hub, "/publish/a?event=a%0Ab", None, b"x")
        .await
        .assert_error(400, "bad_request");
}

#[tokio::test]
async fn garbage_never_stops_the_hub() {
    let hub = TestHub::start().await;
    for junk in [
        &b"\x00\x01\x02\x03garbage\r\n\r\n"[..],
        b"GET / HTTP/9.9\r\n\r\n",
        b"POST /publish HTTP/1.1\r\ncontent-length: -5\r\n\r\n",
        b"POST /publish HTTP/1.1\r\ncontent-length: 99999999999999999999\r\n\r\n",
        b"POST /publish HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
        b"GET /events?topic=a HTTP/1.1\r\nlast-event-id: \xff\xfe\r\n\r\n",
    ] {
        let _ = raw_request_within(hub.addr, junk, std::time::Duration::from_millis(500)).await;
    }
    let r = hub.get("/health").await;
    assert_eq!(r.status, 200);
    let p = hub
        .publish(json!({"topic": "still", "data": "alive"}))
        .await;
    assert_eq!(p["topics"], json!(["still"]));
}

/// Answers decided while the request head is read are JSON with a request id too: a head
/// over `limits.max_header_bytes` (431), one that is not HTTP (400), one that stops halfway
/// (408, once `limits.request_timeout` has passed). A connection that sends nothing is
/// closed without an answer.
#[tokio::test]
async fn errors_while_the_head_is_read_are_json() {
    let hub = TestHub::start_with(|c| {
        c.limits.request_timeout = runnel::config::Dur(std::time::Duration::from_millis(300));
    })
    .await;
    let answer = async |raw: &[u8]| {
        let out = raw_request_within(hub.addr, raw, std::time::Duration::from_secs(3)).await;
        parse_response(&out).unwrap_or_else(|| panic!("no answer: {out:?}"))
    };
    let big = format!(
        "GET /health HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let r = answer(big.as_bytes()).await;
    r.assert_error(431, "headers_too_large");
    assert!(r.text().contains("limits.max_header_bytes"), "{}", r.text());
    let r = answer(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 hello\r\n\r\n").await;
    r.assert_error(400, "bad_request");
    let r = answer(b"GET /health HTTP/1.1\r\nhost: x\r\nbad header line\r\n\r\n").await;
    r.assert_error(400, "bad_request");
    let r = answer(b"GET /health HTTP/1.1\r\nhost: x\r\n").await;
    r.assert_error(408, "request_timeout");
    assert_eq!(r.header("connection"), Some("close"));
    let out = raw_request_within(hub.addr, b"", std::time::Duration::from_secs(2)).await;
    assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
    // The hub keeps serving.
    assert_eq!(hub.get("/health").await.status, 200);
}
