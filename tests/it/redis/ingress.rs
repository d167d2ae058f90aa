//! Pub/sub rules: channels and patterns, topic and user templates, JSON and text payloads,
//! the event type from a field, what is dropped, and Redis restarting under a running hub.

use std::time::Duration;

use serde_json::json;

use super::*;

#[tokio::test]
#[ignore = "needs redis-server: .ci/run runs it"]
async fn channels_and_patterns_reach_topics_and_users() {
    let redis = Redis::start();
    let hub = TestHub::start_with(|c| {
        with_rules(
            c,
            &redis,
            vec![
                rule(|r| {
                    r.channel = Some("news".into());
                    r.topic = Some("{channel}".into());
                }),
                rule(|r| {
                    r.pattern = Some("follower:*".into());
                    r.user = Some("{1}".into());
                    r.event = Some("{type}".into());
                }),
                rule(|r| {
                    r.pattern = Some("shop.*.*".into());
                    r.topic = Some("shops/{1}/{2}".into());
                    r.event = Some("order".into());
                }),
            ],
        )
    })
    .await;
    connected(hub.addr).await;
    let mut news = hub.sse("/events/news").await;
    news.connected().await;
    let mut alice = hub.sse("/events/user/42").await;
    alice.connected().await;
    let mut shops = hub.sse("/events?topic=shops/*").await;
    shops.connected().await;

    redis.cli(&["PUBLISH", "news", "plain text"]);
    let e = news.next().await;
    assert_eq!((e.data.as_str(), e.event.as_deref()), ("plain text", None));
    assert_eq!(e.topics, ["news"]);

    // The per-user channel of a hand-rolled SSE backend, JSON with its type in a field.
    let payload = json!({"type": "new_follower", "by": "bob"}).to_string();
    redis.cli(&["PUBLISH", "follower:42", &payload]);
    let e = alice.next().await;
    assert_eq!(e.event.as_deref(), Some("new_follower"));
    assert_eq!(e.data, payload, "the payload verbatim");
    assert_eq!(e.topics, ["user/42"]);
    // A JSON payload without the field: no type. Another user's channel: not alice's.
    redis.cli(&["PUBLISH", "follower:7", r#"{"by":"eve"}"#]);
    redis.cli(&["PUBLISH", "follower:42", r#"{"by":"carol"}"#]);
    let e = alice.next().await;
    assert_eq!(
        (e.event.as_deref(), e.data.as_str()),
        (None, r#"{"by":"carol"}"#)
    );
    // Two captures, the last taking the rest; a literal event type.
    redis.cli(&["PUBLISH", "shop.berlin.orders.new", "17"]);
    let e = shops.next().await;
    assert_eq!(e.topics, ["shops/berlin/orders.new"]);
    assert_eq!((e.event.as_deref(), e.data.as_str()), (Some("order"), "17"));
    // Persisted and numbered like any event: history has them, and ids resume.
    let h = hub.get("/history?topic=user/42").await.json();
    assert_eq!(h["events"].as_array().unwrap().len(), 2);
    let h = hub.get("/history?topic=user/7").await.json();
    assert_eq!(h["events"][0]["data"], json!({"by": "eve"}));
    let stats = ingress_stats_once_published(hub.addr, 5).await;
    assert_eq!(stats[0]["received"], 5, "{stats:?}");
    assert_eq!(stats[0]["published"], 5);
    assert_eq!(stats[0]["up"], true);
}

#[tokio::test]
#[ignore = "needs redis-server: .ci/run runs it"]
async fn what_cannot_be_an_event_is_dropped_and_counted() {
    let redis = Redis::start();
    let hub = TestHub::start_with(|c| {
        c.limits.max_event_bytes = runnel::config::ByteSize(1024);
        with_rules(
            c,
            &redis,
            vec![rule(|r| {
                r.pattern = Some("u:*".into());
                r.user = Some("{1}".into());
            })],
        )
    })
    .await;
    connected(hub.addr).await;
    let mut s = hub.sse("/events?topic=user/*").await;
    s.connected().await;
    redis.cli(&["PUBLISH", "u:1", &"x".repeat(2000)]);
    redis.publish_bytes("u:1", &[0xff, 0xfe, b'\n']);
    redis.cli(&["PUBLISH", "u:", "no user"]);
    redis.cli(&["PUBLISH", "u:1", "fine"]);
    let e = s.next().await;
    assert_eq!(e.data, "fine", "nothing half-delivered before it");
    let stats = ingress_stats_once_published(hub.addr, 1).await;
    assert_eq!(stats[0]["received"], 4, "{stats:?}");
    assert_eq!(stats[0]["published"], 1);
    assert_eq!(stats[0]["dropped_too_large"], 1);
    assert_eq!(stats[0]["dropped_invalid"], 2);
    let m = hub.get("/metrics").await.text();
    assert!(
        m.contains("runnel_ingress_dropped_total{source=\"redis pattern u:*\"} 3"),
        "{m}"
    );
}

#[tokio::test]
#[ignore = "needs redis-server: .ci/run runs it"]
async fn the_hub_serves_on_while_redis_restarts_and_then_reads_again() {
    let mut redis = Redis::start();
    let hub = alerts_hub(&redis).await;
    let mut s = hub.sse("/events/alerts").await;
    s.connected().await;
    redis.cli(&["PUBLISH", "alerts", "before"]);
    assert_eq!(s.next().await.data, "before");
    redis.stop();
    let degraded = eventually(Duration::from_secs(10), async || {
        let r = hub.get("/health").await;
        r.status == 200 && r.json()["status"] == "degraded"
    })
    .await;
    assert!(degraded, "/health says degraded while Redis is down");
    let h = hub.get("/health").await.json();
    assert_eq!(h["down"], json!(["redis channel alerts"]));
    // The hub serves: native publishes reach the open stream.
    hub.publish(json!({"topic": "alerts", "data": "native"}))
        .await;
    assert_eq!(s.next().await.data, "native");
    redis.restart();
    connected(hub.addr).await;
    redis.cli(&["PUBLISH", "alerts", "after"]);
    assert_eq!(s.next().await.data, "after");
    let stats = ingress_stats(hub.addr).await;
    assert_eq!(stats[0]["outages"], 1, "one outage: {stats:?}");
}

#[tokio::test]
#[ignore = "needs redis-server: .ci/run runs it"]
async fn a_password_a_database_and_tls_in_the_url() {
    let stream_rule = || {
        rule(|r| {
            r.stream = Some("jobs".into());
            r.topic = Some("{channel}".into());
        })
    };
    // A password and database 3: the stream exists only there.
    let redis = Redis::start_with(
        vec!["--requirepass".into(), "s3cret".into()],
        vec![
            "-a".into(),
            "s3cret".into(),
            "--no-auth-warning".into(),
            "-n".into(),
            "3".into(),
        ],
    );
    let url = format!("redis://:s3cret@127.0.0.1:{}/3", redis.port);
    let hub = TestHub::start_with(|c| {
        c.redis.url = Some(RedisUrl(url.clone()));
        c.redis.ingress = vec![stream_rule()];
    })
    .await;
    connected(hub.addr).await;
    redis.cli(&["XADD", "jobs", "*", "data", "in db 3"]);
    let ok = eventually(Duration::from_secs(10), async || {
        hub.get("/history?topic=jobs").await.json()["events"][0]["data"] == "in db 3"
    })
    .await;
    assert!(ok);
    // `runnel check` and the logs show the URL with the password masked.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("runnel.toml");
    std::fs::write(
        &config,
        format!("[redis]\nurl = \"{url}\"\n[[redis.ingress]]\nchannel = \"a\"\ntopic = \"a\"\n"),
    )
    .unwrap();
    let out = command(bin(), &["check", "-c", config.to_str().unwrap()], &[])
        .output()
        .unwrap();
    let printed =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{printed}");
    assert!(
        printed.contains(&format!("redis://:***@127.0.0.1:{}/3", redis.port)),
        "{printed}"
    );
    assert!(!printed.contains("s3cret"), "{printed}");
    // A wrong password: degraded, and the hub serves on.
    let wrong = TestHub::start_with(|c| {
        c.redis.url = Some(RedisUrl(format!(
            "redis://:nope@127.0.0.1:{}/3",
            redis.port
        )));
        c.redis.ingress = vec![stream_rule()];
    })
    .await;
    refused(&wrong).await;

    // rediss://, with the certificate trusted through redis.ca_file.
    let crt = dir.path().join("redis.crt");
    let key = dir.path().join("redis.key");
    let made = command(
        bin(),
        &[
            "cert",
            "--self-signed",
            "--hosts",
            "127.0.0.1,localhost",
            "--cert",
            crt.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ],
        &[],
    )
    .status()
    .unwrap();
    assert!(made.success());
    let (crt, key) = (
        crt.to_str().unwrap().to_string(),
        key.to_str().unwrap().to_string(),
    );
    let tls = Redis::start_with(
        vec![
            "--tls-port".into(),
            "--tls-cert-file".into(),
            crt.clone(),
            "--tls-key-file".into(),
            key,
            "--tls-ca-cert-file".into(),
            crt.clone(),
            "--tls-auth-clients".into(),
            "no".into(),
        ],
        vec!["--tls".into(), "--cacert".into(), crt.clone()],
    );
    let hub = TestHub::start_with(|c| {
        c.redis.url = Some(RedisUrl(format!("rediss://127.0.0.1:{}/0", tls.port)));
        c.redis.ca_file = Some(crt.clone().into());
        c.redis.ingress = vec![stream_rule()];
    })
    .await;
    connected(hub.addr).await;
    tls.cli(&["XADD", "jobs", "*", "data", "over TLS"]);
    let ok = eventually(Duration::from_secs(10), async || {
        hub.get("/history?topic=jobs").await.json()["events"][0]["data"] == "over TLS"
    })
    .await;
    assert!(ok);
    // Without the certificate trusted, the connection is refused: degraded.
    let untrusted = TestHub::start_with(|c| {
        c.redis.url = Some(RedisUrl(format!("rediss://127.0.0.1:{}/0", tls.port)));
        c.redis.ingress = vec![stream_rule()];
    })
    .await;
    refused(&untrusted).await;
}

/// The hub tried, was refused, and serves on, degraded (a source starts down, so the status
/// alone would prove nothing: the failed attempt is what counts).
async fn refused(hub: &TestHub) {
    let failed = eventually(Duration::from_secs(10), async || {
        let s = ingress_stats(hub.addr).await;
        s[0]["outages"].as_u64() >= Some(1)
    })
    .await;
    assert!(
        failed,
        "no failed attempt: {:?}",
        ingress_stats(hub.addr).await
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let s = ingress_stats(hub.addr).await;
    assert_eq!(s[0]["up"], false, "{s:?}");
    let h = hub.get("/health").await;
    assert_eq!(
        (h.status, h.json()["status"].clone()),
        (200, serde_json::json!("degraded"))
    );
}

#[tokio::test]
#[ignore = "needs redis-server: .ci/run runs it"]
async fn a_pub_sub_connection_that_stops_answering_is_noticed_and_made_again() {
    let redis = Redis::start();
    let hub = alerts_hub(&redis).await;
    // Redis stops answering without closing anything, as a dead network path would look.
    assert_eq!(redis.cli(&["CLIENT", "PAUSE", "25000", "ALL"]), "OK");
    let noticed = eventually(Duration::from_secs(24), async || {
        ingress_stats(hub.addr).await[0]["outages"].as_u64() >= Some(1)
    })
    .await;
    assert!(noticed, "{:?}", ingress_stats(hub.addr).await);
    assert_eq!(redis.cli(&["CLIENT", "UNPAUSE"]), "OK");
    connected(hub.addr).await;
    let mut s = hub.sse("/events/alerts").await;
    s.connected().await;
    redis.cli(&["PUBLISH", "alerts", "again"]);
    assert_eq!(s.next().await.data, "again");
}

/// A hub with one rule, channel `alerts` → topic `alerts`, connected.
async fn alerts_hub(redis: &Redis) -> TestHub {
    let hub = TestHub::start_with(|c| {
        with_rules(
            c,
            redis,
            vec![rule(|r| {
                r.channel = Some("alerts".into());
                r.topic = Some("alerts".into());
            })],
        )
    })
    .await;
    connected(hub.addr).await;
    hub
}
