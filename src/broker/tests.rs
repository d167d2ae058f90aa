//! The broker's clocks, on tokio's paused clock (heartbeat, session TTL) and with the wall
//! clock handed in (credential expiry, which compares with the token's own times).

use std::future::poll_fn;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;

use super::*;
use crate::event::Format;

fn spec(user: Option<&str>, expires_at: Option<u64>) -> StreamSpec {
    StreamSpec {
        user: user.map(str::to_string),
        admin: false,
        ip: std::net::Ipv4Addr::LOCALHOST.into(),
        topics: vec!["t".into()],
        expires_at,
        format: crate::event::Format::Sse,
        filter: None,
    }
}

/// What the stream writes next, or `None` if it would wait.
async fn next_now(sub: &Subscriber, broker: &Broker) -> Option<Option<Bytes>> {
    poll_fn(|cx| {
        Poll::Ready(
            match sub.poll_next(cx, broker.now_ms(), Format::Sse, &mut 0) {
                Poll::Ready(b) => Some(b),
                Poll::Pending => None,
            },
        )
    })
    .await
}

#[tokio::test(start_paused = true)]
async fn a_silent_stream_gets_a_keepalive_each_heartbeat() {
    let broker = Broker::new(BrokerLimits::small(), 0);
    let sub = broker.register(spec(None, None), |_| true).unwrap().sub;
    broker.tick();
    tokio::time::advance(Duration::from_millis(999)).await;
    broker.tick();
    assert!(
        next_now(&sub, &broker).await.is_none(),
        "not silent long enough"
    );
    tokio::time::advance(Duration::from_millis(1)).await;
    broker.tick();
    let b = next_now(&sub, &broker).await.unwrap().unwrap();
    assert_eq!(&b[..], b": keepalive\n\n");
    // The write counts as activity: the next keepalive is a heartbeat later.
    tokio::time::advance(Duration::from_millis(500)).await;
    broker.tick();
    assert!(next_now(&sub, &broker).await.is_none());
    tokio::time::advance(Duration::from_millis(500)).await;
    broker.tick();
    assert!(next_now(&sub, &broker).await.is_some());
}

#[tokio::test(start_paused = true)]
async fn a_session_outlives_its_streams_by_the_ttl() {
    let broker = Broker::new(BrokerLimits::small(), 0);
    let first = broker.register(spec(Some("al"), None), |_| true).unwrap();
    broker.session_subscribe("al", &["news".into()]).unwrap();
    tokio::time::advance(Duration::from_secs(5)).await;
    broker.tick();
    // The user's last stream closes: the session's idle time starts now.
    broker.unregister(&first.sub);
    tokio::time::advance(Duration::from_millis(999)).await;
    broker.tick();
    let again = broker.register(spec(Some("al"), None), |_| true).unwrap();
    assert!(again.topics.contains(&"news".to_string()), "within the TTL");
    broker.unregister(&again.sub);
    tokio::time::advance(Duration::from_millis(1000)).await;
    broker.tick();
    let later = broker.register(spec(Some("al"), None), |_| true).unwrap();
    assert!(
        !later.topics.contains(&"news".to_string()),
        "forgotten after it"
    );
}

#[tokio::test(start_paused = true)]
async fn a_stream_ends_when_its_credential_expires() {
    let broker = Broker::new(BrokerLimits::small(), 0);
    let wall = 1_700_000_000_000;
    let sub = broker
        .register(spec(Some("al"), Some(wall + 5000)), |_| true)
        .unwrap()
        .sub;
    broker.tick_at(wall + 4999);
    assert_eq!(broker.connections().len(), 1);
    assert!(next_now(&sub, &broker).await.is_none());
    broker.tick_at(wall + 5000);
    assert!(
        broker.connections().is_empty(),
        "out of the registry at once"
    );
    let last = next_now(&sub, &broker).await.unwrap().unwrap();
    assert!(last.starts_with(b"event: closed\n"), "{last:?}");
    assert!(String::from_utf8_lossy(&last).contains("token_expired"));
    assert_eq!(next_now(&sub, &broker).await, Some(None), "then the end");
}
