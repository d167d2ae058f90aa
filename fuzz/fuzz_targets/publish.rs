//! Publish bodies: never a panic; every accepted event has valid topics, a safe event type
//! and data within the limit; and its SSE encoding reads back as the same event.
#![no_main]
use libfuzzer_sys::fuzz_target;
use runnel::message::{NewEvent, PublishLimits, parse_notify, parse_publish, parse_raw};
use runnel::sse::{Parser, encode_event};
use runnel::topic::validate_topic;

const LIMITS: PublishLimits = PublishLimits {
    max_event_bytes: 4096,
};

fn check(ev: &NewEvent) {
    assert!(!ev.topics.is_empty());
    for t in &ev.topics {
        assert!(validate_topic(t).is_ok(), "{t:?}");
    }
    if let Some(e) = &ev.event {
        assert!(!e.chars().any(char::is_control), "{e:?}");
    }
    assert!(ev.data.len() <= 4096);
    let frame = encode_event(
        "ffffffff-0000000000000001",
        &ev.topics,
        ev.event.as_deref(),
        ev.retry,
        &ev.data,
    );
    let got = Parser::default().feed(&frame);
    assert_eq!(got.len(), 1, "one frame, one event: {frame:?}");
    assert_eq!(got[0].id.as_deref(), Some("ffffffff-0000000000000001"));
    assert_eq!(got[0].event, ev.event);
    assert_eq!(got[0].retry, ev.retry);
    // The SSE format turns CR and CRLF into LF; everything else comes back as it went in.
    let normalized = ev.data.replace("\r\n", "\n").replace('\r', "\n");
    assert_eq!(got[0].data, normalized);
}

fuzz_target!(|data: &[u8]| {
    if let Ok((events, _)) = parse_publish(data, LIMITS) {
        events.iter().for_each(check);
    }
    if let Ok(ev) = parse_notify(data, LIMITS) {
        check(&ev);
    }
    let (head, body) = data.split_at(data.len().min(16));
    if let Ok(topic) = std::str::from_utf8(head) {
        let query = vec![("event".to_string(), String::from_utf8_lossy(body).into_owned())];
        if let Ok(ev) = parse_raw(topic, &query, body, LIMITS) {
            check(&ev);
        }
    }
});
