//! The first request on a connection is read by runnel itself (event streams are written
//! without hyper); everything else must still behave exactly like plain HTTP/1.1.

use std::time::Duration;

use crate::common::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads one content-length response from a kept-alive connection.
async fn read_one(s: &mut TcpStream) -> Resp {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            if buf.len() >= end + 4 + len {
                return parse_response(&buf[..end + 4 + len]).unwrap();
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
            .await
            .expect("response in time")
            .unwrap();
        assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Reads raw bytes until `needle` shows up (5 s at most); returns all of them as text.
async fn read_until(s: &mut TcpStream, needle: &str) -> String {
    let mut out = Vec::new();
    let mut chunk = [0u8; 1024];
    while !String::from_utf8_lossy(&out).contains(needle) {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
            .await
            .unwrap_or_else(|_| panic!("no {needle:?} within 5 s"))
            .unwrap();
        assert!(n > 0, "closed before {needle:?}");
        out.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn a_refused_stream_keeps_the_connection_for_the_next_request() {
    let hub = TestHub::start().await;
    let mut s = TcpStream::connect(hub.addr).await.unwrap();
    s.write_all(b"GET /events?topic=no%20spaces HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let r = read_one(&mut s).await;
    r.assert_error(400, "invalid_topic");
    assert!(r.header("date").is_some());
    // The same connection, now served by hyper.
    s.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let r = read_one(&mut s).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["status"], "ok");
}

#[tokio::test]
async fn a_refused_stream_with_connection_close_is_closed() {
    let hub = TestHub::start().await;
    let raw = raw_request(
        hub.addr,
        b"GET /events?topic=no%20spaces HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    let r = parse_response(&raw).unwrap();
    r.assert_error(400, "invalid_topic");
    assert_eq!(r.header("connection"), Some("close"));
}

#[tokio::test]
async fn a_head_sent_byte_by_byte_opens_a_stream() {
    let hub = TestHub::start().await;
    let mut s = TcpStream::connect(hub.addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    for b in b"GET /events?topic=slow HTTP/1.1\r\nhost: x\r\n\r\n" {
        s.write_all(&[*b]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let text = read_until(&mut s, "event: connected").await;
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.contains("transfer-encoding: chunked\r\n"), "{text}");
}

#[tokio::test]
async fn large_heads_stream_and_oversized_heads_are_431() {
    let hub = TestHub::start().await;
    // Bigger than the first read buffer, within limits.max_header_bytes (16 KiB).
    let cookie = "c=".to_string() + &"x".repeat(6000);
    let mut s = Sse::open(hub.addr, "/events?topic=big", &[("cookie", &cookie)]).await;
    assert_eq!(s.status, 200);
    s.connected().await;
    hub.publish(json!({"topic": "big", "data": "after a big head"}))
        .await;
    assert_eq!(s.next().await.data, "after a big head");

    let huge = "x".repeat(20_000);
    let r = request(
        hub.addr,
        "GET",
        "/events?topic=big",
        &[("x-pad", &huge)],
        b"",
    )
    .await;
    assert_eq!(r.status, 431);
}

#[tokio::test]
async fn bytes_after_the_head_do_not_end_a_stream() {
    let hub = TestHub::start().await;
    let mut s = Sse::open(hub.addr, "/events?topic=chatty", &[]).await;
    s.connected().await;
    let mut tcp = s.into_stream();
    tcp.write_all(b"unexpected bytes from the client\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    hub.publish(json!({"topic": "chatty", "data": "still here"}))
        .await;
    read_until(&mut tcp, "still here").await;
}

#[tokio::test]
async fn a_stream_ends_with_the_last_chunk_at_shutdown() {
    let mut hub = TestHub::start().await;
    let mut s = hub.sse("/events?topic=end").await;
    s.connected().await;
    hub.stop().await;
    let rest = s.rest(Duration::from_secs(5)).await;
    assert!(rest.iter().any(|e| e.is_control("shutdown")), "{rest:?}");
    assert!(
        s.finished(),
        "the chunked body was finished with its last chunk"
    );
}

#[tokio::test]
async fn http10_and_head_requests_still_work() {
    let hub = TestHub::start().await;
    let raw = raw_request(hub.addr, b"GET /health HTTP/1.0\r\n\r\n").await;
    assert_eq!(parse_response(&raw).unwrap().status, 200);
    // HEAD probes a stream without opening one: headers, no body, nothing registered.
    let raw = raw_request(
        hub.addr,
        b"HEAD /events?topic=a HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    let r = parse_response(&raw).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    assert!(r.body.is_empty());
    let stats = hub.get("/stats").await.json();
    assert_eq!(stats["connections"]["total"], 0, "{stats}");
}

/// `HEAD /events` answers what `GET` would (401, 403, 200) without opening a stream, and
/// does not spend a single-use exchange token.
#[tokio::test]
async fn head_probes_a_stream_without_opening_it() {
    let hub = TestHub::start_with(|c| {
        secured(c);
        c.auth.default_subscribe = vec!["news".into()];
    })
    .await;
    let alice = bearer(&jwt(json!({"sub": "alice"})));
    let head = |path: &'static str, h: Vec<(&'static str, String)>| {
        let addr = hub.addr;
        async move {
            let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
            request(addr, "HEAD", path, &h, b"").await.status
        }
    };
    assert_eq!(head("/events?topic=news", vec![]).await, 401);
    assert_eq!(
        head("/events?topic=news", vec![("authorization", alice.clone())]).await,
        200
    );
    assert_eq!(
        head("/events/news", vec![("authorization", alice.clone())]).await,
        200
    );
    assert_eq!(
        head(
            "/events?topic=secret",
            vec![("authorization", alice.clone())]
        )
        .await,
        403
    );
    let expired = bearer(&jwt(json!({"sub": "alice", "exp": now() - 10})));
    assert_eq!(
        head("/events?topic=news", vec![("authorization", expired)]).await,
        401
    );
    // An exchange token is neither accepted nor spent by a probe.
    let r = request(
        hub.addr,
        "POST",
        "/auth/sse-token",
        &[("authorization", &alice)],
        b"",
    )
    .await;
    let token = r.json()["token"].as_str().unwrap().to_string();
    let path = format!("/events?topic=news&token={token}");
    assert_eq!(request(hub.addr, "HEAD", &path, &[], b"").await.status, 401);
    let mut s = stream_as(&hub, &path, &[]).await;
    assert_eq!(s.connected().await["user"], "alice");
    let stats = request(
        hub.addr,
        "GET",
        "/stats",
        &[("x-api-key", "admin-key")],
        b"",
    )
    .await;
    assert_eq!(
        stats.json()["connections"]["total"],
        1,
        "probes opened nothing"
    );
}
