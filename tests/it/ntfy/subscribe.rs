//! ntfy's subscribe API: `/json`, `/sse`, `/raw`, `/ws`, every `since=` form, `poll=1`, the
//! filters, `open` and `keepalive`, and resuming with `since=<id>` across a restart.

use std::time::Duration;

use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use super::*;

#[tokio::test]
async fn each_format_streams_open_messages_and_keepalives() {
    let hub = TestHub::start_with(|c| {
        c.stream.heartbeat = runnel::config::Dur(Duration::from_millis(300));
    })
    .await;
    // /json: one object a line.
    let mut json = Lines::open(hub.addr, "/a,b/json", &[]).await;
    assert_eq!(json.status, 200);
    assert!(
        json.content_type.starts_with("application/x-ndjson"),
        "{}",
        json.content_type
    );
    let open = json.next_json().await;
    assert_eq!(
        (open["event"].as_str(), open["topic"].as_str()),
        (Some("open"), Some("a,b"))
    );
    assert!(open["id"].is_string() && open["time"].is_u64(), "{open}");
    // /sse: the object as data; message events carry their id.
    let mut sse = Lines::open(hub.addr, "/a/sse", &[]).await;
    assert!(sse.content_type.starts_with("text/event-stream"));
    // /raw: the message text alone.
    let mut raw = Lines::open(hub.addr, "/a/raw", &[]).await;
    assert!(raw.content_type.starts_with("text/plain"));

    let sent = ntfy_publish(&hub, "a", &[("Title", "T")], "first\nline").await;
    let m = json.next_message().await;
    assert_eq!(
        m, sent,
        "the stream has what the publish answered, but for time"
    );
    let mut frames = Vec::new();
    while let Some(l) = sse.line_within(TIMEOUT).await {
        if l.starts_with("data: ") && l.contains("\"event\":\"message\"") {
            frames.push(l);
            break;
        }
        frames.push(l);
    }
    let joined = frames.join("\n");
    assert!(joined.contains("event: open\ndata: {"), "{joined}");
    assert!(
        joined.contains(&format!("id: {}\ndata: {{", sent["id"].as_str().unwrap())),
        "{joined}"
    );
    let mut lines = Vec::new();
    while let Some(l) = raw.line_within(Duration::from_millis(200)).await {
        if !l.is_empty() {
            lines.push(l);
        }
    }
    assert_eq!(lines, ["first line"], "one line per message");
    // A topic of the list, and one not: only the first arrives.
    ntfy_publish(&hub, "b", &[], "on b").await;
    ntfy_publish(&hub, "c", &[], "on c").await;
    assert_eq!(json.next_message().await["topic"], "b");
    // Idle: keepalive events (on /raw, empty lines).
    let mut kinds = Vec::new();
    while kinds.len() < 2 {
        let v = json.next_json().await;
        assert_ne!(v["message"], "on c", "c was not subscribed");
        kinds.push(v["event"].as_str().unwrap().to_string());
    }
    assert_eq!(kinds, ["keepalive", "keepalive"]);
    assert_eq!(
        raw.line_within(TIMEOUT).await.as_deref(),
        Some(""),
        "a keepalive line"
    );
    let _ws = Ws::open(hub.addr, "/a/ws", &[]).await;
    // /connections names the transports.
    let c = hub.get("/connections").await.json();
    let transports: Vec<&str> = c["connections"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["transport"].as_str())
        .collect();
    for t in ["ntfy-json", "ntfy-sse", "ntfy-raw", "ntfy-ws"] {
        assert!(transports.contains(&t), "{t} in {transports:?}");
    }
}

#[tokio::test]
async fn the_websocket_sends_objects_as_text_frames_and_reads_nothing() {
    let hub = TestHub::start_with(|c| {
        c.stream.heartbeat = runnel::config::Dur(Duration::from_millis(300));
    })
    .await;
    let mut ws = Ws::open(hub.addr, "/a,b/ws", &[]).await;
    let open = ws.next_json().await;
    assert_eq!(
        (open["event"].as_str(), open["topic"].as_str()),
        (Some("open"), Some("a,b"))
    );
    let sent = ntfy_publish(&hub, "b", &[("Tags", "x")], "first\nline").await;
    assert_eq!(ws.next_json().await, sent);
    // Idle: ntfy's keepalive event (and a ping, which the client library answers).
    let ka = loop {
        match ws.next_within(TIMEOUT).await {
            Some(Message::Text(t)) => break serde_json::from_str::<Value>(t.as_str()).unwrap(),
            Some(_) => {}
            None => panic!("no keepalive over /ws"),
        }
    };
    assert_eq!(
        (ka["event"].as_str(), ka["topic"].as_str()),
        (Some("keepalive"), Some("a,b"))
    );
    // What an ntfy WebSocket client sends is not answered (ntfy reads nothing either).
    ws.send(&json!({"op": "publish", "topic": "a", "data": "x"}))
        .await;
    ntfy_publish(&hub, "a", &[], "after").await;
    let m = loop {
        let v = ws.next_json().await;
        if v["event"] == "message" {
            break v;
        }
    };
    assert_eq!(m["message"], "after");
    assert_eq!(
        messages(&poll(&hub, "/a/json").await),
        ["after"],
        "nothing published by it"
    );
    // It is one of the hub's WebSockets.
    let stats = hub.get("/stats").await.json();
    assert_eq!(stats["connections"]["websocket"], 1, "{stats}");
}

#[tokio::test]
async fn since_takes_an_id_a_time_a_duration_all_latest_and_none() {
    let hub = TestHub::start().await;
    let mut ids = Vec::new();
    for m in ["one", "two", "three"] {
        ids.push(
            ntfy_publish(&hub, "s", &[], m).await["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let live = |since: &str| format!("/s/json?since={since}");
    let replayed = async |path: String| -> Vec<String> {
        let mut l = Lines::open(hub.addr, &path, &[]).await;
        assert_eq!(l.status, 200, "{path}");
        let got = l.messages_until_quiet(Duration::from_millis(400)).await;
        got.iter()
            .map(|m| m["message"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(replayed(live(&ids[0])).await, ["two", "three"]);
    assert_eq!(replayed(live("all")).await, ["one", "two", "three"]);
    assert_eq!(replayed(live("latest")).await, ["three"]);
    assert!(replayed(live("none")).await.is_empty());
    assert!(
        replayed("/s/json".into()).await.is_empty(),
        "live only by default"
    );
    assert_eq!(replayed(live("1h")).await, ["one", "two", "three"]);
    let later = now() + 60;
    assert!(replayed(live(&later.to_string())).await.is_empty());
    let earlier = now() - 60;
    assert_eq!(
        replayed(live(&earlier.to_string())).await,
        ["one", "two", "three"]
    );
    // A time between two messages: published a second apart.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let cut = now();
    ntfy_publish(&hub, "s", &[], "four").await;
    assert_eq!(replayed(live(&cut.to_string())).await, ["four"]);
    assert_eq!(
        replayed(live("1s")).await.last().map(String::as_str),
        Some("four")
    );
    // since= then live: nothing between.
    let mut l = Lines::open(hub.addr, &live(&ids[2]), &[]).await;
    assert_eq!(l.next_message().await["message"], "four");
    ntfy_publish(&hub, "s", &[], "five").await;
    assert_eq!(l.next_message().await["message"], "five");
    // poll=1 takes the same forms.
    assert_eq!(
        messages(&poll(&hub, &live(&ids[1])).await),
        ["three", "four", "five"]
    );
    assert_eq!(messages(&poll(&hub, &live("latest")).await), ["five"]);
    assert_eq!(
        messages(&poll(&hub, "/s/json").await).len(),
        5,
        "poll means all"
    );
    assert!(poll(&hub, &live("none")).await.is_empty());
    // An empty since is a 400 in ntfy's shape.
    let r = hub.get("/s/json?since=").await;
    assert_ntfy_error(&r, 400, "since");
    // EventSource on /sse resumes with Last-Event-ID.
    let mut sse = Lines::open(hub.addr, "/s/sse", &[("last-event-id", &ids[2])]).await;
    let mut data = Vec::new();
    while let Some(l) = sse.line_within(Duration::from_millis(400)).await {
        if let Some(d) = l.strip_prefix("data: ") {
            data.push(serde_json::from_str::<Value>(d).unwrap());
        }
    }
    assert_eq!(messages(&data), ["four", "five"]);
}

#[tokio::test]
async fn poll_returns_what_is_kept_and_ends() {
    let hub = TestHub::start().await;
    ntfy_publish(&hub, "p1", &[], "a").await;
    ntfy_publish(&hub, "p2", &[], "b").await;
    hub.publish(json!({"topic": "p1", "data": {"native": true}}))
        .await;
    let got = poll(&hub, "/p1,p2/json").await;
    assert_eq!(got.len(), 3, "no open event, no keepalive: {got:?}");
    assert_eq!(messages(&got)[..2], ["a", "b"]);
    assert_eq!(got[1]["topic"], "p2");
    assert_eq!(got[2]["message"], "{\"native\":true}");
    let r = hub.get("/p1/raw?poll=1").await;
    assert_eq!(r.text(), "a\n{\"native\":true}\n");
    let r = hub.get("/p1/sse?poll=1").await;
    assert_eq!(r.text().matches("data: ").count(), 2);
    // More than one page of the log.
    for i in 0..1005 {
        hub.publish(json!({"topic": "many", "data": i})).await;
    }
    let got = poll(&hub, "/many/json").await;
    assert_eq!(got.len(), 1005);
    assert_eq!(got[1004]["message"], "1004");
    let r = hub.get("/many/ws?poll=1").await;
    assert_ntfy_error(&r, 400, "poll");
}

#[tokio::test]
async fn filters_pick_messages_by_id_message_title_priority_and_tags() {
    let hub = TestHub::start().await;
    let a = ntfy_publish(
        &hub,
        "f",
        &[
            ("Title", "Disk"),
            ("Priority", "5"),
            ("Tags", "disk,warning"),
        ],
        "full",
    )
    .await;
    ntfy_publish(
        &hub,
        "f",
        &[("Title", "Disk"), ("Priority", "low"), ("Tags", "disk")],
        "low",
    )
    .await;
    ntfy_publish(&hub, "f", &[("Tags", "warning")], "plain").await;
    hub.publish(json!({"topic": "f", "data": "native"})).await;
    let got = |q: &'static str| {
        let hub = &hub;
        async move {
            messages(&poll(hub, &format!("/f/json?{q}")).await)
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(got("title=Disk").await, ["full", "low"]);
    assert_eq!(got("message=plain").await, ["plain"]);
    assert_eq!(got("priority=5").await, ["full"]);
    assert_eq!(got("priority=urgent,low").await, ["full", "low"]);
    assert_eq!(
        got("priority=3").await,
        ["plain", "native"],
        "no priority is the default"
    );
    assert_eq!(got("tags=warning").await, ["full", "plain"]);
    assert_eq!(got("tags=disk,warning").await, ["full"], "every tag named");
    assert_eq!(got("title=Disk&priority=2").await, ["low"]);
    let id = a["id"].as_str().unwrap();
    assert_eq!(
        messages(&poll(&hub, &format!("/f/json?id={id}")).await),
        ["full"]
    );
    let r = hub.get("/f/json?priority=loud").await;
    assert_ntfy_error(&r, 400, "priority");
    // Live streams filter too, in every format.
    let mut l = Lines::open(hub.addr, "/f/json?tags=warning&priority=4,5", &[]).await;
    let mut ws = Ws::open(hub.addr, "/f/ws?title=Door", &[]).await;
    assert_eq!(ws.next_json().await["event"], "open");
    ntfy_publish(&hub, "f", &[("Tags", "warning")], "default prio").await;
    ntfy_publish(&hub, "f", &[("Tags", "warning"), ("p", "4")], "wanted").await;
    ntfy_publish(&hub, "f", &[("Title", "Door")], "door").await;
    assert_eq!(l.next_message().await["message"], "wanted");
    assert_eq!(ws.next_json().await["message"], "door");
    assert!(
        l.messages_until_quiet(Duration::from_millis(300))
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn since_an_id_resumes_exactly_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut hub = TestHub::start_in(dir.path(), |_| {}).await;
    let mut l = Lines::open(hub.addr, "/r/json", &[]).await;
    for i in 0..5 {
        ntfy_publish(&hub, "r", &[], &format!("m{i}")).await;
    }
    let mut last = String::new();
    for _ in 0..3 {
        last = l.next_message().await["id"].as_str().unwrap().to_string();
    }
    drop(l);
    hub.stop().await;
    let hub = TestHub::start_in(dir.path(), |_| {}).await;
    ntfy_publish(&hub, "r", &[], "m5").await;
    let mut l = Lines::open(hub.addr, &format!("/r/json?since={last}"), &[]).await;
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(
            l.next_message().await["message"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    ntfy_publish(&hub, "r", &[], "m6").await;
    got.push(
        l.next_message().await["message"]
            .as_str()
            .unwrap()
            .to_string(),
    );
    assert_eq!(got, ["m3", "m4", "m5", "m6"]);
    assert!(
        l.messages_until_quiet(Duration::from_millis(300))
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn streams_end_when_the_hub_shuts_down() {
    let mut hub = TestHub::start().await;
    let mut streams = Vec::new();
    for f in ["json", "sse", "raw"] {
        let mut l = Lines::open(hub.addr, &format!("/down/{f}"), &[]).await;
        assert_eq!(l.status, 200);
        if f != "raw" {
            // The open event (on /raw, an empty line) says the stream is registered.
            assert!(l.line_within(TIMEOUT).await.is_some());
        }
        streams.push((f, l));
    }
    let mut ws = Ws::open(hub.addr, "/down/ws", &[]).await;
    assert_eq!(ws.next_json().await["event"], "open");
    let started = std::time::Instant::now();
    hub.stop().await;
    for (f, mut l) in streams {
        while let Some(line) = l.line_within(TIMEOUT).await {
            assert!(!line.contains("\"message\""), "{f}: {line}");
        }
        assert!(l.finished(), "{f}: the response ended properly");
    }
    let (texts, code) = ws.close_code().await;
    assert!(texts.is_empty(), "{texts:?}");
    assert_eq!(code, Some(1012), "a restart close");
    assert!(started.elapsed() < Duration::from_secs(8));
}
