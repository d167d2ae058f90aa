//! SPEC §9's logs: one access line per request (request id, masked credentials, user), one
//! line per stream opened and closed, and `log_format = "json"`.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::*;

fn hub_args(data: &str) -> Vec<String> {
    ["--listen", "127.0.0.1:0", "--data", data]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// The log's lines that contain all of `needles`, waiting a little for them.
async fn lines_with(p: &Proc, needles: &[&str]) -> Vec<String> {
    for _ in 0..100 {
        let found: Vec<String> = p
            .log()
            .lines()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .map(str::to_string)
            .collect();
        if !found.is_empty() {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no log line with {needles:?} in\n{}", p.log());
}

#[tokio::test]
async fn every_request_and_stream_leaves_a_line() {
    let tmp = tempfile::tempdir().unwrap();
    let args = hub_args(tmp.path().to_str().unwrap());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let p = Proc::spawn(&args, &[("RUNNEL_AUTH_JWT_SECRET", SECRET)]);
    let token = jwt(json!({"sub": "alice", "exp": now() + 60}));
    let r = request(p.addr, "GET", "/nope", &[], b"").await;
    let id = r.header("x-request-id").unwrap().to_string();
    let line = &lines_with(&p, &[&id]).await[0];
    for part in ["method=GET", "path=\"/nope\"", "status=404", "bytes="] {
        assert!(line.contains(part), "{part} in {line}");
    }
    let mut s = Sse::open(p.addr, &format!("/events?topic=news&token={token}"), &[]).await;
    s.connected().await;
    let line = &lines_with(&p, &["method=GET", "/events"]).await[0];
    assert!(
        line.contains("token=***") && !line.contains(&token),
        "{line}"
    );
    assert!(
        line.contains("user=\"alice\"") || line.contains("user=alice"),
        "{line}"
    );
    let opened = &lines_with(&p, &["stream opened"]).await[0];
    assert!(
        opened.contains("news") && opened.contains("alice"),
        "{opened}"
    );
    let key = bearer(&jwt(
        json!({"sub": "bob", "publish": ["*"], "exp": now() + 60}),
    ));
    for i in 0..20 {
        let body = json!({"topic": "news", "data": i}).to_string();
        let h = [
            ("authorization", key.as_str()),
            ("content-type", "application/json"),
        ];
        assert_eq!(
            request(p.addr, "POST", "/publish", &h, body.as_bytes())
                .await
                .status,
            200
        );
        s.next().await;
    }
    s.close();
    let closed = &lines_with(&p, &["stream closed"]).await[0];
    for part in ["events=20", "client_left", "news", "alice"] {
        assert!(closed.contains(part), "{part} in {closed}");
    }
    // Nothing per event at info: 20 events, 20 publish lines, and a few others.
    let lines = p.log().lines().count();
    assert!(lines < 30, "{lines} lines:\n{}", p.log());
}

#[tokio::test]
async fn json_log_lines_are_objects() {
    let tmp = tempfile::tempdir().unwrap();
    let args = hub_args(tmp.path().to_str().unwrap());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let p = Proc::spawn(&args, &[("RUNNEL_LOG_FORMAT", "json")]);
    let r = request(p.addr, "GET", "/health", &[], b"").await;
    let id = r.header("x-request-id").unwrap().to_string();
    let line = &lines_with(&p, &[&id]).await[0];
    let v: Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["message"], "request");
    assert_eq!(v["status"], 200);
    assert_eq!(v["path"], "/health");
    assert_eq!(v["request_id"], id.as_str());
    for l in p.log().lines() {
        serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}"));
    }
}
