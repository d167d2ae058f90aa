//! SPEC §2, §6.1, §8, §9: the command line, start-up refusals, slow readers, limits and
//! graceful shutdown.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::json;

/// Runs the binary to completion with a clean `RUNNEL_*` environment plus `env`.
fn runnel(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    command(bin(), args, env)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[tokio::test]
async fn shutdown_ends_every_stream_with_a_shutdown_event() {
    let mut hub = TestHub::start().await;
    let mut streams = Vec::new();
    for t in ["a", "b", "c"] {
        let mut s = hub.sse(&format!("/events?topic={t}")).await;
        s.connected().await;
        streams.push(s);
    }
    hub.publish(json!({"topic": "a", "data": "before"})).await;
    let started = Instant::now();
    hub.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    for (i, s) in streams.iter_mut().enumerate() {
        let rest = s.rest(Duration::from_secs(5)).await;
        let last = rest.last().expect("a shutdown event");
        assert!(last.is_control("shutdown"), "{rest:?}");
        assert!(last.json().is_object());
        if i == 0 {
            assert_eq!(
                rest[0].data, "before",
                "queued events go out before shutdown"
            );
        }
        assert!(s.ended);
    }
    // The listener is closed: new connections are refused, not answered 503.
    assert!(tokio::net::TcpStream::connect(hub.addr).await.is_err());
}

#[tokio::test]
async fn sigterm_with_open_streams_exits_zero_within_the_grace_period() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().to_str().unwrap();
    for sig in ["TERM", "INT"] {
        let mut p = Proc::spawn(
            &["--listen", "127.0.0.1:0", "--data", data],
            &[("RUNNEL_STREAM_SHUTDOWN_GRACE", "5s")],
        );
        let mut streams = Vec::new();
        for _ in 0..5 {
            let mut s = Sse::open(p.addr, "/events?topic=x", &[]).await;
            s.connected().await;
            streams.push(s);
        }
        let started = Instant::now();
        p.signal(sig);
        for s in &mut streams {
            let rest = s.rest(Duration::from_secs(5)).await;
            assert!(
                rest.last().is_some_and(|e| e.is_control("shutdown")),
                "{rest:?}"
            );
        }
        assert_eq!(p.wait_exit(Duration::from_secs(6)), Some(0), "{}", p.log());
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(p.log().contains("log flushed"), "{}", p.log());
    }
}

#[tokio::test]
async fn shutdown_does_not_wait_forever_for_a_client_that_never_reads() {
    let hub_dir = tempfile::tempdir().unwrap();
    let mut p = Proc::spawn(
        &[
            "--listen",
            "127.0.0.1:0",
            "--data",
            hub_dir.path().to_str().unwrap(),
        ],
        &[("RUNNEL_STREAM_SHUTDOWN_GRACE", "1s")],
    );
    let mut s = Sse::open(p.addr, "/events?topic=stuck", &[]).await;
    s.connected().await;
    let _stalled = s.into_stream();
    // Fill the stalled client's socket so the shutdown frame cannot be written.
    let big = "x".repeat(60_000);
    for _ in 0..100 {
        let r = request(p.addr, "POST", "/publish/stuck", &[], big.as_bytes()).await;
        assert_eq!(r.status, 200);
    }
    let started = Instant::now();
    p.signal("TERM");
    assert_eq!(p.wait_exit(Duration::from_secs(5)), Some(0), "{}", p.log());
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn an_open_hub_refuses_to_listen_beyond_loopback() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().to_str().unwrap();
    let out = runnel(&["serve", "--listen", "0.0.0.0:0", "--data", data], &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refusing to listen on 0.0.0.0:0"), "{err}");
    assert!(
        err.contains("auth.jwt_secret") && err.contains("auth.required = false"),
        "{err}"
    );
    // Turning auth off on purpose is allowed.
    let p = Proc::spawn(
        &["--listen", "0.0.0.0:0", "--data", data],
        &[("RUNNEL_AUTH_REQUIRED", "false")],
    );
    assert!(p.log().contains("listening"));
}

#[test]
fn check_prints_the_effective_config_with_secrets_masked() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("runnel.toml");
    std::fs::write(
        &file,
        "listen = \"127.0.0.1:9000\"\n[auth]\njwt_secret = \"super-secret-value-that-is-long-enough\"\n[store]\nsync = \"always\"\n",
    )
    .unwrap();
    let out = runnel(
        &["check", "-c", file.to_str().unwrap()],
        &[("RUNNEL_STREAM_HEARTBEAT", "5s")],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(!text.contains("super-secret"), "{text}");
    assert!(text.contains("jwt_secret = \"***\""), "{text}");
    assert!(text.contains("sync = \"always\""), "{text}");
    assert!(text.contains("heartbeat = \"5s\""), "{text}");
    assert!(text.contains("RUNNEL_STREAM_HEARTBEAT"), "{text}");
    // What `check` prints is itself a valid configuration.
    let body: String = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    let reparsed = body.replace("\"***\"", "\"a-real-secret-put-back-9d2f7c1e4b8a6035\"");
    assert!(
        runnel::config::Config::from_toml(&reparsed).is_ok(),
        "{reparsed}"
    );

    std::fs::write(&file, "[stream]\nheartbeet = \"5s\"\n").unwrap();
    let out = runnel(&["check", "-c", file.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("heartbeet"));

    let out = runnel(&["check", "-c", "/nonexistent/runnel.toml"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));

    // RUNNEL_CONFIG is used when no -c is given.
    std::fs::write(&file, "[limits]\nstream_queue = 17\n").unwrap();
    let out = runnel(&["check"], &[("RUNNEL_CONFIG", file.to_str().unwrap())]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("stream_queue = 17"));
}

#[test]
fn a_second_hub_on_the_same_data_dir_gets_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().to_str().unwrap();
    let _first = Proc::spawn(&["--listen", "127.0.0.1:0", "--data", data], &[]);
    let out = runnel(&["--listen", "127.0.0.1:0", "--data", data], &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot open the store") && err.contains("another runnel"),
        "{err}"
    );
}

#[test]
fn version_and_help() {
    let out = runnel(&["--version"], &[]);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("runnel "));
    let out = runnel(&["--help"], &[]);
    let help = String::from_utf8_lossy(&out.stdout);
    for cmd in ["serve", "check", "pub", "sub"] {
        assert!(help.contains(cmd), "{help}");
    }
}

#[tokio::test]
async fn a_slow_reader_is_cut_off_and_others_get_everything() {
    let hub = TestHub::start_with(|c| c.limits.stream_queue = 8).await;
    let mut slow = hub.sse("/events?topic=firehose").await;
    slow.connected().await;
    let stalled = slow.into_stream();
    let mut fast = hub.sse("/events?topic=firehose").await;
    fast.connected().await;
    let addr = hub.addr;
    let reader = tokio::spawn(async move {
        let mut n = 0;
        while n < 400 {
            let e = fast.next().await;
            assert_eq!(e.data.len(), 50_000, "{:?}", e.event);
            n += 1;
        }
        // Kept open: the stats below must still count it.
        (n, fast)
    });
    let data = "z".repeat(50_000);
    let mut worst = Duration::ZERO;
    for _ in 0..400 {
        let t = Instant::now();
        let r = request(addr, "POST", "/publish/firehose", &[], data.as_bytes()).await;
        worst = worst.max(t.elapsed());
        assert_eq!(r.status, 200);
    }
    let (n, _fast) = reader.await.unwrap();
    assert_eq!(n, 400);
    assert!(worst < Duration::from_secs(2), "a publish took {worst:?}");
    let s = hub.get("/stats").await.json();
    assert_eq!(s["events"]["dropped_slow_streams"], 1, "{s}");
    assert_eq!(
        s["connections"]["total"], 1,
        "only the fast reader is left: {s}"
    );
    drop(stalled);
}

/// `runnel sub` prints events, and after the hub restarts it resumes where it stopped.
#[tokio::test]
async fn cli_pub_and_sub_resume_across_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().to_str().unwrap().to_string();
    let p = Proc::spawn(
        &["--listen", "127.0.0.1:0", "--data", &data],
        &[("RUNNEL_STREAM_RETRY", "300ms")],
    );
    let url = format!("http://{}", p.addr);
    let mut sub = Command::new(bin())
        .args(["sub", "news", "--url", &url])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<serde_json::Value>();
    let stdout = sub.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(serde_json::from_str(&line).expect("JSON lines"));
        }
    });
    let publish = |url: &str, data: &str| {
        let out = runnel(
            &["pub", "news", data, "--event", "headline", "--url", url],
            &[],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    // The subscriber may not be connected yet: publish until it sees something.
    let mut first = None;
    for i in 0..50 {
        publish(&url, &format!("warmup {i}"));
        if let Ok(v) = rx.recv_timeout(Duration::from_millis(200)) {
            first = Some(v);
            break;
        }
    }
    let first = first.expect("runnel sub printed nothing");
    assert_eq!(first["event"], "headline");
    while rx.recv_timeout(Duration::from_millis(300)).is_ok() {}
    let a = publish(&url, "A");
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(5)).unwrap()["data"],
        "A"
    );

    // Restart the hub on the same port; publish while the subscriber is away.
    let port = p.addr.port().to_string();
    drop(p);
    let listen = format!("127.0.0.1:{port}");
    let p2 = Proc::spawn(&["--listen", &listen, "--data", &data], &[]);
    let b = publish(&url, "B");
    let c = publish(&url, "C");
    let got_b = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let got_c = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(
        (got_b["data"].as_str(), got_b["id"].as_str()),
        (Some("B"), b["id"].as_str())
    );
    assert_eq!(
        (got_c["data"].as_str(), got_c["id"].as_str()),
        (Some("C"), c["id"].as_str())
    );
    assert!(
        rx.recv_timeout(Duration::from_millis(500)).is_err(),
        "no duplicates"
    );
    assert!(a["id"].as_str() < b["id"].as_str());
    // Data from standard input.
    let mut child = Command::new(bin())
        .args(["pub", "news", "--url", &url])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"from stdin\n")
        .unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(5)).unwrap()["data"],
        "from stdin"
    );
    // Errors from the hub are shown, with a failing exit code.
    let out = runnel(&["pub", "bad topic", "x", "--url", &url], &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("400 Bad Request"));
    let _ = sub.kill();
    let _ = sub.wait();
    drop(p2);
}

/// `runnel sub` prints one JSON object per event with its topics and its data as the JSON
/// value it holds, so `jq` needs one pass; `--raw` keeps the data as text.
#[tokio::test]
async fn cli_sub_prints_data_as_json_values() {
    let hub = TestHub::start().await;
    hub.publish(serde_json::json!({"topics": ["x", "y"], "event": "e", "data": {"n": 1}}))
        .await;
    hub.publish(serde_json::json!({"topic": "x", "data": "plain text"}))
        .await;
    let url = format!("http://{}", hub.addr);
    let first_lines = |extra: &'static str| {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            let mut args = vec!["sub", "x", "--last-event-id", "earliest", "--url", &url];
            if !extra.is_empty() {
                args.push(extra);
            }
            let mut child = Command::new(bin())
                .args(&args)
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
            let got: Vec<String> = (0..2).map(|_| lines.next().unwrap().unwrap()).collect();
            let _ = child.kill();
            let _ = child.wait();
            got
        })
    };
    let json = first_lines("").await.unwrap();
    let v: serde_json::Value = serde_json::from_str(&json[0]).unwrap();
    assert_eq!(v["data"], serde_json::json!({"n": 1}), "{v}");
    assert_eq!(v["topics"], serde_json::json!(["x", "y"]));
    assert_eq!(v["event"], "e");
    let v: serde_json::Value = serde_json::from_str(&json[1]).unwrap();
    assert_eq!(v["data"], "plain text");
    let raw = first_lines("--raw").await.unwrap();
    let v: serde_json::Value = serde_json::from_str(&raw[0]).unwrap();
    assert_eq!(v["data"], "{\"n\":1}", "{v}");
    assert!(v.get("topics").is_none());
}
