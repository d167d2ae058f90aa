//! SPEC §9: systemd readiness, watchdog and reload, through the real binary.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use crate::common::*;

/// Reads notify datagrams until one equals `want` (or panics after `t`); returns all seen.
fn expect(sock: &UnixDatagram, want: &str, t: Duration) -> Vec<String> {
    let deadline = Instant::now() + t;
    let mut seen = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no {want:?} within {t:?}; saw {seen:?}");
        sock.set_read_timeout(Some(left)).unwrap();
        let Ok(n) = sock.recv(&mut buf) else { continue };
        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
        let done = msg == want;
        seen.push(msg);
        if done {
            return seen;
        }
    }
}

#[test]
fn ready_watchdog_reload_and_stopping_are_notified() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    let data = tmp.path().join("data");
    let mut p = Proc::spawn(
        &["--listen", "127.0.0.1:0", "--data", data.to_str().unwrap()],
        &[
            ("NOTIFY_SOCKET", path.to_str().unwrap()),
            ("WATCHDOG_USEC", "200000"),
        ],
    );
    expect(&sock, "READY=1\nSTATUS=serving", Duration::from_secs(5));
    // Half of WATCHDOG_USEC: several pings in a second.
    let started = Instant::now();
    for _ in 0..3 {
        expect(&sock, "WATCHDOG=1", Duration::from_secs(2));
    }
    assert!(started.elapsed() < Duration::from_secs(2));
    p.signal("HUP");
    let seen = expect(&sock, "READY=1", Duration::from_secs(5));
    assert!(seen.contains(&"RELOADING=1".to_string()), "{seen:?}");
    p.signal("TERM");
    expect(&sock, "STOPPING=1", Duration::from_secs(5));
    assert_eq!(p.wait_exit(Duration::from_secs(10)), Some(0));
}

#[test]
fn abstract_notify_sockets_work_and_foreign_watchdogs_are_ignored() {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("runnel-test-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let sock = UnixDatagram::bind_addr(&addr).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let notify = format!("@{name}");
    let _p = Proc::spawn(
        &[
            "--listen",
            "127.0.0.1:0",
            "--data",
            tmp.path().to_str().unwrap(),
        ],
        &[
            ("NOTIFY_SOCKET", notify.as_str()),
            ("WATCHDOG_USEC", "100000"),
            // The watchdog is meant for another process: none is sent.
            ("WATCHDOG_PID", "1"),
        ],
    );
    expect(&sock, "READY=1\nSTATUS=serving", Duration::from_secs(5));
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 64];
    assert!(
        sock.recv(&mut buf).is_err(),
        "no watchdog pings for another pid"
    );
}

/// Waits (5 s at most) for `needle` in the hub's log; fails with the log.
async fn wait_for_log(p: &Proc, needle: &str) {
    assert!(
        eventually(Duration::from_secs(5), async || p.log().contains(needle)).await,
        "no {needle:?} in the log:\n{}",
        p.log()
    );
}

#[tokio::test]
async fn sighup_reloads_the_log_level_and_names_what_needs_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("runnel.toml");
    let data = tmp.path().join("data");
    let conf = |log: &str, heartbeat: &str| {
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\nlog = \"{log}\"\n[stream]\nheartbeat = \"{heartbeat}\"\n",
            data.display()
        )
    };
    std::fs::write(&file, conf("info", "15s")).unwrap();
    let p = Proc::spawn(&["-c", file.to_str().unwrap()], &[]);
    let mut s = Sse::open(p.addr, "/events?topic=before", &[]).await;
    s.connected().await;
    let r = request(p.addr, "POST", "/publish/before", &[], b"at info").await;
    assert_eq!(r.status, 200);
    assert_eq!(s.next().await.data, "at info");
    assert!(!p.log().contains("published"), "no debug lines at info");
    std::fs::write(&file, conf("debug", "20s")).unwrap();
    p.signal("HUP");
    wait_for_log(&p, "configuration reloaded").await;
    assert!(p.log().contains("stream.heartbeat"), "{}", p.log());
    // The open stream survived the reload; new debug lines appear.
    let mut s2 = Sse::open(p.addr, "/events?topic=after", &[]).await;
    s2.connected().await;
    let r = request(p.addr, "POST", "/publish/before", &[], b"still here").await;
    assert_eq!(r.status, 200);
    assert_eq!(s.next().await.data, "still here");
    wait_for_log(&p, "published").await;
    // A broken file is refused; the hub keeps running on what it has.
    std::fs::write(&file, "log = [").unwrap();
    p.signal("HUP");
    wait_for_log(&p, "reload failed").await;
    assert_eq!(
        request(p.addr, "GET", "/health", &[], b"").await.status,
        200
    );
}
