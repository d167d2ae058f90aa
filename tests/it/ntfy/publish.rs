//! ntfy's publish API: each field under each of its names, JSON publishing, `Cache: no`, and
//! each feature runnel does not have refused by name.

use serde_json::{Value, json};

use super::*;

/// The event the hub stored for the last publish on `topic`, as `/history` gives it.
async fn stored(hub: &TestHub, topic: &str) -> Value {
    let r = hub.get(&format!("/history?topic={topic}")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["events"]
        .as_array()
        .unwrap()
        .last()
        .cloned()
        .expect("an event")
}

#[tokio::test]
async fn every_field_is_read_from_its_header_its_aliases_and_its_parameter() {
    let hub = TestHub::start().await;
    // (names as headers, the query parameter, a value, the field and what it becomes)
    let cases: &[(&[&str], &str, &str, &str, Value)] = &[
        (
            &["X-Title", "Title", "ti", "t"],
            "title",
            "Disk",
            "title",
            json!("Disk"),
        ),
        (
            &["X-Priority", "Priority", "prio", "p"],
            "priority",
            "high",
            "priority",
            json!(4),
        ),
        (
            &["X-Tags", "Tags", "Tag", "ta"],
            "tags",
            "warning, disk",
            "tags",
            json!(["warning", "disk"]),
        ),
        (
            &["X-Click", "Click"],
            "click",
            "https://nas.lan/",
            "click",
            json!("https://nas.lan/"),
        ),
        (
            &["X-Icon", "Icon"],
            "icon",
            "https://nas.lan/i.png",
            "icon",
            json!("https://nas.lan/i.png"),
        ),
        (
            &["X-Actions", "Actions", "Action"],
            "actions",
            "view, Open, https://nas.lan/",
            "actions",
            json!([{"action": "view", "label": "Open", "url": "https://nas.lan/"}]),
        ),
        (
            &["X-Markdown", "Markdown", "md"],
            "markdown",
            "yes",
            "content_type",
            json!("text/markdown"),
        ),
    ];
    for (headers, param, value, field, want) in cases {
        for h in *headers {
            let a = ntfy_publish(&hub, "fields", &[(h, value)], "body").await;
            assert_eq!(a[*field], *want, "header {h}: {a}");
            let e = stored(&hub, "fields").await;
            assert_eq!(e["id"], a["id"]);
            assert_eq!(e["event"], "message");
            assert_eq!(e["data"][*field], *want, "header {h} stored: {e}");
            assert_eq!(e["data"]["message"], "body");
        }
        let q = format!("/fields?{param}={}", urlencode(value));
        let r = call(&hub, "PUT", &q, &[], "body").await;
        assert_eq!(r.status, 200, "{q}: {}", r.text());
        assert_eq!(r.json()[*field], *want, "parameter {param}");
    }
    // Priorities by name and number.
    for (v, p) in [
        ("min", 1),
        ("low", 2),
        ("default", 3),
        ("4", 4),
        ("max", 5),
        ("urgent", 5),
    ] {
        let a = ntfy_publish(&hub, "fields", &[("Priority", v)], "x").await;
        assert_eq!(a["priority"], p, "{v}");
    }
    let r = call(&hub, "POST", "/fields", &[("Priority", "loud")], "x").await;
    assert_ntfy_error(&r, 400, "priority");
    // A title in RFC 2047 encoded words, as ntfy takes non-ASCII headers.
    let a = ntfy_publish(
        &hub,
        "fields",
        &[("Title", "=?UTF-8?B?8J+UpSBGaXJl?=")],
        "x",
    )
    .await;
    assert_eq!(a["title"], "🔥 Fire");
    // Markdown from the body's content type.
    let a = ntfy_publish(
        &hub,
        "fields",
        &[("Content-Type", "text/markdown")],
        "**b**",
    )
    .await;
    assert_eq!(a["content_type"], "text/markdown");
    // Invalid actions are refused.
    let r = call(&hub, "POST", "/fields", &[("Actions", "dance, x")], "x").await;
    assert_ntfy_error(&r, 400, "dance");
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn the_body_the_message_parameter_and_the_answer() {
    let hub = TestHub::start().await;
    // PUT and POST; one trailing newline is the line's end (`echo ... | curl -T-`).
    let a = call(&hub, "PUT", "/jobs", &[], "Backup done\n")
        .await
        .json();
    assert_eq!(a["message"], "Backup done");
    assert_eq!(a["event"], "message");
    assert_eq!(a["topic"], "jobs");
    assert!(a["id"].as_str().is_some_and(|id| !id.is_empty()), "{a}");
    let now = now();
    let t = a["time"].as_u64().unwrap();
    assert!(t + 5 >= now && t <= now + 5, "time {t} is Unix seconds");
    // No body: ntfy's "triggered".
    let a = ntfy_publish(&hub, "jobs", &[], "").await;
    assert_eq!(a["message"], "triggered");
    // The message as a header or parameter.
    let a = ntfy_publish(&hub, "jobs", &[("X-Message", "from header")], "").await;
    assert_eq!(a["message"], "from header");
    for (verb, path) in [
        (
            "publish",
            "/jobs/publish?message=one&title=T&priority=5&tags=a,b",
        ),
        ("send", "/jobs/send?m=two"),
        ("trigger", "/jobs/trigger"),
    ] {
        let r = hub.get(path).await;
        assert_eq!(r.status, 200, "{verb}: {}", r.text());
        let want = match verb {
            "publish" => "one",
            "send" => "two",
            _ => "triggered",
        };
        assert_eq!(r.json()["message"], want, "{verb}");
    }
    let got = poll(&hub, "/jobs/json").await;
    assert_eq!(
        messages(&got),
        [
            "Backup done",
            "triggered",
            "from header",
            "one",
            "two",
            "triggered"
        ]
    );
    assert_eq!(got[3]["title"], "T");
    assert_eq!(got[3]["priority"], 5);
    assert_eq!(got[3]["tags"], json!(["a", "b"]));
    // Multi-line messages keep their lines.
    let a = ntfy_publish(&hub, "jobs", &[], "line 1\nline 2").await;
    assert_eq!(a["message"], "line 1\nline 2");
    // Over limits.max_event_bytes: 413 in ntfy's shape.
    let big = "x".repeat(70_000);
    let r = call(&hub, "POST", "/jobs", &[], &big).await;
    assert_ntfy_error(&r, 413, "max_event_bytes");
}

#[tokio::test]
async fn json_publishing_to_the_root() {
    let hub = TestHub::start().await;
    let body = json!({
        "topic": "home",
        "message": "Door open",
        "title": "Front door",
        "tags": ["door", "warning"],
        "priority": 4,
        "click": "https://ha.lan/door",
        "icon": "https://ha.lan/door.png",
        "actions": [{"action": "http", "label": "Close", "url": "https://ha.lan/close", "method": "POST"}],
        "markdown": true,
    });
    for method in ["POST", "PUT"] {
        let r = call(&hub, method, "/", &[], &body.to_string()).await;
        assert_eq!(r.status, 200, "{method}: {}", r.text());
        let a = r.json();
        for k in [
            "message", "title", "tags", "priority", "click", "icon", "actions",
        ] {
            assert_eq!(a[k], body[k], "{method} {k}");
        }
        assert_eq!(a["content_type"], "text/markdown");
        assert_eq!(a["topic"], "home");
    }
    // Headers apply too, and the JSON's fields win.
    let r = call(
        &hub,
        "POST",
        "/",
        &[
            ("Title", "from header"),
            ("Tags", "h"),
            ("X-Click", "https://h/"),
        ],
        &json!({"topic": "home", "message": "m", "title": "from json"}).to_string(),
    )
    .await;
    let a = r.json();
    assert_eq!(
        (a["title"].as_str(), a["click"].as_str()),
        (Some("from json"), Some("https://h/"))
    );
    assert_eq!(a["tags"], json!(["h"]));
    // A priority by name, and a message missing: "triggered".
    let a = call(
        &hub,
        "POST",
        "/",
        &[],
        r#"{"topic":"home","priority":"urgent"}"#,
    )
    .await
    .json();
    assert_eq!(
        (a["priority"].as_u64(), a["message"].as_str()),
        (Some(5), Some("triggered"))
    );
    // Bad JSON, no topic, a bad topic, bad types: 400s in ntfy's shape.
    for (body, says) in [
        ("{nope", "not JSON"),
        ("[1]", "JSON object"),
        (r#"{"message":"x"}"#, "topic"),
        (r#"{"topic":"a/b","message":"x"}"#, "ntfy topic name"),
        (r#"{"topic":"events","message":"x"}"#, "runnel's own routes"),
        (r#"{"topic":"home","priority":9}"#, "priority"),
        (r#"{"topic":"home","tags":[1]}"#, "tags"),
        (r#"{"topic":"home","title":5}"#, "title"),
        (
            r#"{"topic":"home","actions":[{"action":"view","label":"x"}]}"#,
            "url",
        ),
    ] {
        let r = call(&hub, "POST", "/", &[], body).await;
        assert_ntfy_error(&r, 400, says);
    }
}

#[tokio::test]
async fn cache_no_is_live_only() {
    let hub = TestHub::start().await;
    let mut live = Lines::open(hub.addr, "/quiet/json", &[]).await;
    assert_eq!(live.next_json().await["event"], "open");
    ntfy_publish(&hub, "quiet", &[("Cache", "no")], "not kept").await;
    ntfy_publish(&hub, "quiet", &[("X-Cache", "yes")], "kept").await;
    assert_eq!(live.next_message().await["message"], "not kept");
    assert_eq!(live.next_message().await["message"], "kept");
    assert_eq!(messages(&poll(&hub, "/quiet/json").await), ["kept"]);
    let r = call(&hub, "POST", "/quiet", &[("Cache", "maybe")], "x").await;
    assert_ntfy_error(&r, 400, "cache");
}

#[tokio::test]
async fn features_runnel_does_not_have_are_refused_by_name() {
    let hub = TestHub::start().await;
    let cases: &[(&str, &str, &str)] = &[
        ("X-Attach", "https://x/f.zip", "attachments"),
        ("Attach", "https://x/f.zip", "attachments"),
        ("a", "https://x/f.zip", "attachments"),
        ("X-Filename", "f.txt", "attachments"),
        ("Filename", "f.txt", "attachments"),
        ("f", "f.txt", "attachments"),
        ("X-Email", "me@x.test", "e-mail"),
        ("X-E-Mail", "me@x.test", "e-mail"),
        ("Email", "me@x.test", "e-mail"),
        ("e", "me@x.test", "e-mail"),
        ("X-Call", "yes", "phone calls"),
        ("Call", "+1555", "phone calls"),
        ("X-Delay", "30m", "scheduled delivery"),
        ("Delay", "30m", "scheduled delivery"),
        ("X-At", "tomorrow", "scheduled delivery"),
        ("In", "1h", "scheduled delivery"),
        ("X-Firebase", "yes", "Firebase"),
        ("X-UnifiedPush", "1", "UnifiedPush"),
        ("X-Template", "yes", "templates"),
    ];
    for (h, v, feature) in cases {
        let r = call(&hub, "POST", "/refused", &[(h, v)], "x").await;
        assert_ntfy_error(&r, 400, feature);
    }
    for q in [
        "attach=https://x/f",
        "filename=a",
        "email=a@b",
        "call=1",
        "delay=1h",
        "at=8am",
        "in=1h",
    ] {
        let r = call(&hub, "PUT", &format!("/refused?{q}"), &[], "x").await;
        assert_eq!(r.status, 400, "{q}: {}", r.text());
    }
    for field in ["attach", "filename", "email", "call", "delay"] {
        let body = json!({"topic": "refused", "message": "x", field: "v"}).to_string();
        let r = call(&hub, "POST", "/", &[], &body).await;
        assert_eq!(r.status, 400, "JSON {field}: {}", r.text());
    }
    // A binary body is an attachment in ntfy; so is a body beside a message parameter.
    let r = request(hub.addr, "PUT", "/refused", &[], &[0xff, 0xfe, 0x00]).await;
    assert_ntfy_error(&r, 400, "attachments");
    let r = call(&hub, "PUT", "/refused?message=hi", &[], "file content").await;
    assert_ntfy_error(&r, 400, "attachments");
    // `Firebase: no` asks for what runnel does anyway.
    ntfy_publish(&hub, "refused", &[("X-Firebase", "no")], "fine").await;
    assert_eq!(messages(&poll(&hub, "/refused/json").await), ["fine"]);
}
