//! SPEC §5.1 resume, §5.3 gaps, §7 the log: replay is complete, ordered, joined to the live
//! stream with no gap and no duplicate, and survives restarts.

use std::collections::HashSet;
use std::time::Duration;

use crate::common::*;
use runnel::config::Dur;
use serde_json::{Value, json};

async fn publish_n(hub: &TestHub, topic: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let r = hub.publish(json!({"topic": topic, "data": i})).await;
        ids.push(r["id"].as_str().unwrap().to_string());
    }
    ids
}

#[tokio::test]
async fn resume_from_header_or_query_header_wins() {
    let hub = TestHub::start().await;
    let ids = publish_n(&hub, "r", 5).await;
    let mut s = Sse::open(hub.addr, "/events?topic=r", &[("Last-Event-ID", &ids[1])]).await;
    let c = s.connected().await;
    assert_eq!(c["last_event_id"], ids[1].as_str());
    for (i, id) in ids.iter().enumerate().skip(2) {
        let e = s.next().await;
        assert_eq!(e.data, i.to_string());
        assert_eq!(e.id.as_deref(), Some(id.as_str()));
    }
    s.assert_quiet(Duration::from_millis(200)).await;

    let mut q = hub
        .sse(&format!("/events?topic=r&last_event_id={}", ids[3]))
        .await;
    q.connected().await;
    assert_eq!(q.next().await.data, "4");

    let mut both = Sse::open(
        hub.addr,
        &format!("/events?topic=r&last_event_id={}", ids[0]),
        &[("last-event-id", &ids[3])],
    )
    .await;
    assert_eq!(both.connected().await["last_event_id"], ids[3].as_str());
    assert_eq!(
        both.next().await.data,
        "4",
        "the header wins over the query"
    );
}

#[tokio::test]
async fn earliest_replays_everything_retained_then_goes_live() {
    let hub = TestHub::start().await;
    publish_n(&hub, "e", 3).await;
    let mut s = hub.sse("/events?topic=e&last_event_id=earliest").await;
    s.connected().await;
    for i in 0..3 {
        assert_eq!(s.next().await.data, i.to_string());
    }
    hub.publish(json!({"topic": "e", "data": "live"})).await;
    assert_eq!(s.next().await.data, "live");
}

#[tokio::test]
async fn a_long_replay_arrives_whole_and_in_order() {
    let hub = TestHub::start_with(|c| c.store.retention_events = 5000).await;
    let batch: Vec<Value> = (0..1500)
        .map(|i| json!({"topic": if i % 3 == 0 { "x" } else { "y" }, "data": i}))
        .collect();
    hub.publish(json!(batch[..1000])).await;
    hub.publish(json!(batch[1000..])).await;
    let mut s = hub
        .sse("/events?topic=x&topic=y&last_event_id=earliest")
        .await;
    s.connected().await;
    for i in 0..1500 {
        assert_eq!(s.next().await.data, i.to_string());
    }
    let mut only_x = hub.sse("/events?topic=x&last_event_id=earliest").await;
    only_x.connected().await;
    for i in (0..1500).step_by(3) {
        assert_eq!(only_x.next().await.data, i.to_string());
    }
    only_x.assert_quiet(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn multi_topic_events_replay_once() {
    let hub = TestHub::start().await;
    hub.publish(json!({"topics": ["a", "b"], "data": "both"}))
        .await;
    hub.publish(json!({"topic": "b", "data": "b only"})).await;
    let mut s = hub
        .sse("/events?topic=a&topic=b&last_event_id=earliest")
        .await;
    s.connected().await;
    assert_eq!(s.next().await.data, "both");
    assert_eq!(s.next().await.data, "b only");
    s.assert_quiet(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn wildcard_streams_replay_too() {
    let hub = TestHub::start().await;
    hub.publish(json!({"topic": "home/a", "data": 1})).await;
    hub.publish(json!({"topic": "office/a", "data": 2})).await;
    hub.publish(json!({"topic": "home/b", "data": 3})).await;
    let mut s = hub.sse("/events?topic=home/*&last_event_id=earliest").await;
    s.connected().await;
    assert_eq!(s.next().await.data, "1");
    assert_eq!(s.next().await.data, "3");
    s.assert_quiet(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn foreign_or_garbage_ids_get_a_reset_then_everything() {
    let hub = TestHub::start().await;
    let ids = publish_n(&hub, "f", 2).await;
    let future = {
        let (inc, _) = ids[1].split_once('-').unwrap();
        format!("{inc}-{:016x}", 999_999)
    };
    for bad in [
        "deadbeef-0000000000000001",
        "not-an-id",
        "42",
        future.as_str(),
    ] {
        let mut s = Sse::open(hub.addr, "/events?topic=f", &[("Last-Event-ID", bad)]).await;
        s.connected().await;
        let r = s.next().await;
        assert!(r.is_control("reset"), "{bad}: {r:?}");
        assert_eq!(
            r.json(),
            json!({"reason": "unknown_id", "last_event_id": bad})
        );
        assert_eq!(s.next().await.data, "0");
        assert_eq!(s.next().await.data, "1");
    }
}

#[tokio::test]
async fn wiped_data_dir_is_recognised() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let mut hub = TestHub::start_in(&dir, |_| {}).await;
    let old = publish_n(&hub, "w", 3).await;
    hub.stop().await;
    std::fs::remove_dir_all(&dir).unwrap();
    let hub = TestHub::start_in(&dir, |_| {}).await;
    let new = publish_n(&hub, "w", 1).await;
    assert_ne!(old[0].split('-').next(), new[0].split('-').next());
    let mut s = Sse::open(hub.addr, "/events?topic=w", &[("Last-Event-ID", &old[2])]).await;
    s.connected().await;
    let r = s.next().await;
    assert!(r.is_control("reset"), "{r:?}");
    assert_eq!(r.json()["reason"], "unknown_id");
    let e = s.next().await;
    assert_eq!(e.id.as_deref(), Some(new[0].as_str()));
}

#[tokio::test]
async fn resume_survives_an_in_process_restart_and_ids_continue() {
    let tmp = tempfile::tempdir().unwrap();
    let mut hub = TestHub::start_in(tmp.path(), |_| {}).await;
    let before = publish_n(&hub, "p", 3).await;
    // A live-only event's id must not be reused after the restart either.
    let live = hub
        .publish(json!({"topic": "p", "data": "live", "persist": false}))
        .await;
    hub.stop().await;
    let hub = TestHub::start_in(tmp.path(), |_| {}).await;
    let after = publish_n(&hub, "p", 2).await;
    assert!(
        after[0].as_str() > live["id"].as_str().unwrap(),
        "ids continue"
    );
    let mut s = Sse::open(
        hub.addr,
        "/events?topic=p",
        &[("Last-Event-ID", &before[0])],
    )
    .await;
    s.connected().await;
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(s.next().await.id.unwrap());
    }
    assert_eq!(
        got,
        [
            before[1].clone(),
            before[2].clone(),
            after[0].clone(),
            after[1].clone()
        ]
    );
}

#[tokio::test]
async fn retention_by_count_prunes_and_resets_with_pruned() {
    let hub = TestHub::start_with(|c| c.store.retention_events = 3).await;
    let ids = publish_n(&hub, "k", 6).await;
    assert!(
        eventually(Duration::from_secs(10), async || {
            hub.get("/stats").await.json()["store"]["events"] == 3
        })
        .await,
        "retention did not prune to 3 events"
    );
    let mut all = hub.sse("/events?topic=k&last_event_id=earliest").await;
    all.connected().await;
    for i in 3..6 {
        assert_eq!(all.next().await.data, i.to_string());
    }
    // The client saw event 0 and missed pruned events 1 and 2: it must be told.
    let mut gap = Sse::open(hub.addr, "/events?topic=k", &[("Last-Event-ID", &ids[0])]).await;
    gap.connected().await;
    let r = gap.next().await;
    assert!(r.is_control("reset"), "{r:?}");
    assert_eq!(
        r.json(),
        json!({"reason": "pruned", "last_event_id": ids[0]})
    );
    for i in 3..6 {
        assert_eq!(gap.next().await.data, i.to_string());
    }
    // A client that saw event 2 missed nothing that was pruned: no reset.
    let mut fine = Sse::open(hub.addr, "/events?topic=k", &[("Last-Event-ID", &ids[2])]).await;
    fine.connected().await;
    assert_eq!(fine.next().await.data, "3");
    // Other topics are not affected by k's retention.
    hub.publish(json!({"topic": "other", "data": "x"})).await;
    let mut o = Sse::open(
        hub.addr,
        "/events?topic=other",
        &[("Last-Event-ID", &ids[0])],
    )
    .await;
    o.connected().await;
    assert_eq!(o.next().await.data, "x");
}

#[tokio::test]
async fn retention_by_age_prunes_old_events() {
    let hub =
        TestHub::start_with(|c| c.store.retention_age = Dur(Duration::from_millis(500))).await;
    let ids = publish_n(&hub, "old", 2).await;
    assert!(
        eventually(Duration::from_secs(10), async || {
            hub.get("/stats").await.json()["store"]["events"] == 0
        })
        .await
    );
    let fresh = publish_n(&hub, "old", 1).await;
    let mut s = Sse::open(hub.addr, "/events?topic=old", &[("Last-Event-ID", &ids[0])]).await;
    s.connected().await;
    let r = s.next().await;
    assert_eq!(r.json()["reason"], "pruned");
    assert_eq!(s.next().await.id.as_deref(), Some(fresh[0].as_str()));
}

#[tokio::test]
async fn resume_while_publishing_has_no_gap_and_no_duplicate() {
    let hub = TestHub::start_with(|c| c.store.retention_events = 100_000).await;
    const N: usize = 1500;
    let addr = hub.addr;
    let publisher = tokio::spawn(async move {
        for i in 0..N {
            let r = request(
                addr,
                "POST",
                "/publish",
                &[("content-type", "application/json")],
                json!({"topic": "race", "data": i}).to_string().as_bytes(),
            )
            .await;
            assert_eq!(r.status, 200);
        }
    });
    // Reconnect over and over while the publisher runs, each time from the last id seen.
    let mut seen: Vec<usize> = Vec::new();
    let mut last: Option<String> = None;
    let mut reconnects = 0;
    while seen.len() < N {
        let headers: Vec<(&str, &str)> = match &last {
            Some(id) => vec![("Last-Event-ID", id.as_str())],
            None => vec![],
        };
        let path = if last.is_none() {
            "/events?topic=race&last_event_id=earliest"
        } else {
            "/events?topic=race"
        };
        let mut s = Sse::open(addr, path, &headers).await;
        s.connected().await;
        reconnects += 1;
        // Read a few events, then drop the connection mid-stream.
        for _ in 0..(37 + reconnects % 50) {
            if seen.len() == N {
                break;
            }
            let e = s.next().await;
            assert!(e.id.is_some(), "no control events on a clean resume: {e:?}");
            seen.push(e.data.parse().unwrap());
            last = e.id;
        }
    }
    publisher.await.unwrap();
    assert!(
        reconnects > 5,
        "the test must actually reconnect ({reconnects})"
    );
    let expected: Vec<usize> = (0..N).collect();
    assert_eq!(seen, expected, "every event exactly once, in order");
}

#[tokio::test]
async fn concurrent_publish_order_is_replay_order() {
    let hub = TestHub::start_with(|c| c.store.retention_events = 100_000).await;
    let mut live = hub.sse("/events?topic=o").await;
    live.connected().await;
    let mut tasks = Vec::new();
    for p in 0..6 {
        let addr = hub.addr;
        tasks.push(tokio::spawn(async move {
            for i in 0..50 {
                let r = request(
                    addr,
                    "POST",
                    "/publish",
                    &[("content-type", "application/json")],
                    json!({"topic": "o", "data": format!("{p}:{i}")})
                        .to_string()
                        .as_bytes(),
                )
                .await;
                assert_eq!(r.status, 200);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut live_order = Vec::new();
    for _ in 0..300 {
        let e = live.next().await;
        live_order.push((e.id.unwrap(), e.data));
    }
    let mut replay = hub.sse("/events?topic=o&last_event_id=earliest").await;
    replay.connected().await;
    let mut replay_order = Vec::new();
    for _ in 0..300 {
        let e = replay.next().await;
        replay_order.push((e.id.unwrap(), e.data));
    }
    assert_eq!(live_order, replay_order);
    assert!(
        live_order.windows(2).all(|w| w[0].0 < w[1].0),
        "ids increase"
    );
    // Each publisher's own events stay in its order.
    for p in 0..6 {
        let mine: Vec<&String> = live_order
            .iter()
            .map(|(_, d)| d)
            .filter(|d| d.starts_with(&format!("{p}:")))
            .collect();
        let expected: Vec<String> = (0..50).map(|i| format!("{p}:{i}")).collect();
        assert_eq!(mine, expected.iter().collect::<Vec<_>>());
    }
    let distinct: HashSet<_> = live_order.iter().map(|(id, _)| id).collect();
    assert_eq!(distinct.len(), 300);
}

/// The real binary: publish, stop it with SIGTERM, start it again on the same data
/// directory, and resume.
#[tokio::test]
async fn resume_after_the_process_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().to_str().unwrap().to_string();
    let args = ["serve", "--listen", "127.0.0.1:0", "--data", &data];
    let mut p = Proc::spawn(&args, &[]);
    let mut ids = Vec::new();
    for i in 0..3 {
        let r = request(
            p.addr,
            "POST",
            "/publish",
            &[("content-type", "application/json")],
            json!({"topic": "boot", "data": i}).to_string().as_bytes(),
        )
        .await;
        assert_eq!(r.status, 200);
        ids.push(r.json()["id"].as_str().unwrap().to_string());
    }
    p.signal("TERM");
    assert_eq!(p.wait_exit(Duration::from_secs(10)), Some(0), "{}", p.log());
    let p2 = Proc::spawn(&args, &[]);
    let r = request(
        p2.addr,
        "POST",
        "/publish",
        &[("content-type", "application/json")],
        json!({"topic": "boot", "data": 3}).to_string().as_bytes(),
    )
    .await;
    let new_id = r.json()["id"].as_str().unwrap().to_string();
    assert!(new_id > ids[2], "{new_id} follows {}", ids[2]);
    let mut s = Sse::open(p2.addr, "/events?topic=boot", &[("Last-Event-ID", &ids[0])]).await;
    s.connected().await;
    assert_eq!(s.next().await.data, "1");
    assert_eq!(s.next().await.data, "2");
    let e = s.next().await;
    assert_eq!(
        (e.data.as_str(), e.id.as_deref()),
        ("3", Some(new_id.as_str()))
    );
}
