//! A data directory written by runnel 0.1.0 (format 1) is upgraded in place on first start:
//! ids resume exactly across it, retention's marks stay, and a `kill -9` in the middle of it
//! loses nothing.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use crate::common::v1::{V1, keys_with_prefix};
use crate::common::*;

/// A format 1 log: events 1-6 on `a`, `b` and both; event 2 taken off `b` by retention;
/// a live-only event up to seq 9.
fn old_log(dir: &std::path::Path) -> V1 {
    let v1 = V1::create(dir, 0x0bad_cafe);
    v1.event(1, &["a"], None, "one");
    v1.event(2, &["a", "b"], Some("both"), "two\nlines");
    v1.event(3, &["b"], None, "{\"n\":3}");
    v1.event(4, &["a"], Some("x"), "");
    v1.event(5, &["b"], None, "five");
    v1.event(6, &["a", "b"], None, "six");
    v1.prune("b", 2);
    v1.high_water(9);
    v1
}

#[tokio::test]
async fn a_format_1_directory_is_upgraded_in_place() {
    let tmp = tempfile::tempdir().unwrap();
    let v1 = old_log(tmp.path());
    let id = |s| format!("0badcafe-{s:016x}");
    assert_eq!(v1.id(1), id(1));
    let (id1, id3) = (id(1), id(3));
    let frames: Vec<(String, Vec<&str>, Option<&str>, &str)> = vec![
        (id(2), vec!["a", "b"], Some("both"), "two\nlines"),
        (id(4), vec!["a"], Some("x"), ""),
        (id(6), vec!["a", "b"], None, "six"),
    ];
    v1.close(tmp.path());
    let mut hub = TestHub::start_in(tmp.path(), |_| {}).await;
    // A client of the old hub resumes exactly, and sees the same events as before.
    let mut s = hub
        .sse(&format!("/events?topic=a&last_event_id={id1}"))
        .await;
    s.connected().await;
    for (id, topics, event, data) in &frames {
        let e = s.next().await;
        assert_eq!(e.id.as_deref(), Some(id.as_str()));
        assert_eq!(e.topics, *topics);
        assert_eq!(e.event.as_deref(), *event);
        assert_eq!(e.data, *data);
    }
    // Retention's mark stays: event 2 is gone from `b`, so a client at 1 is told.
    let mut b = hub
        .sse(&format!("/events?topic=b&last_event_id={id1}"))
        .await;
    b.connected().await;
    assert_eq!(b.next().await.json()["reason"], "pruned");
    let mut b = hub
        .sse(&format!("/events?topic=b&last_event_id={id3}"))
        .await;
    b.connected().await;
    let datas: Vec<String> = b
        .until_quiet(Duration::from_millis(300))
        .await
        .into_iter()
        .map(|e| e.data)
        .collect();
    assert_eq!(datas, ["five", "six"]);
    // New ids continue after the old high-water mark.
    let p = hub
        .publish(serde_json::json!({"topic": "a", "data": "new"}))
        .await;
    assert!(p["id"].as_str().unwrap() > id(9).as_str(), "{p}");
    hub.stop().await;
    assert_eq!(
        keys_with_prefix(tmp.path(), b'e'),
        0,
        "no format 1 events are left"
    );
    assert_eq!(keys_with_prefix(tmp.path(), b't'), 0, "nor index entries");
    // Starting again is a plain start.
    let hub = TestHub::start_in(tmp.path(), |_| {}).await;
    let mut s = hub.sse("/events?topic=a&last_event_id=earliest").await;
    s.connected().await;
    let datas: Vec<String> = s
        .until_quiet(Duration::from_millis(300))
        .await
        .into_iter()
        .map(|e| e.data)
        .collect();
    assert_eq!(datas, ["one", "two\nlines", "", "six", "new"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_during_the_upgrade_loses_nothing() {
    const N: u64 = 30_000;
    let tmp = tempfile::tempdir().unwrap();
    let v1 = V1::create(tmp.path(), 0x00c0_ffee);
    for seq in 1..=N {
        let t = ["a", "b", "c"][(seq % 3) as usize];
        v1.event(seq, &[t], None, &format!("event {seq}"));
    }
    v1.close(tmp.path());
    let data = tmp.path().to_str().unwrap().to_string();
    let args = ["--listen", "127.0.0.1:0", "--data", data.as_str()];
    // Retention must not prune while the test reads them all.
    let env = [("RUNNEL_STORE_RETENTION_EVENTS", "1000000")];
    // Killed as soon as the first thousand events have moved.
    let mut child = command(bin(), &args, &env)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    for line in stderr.lines() {
        let line = line.unwrap();
        assert!(
            !line.contains("listening on"),
            "the upgrade ended first: {line}"
        );
        if line.contains("upgrading the data directory to format 2") && line.contains("moved=") {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let (old, new) = (
        keys_with_prefix(tmp.path(), b'e'),
        keys_with_prefix(tmp.path(), b'r'),
    );
    assert!(
        old > 0 && new > 0,
        "stopped in the middle: {old} old events, {new} runs"
    );
    // The next start finishes the upgrade; every event is there, once, in order.
    let p = Proc::spawn(&args, &env);
    let mut s = Sse::open(p.addr, "/events?topic=*&last_event_id=earliest", &[]).await;
    s.connected().await;
    let mut seen = 0u64;
    while seen < N {
        let e = s.next().await;
        seen += 1;
        assert_eq!(e.data, format!("event {seen}"));
    }
    s.assert_quiet(Duration::from_millis(300)).await;
}
