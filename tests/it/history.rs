//! SPEC §5.7: `GET /history`, pages of retained events.

use serde_json::{Value, json};

use crate::common::*;

async fn history(hub: &TestHub, query: &str) -> Value {
    let r = hub.get(&format!("/history?{query}")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

fn datas(page: &Value) -> Vec<Value> {
    page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["data"].clone())
        .collect()
}

#[tokio::test]
async fn events_come_oldest_first_with_their_data_as_published() {
    let hub = TestHub::start().await;
    let first = hub
        .publish(json!({"topic": "a", "event": "up", "data": {"n": 1}}))
        .await;
    hub.publish(json!({"topic": "b", "data": "other topic"}))
        .await;
    hub.publish(json!({"topic": "a", "data": "text"})).await;
    hub.publish(json!({"topics": ["a", "b"], "data": 42})).await;
    let r = hub.post_json("/publish/a", &json!("ignored")).await.json();
    assert!(r["id"].is_string(), "{r}");
    let page = history(&hub, "topic=a").await;
    assert_eq!(page["next"], Value::Null);
    let events = page["events"].as_array().unwrap();
    assert_eq!(events[0]["id"], first["id"]);
    assert_eq!(events[0]["event"], "up");
    assert_eq!(events[0]["topics"], json!(["a"]));
    assert_eq!(events[1]["event"], Value::Null);
    assert_eq!(events[2]["topics"], json!(["a", "b"]));
    assert_eq!(
        datas(&page),
        [
            json!({"n": 1}),
            json!("text"),
            json!(42),
            json!("\"ignored\"")
        ],
        "a JSON string stays a string, a raw body is text"
    );
    let time = events[0]["time"].as_str().unwrap();
    assert!(time.len() == 24 && time.ends_with('Z'), "{time}");
    assert_eq!(datas(&history(&hub, "topic=a&topic=b").await).len(), 5);
}

#[tokio::test]
async fn pages_follow_next_and_after() {
    let hub = TestHub::start().await;
    for i in 0..5 {
        hub.publish(json!({"topic": "p", "data": i})).await;
    }
    let mut seen = Vec::new();
    let mut query = "topic=p&limit=2".to_string();
    loop {
        let page = history(&hub, &query).await;
        seen.extend(datas(&page));
        match page["next"].as_str() {
            Some(next) => query = format!("topic=p&limit=2&after={next}"),
            None => break,
        }
    }
    assert_eq!(seen, [json!(0), json!(1), json!(2), json!(3), json!(4)]);
    let capped = history(&hub, "topic=p&limit=100000").await;
    assert_eq!(datas(&capped).len(), 5, "a limit above 1000 is 1000");
}

#[tokio::test]
async fn a_pruned_or_foreign_after_says_reset() {
    let hub = TestHub::start_with(|c| c.store.retention_events = 3).await;
    let first = hub.publish(json!({"topic": "r", "data": 0})).await;
    for i in 1..6 {
        hub.publish(json!({"topic": "r", "data": i})).await;
    }
    assert!(
        eventually(std::time::Duration::from_secs(5), async || {
            datas(&history(&hub, "topic=r").await).len() == 3
        })
        .await,
        "retention keeps three"
    );
    let id = first["id"].as_str().unwrap();
    let page = history(&hub, &format!("topic=r&after={id}")).await;
    assert_eq!(
        page["reset"],
        json!({"reason": "pruned", "last_event_id": id})
    );
    assert_eq!(datas(&page), [json!(3), json!(4), json!(5)]);
    let foreign = "00000001-0000000000000001";
    let page = history(&hub, &format!("topic=r&after={foreign}")).await;
    assert_eq!(page["reset"]["reason"], "unknown_id");
    assert_eq!(datas(&page).len(), 3);
    assert!(history(&hub, "topic=r").await.get("reset").is_none());
}

#[tokio::test]
async fn since_takes_a_duration_or_a_time() {
    let hub = TestHub::start().await;
    hub.publish(json!({"topic": "s", "data": 1})).await;
    assert_eq!(datas(&history(&hub, "topic=s&since=10m").await).len(), 1);
    let past = "2000-01-01T00:00:00Z";
    assert_eq!(
        datas(&history(&hub, &format!("topic=s&since={past}")).await).len(),
        1
    );
    let future = "2999-01-01T00:00:00%2B01:00";
    assert!(datas(&history(&hub, &format!("topic=s&since={future}")).await).is_empty());
}

#[tokio::test]
async fn bad_queries_are_400_and_permissions_are_a_streams() {
    let hub = secure_hub().await;
    let alice = bearer(&jwt(json!({"sub": "alice", "exp": now() + 60})));
    let get = |q: &'static str, auth: Vec<(&'static str, String)>| {
        let addr = hub.addr;
        async move {
            let h: Vec<(&str, &str)> = auth.iter().map(|(k, v)| (*k, v.as_str())).collect();
            request(addr, "GET", &format!("/history?{q}"), &h, b"").await
        }
    };
    let me = || vec![("authorization", alice.clone())];
    for (q, why) in [
        ("", "name at least one topic"),
        ("topic=a&since=soon", "since="),
        ("topic=a&since=1m&after=x", "not both"),
        ("topic=a&limit=0", "limit="),
        ("topic=a&color=red", "unknown query parameter"),
        ("topic=a%20b", "topic"),
    ] {
        let r = get(q, me()).await;
        assert_eq!(r.status, 400, "{q}: {}", r.text());
        assert!(
            r.json()["error"]["message"].as_str().unwrap().contains(why),
            "{q}: {}",
            r.text()
        );
    }
    assert_eq!(get("topic=a", vec![]).await.status, 401);
    assert_eq!(get("topic=user/bob", me()).await.status, 403);
    assert_eq!(get("topic=user/alice&topic=a", me()).await.status, 200);
    // Every stream receives `$broadcast`: so does the history of one that may read only news.
    let news = bearer(&jwt(
        json!({"sub": "carol", "exp": now() + 60, "subscribe": ["news"]}),
    ));
    let only_news = || vec![("authorization", news.clone())];
    assert_eq!(
        get("topic=news&topic=%24broadcast", only_news())
            .await
            .status,
        200
    );
    assert_eq!(get("topic=%24broadcast", only_news()).await.status, 200);
    assert_eq!(get("topic=sport", only_news()).await.status, 403);
    assert_eq!(get("topic=%24broadcast", vec![]).await.status, 401);
}
