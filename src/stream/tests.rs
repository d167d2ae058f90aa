//! Replay joined to live, and replay racing retention, on a real log and broker.

use std::future::poll_fn;
use std::sync::Arc;

use super::*;
use crate::auth::Auth;
use crate::broker::BrokerLimits;
use crate::config::{Config, StoreConfig};
use crate::store::testing::{append_all, event};
use crate::store::{Log, SledLog};

/// Opens a stream on `t` for an open hub's caller.
fn open_on_t(streams: &Streams, last_event_id: &str, format: Format) -> Subscription {
    let caller = Auth::new(&Config::default())
        .unwrap()
        .authenticate(&http::Request::new(()).into_parts().0, false)
        .unwrap();
    let req = StreamRequest {
        named: vec!["t".into()],
        last_event_id: Some(last_event_id.into()),
        ip: std::net::Ipv4Addr::LOCALHOST.into(),
        format,
        filter: None,
    };
    streams.open(&caller, req).unwrap()
}

/// A log of 10 events on `t` (retention keeps 5), and a stream on `t` resuming after
/// event 2.
fn resume_after_2(dir: &std::path::Path) -> (Arc<SledLog>, Streams, Subscription) {
    let cfg = StoreConfig {
        retention_events: 5,
        ..StoreConfig::default()
    };
    let log = Arc::new(SledLog::open(dir, &cfg).unwrap());
    log.count_existing().unwrap();
    let events: Vec<_> = (1..=10)
        .map(|s| event(&*log, s, &["t"], &s.to_string(), crate::time::unix_ms()))
        .collect();
    append_all(&*log, &events);
    let streams = Streams::new(Broker::new(BrokerLimits::small(), 10), log.clone(), 10, 500);
    let sub = open_on_t(&streams, &log.ids().format(2), Format::Sse);
    (log, streams, sub)
}

async fn next_text(sub: &mut Subscription) -> String {
    let b = poll_fn(|cx| sub.poll_next(cx)).await.unwrap();
    String::from_utf8(b.to_vec()).unwrap()
}

fn datas(text: &str) -> Vec<&str> {
    text.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect()
}

#[tokio::test]
async fn replay_continues_when_nothing_was_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, _streams, mut sub) = resume_after_2(dir.path());
    let opening = next_text(&mut sub).await;
    assert!(
        opening.starts_with("retry: 500\n\nevent: connected\n"),
        "{opening}"
    );
    let replay = next_text(&mut sub).await;
    assert_eq!(datas(&replay), ["3", "4", "5", "6", "7", "8", "9", "10"]);
}

#[tokio::test]
async fn retention_racing_a_replay_gives_a_reset_not_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _streams, mut sub) = resume_after_2(dir.path());
    next_text(&mut sub).await;
    // Retention runs between the stream's opening and its replay: events 1-5 go.
    let pruned = log.enforce_retention(crate::time::unix_ms()).unwrap();
    assert_eq!(pruned.by_count, 5);
    let reset = next_text(&mut sub).await;
    assert!(reset.starts_with("event: reset\n"), "{reset}");
    assert!(reset.contains(r#""reason":"pruned""#), "{reset}");
    let replay = next_text(&mut sub).await;
    assert_eq!(datas(&replay), ["6", "7", "8", "9", "10"]);
}

/// A stream opened with `envelope` gets its replay, and live events, wrapped.
#[tokio::test]
async fn envelope_streams_wrap_replay_and_live_events() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(SledLog::open(dir.path(), &StoreConfig::default()).unwrap());
    append_all(&*log, &[event(&*log, 1, &["t"], "old", 1)]);
    let broker = Broker::new(BrokerLimits::small(), 1);
    let streams = Streams::new(broker.clone(), log.clone(), 10, 500);
    let mut sub = open_on_t(&streams, "earliest", Format::SseEnvelope);
    next_text(&mut sub).await;
    assert_eq!(
        datas(&next_text(&mut sub).await),
        [r#"{"topics":["t"],"data":"old"}"#]
    );
    broker.fan_out(&event(&*log, 2, &["t"], "new", 2));
    assert_eq!(
        datas(&next_text(&mut sub).await),
        [r#"{"topics":["t"],"data":"new"}"#]
    );
}
