//! Stream rules: a consumer group, acknowledgement after the log write, nothing lost when
//! Redis restarts, and an entry redelivered after a `kill -9` not published twice.

use std::time::Duration;

use serde_json::Value;

use super::*;

fn jobs_rule() -> IngressRule {
    rule(|r| {
        r.stream = Some("jobs".into());
        r.topic = Some("{channel}".into());
        r.event = Some("{kind}".into());
    })
}

/// The data of every event on `topic`, oldest first (all pages).
async fn all_data(addr: std::net::SocketAddr, topic: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut after = String::new();
    loop {
        let q = if after.is_empty() {
            format!("/history?topic={topic}&limit=1000")
        } else {
            format!("/history?topic={topic}&limit=1000&after={after}")
        };
        let h = request(addr, "GET", &q, &[], b"").await.json();
        for e in h["events"].as_array().unwrap() {
            out.push(match &e["data"] {
                Value::String(s) => s.clone(),
                v => v.to_string(),
            });
        }
        match h["next"].as_str() {
            Some(n) => after = n.to_string(),
            None => return out,
        }
    }
}

/// Waits until `topic` holds `n` events (or more).
async fn holds(addr: std::net::SocketAddr, topic: &str, n: usize) -> Vec<String> {
    let mut last = Vec::new();
    let ok = eventually(Duration::from_secs(20), async || {
        last = all_data(addr, topic).await;
        last.len() >= n
    })
    .await;
    assert!(ok, "{topic} holds {} of {n} events", last.len());
    last
}

/// Every `m{i}` exactly once, in order.
fn exactly_once(got: &[String], n: usize) {
    let want: Vec<String> = (0..n).map(|i| format!("m{i}")).collect();
    assert_eq!(got, want);
}

#[tokio::test]
#[ignore = "needs redis-server: .ci/run runs it"]
async fn entries_become_events_and_are_acknowledged_after_the_log_write() {
    let redis = Redis::start();
    let hub = TestHub::start_with(|c| with_rules(c, &redis, vec![jobs_rule()])).await;
    connected(hub.addr).await;
    let mut s = hub.sse("/events/jobs").await;
    s.connected().await;
    redis.cli(&["XADD", "jobs", "*", "data", r#"{"n":1}"#, "kind", "started"]);
    redis.cli(&["XADD", "jobs", "*", "other", "no data field"]);
    redis.cli(&["XADD", "jobs", "*", "data", "done"]);
    let e = s.next().await;
    assert_eq!(
        (e.event.as_deref(), e.data.as_str()),
        (Some("started"), r#"{"n":1}"#)
    );
    let e = s.next().await;
    assert_eq!((e.event.as_deref(), e.data.as_str()), (None, "done"));
    // Everything acknowledged, the entry without a payload too (it can never be published).
    let ok = eventually(Duration::from_secs(5), async || {
        redis.cli(&["XPENDING", "jobs", "runnel"]).starts_with('0')
    })
    .await;
    assert!(
        ok,
        "pending: {}",
        redis.cli(&["XPENDING", "jobs", "runnel"])
    );
    let stats = ingress_stats(hub.addr).await;
    assert_eq!(stats[0]["source"], "redis stream jobs");
    assert_eq!(
        (
            stats[0]["published"].as_u64(),
            stats[0]["dropped_invalid"].as_u64()
        ),
        (Some(2), Some(1))
    );
}

#[tokio::test]
#[ignore = "needs redis-server: .ci/run runs it"]
async fn nothing_is_lost_when_redis_restarts() {
    let mut redis = Redis::start();
    let hub = TestHub::start_with(|c| with_rules(c, &redis, vec![jobs_rule()])).await;
    connected(hub.addr).await;
    for i in 0..50 {
        redis.cli(&["XADD", "jobs", "*", "data", &format!("m{i}")]);
    }
    redis.stop();
    let down = eventually(Duration::from_secs(10), async || {
        hub.get("/health").await.json()["status"] == "degraded"
    })
    .await;
    assert!(down);
    redis.restart();
    for i in 50..100 {
        redis.cli(&["XADD", "jobs", "*", "data", &format!("m{i}")]);
    }
    exactly_once(&holds(hub.addr, "jobs", 100).await, 100);
    tokio::time::sleep(Duration::from_millis(500)).await;
    exactly_once(&all_data(hub.addr, "jobs").await, 100);
}

/// A hub as its own process (to `kill -9` it), reading `jobs` from `redis`.
fn hub_process(dir: &std::path::Path, redis: &Redis) -> Proc {
    let config = dir.join("runnel.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n[redis]\nurl = \"{}\"\n\
             [[redis.ingress]]\nstream = \"jobs\"\ntopic = \"{{channel}}\"\n",
            dir.join("data").display(),
            redis.url()
        ),
    )
    .unwrap();
    Proc::spawn(&["-c", config.to_str().unwrap()], &[])
}

#[tokio::test]
#[ignore = "needs redis-server: .ci/run runs it"]
async fn an_entry_redelivered_after_kill_9_is_not_published_twice() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let hub = hub_process(dir.path(), &redis);
    connected(hub.addr).await;
    for i in 0..20 {
        redis.cli(&["XADD", "jobs", "*", "data", &format!("m{i}")]);
    }
    holds(hub.addr, "jobs", 20).await;
    hub.signal("KILL");
    drop(hub);
    // Redis hands every entry out again, as it does those a consumer never acknowledged.
    assert_eq!(redis.cli(&["XGROUP", "SETID", "jobs", "runnel", "0"]), "OK");
    let hub = hub_process(dir.path(), &redis);
    connected(hub.addr).await;
    redis.cli(&["XADD", "jobs", "*", "data", "m20"]);
    exactly_once(&holds(hub.addr, "jobs", 21).await, 21);
    let stats = ingress_stats_once_published(hub.addr, 1).await;
    assert_eq!(stats[0]["duplicates"], 20, "{stats:?}");
    assert_eq!(stats[0]["published"], 1);

    // And killed while entries arrive: each is in the log once.
    let burst: Vec<String> = (21..400).map(|i| format!("m{i}")).collect();
    for m in &burst {
        redis.cli(&["XADD", "jobs", "*", "data", m]);
        if m == "m120" {
            hub.signal("KILL");
        }
    }
    drop(hub);
    let hub = hub_process(dir.path(), &redis);
    exactly_once(&holds(hub.addr, "jobs", 400).await, 400);
    tokio::time::sleep(Duration::from_millis(500)).await;
    exactly_once(&all_data(hub.addr, "jobs").await, 400);
}
