//! Credentials as ntfy clients send them, with runnel's permissions; reserved names; ntfy's
//! error shape on ntfy's paths only; the mapping both ways; `ntfy.enabled = false`.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::json;

use super::*;

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
}

#[tokio::test]
async fn credentials_in_every_form_ntfy_clients_send() {
    let hub = secure_hub().await;
    let jwt = jwt(json!({"sub": "ann", "publish": ["home"], "subscribe": ["home"]}));
    let forms: Vec<(String, Vec<(&str, String)>)> = vec![
        (
            "bearer key".into(),
            vec![("authorization", bearer("backend-key"))],
        ),
        ("bearer jwt".into(), vec![("authorization", bearer(&jwt))]),
        (
            "basic key".into(),
            vec![("authorization", basic("any", "backend-key"))],
        ),
        (
            "basic jwt".into(),
            vec![("authorization", basic("ann", &jwt))],
        ),
        (
            "basic no user".into(),
            vec![("authorization", basic("", "backend-key"))],
        ),
    ];
    for (what, headers) in &forms {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = call(&hub, "POST", "/home", &h, what).await;
        assert_eq!(r.status, 200, "{what}: {}", r.text());
    }
    // ?auth= is an Authorization value in base64 (URL-safe, unpadded, as ntfy makes it).
    for value in [bearer("admin-key"), basic("", "admin-key"), bearer(&jwt)] {
        let a = URL_SAFE_NO_PAD.encode(&value);
        let r = call(&hub, "PUT", &format!("/home?auth={a}"), &[], "via auth=").await;
        assert_eq!(r.status, 200, "auth={value}: {}", r.text());
        let r = hub.get(&format!("/home/json?poll=1&auth={a}")).await;
        assert_eq!(r.status, 200, "subscribe auth={value}: {}", r.text());
    }
    // A key that may publish but not read.
    let a = URL_SAFE_NO_PAD.encode(bearer("backend-key"));
    let r = hub.get(&format!("/home/json?poll=1&auth={a}")).await;
    assert_ntfy_error(&r, 403, "home");
    let got = poll_as(&hub, "/home/json", &bearer(&jwt)).await;
    assert_eq!(got.len(), forms.len() + 3);
    // Refusals in ntfy's shape: none, wrong, not permitted.
    let r = call(&hub, "POST", "/home", &[], "x").await;
    assert_ntfy_error(&r, 401, "credentials");
    let r = call(
        &hub,
        "POST",
        "/home",
        &[("authorization", &basic("u", "wrong"))],
        "x",
    )
    .await;
    assert_ntfy_error(&r, 401, "unknown API key");
    let r = call(
        &hub,
        "POST",
        "/other",
        &[("authorization", &bearer(&jwt))],
        "x",
    )
    .await;
    assert_ntfy_error(&r, 403, "other");
    let r = hub.get("/home/json?poll=1").await;
    assert_ntfy_error(&r, 401, "credentials");
    let r = hub
        .get(&format!(
            "/home/json?poll=1&auth={}",
            URL_SAFE_NO_PAD.encode("Bearer nope")
        ))
        .await;
    assert_ntfy_error(&r, 401, "unknown API key");
    let narrow = jwt_subscriber(&["elsewhere"]);
    let r = request(
        hub.addr,
        "GET",
        "/home/json",
        &[("authorization", &bearer(&narrow))],
        b"",
    )
    .await;
    assert_ntfy_error(&r, 403, "home");
    let refused = Ws::try_open(hub.addr, "/home/ws", &[])
        .await
        .err()
        .expect("refused");
    assert_eq!(refused.status, 401);
}

fn jwt_subscriber(topics: &[&str]) -> String {
    jwt(json!({"sub": "bob", "subscribe": topics}))
}

async fn poll_as(hub: &TestHub, path: &str, auth: &str) -> Vec<serde_json::Value> {
    let r = request(
        hub.addr,
        "GET",
        &format!("{path}?poll=1"),
        &[("authorization", auth)],
        b"",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn runnels_own_routes_are_reserved_names_and_keep_their_errors() {
    let hub = TestHub::start().await;
    for name in [
        "events",
        "ws",
        "history",
        "publish",
        "notify",
        "health",
        "stats",
        "metrics",
        "connections",
        "subscribe",
        "unsubscribe",
        "auth",
    ] {
        // As a topic of ntfy's subscribe paths and of JSON publishing: ntfy's 400.
        let r = hub.get(&format!("/{name}/raw")).await;
        if name != "events" && name != "connections" && name != "publish" {
            assert_ntfy_error(&r, 400, "runnel's own routes");
        }
        let r = hub.get(&format!("/ok,{name}/json")).await;
        assert_ntfy_error(&r, 400, "runnel's own routes");
        let r = call(
            &hub,
            "POST",
            "/",
            &[],
            &json!({"topic": name, "message": "x"}).to_string(),
        )
        .await;
        assert_ntfy_error(&r, 400, "runnel's own routes");
    }
    // runnel's own paths answer as before: `PUT /health` is runnel's 405, in runnel's shape.
    let r = call(&hub, "PUT", "/health", &[], "x").await;
    r.assert_error(405, "method_not_allowed");
    let r = hub.get("/nope").await;
    r.assert_error(404, "not_found");
    // Names that are not ntfy's: 400 on ntfy's paths.
    let r = hub.get("/a.b/json").await;
    assert_ntfy_error(&r, 400, "ntfy topic name");
    let long = "x".repeat(65);
    let r = call(&hub, "POST", &format!("/{long}"), &[], "x").await;
    assert_ntfy_error(&r, 400, "ntfy topic name");
    let r = hub.get(&format!("/{long}/json")).await;
    assert_ntfy_error(&r, 400, "ntfy topic name");
    // A wrong method on an ntfy path.
    let r = call(&hub, "POST", "/a/json", &[], "").await;
    assert_ntfy_error(&r, 405, "GET");
    assert_eq!(r.header("allow"), Some("GET"));
}

#[tokio::test]
async fn an_ntfy_message_is_a_runnel_event_and_the_reverse() {
    let hub = TestHub::start().await;
    let mut native = hub.sse("/events/alerts").await;
    native.connected().await;
    let mut ntfy = Lines::open(hub.addr, "/alerts/json", &[]).await;
    assert_eq!(ntfy.next_json().await["event"], "open");
    // ntfy → runnel: `event: message`, the message object (less id, time, topic) as data.
    let sent = ntfy_publish(
        &hub,
        "alerts",
        &[
            ("Title", "Door"),
            ("Priority", "4"),
            ("Tags", "door"),
            ("Click", "https://ha.lan/"),
        ],
        "Front door open",
    )
    .await;
    let ev = native.next().await;
    assert_eq!(ev.id.as_deref(), sent["id"].as_str());
    assert_eq!(ev.event.as_deref(), Some("message"));
    assert_eq!(ev.topics, ["alerts"]);
    assert_eq!(
        ev.json(),
        json!({"message": "Front door open", "title": "Door", "priority": 4, "tags": ["door"],
               "click": "https://ha.lan/"})
    );
    assert_eq!(ntfy.next_message().await, sent);
    // runnel → ntfy: the data as text is the message; the id is the event's.
    let text = hub
        .publish(json!({"topic": "alerts", "data": "plain"}))
        .await;
    let obj = hub
        .publish(json!({"topic": "alerts", "event": "reading", "data": {"t": 21.5}}))
        .await;
    let m = ntfy.next_message().await;
    assert_eq!(
        (m["id"].clone(), m["message"].as_str()),
        (text["id"].clone(), Some("plain"))
    );
    let m = ntfy.next_message().await;
    assert_eq!(
        (m["id"].clone(), m["message"].as_str()),
        (obj["id"].clone(), Some("{\"t\":21.5}"))
    );
    assert_eq!(m["topic"], "alerts");
    // A native publish shaped like an ntfy message reads as one.
    hub.publish(
        json!({"topic": "alerts", "event": "message", "data": {"message": "m", "title": "t"}}),
    )
    .await;
    let m = ntfy.next_message().await;
    assert_eq!(
        (m["message"].as_str(), m["title"].as_str()),
        (Some("m"), Some("t"))
    );
    // An event on several topics names the one this subscription asked for.
    hub.publish(json!({"topics": ["zzz", "alerts"], "data": "both"}))
        .await;
    let m = ntfy.next_message().await;
    assert_eq!(
        (m["topic"].as_str(), m["message"].as_str()),
        (Some("alerts"), Some("both"))
    );
    // And history has the ntfy message as published.
    let h = hub.get("/history?topic=alerts").await.json();
    assert_eq!(h["events"][0]["data"]["title"], "Door");
    assert!(
        ntfy.messages_until_quiet(Duration::from_millis(200))
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn with_ntfy_disabled_its_paths_are_unknown() {
    let hub = TestHub::start_with(|c| c.ntfy.enabled = false).await;
    let r = call(&hub, "POST", "/alerts", &[], "x").await;
    r.assert_error(404, "not_found");
    let r = call(
        &hub,
        "POST",
        "/",
        &[],
        r#"{"topic":"alerts","message":"x"}"#,
    )
    .await;
    r.assert_error(405, "method_not_allowed");
    let r = hub.get("/alerts/json").await;
    r.assert_error(404, "not_found");
}
