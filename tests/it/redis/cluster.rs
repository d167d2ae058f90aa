//! Several hubs as one (SPEC §11.3): one order and one id on every hub, a client moving to
//! another hub without gap or duplicate, a hub catching up after `kill -9`, and Redis
//! restarting (publishes refused while it is down, nothing acknowledged lost).

use std::time::Duration;

use serde_json::{Value, json};

use super::*;

async fn member(redis: &Redis) -> TestHub {
    let url = redis.url();
    let hub = TestHub::start_with(move |c| c.cluster.redis = Some(RedisUrl(url))).await;
    following(hub.addr).await;
    hub
}

/// Waits until `/health` says the hub follows the cluster's log.
async fn following(addr: std::net::SocketAddr) {
    let ok = eventually(Duration::from_secs(15), async || {
        let h = request(addr, "GET", "/health", &[], b"").await.json();
        h["status"] == "ok"
    })
    .await;
    assert!(ok, "the hub does not follow the cluster's log");
}

async fn publish_at(addr: std::net::SocketAddr, data: String) -> Value {
    let r = post_json_at(addr, "/publish", &json!({"topic": "t", "data": data})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

/// `n` events from a stream: (id, data).
async fn take(s: &mut Sse, n: usize) -> Vec<(String, String)> {
    let mut out = Vec::new();
    while out.len() < n {
        let e = s.next().await;
        if let Some(id) = e.id {
            out.push((id, e.data));
        }
    }
    out
}

#[tokio::test]
#[ignore = "needs redis-server: .ci/run runs it"]
async fn every_hub_receives_every_publish_in_one_order_with_one_id() {
    let redis = Redis::start();
    let hubs = [
        member(&redis).await,
        member(&redis).await,
        member(&redis).await,
    ];
    let mut streams = Vec::new();
    for h in &hubs {
        let mut s = h.sse("/events/t").await;
        s.connected().await;
        streams.push(s);
    }
    // Publishes on every hub, some at once.
    let mut answers = Vec::new();
    for round in 0..10 {
        let sent = futures_util::future::join_all(
            hubs.iter()
                .enumerate()
                .map(|(i, h)| publish_at(h.addr, format!("{round}/{i}"))),
        )
        .await;
        answers.extend(sent);
    }
    let seen: Vec<Vec<(String, String)>> =
        futures_util::future::join_all(streams.iter_mut().map(|s| take(s, 30))).await;
    assert_eq!(seen[0], seen[1], "hub 0 and hub 1 saw one order");
    assert_eq!(seen[0], seen[2], "hub 0 and hub 2 saw one order");
    let ids: Vec<&String> = seen[0].iter().map(|(id, _)| id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase: {ids:?}");
    // Each publisher's answer names the id every hub delivered its event with.
    for a in &answers {
        let id = a["id"].as_str().unwrap();
        assert!(seen[0].iter().any(|(i, _)| i == id), "{id} not delivered");
        assert_eq!(a["delivered"], 1, "this hub's stream: {a}");
    }
    for s in &mut streams {
        s.assert_quiet(Duration::from_millis(300)).await;
    }
    // Every hub's history is the same copy.
    let h0 = hubs[0].get("/history?topic=t").await.json()["events"].clone();
    for h in &hubs[1..] {
        assert_eq!(h.get("/history?topic=t").await.json()["events"], h0);
    }
}

#[tokio::test]
#[ignore = "needs redis-server: .ci/run runs it"]
async fn a_client_moving_to_another_hub_resumes_without_gap_or_duplicate() {
    let redis = Redis::start();
    let (a, b) = (member(&redis).await, member(&redis).await);
    let mut on_a = a.sse("/events/t").await;
    on_a.connected().await;
    for i in 0..5 {
        publish_at(b.addr, format!("e{i}")).await;
    }
    let first = take(&mut on_a, 3).await;
    let last_id = first[2].0.clone();
    drop(on_a);
    // Published while the client is away, on both hubs.
    for i in 5..10 {
        let at = if i % 2 == 0 { a.addr } else { b.addr };
        publish_at(at, format!("e{i}")).await;
    }
    // It comes back to the other hub with the id hub A gave it.
    let mut on_b = Sse::open(b.addr, "/events/t", &[("Last-Event-ID", &last_id)]).await;
    assert_eq!(on_b.connected().await["last_event_id"], last_id);
    publish_at(a.addr, "e10".into()).await;
    let rest: Vec<String> = take(&mut on_b, 8).await.into_iter().map(|e| e.1).collect();
    let want: Vec<String> = (3..=10).map(|i| format!("e{i}")).collect();
    assert_eq!(rest, want);
    on_b.assert_quiet(Duration::from_millis(300)).await;
}

fn member_process(dir: &std::path::Path, redis: &Redis) -> Proc {
    member_process_with(dir, redis, "")
}

/// A hub of the cluster in a process of its own, with more configuration in `extra`.
fn member_process_with(dir: &std::path::Path, redis: &Redis, extra: &str) -> Proc {
    let config = dir.join("runnel.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n{extra}\n[cluster]\nredis = \"{}\"\n",
            dir.join("data").display(),
            redis.url()
        ),
    )
    .unwrap();
    Proc::spawn(&["-c", config.to_str().unwrap()], &[])
}

/// The data of every event on `t` a hub holds (one page is enough here).
async fn held(addr: std::net::SocketAddr) -> Vec<String> {
    let h = request(addr, "GET", "/history?topic=t&limit=1000", &[], b"")
        .await
        .json();
    h["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["data"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
#[ignore = "needs redis-server: .ci/run runs it"]
async fn a_hub_killed_with_kill_9_catches_up_when_it_restarts() {
    let redis = Redis::start();
    let a = member(&redis).await;
    let dir = tempfile::tempdir().unwrap();
    let b = member_process(dir.path(), &redis);
    following(b.addr).await;
    for i in 0..10 {
        publish_at(a.addr, format!("e{i}")).await;
    }
    let ok = eventually(Duration::from_secs(10), async || {
        held(b.addr).await.len() == 10
    })
    .await;
    assert!(ok, "hub B has {:?}", held(b.addr).await);
    b.signal("KILL");
    drop(b);
    // Published while B is dead.
    for i in 10..30 {
        publish_at(a.addr, format!("e{i}")).await;
    }
    let b = member_process(dir.path(), &redis);
    following(b.addr).await;
    let want: Vec<String> = (0..30).map(|i| format!("e{i}")).collect();
    let ok = eventually(Duration::from_secs(10), async || held(b.addr).await == want).await;
    assert!(ok, "hub B holds {:?}", held(b.addr).await);
    // And the same ids as hub A.
    let ids = |h: Value| -> Vec<Value> {
        h["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].clone())
            .collect()
    };
    let on_a = ids(a.get("/history?topic=t&limit=1000").await.json());
    let on_b = ids(
        request(b.addr, "GET", "/history?topic=t&limit=1000", &[], b"")
            .await
            .json(),
    );
    assert_eq!(on_a, on_b);
}

#[tokio::test]
#[ignore = "needs redis-server: .ci/run runs it"]
async fn publishes_are_refused_while_redis_is_down_and_nothing_acknowledged_is_lost() {
    let mut redis = Redis::start();
    let (a, b) = (member(&redis).await, member(&redis).await);
    let mut on_b = b.sse("/events/t").await;
    on_b.connected().await;
    publish_at(a.addr, "before".into()).await;
    assert_eq!(on_b.next().await.data, "before");
    redis.stop();
    let r = a
        .post_json("/publish", &json!({"topic": "t", "data": "while down"}))
        .await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "unavailable");
    assert_eq!(r.header("retry-after"), Some("1"));
    let degraded = eventually(Duration::from_secs(10), async || {
        b.get("/health").await.json()["status"] == "degraded"
    })
    .await;
    assert!(degraded, "/health: {}", b.get("/health").await.text());
    // Open streams stay open.
    assert!(!on_b.finished());
    redis.restart();
    following(a.addr).await;
    following(b.addr).await;
    publish_at(a.addr, "after".into()).await;
    assert_eq!(on_b.next().await.data, "after");
    on_b.assert_quiet(Duration::from_millis(300)).await;
    // Both hubs hold exactly what was acknowledged.
    for h in [&a, &b] {
        assert_eq!(held(h.addr).await, ["before", "after"]);
    }
}

async fn secure_member(redis: &Redis) -> TestHub {
    let url = redis.url();
    let hub = TestHub::start_with(move |c| {
        secured(c);
        c.cluster.redis = Some(RedisUrl(url));
    })
    .await;
    following(hub.addr).await;
    hub
}

#[tokio::test]
#[ignore = "needs redis-server: .ci/run runs it"]
async fn sessions_and_connections_span_the_hubs() {
    let redis = Redis::start();
    let (a, b) = (secure_member(&redis).await, secure_member(&redis).await);
    let alice = bearer(&jwt(
        json!({"sub": "alice", "subscribe": ["news", "user/*"]}),
    ));
    let h = [
        ("authorization", alice.as_str()),
        ("content-type", "application/json"),
    ];
    // Alice's stream is on hub B; she takes a session topic through hub A.
    let mut on_b = stream_as(&b, "/events", &h[..1]).await;
    let conn_id = on_b.connected().await["connection_id"].clone();
    let r = request(a.addr, "POST", "/subscribe", &h, br#"{"topics":["news"]}"#).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let key = [("x-api-key", "backend-key")];
    // The change is in the cluster's order: a publish after it reaches her stream.
    publish_as(&a, &key, json!({"topic": "news", "data": "n1"})).await;
    assert_eq!(on_b.next().await.data, "n1");
    // A stream she opens later on hub B has the session topic too.
    let mut later = stream_as(&b, "/events", &h[..1]).await;
    let topics = later.connected().await["topics"].clone();
    assert!(
        topics.as_array().unwrap().contains(&json!("news")),
        "{topics}"
    );
    drop(later);
    // Hub A lists the stream on hub B, and closes it.
    let listed = eventually(Duration::from_secs(10), async || {
        let list = as_admin(&a, "GET", "/connections").await.json();
        list["connections"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["id"] == conn_id && c["user"] == "alice" && c["hub"].is_string())
    })
    .await;
    assert!(
        listed,
        "{}",
        as_admin(&a, "GET", "/connections").await.text()
    );
    let id = conn_id.as_str().unwrap();
    let r = as_admin(&a, "DELETE", &format!("/connections/{id}")).await;
    assert_eq!(r.status, 204, "{}", r.text());
    let closed = on_b.next().await;
    assert!(closed.is_control("closed"), "{closed:?}");
    assert_eq!(
        as_admin(&a, "DELETE", "/connections/no-such-id")
            .await
            .status,
        404
    );
}

#[tokio::test]
#[ignore = "needs redis-server: .ci/run runs it"]
async fn a_redis_that_lost_its_data_is_a_new_incarnation_hubs_join_when_restarted() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let url = redis.url();
    let config = move |c: &mut runnel::config::Config| c.cluster.redis = Some(RedisUrl(url));
    let mut a = TestHub::start_in(dir.path(), config.clone()).await;
    following(a.addr).await;
    let old = publish_at(a.addr, "old".into()).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    // Redis loses everything: its numbers would start over.
    assert_eq!(redis.cli(&["FLUSHALL"]), "OK");
    let r = a
        .post_json("/publish", &json!({"topic": "t", "data": "refused"}))
        .await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("restart this hub"), "{}", r.text());
    a.stop().await;
    // Restarted, the hub joins the new incarnation, its old log moved aside.
    let a = TestHub::start_in(dir.path(), config).await;
    following(a.addr).await;
    let new = publish_at(a.addr, "new".into()).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(old[..8], new[..8], "a new incarnation");
    assert!(dir.path().join(format!("log-{}", &old[..8])).is_dir());
    // A client with an id of the old one is told, and gets what there is.
    let mut s = Sse::open(a.addr, "/events/t", &[("Last-Event-ID", old.as_str())]).await;
    s.connected().await;
    let reset = s.next().await;
    assert!(reset.is_control("reset"), "{reset:?}");
    assert_eq!(reset.json()["reason"], "unknown_id");
    assert_eq!(s.next().await.data, "new");
}

#[tokio::test]
#[ignore = "needs redis-server: .ci/run runs it"]
async fn a_stream_on_another_hub_changes_its_topics_by_connection_id() {
    let redis = Redis::start();
    let (a, b) = (member(&redis).await, member(&redis).await);
    // An anonymous stream on hub B, changed through hub A by its connection id.
    let mut on_b = b.sse("/events").await;
    let id = on_b.connected().await["connection_id"]
        .as_str()
        .unwrap()
        .to_string();
    let change = json!({"topics": ["a"], "connection_id": id});
    // Hub A knows of it once hub B has listed its connections (every 2 s).
    let taken = eventually(Duration::from_secs(10), async || {
        a.post_json("/subscribe", &change).await.status == 200
    })
    .await;
    assert!(taken, "{}", a.post_json("/subscribe", &change).await.text());
    // The answer names the topics changed: the stream's whole list is on hub B.
    let r = a.post_json("/subscribe", &change).await;
    assert_eq!(r.json(), json!({"topics": ["a"]}));
    publish_at(a.addr, "not on a".into()).await;
    a.publish(json!({"topic": "a", "data": "a1"})).await;
    assert_eq!(on_b.next().await.data, "a1");
    let r = a.post_json("/unsubscribe", &change).await;
    assert_eq!(r.status, 200, "{}", r.text());
    a.publish(json!({"topic": "a", "data": "a2"})).await;
    on_b.assert_quiet(Duration::from_millis(300)).await;
    // An id no hub holds is still unknown.
    a.post_json(
        "/subscribe",
        &json!({"topics": ["a"], "connection_id": "1-deadbeef"}),
    )
    .await
    .assert_error(404, "not_found");
}

#[tokio::test]
#[ignore = "needs redis-server: .ci/run runs it"]
async fn a_hub_away_past_max_len_marks_the_gap_and_resuming_clients_are_told() {
    let redis = Redis::start();
    let url = redis.url();
    let a = TestHub::start_with(move |c| {
        c.cluster.redis = Some(RedisUrl(url));
        c.cluster.max_len = 1000;
    })
    .await;
    following(a.addr).await;
    let dir = tempfile::tempdir().unwrap();
    // B's own retention keeps more than the stream does: what it lacks is the stream's doing.
    let keep_all = "[store]\nretention_events = 100000";
    let b = member_process_with(dir.path(), &redis, keep_all);
    following(b.addr).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(publish_at(a.addr, format!("e{i}")).await["id"].clone());
    }
    let ok = eventually(Duration::from_secs(10), async || {
        held(b.addr).await.len() == 5
    })
    .await;
    assert!(ok, "hub B has {:?}", held(b.addr).await);
    b.signal("KILL");
    drop(b);
    // While B is dead, more publishes than the stream keeps: its oldest are trimmed.
    let n = 1300;
    for chunk in (5..5 + n).collect::<Vec<_>>().chunks(50) {
        let sent = futures_util::future::join_all(
            chunk.iter().map(|i| publish_at(a.addr, format!("e{i}"))),
        )
        .await;
        ids.extend(sent.into_iter().map(|v| v["id"].clone()));
    }
    let len: usize = redis.cli(&["XLEN", "runnel:log"]).parse().unwrap();
    assert!((1000..n).contains(&len), "the stream holds {len} entries");
    // B comes back: it takes what the stream still holds and marks what it lost.
    let b = member_process_with(dir.path(), &redis, keep_all);
    following(b.addr).await;
    let last = format!("e{}", 4 + n);
    let newest = format!(
        "/history?topic=t&after={}",
        ids[ids.len() - 2].as_str().unwrap()
    );
    let ok = eventually(Duration::from_secs(20), async || {
        let h = request(b.addr, "GET", &newest, &[], b"").await.json();
        h["events"][0]["data"] == last
    })
    .await;
    assert!(ok, "hub B does not reach {last}");
    // It holds what it had, then what the stream still held: a gap between.
    let h = request(b.addr, "GET", "/history?topic=t&limit=10", &[], b"")
        .await
        .json();
    let data: Vec<&str> = h["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["data"].as_str().unwrap())
        .collect();
    assert_eq!(data[..5], ["e0", "e1", "e2", "e3", "e4"]);
    assert_ne!(data[5], "e5", "{data:?}");
    // A client that read e4 on B before it died is told it missed some.
    let e4 = ids[4].as_str().unwrap();
    let mut s = Sse::open(b.addr, "/events/t", &[("Last-Event-ID", e4)]).await;
    s.connected().await;
    let reset = s.next().await;
    assert!(reset.is_control("reset"), "{reset:?}");
    assert_eq!(reset.json()["reason"], "pruned");
    // One that read past the gap resumes as usual.
    let recent = ids[ids.len() - 3].as_str().unwrap();
    let mut s = Sse::open(b.addr, "/events/t", &[("Last-Event-ID", recent)]).await;
    s.connected().await;
    let rest: Vec<String> = take(&mut s, 2).await.into_iter().map(|e| e.1).collect();
    assert_eq!(rest, [format!("e{}", 3 + n), last]);
}
