//! SPEC §5.8: `GET /ws`, the same streams over a WebSocket, with publishing and
//! subscribing over the same connection. The client is tokio-tungstenite (not ours); broken
//! frames come from a client that frames by hand.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::*;

const QUIET: Duration = Duration::from_millis(400);

fn data_of(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["data"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test]
async fn a_websocket_receives_events_and_is_listed_beside_streams() {
    let hub = TestHub::start().await;
    let mut ws = Ws::open(hub.addr, "/ws?topic=a&topic=b", &[]).await;
    let c = ws.connected().await;
    let id = c["connection_id"].as_str().unwrap().to_string();
    assert_eq!(c["topics"], json!(["a", "b", "$broadcast"]));
    assert_eq!(c["last_event_id"], Value::Null);
    let mut sse = hub.sse("/events?topic=a").await;
    sse.connected().await;

    let p = hub
        .publish(json!({"topic": "a", "event": "up", "data": {"n": 1, "s": "x"}}))
        .await;
    assert_eq!(p["delivered"], 2);
    let e = ws.next_json().await;
    assert_eq!(
        e,
        json!({"type": "event", "id": p["id"], "event": "up", "topics": ["a"],
               "data": {"n": 1, "s": "x"}})
    );
    // Text stays text; an event on topics the connection does not all receive names only
    // those it receives.
    hub.publish(json!({"topics": ["b", "zzz"], "data": "two\nlines"}))
        .await;
    let e = ws.next_json().await;
    assert_eq!(e["topics"], json!(["b"]));
    assert_eq!(e["data"], "two\nlines");
    assert!(e.get("event").is_none());

    let conns = hub.get("/connections").await.json();
    let rows = conns["connections"].as_array().unwrap();
    let mine = rows.iter().find(|r| r["id"] == id.as_str()).unwrap();
    assert_eq!(mine["transport"], "ws");
    assert_eq!(mine["topics"], json!(["a", "b", "$broadcast"]));
    assert!(rows.iter().any(|r| r["transport"] == "sse"));
    let stats = hub.get("/stats").await.json();
    assert_eq!(stats["connections"]["total"], 2);
    assert_eq!(stats["connections"]["websocket"], 1);
    assert_eq!(stats["connections"]["sse"], 1);
    let metrics = hub.get("/metrics").await.text();
    assert!(
        metrics.contains("\nrunnel_websocket_connections 1\n"),
        "{metrics}"
    );
    // An admin close: `closed`, then close code 1000.
    let r = request(hub.addr, "DELETE", &format!("/connections/{id}"), &[], b"").await;
    assert_eq!(r.status, 204);
    let (texts, code) = ws.close_code().await;
    assert_eq!(texts.last().unwrap()["type"], "closed");
    assert_eq!(texts.last().unwrap()["reason"], "closed_by_admin");
    assert_eq!(code, Some(1000));
}

#[tokio::test]
async fn every_credential_carrier_opens_a_websocket_and_refusals_are_json() {
    let hub = secure_hub().await;
    let token = jwt(json!({"sub": "carol", "subscribe": ["news"]}));
    let auth = bearer(&token);
    let cookie = format!("runnel_token={token}");
    let carriers: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("/ws", vec![("authorization", auth.as_str())]),
        ("/ws", vec![("x-auth-token", token.as_str())]),
        ("/ws", vec![("cookie", cookie.as_str())]),
        ("/ws", vec![("x-api-key", "backend-key")]),
        ("/ws", vec![("authorization", "Bearer admin-key")]),
    ];
    for (path, h) in &carriers {
        let mut ws = Ws::open(hub.addr, path, h).await;
        ws.connected().await;
    }
    let mut ws = Ws::open(hub.addr, &format!("/ws?topic=news&token={token}"), &[]).await;
    assert_eq!(ws.connected().await["user"], "carol");
    // A single-use exchange token: once.
    let r = request(
        hub.addr,
        "POST",
        "/auth/sse-token",
        &[("authorization", &auth)],
        b"",
    )
    .await;
    let ex = r.json()["token"].as_str().unwrap().to_string();
    let mut ws = Ws::open(hub.addr, &format!("/ws?token={ex}"), &[]).await;
    assert_eq!(ws.connected().await["user"], "carol");
    let r = Ws::try_open(hub.addr, &format!("/ws?token={ex}"), &[])
        .await
        .err()
        .unwrap();
    assert_eq!(r.status, 401);
    // No credentials, bad ones, a topic not allowed: refused before the upgrade.
    let r = Ws::try_open(hub.addr, "/ws", &[]).await.err().unwrap();
    assert_eq!(
        (r.status, &r.body["error"]["code"]),
        (401, &json!("unauthorized"))
    );
    let r = Ws::try_open(
        hub.addr,
        "/ws",
        &[("authorization", "Bearer nope.nope.nope")],
    )
    .await
    .err()
    .unwrap();
    assert_eq!(r.status, 401);
    let r = Ws::try_open(hub.addr, "/ws?topic=secret", &[("authorization", &auth)])
        .await
        .err()
        .unwrap();
    assert_eq!(
        (r.status, &r.body["error"]["code"]),
        (403, &json!("forbidden"))
    );
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("secret")
    );
}

#[tokio::test]
async fn foreign_origins_are_refused_and_own_and_allowed_ones_accepted() {
    let hub = TestHub::start_with(|c| {
        c.cors.allow_origins = vec!["https://app.example".into()];
    })
    .await;
    let own = format!("http://{}", hub.addr);
    for ok in [own.as_str(), "https://app.example"] {
        let mut ws = Ws::open(hub.addr, "/ws", &[("origin", ok)]).await;
        ws.connected().await;
    }
    let https_own = format!("https://{}", hub.addr);
    for bad in ["https://evil.example", "null", https_own.as_str()] {
        let r = Ws::try_open(hub.addr, "/ws", &[("origin", bad)])
            .await
            .err()
            .unwrap_or_else(|| panic!("origin {bad} accepted"));
        assert_eq!(r.status, 403, "{bad}");
        assert_eq!(r.body["error"]["code"], "forbidden");
        assert!(
            r.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("origin")
        );
    }
    // Nothing was opened by the refusals: only the two accepted connections ever were.
    let metrics = hub.get("/metrics").await.text();
    assert!(
        metrics.contains("\nrunnel_streams_opened_total 2\n"),
        "{metrics}"
    );
}

#[tokio::test]
async fn handshakes_that_are_not_upgrades_get_json_errors() {
    let hub = TestHub::start().await;
    let key = ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
    let r = request(hub.addr, "GET", "/ws", &[], b"").await;
    r.assert_error(426, "upgrade_required");
    assert_eq!(r.header("upgrade"), Some("websocket"));
    let up = [("upgrade", "websocket"), ("connection", "Upgrade")];
    let r = request(
        hub.addr,
        "GET",
        "/ws",
        &[up[0], up[1], key, ("sec-websocket-version", "8")],
        b"",
    )
    .await;
    r.assert_error(426, "upgrade_required");
    assert_eq!(r.header("sec-websocket-version"), Some("13"));
    let r = request(
        hub.addr,
        "GET",
        "/ws",
        &[
            up[0],
            up[1],
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "short"),
        ],
        b"",
    )
    .await;
    r.assert_error(400, "bad_request");
    let r = request(hub.addr, "POST", "/ws", &[], b"").await;
    r.assert_error(405, "method_not_allowed");
    // On a kept-alive connection the upgrade would reach hyper: a clear refusal.
    let raw = "GET /health HTTP/1.1\r\nhost: x\r\n\r\nGET /ws HTTP/1.1\r\nhost: x\r\nupgrade: \
         websocket\r\nconnection: close, Upgrade\r\nsec-websocket-version: 13\r\n\
         sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    let out = String::from_utf8_lossy(&raw_request(hub.addr, raw.as_bytes()).await).to_string();
    let second = &out[out.find("{\"status\":\"ok\"}").expect("the first answer") + 15..];
    assert!(second.starts_with("HTTP/1.1 400"), "{out}");
    assert!(
        second.contains("needs an HTTP/1.1 connection whose first request"),
        "{out}"
    );
}

#[tokio::test]
async fn publish_over_the_socket_is_acked_and_permission_errors_are_messages() {
    let hub = secure_hub().await;
    let token = jwt(json!({"sub": "pat", "subscribe": ["alerts/*"], "publish": ["alerts/*"]}));
    let mut ws = Ws::open(
        hub.addr,
        "/ws?topic=alerts/*",
        &[("authorization", &bearer(&token))],
    )
    .await;
    ws.connected().await;
    ws.send(&json!({"op": "publish", "ref": "p1", "topic": "alerts/disk", "data": {"free": 3}}))
        .await;
    let mut got = Vec::new();
    for _ in 0..2 {
        got.push(ws.next_json().await);
    }
    let ack = got.iter().find(|v| v["type"] == "ack").expect("an ack");
    assert_eq!(ack["ref"], "p1");
    assert_eq!(ack["result"]["topics"], json!(["alerts/disk"]));
    assert_eq!(ack["result"]["delivered"], 1);
    let ev = got
        .iter()
        .find(|v| v["type"] == "event")
        .expect("its event");
    assert_eq!(ev["id"], ack["result"]["id"]);
    assert_eq!(ev["data"], json!({"free": 3}));

    let e = ws
        .call(&json!({"op": "publish", "ref": "p2", "topic": "news", "data": 1}))
        .await;
    assert_eq!(e["type"], "error");
    assert_eq!(e["ref"], "p2");
    assert_eq!(e["error"]["code"], "forbidden");
    assert!(e["error"]["message"].as_str().unwrap().contains("news"));
    let e = ws
        .call(&json!({"op": "publish", "ref": "p3", "topic": "$x", "data": 1}))
        .await;
    assert_eq!(e["type"], "error", "{e}");
    // The connection goes on.
    assert_eq!(
        ws.call(&json!({"op": "ping", "ref": "z"})).await,
        json!({"type": "pong", "ref": "z"})
    );
    // Without a publishing right (an anonymous reader on a hub whose reading is open).
    let open = TestHub::start_with(|c| {
        secured(c);
        c.auth.required = Some(false);
    })
    .await;
    let mut ws = Ws::open(open.addr, "/ws", &[]).await;
    ws.connected().await;
    let a = ws
        .call(&json!({"op": "publish", "topic": "t", "data": "d"}))
        .await;
    assert_eq!(a["type"], "ack", "auth off: anyone publishes ({a})");
}

#[tokio::test]
async fn a_batch_over_the_socket_is_atomic() {
    let hub = TestHub::start().await;
    let mut ws = Ws::open(hub.addr, "/ws?topic=b", &[]).await;
    ws.connected().await;
    let bad = ws
        .call(&json!({"op": "publish", "ref": 1, "events": [
            {"topic": "b", "data": "one"}, {"topic": "b"}]}))
        .await;
    assert_eq!(bad["type"], "error");
    assert_eq!(bad["ref"], 1);
    assert!(
        bad["error"]["message"]
            .as_str()
            .unwrap()
            .contains("batch item 1")
    );
    let ok = ws
        .call(&json!({"op": "publish", "ref": 2, "events": [
            {"topic": "b", "data": "one"}, {"topic": "b", "data": "two"}]}))
        .await;
    assert_eq!(ok["type"], "ack");
    let ids: Vec<&Value> = ok["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["id"])
        .collect();
    assert_eq!(ids.len(), 2);
    let events = ws.events_until_quiet(QUIET).await;
    assert_eq!(
        data_of(&events),
        ["one", "two"],
        "nothing of the refused batch"
    );
    assert_eq!(events[0]["id"], *ids[0]);
}

/// Publishes `n` events to `topic` from a task, with their number as data.
fn publish_in_background(
    hub: &TestHub,
    topic: &str,
    n: usize,
) -> tokio::task::JoinHandle<Vec<String>> {
    let addr = hub.addr;
    let topic = topic.to_string();
    tokio::spawn(async move {
        let mut ids = Vec::new();
        for i in 0..n {
            ids.push(publish_at(addr, &json!({"topic": topic, "data": i.to_string()})).await);
        }
        ids
    })
}

#[tokio::test]
async fn subscribe_with_last_event_id_while_publishing_has_no_gap_and_no_duplicate() {
    let hub = TestHub::start().await;
    let first = hub.publish(json!({"topic": "r", "data": "before"})).await;
    let mut ws = Ws::open(hub.addr, "/ws?topic=other", &[]).await;
    ws.connected().await;
    let publisher = publish_in_background(&hub, "r", 300);
    tokio::time::sleep(Duration::from_millis(30)).await;
    let ack = ws
        .call(
            &json!({"op": "subscribe", "ref": "s", "topics": ["r"], "last_event_id": first["id"]}),
        )
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    assert_eq!(ack["result"]["topics"], json!(["other", "$broadcast", "r"]));
    let ids = publisher.await.unwrap();
    let events = ws.events_until_quiet(QUIET).await;
    let got: Vec<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(got, ids, "every event after last_event_id, once, in order");

    // Without last_event_id: live from the subscription on, with no gap after the first.
    let mut ws2 = Ws::open(hub.addr, "/ws", &[]).await;
    ws2.connected().await;
    let publisher = publish_in_background(&hub, "live", 200);
    tokio::time::sleep(Duration::from_millis(30)).await;
    let ack = ws2
        .call(&json!({"op": "subscribe", "topics": ["live"]}))
        .await;
    assert_eq!(ack["type"], "ack");
    let ids = publisher.await.unwrap();
    let events = ws2.events_until_quiet(QUIET).await;
    let got: Vec<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert!(
        !got.is_empty() && got.len() < 200,
        "live only: {}",
        got.len()
    );
    let from = ids.iter().position(|i| i == got[0]).unwrap();
    assert_eq!(got, ids[from..], "no gap, no duplicate after the first");

    // Unsubscribe: later events on the topic no longer arrive; others still do.
    let ack = ws2
        .call(&json!({"op": "unsubscribe", "topics": ["live"]}))
        .await;
    assert_eq!(ack["result"]["topics"], json!(["$broadcast"]));
    hub.publish(json!({"topic": "live", "data": "gone"})).await;
    hub.publish(json!({"broadcast": true, "data": "marker"}))
        .await;
    let events = ws2.events_until_quiet(QUIET).await;
    assert_eq!(data_of(&events), ["marker"]);
    // A foreign id: `reset`, then all that is retained of the new topic.
    let a = ws2
        .call(&json!({"op": "subscribe", "topics": ["r"], "last_event_id": "nope"}))
        .await;
    assert_eq!(a["type"], "ack");
    let reset = ws2.next_json().await;
    assert_eq!(
        reset,
        json!({"type": "reset", "reason": "unknown_id", "last_event_id": "nope"})
    );
    let events = ws2.events_until_quiet(QUIET).await;
    assert_eq!(events.len(), 301);
    assert_eq!(events[0]["data"], "before");
}

#[tokio::test]
async fn session_topics_apply_to_open_sockets() {
    let hub = secure_hub().await;
    let auth = bearer(&jwt(json!({"sub": "sam", "subscribe": ["news"]})));
    let mut ws = Ws::open(hub.addr, "/ws", &[("authorization", &auth)]).await;
    assert_eq!(
        ws.connected().await["topics"],
        json!(["user/sam", "$broadcast"])
    );
    let r = request(
        hub.addr,
        "POST",
        "/subscribe",
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        br#"{"topics":["news"]}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    publish_as(
        &hub,
        &[("x-api-key", "backend-key")],
        json!({"topic": "news", "data": "n"}),
    )
    .await;
    let e = ws.next_json().await;
    assert_eq!((&e["type"], &e["data"]), (&json!("event"), &json!("n")));
    // A topic the caller may not read is refused as an error message.
    let e = ws
        .call(&json!({"op": "subscribe", "topics": ["secret"]}))
        .await;
    assert_eq!(e["error"]["code"], "forbidden");
}

#[tokio::test]
async fn shutdown_sends_1012_and_a_restarted_hub_resumes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let mut hub = TestHub::start_in(tmp.path(), |_| {}).await;
    let mut ws = Ws::open(hub.addr, "/ws?topic=x", &[]).await;
    ws.connected().await;
    for i in 0..3 {
        hub.publish(json!({"topic": "x", "data": format!("a{i}")}))
            .await;
    }
    let seen = ws.events_until_quiet(QUIET).await;
    let last = seen.last().unwrap()["id"].as_str().unwrap().to_string();
    let stop = tokio::spawn(async move {
        hub.stop().await;
        hub
    });
    let (texts, code) = ws.close_code().await;
    assert_eq!(texts.last().unwrap()["type"], "shutdown");
    assert_eq!(code, Some(1012));
    drop(stop.await.unwrap());
    let hub = TestHub::start_in(tmp.path(), |_| {}).await;
    for i in 0..3 {
        hub.publish(json!({"topic": "x", "data": format!("b{i}")}))
            .await;
    }
    let mut ws = Ws::open(hub.addr, &format!("/ws?topic=x&last_event_id={last}"), &[]).await;
    assert_eq!(ws.connected().await["last_event_id"], last.as_str());
    let events = ws.events_until_quiet(QUIET).await;
    assert_eq!(data_of(&events), ["b0", "b1", "b2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_after_kill_9_misses_nothing_acknowledged() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().to_str().unwrap().to_string();
    let args = ["--listen", "127.0.0.1:0", "--data", data.as_str()];
    let mut p = Proc::spawn(&args, &[]);
    let mut ws = Ws::open(p.addr, "/ws?topic=k", &[]).await;
    ws.connected().await;
    let mut acked = Vec::new();
    for i in 0..20 {
        let a = ws
            .call(&json!({"op": "publish", "topic": "k", "data": i.to_string()}))
            .await;
        acked.push(a["result"]["id"].as_str().unwrap().to_string());
    }
    let seen = ws.events_until_quiet(QUIET).await;
    let last = seen[9]["id"].as_str().unwrap().to_string();
    p.signal("KILL");
    assert_eq!(p.wait_exit(Duration::from_secs(5)), None);
    let p2 = Proc::spawn(&args, &[]);
    let mut ws = Ws::open(p2.addr, &format!("/ws?topic=k&last_event_id={last}"), &[]).await;
    ws.connected().await;
    let events = ws.events_until_quiet(QUIET).await;
    let got: Vec<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(got, acked[10..], "every acknowledged event after the id");
}

#[tokio::test]
async fn a_slow_reader_is_closed_with_1013_and_resumes() {
    let hub = TestHub::start_with(|c| c.limits.stream_queue = 16).await;
    let mut raw = RawWs::open(hub.addr, "/ws?topic=s").await;
    assert_eq!(raw.next_json().await["type"], "connected");
    // The client stops reading; the hub publishes far more than socket buffers hold.
    let data = "s".repeat(50_000);
    let mut last_ok = None;
    for i in 0..200 {
        let v = hub
            .publish(json!({"topic": "s", "data": format!("{i}{data}")}))
            .await;
        last_ok = Some(v["id"].as_str().unwrap().to_string());
    }
    let mut seen = Vec::new();
    let mut closed = None;
    loop {
        match raw.read_frame().await {
            Some((1, p)) => {
                let v: Value = serde_json::from_slice(&p).unwrap();
                if v["type"] == "event" {
                    seen.push(v["id"].as_str().unwrap().to_string());
                } else {
                    assert_eq!(v["type"], "closed");
                    assert_eq!(v["reason"], "slow_reader");
                }
            }
            Some((8, p)) => {
                closed = Some(u16::from_be_bytes([p[0], p[1]]));
                break;
            }
            Some(_) => {}
            None => break,
        }
    }
    assert_eq!(closed, Some(1013));
    assert!(seen.len() < 200, "it fell behind");
    let last = seen.last().unwrap();
    let mut ws = Ws::open(hub.addr, &format!("/ws?topic=s&last_event_id={last}"), &[]).await;
    ws.connected().await;
    let rest = ws.events_until_quiet(Duration::from_secs(1)).await;
    assert_eq!(
        rest.len() + seen.len(),
        200,
        "resumed without gap or duplicate"
    );
    assert_eq!(rest.last().unwrap()["id"].as_str(), last_ok.as_deref());
    let ids: HashSet<&str> = rest.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert!(seen.iter().all(|s| !ids.contains(s.as_str())));
}

#[tokio::test]
async fn bad_messages_get_error_messages_and_the_connection_goes_on() {
    let hub = TestHub::start().await;
    let mut ws = Ws::open(hub.addr, "/ws", &[]).await;
    ws.connected().await;
    let cases = [
        ("not json", "invalid_json", "not JSON"),
        ("[1,2]", "bad_request", "JSON object"),
        ("{}", "bad_request", "\"op\""),
        (r#"{"op":"fly","ref":"r"}"#, "bad_request", "\"fly\""),
        (
            r#"{"op":"subscribe"}"#,
            "bad_request",
            "\"topics\" is missing",
        ),
        (r#"{"op":"subscribe","topics":"a"}"#, "bad_request", "array"),
        (
            r#"{"op":"subscribe","topics":["a b"]}"#,
            "invalid_topic",
            "",
        ),
        (
            r#"{"op":"subscribe","topics":["a"],"extra":1}"#,
            "bad_request",
            "\"extra\"",
        ),
        (r#"{"op":"publish","topic":"a"}"#, "bad_request", "\"data\""),
        (
            r#"{"op":"publish","events":{}}"#,
            "bad_request",
            "\"events\"",
        ),
        (r#"{"action":"jump"}"#, "bad_request", "\"jump\""),
        (
            r#"{"action":"send_to_channel","data":{"content":1}}"#,
            "bad_request",
            "data\".channel",
        ),
    ];
    for (text, code, words) in cases {
        ws.s.send(tokio_tungstenite::tungstenite::Message::text(text))
            .await
            .unwrap();
        let e = ws.next_json().await;
        assert_eq!(e["type"], "error", "{text}: {e}");
        assert_eq!(e["error"]["code"], code, "{text}: {e}");
        assert!(
            e["error"]["message"].as_str().unwrap().contains(words),
            "{text}: {e}"
        );
    }
    use futures_util::SinkExt as _;
    ws.s.send(tokio_tungstenite::tungstenite::Message::binary(vec![
        1, 2, 3,
    ]))
    .await
    .unwrap();
    let e = ws.next_json().await;
    assert!(e["error"]["message"].as_str().unwrap().contains("binary"));
    assert_eq!(
        ws.call(&json!({"op": "ping", "ref": 7})).await,
        json!({"type": "pong", "ref": 7})
    );
}

/// Frames that break the protocol end the connection with the code that says why; other
/// connections are not affected.
#[tokio::test]
async fn broken_frames_close_with_the_right_code() {
    let hub =
        TestHub::start_with(|c| c.limits.max_body_bytes = runnel::config::ByteSize(1024)).await;
    let mut bystander = Ws::open(hub.addr, "/ws?topic=t", &[]).await;
    bystander.connected().await;
    type Case = (&'static str, Vec<(bool, u8, Vec<u8>, bool)>, u16);
    let cases: Vec<Case> = vec![
        ("oversized", vec![(true, 1, vec![b'a'; 2000], true)], 1009),
        (
            "fragmented flood",
            (0..10).map(|_| (false, 0, vec![b'a'; 200], true)).collect(),
            1009,
        ),
        ("unmasked", vec![(true, 1, b"{}".to_vec(), false)], 1002),
        (
            "reserved opcode",
            vec![(true, 3, b"x".to_vec(), true)],
            1002,
        ),
        (
            "invalid UTF-8",
            vec![(true, 1, vec![0xff, 0xfe], true)],
            1007,
        ),
    ];
    for (what, frames, code) in cases {
        let mut raw = RawWs::open(hub.addr, "/ws").await;
        assert_eq!(raw.next_json().await["type"], "connected");
        let mut frames = frames.into_iter();
        if what == "fragmented flood" {
            raw.frame(false, 1, &[b'a'; 200], true).await;
        }
        for (fin, op, payload, mask) in frames.by_ref() {
            raw.frame(fin, op, &payload, mask).await;
        }
        assert_eq!(raw.close_code().await, Some(code), "{what}");
    }
    hub.publish(json!({"topic": "t", "data": "still here"}))
        .await;
    assert_eq!(bystander.next_json().await["data"], "still here");
}

#[tokio::test]
async fn the_action_command_form_maps_onto_the_same_ops() {
    let hub = secure_hub().await;
    let token =
        jwt(json!({"sub": "ann", "subscribe": ["room/*"], "publish": ["room/*", "user/*"]}));
    let mut ws = Ws::open(hub.addr, "/ws", &[("authorization", &bearer(&token))]).await;
    ws.connected().await;
    assert_eq!(
        ws.call(&json!({"action": "ping", "request_id": "r1"}))
            .await,
        json!({"type": "pong", "request_id": "r1"})
    );
    let a = ws
        .call(&json!({"action": "subscribe", "data": {"channel": "room/1"}, "request_id": 2}))
        .await;
    assert_eq!(a["type"], "ack");
    assert_eq!(a["request_id"], 2);
    assert!(a.get("ref").is_none());
    let a = ws
        .call(&json!({"action": "send_to_channel", "data": {"channel": "room/1", "content": {"t": "hi"}}, "request_id": "r3"}))
        .await;
    assert_eq!(
        (&a["type"], &a["request_id"]),
        (&json!("ack"), &json!("r3"))
    );
    let e = ws.next_json().await;
    assert_eq!(
        (&e["topics"], &e["data"]),
        (&json!(["room/1"]), &json!({"t": "hi"}))
    );
    let a = ws
        .call(&json!({"action": "send_to_user", "data": {"user_id": "ann", "content": "psst"}, "request_id": "r4"}))
        .await;
    assert_eq!(a["result"]["topics"], json!(["user/ann"]));
    let e = ws.next_json().await;
    assert_eq!(e["data"], "psst");
    let a = ws
        .call(&json!({"action": "unsubscribe", "data": {"channel": "room/1"}, "request_id": "r5"}))
        .await;
    assert_eq!(a["result"]["topics"], json!(["user/ann", "$broadcast"]));
    let e = ws
        .call(&json!({"action": "send_to_channel", "data": {"channel": "lobby", "content": 1}, "request_id": "r6"}))
        .await;
    assert_eq!(
        (&e["type"], &e["request_id"]),
        (&json!("error"), &json!("r6"))
    );
    assert_eq!(e["error"]["code"], "forbidden");
}

/// A peer that answers no ping is dropped after about two heartbeats; one that answers
/// stays.
#[tokio::test]
async fn a_peer_that_answers_no_ping_is_dropped() {
    let hub = TestHub::start_with(|c| {
        c.stream.heartbeat = runnel::config::Dur(Duration::from_millis(100));
    })
    .await;
    let mut alive = Ws::open(hub.addr, "/ws?topic=alive", &[]).await;
    let alive_id = alive.connected().await["connection_id"].clone();
    let mut dead = RawWs::open(hub.addr, "/ws?topic=dead").await;
    let dead_id = dead.next_json().await["connection_id"].clone();
    // `alive` reads (and so answers pings) on a task; `dead` never reads again.
    let reader = tokio::spawn(async move {
        while alive.next_within(Duration::from_secs(2)).await.is_some() {}
        alive
    });
    let ids = async || -> Vec<Value> {
        let c = hub.get("/connections").await.json();
        c["connections"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].clone())
            .collect()
    };
    assert!(ids().await.contains(&dead_id));
    assert!(
        eventually(Duration::from_secs(3), async || !ids()
            .await
            .contains(&dead_id))
        .await,
        "the silent peer was dropped"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(ids().await.contains(&alive_id), "the answering peer stays");
    assert_eq!(dead.close_code().await, Some(1008));
    reader.abort();
}

/// Over HTTPS the upgrade is served in place on the HTTP/1.1 connection ALPN chose; over
/// HTTP/2 `/ws` says what it needs.
#[tokio::test]
async fn websockets_work_over_tls_and_http2_is_told_what_is_needed() {
    use crate::common::tls;
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, ca) = tls::make_cert(dir.path(), "hub");
    let hub = tls::tls_hub(&cert, &key).await;
    let stream = tls::connect(hub.addr, &[&ca], &[b"http/1.1"]).await;
    let (s, resp) = tokio_tungstenite::client_async("wss://localhost/ws?topic=t", stream)
        .await
        .expect("WebSocket over TLS");
    assert_eq!(resp.status(), 101);
    let mut ws = Ws::from_stream(s);
    ws.connected().await;
    let p = tls::publish(&hub, &ca, json!({"topic": "t", "data": "secure"})).await;
    let e = ws.next_json().await;
    assert_eq!((&e["id"], &e["data"]), (&p["id"], &json!("secure")));
    let a = ws
        .call(&json!({"op": "publish", "ref": "x", "topic": "t", "data": 2}))
        .await;
    assert_eq!(a["type"], "ack", "{a}");

    let mut h2 = tls::h2(hub.addr, &ca).await;
    let resp = h2
        .send_request(tls::get("/ws", &[("sec-websocket-version", "13")]))
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    use http_body_util::BodyExt as _;
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("needs an HTTP/1.1 connection"),
        "{v}"
    );
}

#[tokio::test]
async fn an_expired_credential_closes_with_1008() {
    let hub = secure_hub().await;
    let token = jwt(json!({"sub": "eve", "exp": now() + 2}));
    let mut ws = Ws::open(hub.addr, "/ws", &[("authorization", &bearer(&token))]).await;
    ws.connected().await;
    let (texts, code) = ws.close_code().await;
    assert_eq!(texts.last().unwrap()["reason"], "token_expired");
    assert_eq!(code, Some(1008));
}

/// A subscribe with `last_event_id` while the opening's replay is still running: its replay
/// follows that one, and nothing is missed or repeated.
#[tokio::test]
async fn a_subscribe_during_the_opening_replay_is_replayed_after_it() {
    let hub = TestHub::start().await;
    let body: Vec<Value> = (0..600)
        .map(|i| json!({"topic": if i % 2 == 0 { "ra" } else { "rb" }, "data": i.to_string()}))
        .collect();
    let r = hub.post_json("/publish", &Value::Array(body)).await;
    assert_eq!(r.status, 200);
    let ids: Vec<String> = r
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_string())
        .collect();
    let mut ws = Ws::open(hub.addr, "/ws?topic=ra&last_event_id=earliest", &[]).await;
    ws.connected().await;
    let ack = ws
        .call(&json!({"op": "subscribe", "topics": ["rb"], "last_event_id": "earliest"}))
        .await;
    assert_eq!(ack["type"], "ack");
    let events = ws.events_until_quiet(QUIET).await;
    let got: Vec<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    let (a, b): (Vec<&str>, Vec<&str>) =
        ids.iter()
            .enumerate()
            .fold((Vec::new(), Vec::new()), |(mut a, mut b), (i, id)| {
                if i % 2 == 0 {
                    a.push(id.as_str())
                } else {
                    b.push(id.as_str())
                }
                (a, b)
            });
    assert_eq!(got.len(), 600, "every event once");
    assert_eq!(got[..300], a[..], "the opening's replay first");
    assert_eq!(got[300..], b[..], "then the new topic's");
}

/// Frames sent right behind the upgrade request, in the same write, are read.
#[tokio::test]
async fn frames_sent_with_the_upgrade_request_are_not_lost() {
    let hub = TestHub::start().await;
    let ping = RawWs::encode(true, 1, br#"{"op":"ping","ref":"early"}"#, true);
    let mut raw = RawWs::open_with(hub.addr, "/ws", &ping).await;
    assert_eq!(raw.next_json().await["type"], "connected");
    assert_eq!(
        raw.next_json().await,
        json!({"type": "pong", "ref": "early"})
    );
}

/// Events on a topic the connection has and on one it adds with `last_event_id` are not
/// replayed to it a second time; those on the new topic alone are; none is missed.
#[tokio::test]
async fn a_subscribe_replays_no_event_the_connection_has_already() {
    let hub = TestHub::start().await;
    let mut ws = Ws::open(hub.addr, "/ws?topic=old", &[]).await;
    ws.connected().await;
    let addr = hub.addr;
    // Alternately on both topics and on the new one alone, while the subscribe happens.
    let publisher = tokio::spawn(async move {
        let mut ids = Vec::new();
        for i in 0..200 {
            let body = if i % 2 == 0 {
                json!({"topics": ["old", "new"], "data": i.to_string()})
            } else {
                json!({"topic": "new", "data": i.to_string()})
            };
            ids.push(publish_at(addr, &body).await);
        }
        ids
    });
    tokio::time::sleep(Duration::from_millis(40)).await;
    let ack = ws
        .call(&json!({"op": "subscribe", "topics": ["new"], "last_event_id": "earliest"}))
        .await;
    assert_eq!(ack["type"], "ack");
    let ids = publisher.await.unwrap();
    let events = ws.events_until_quiet(QUIET).await;
    let mut got: Vec<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    let n = got.len();
    got.sort();
    got.dedup();
    assert_eq!(got.len(), n, "no event twice");
    assert_eq!(got, ids, "every event on either topic");
}
