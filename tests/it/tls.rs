//! `[tls]`: HTTPS with ALPN h2 and http/1.1, many streams on one HTTP/2 connection, resume
//! over h2, certificate reload with streams open, and clear errors for bad files.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::tls::*;
use crate::common::*;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use runnel::config::TlsConfig;
use serde_json::json;
use tokio::net::TcpStream;

#[tokio::test]
async fn http1_and_http2_streams_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, ca) = make_cert(dir.path(), "a");
    let hub = tls_hub(&cert, &key).await;

    // HTTP/1.1 over TLS.
    let tls = connect(hub.addr, &[&ca], &[b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let resp = send
        .send_request(get("/events?topic=t1", &[]))
        .await
        .unwrap();
    let mut s1 = Events::new(resp);
    s1.connected().await;

    // HTTP/2.
    let mut send2 = h2(hub.addr, &ca).await;
    let resp = send2
        .send_request(get("/events?topic=t1", &[]))
        .await
        .unwrap();
    assert_eq!(resp.version(), hyper::Version::HTTP_2);
    let mut s2 = Events::new(resp);
    s2.connected().await;

    let sent = publish(&hub, &ca, json!({"topic": "t1", "data": "over tls"})).await;
    for s in [&mut s1, &mut s2] {
        let e = s.next().await;
        assert_eq!(e.data, "over tls");
        assert_eq!(e.id.as_deref(), sent["id"].as_str());
    }
    // Plain HTTP to a TLS port is not answered as HTTP.
    let r = tokio::time::timeout(
        Duration::from_secs(5),
        raw_request(hub.addr, b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n"),
    )
    .await
    .expect("the hub closes a plaintext connection");
    assert!(
        !r.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&r)
    );
}

#[tokio::test]
async fn many_streams_share_one_http2_connection() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, ca) = make_cert(dir.path(), "a");
    let hub = tls_hub(&cert, &key).await;
    let send = h2(hub.addr, &ca).await;
    let mut streams = Vec::new();
    for i in 0..24 {
        let mut send = send.clone();
        let resp = send
            .send_request(get(&format!("/events?topic=room{i}"), &[]))
            .await
            .unwrap();
        let mut s = Events::new(resp);
        s.connected().await;
        streams.push(s);
    }
    assert_eq!(open_streams(&hub, &ca).await, 24);
    for i in 0..24 {
        publish(
            &hub,
            &ca,
            json!({"topic": format!("room{i}"), "data": format!("hello {i}")}),
        )
        .await;
    }
    publish(&hub, &ca, json!({"broadcast": true, "data": "all"})).await;
    for (i, s) in streams.iter_mut().enumerate() {
        assert_eq!(s.next().await.data, format!("hello {i}"));
        assert_eq!(s.next().await.data, "all");
    }
}

#[tokio::test]
async fn resume_with_last_event_id_over_http2() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, ca) = make_cert(dir.path(), "a");
    let hub = tls_hub(&cert, &key).await;
    let ids: Vec<String> = {
        let mut v = Vec::new();
        for i in 0..4 {
            let r = publish(&hub, &ca, json!({"topic": "log", "data": i})).await;
            v.push(r["id"].as_str().unwrap().to_string());
        }
        v
    };
    let mut send = h2(hub.addr, &ca).await;
    let resp = send
        .send_request(get("/events?topic=log", &[("last-event-id", &ids[1])]))
        .await
        .unwrap();
    let mut s = Events::new(resp);
    assert_eq!(s.connected().await["last_event_id"], ids[1]);
    assert_eq!(s.next().await.id.as_deref(), Some(ids[2].as_str()));
    assert_eq!(s.next().await.id.as_deref(), Some(ids[3].as_str()));
    let live = publish(&hub, &ca, json!({"topic": "log", "data": "live"})).await;
    let e = s.next().await;
    assert_eq!(
        (e.id.as_deref(), e.data.as_str()),
        (live["id"].as_str(), "live")
    );
}

#[tokio::test]
async fn certificate_reload_keeps_open_streams() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, ca_a) = make_cert(dir.path(), "live");
    let hub = tls_hub(&cert, &key).await;
    let mut send = h2(hub.addr, &ca_a).await;
    let resp = send
        .send_request(get("/events?topic=r", &[]))
        .await
        .unwrap();
    let mut s = Events::new(resp);
    s.connected().await;

    // A renewed certificate (new key too) replaces the files, then a reload.
    let (_, _, ca_b) = make_cert(dir.path(), "next");
    std::fs::copy(dir.path().join("next.crt"), &cert).unwrap();
    std::fs::copy(dir.path().join("next.key"), &key).unwrap();
    hub.running().reload_tls().unwrap();
    let fresh = connect(hub.addr, &[&ca_a, &ca_b], &[b"h2"]).await;
    assert_eq!(
        peer_cert(&fresh),
        der_of(&ca_b),
        "new connections get the new certificate"
    );

    // The stream opened before the reload still gets events.
    publish(&hub, &ca_b, json!({"topic": "r", "data": "after reload"})).await;
    assert_eq!(s.next().await.data, "after reload");

    // A broken file is reported, and the running certificate stays.
    std::fs::write(&key, "not a key").unwrap();
    let e = hub.running().reload_tls().unwrap_err().to_string();
    assert!(e.contains("tls.key"), "{e}");
    let again = connect(hub.addr, &[&ca_b], &[b"http/1.1"]).await;
    assert_eq!(peer_cert(&again), der_of(&ca_b));
}

/// SIGHUP (what `systemctl reload` sends) reloads the certificate of a running `runnel`.
#[tokio::test]
async fn sighup_reloads_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, ca_a) = make_cert(dir.path(), "live");
    let conf = dir.path().join("runnel.toml");
    std::fs::write(
        &conf,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = {:?}\n[tls]\ncert = {:?}\nkey = {:?}\n",
            dir.path().join("data"),
            cert,
            key
        ),
    )
    .unwrap();
    let p = Proc::spawn(&["serve", "-c", conf.to_str().unwrap()], &[]);
    assert!(p.log().contains("listening on https://"), "{}", p.log());
    let first = connect(p.addr, &[&ca_a], &[b"h2"]).await;
    assert_eq!(peer_cert(&first), der_of(&ca_a));
    let (_, _, ca_b) = make_cert(dir.path(), "next");
    std::fs::copy(dir.path().join("next.crt"), &cert).unwrap();
    std::fs::copy(dir.path().join("next.key"), &key).unwrap();
    p.signal("HUP");
    assert!(
        eventually(Duration::from_secs(5), async || {
            p.log().contains("TLS certificate reloaded")
        })
        .await,
        "{}",
        p.log()
    );
    let second = connect(p.addr, &[&ca_b], &[b"h2"]).await;
    assert_eq!(peer_cert(&second), der_of(&ca_b));
    p.signal("TERM");
}

/// Each bad certificate or key stops the start with a message naming the file and the
/// problem (and no panic).
#[tokio::test]
async fn bad_certificates_and_keys_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, _) = make_cert(dir.path(), "good");
    let (_, other_key, _) = make_cert(dir.path(), "other");
    let missing = dir.path().join("missing.pem");
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let cases = [
        (missing.clone(), key.clone(), "tls.cert"),
        (cert.clone(), missing.clone(), "tls.key"),
        (empty.clone(), key.clone(), "no PEM certificate"),
        (cert.clone(), empty.clone(), "no PEM private key"),
        (cert.clone(), other_key.clone(), "does not belong"),
    ];
    for (c, k, want) in cases {
        let config = runnel::config::Config {
            listen: "127.0.0.1:0".into(),
            data_dir: dir.path().join("data"),
            tls: Some(TlsConfig {
                cert: c.clone(),
                key: k.clone(),
            }),
            ..Default::default()
        };
        config.validate().unwrap();
        let err = match runnel::server::start(config).await {
            Ok(_) => panic!("started with {c:?} {k:?}"),
            Err(e) => format!("{e:#}"),
        };
        assert!(err.contains(want), "{c:?} {k:?}: {err}");
    }
    // The binary says the same and exits non-zero.
    let out = std::process::Command::new(bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path().join("data2"))
        .env("RUNNEL_TLS_CERT", &cert)
        .env("RUNNEL_TLS_KEY", &other_key)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("does not belong"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// PKCS#8, PKCS#1 (RSA) and SEC1 (EC) keys all load and serve (fixtures made with openssl,
/// see tests/fixtures/tls/README.md).
#[tokio::test]
async fn pkcs8_pkcs1_and_sec1_keys_are_accepted() {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls");
    for (cert, key, marker) in [
        ("rsa.crt", "rsa-pkcs8.key", "BEGIN PRIVATE KEY"),
        ("rsa.crt", "rsa-pkcs1.key", "BEGIN RSA PRIVATE KEY"),
        ("ec.crt", "ec-pkcs8.key", "BEGIN PRIVATE KEY"),
        ("ec.crt", "ec-sec1.key", "BEGIN EC PRIVATE KEY"),
    ] {
        let pem = std::fs::read_to_string(d.join(key)).unwrap();
        assert!(pem.contains(marker), "{key}: {pem}");
        let ca = std::fs::read_to_string(d.join(cert)).unwrap();
        let hub = tls_hub(&d.join(cert), &d.join(key)).await;
        let mut send = h2(hub.addr, &ca).await;
        let resp = send.send_request(get("/health", &[])).await.unwrap();
        assert_eq!(resp.status(), 200, "{cert} with {key}");
    }
}

/// Over HTTPS the auth cookie is `Secure`.
#[tokio::test]
async fn the_auth_cookie_is_secure_over_https() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, ca) = make_cert(dir.path(), "a");
    let secret = "a-test-secret-that-is-long-enough-0123456789";
    let hub = TestHub::start_with(|c| {
        c.tls = Some(TlsConfig { cert, key });
        c.auth.jwt_secret = Some(runnel::config::Secret::new(secret));
    })
    .await;
    let jwt = jwt_with(
        secret,
        jsonwebtoken::Algorithm::HS256,
        json!({"sub": "ann", "exp": now() + 600}),
    );
    let mut send = h2(hub.addr, &ca).await;
    let req = hyper::Request::post("https://localhost/auth/cookie")
        .header("authorization", format!("Bearer {jwt}"))
        .body(Full::default())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let set = resp.headers()["set-cookie"].to_str().unwrap();
    assert!(set.ends_with("; Secure"), "{set}");
    assert!(set.contains("HttpOnly"), "{set}");
}

/// `runnel cert --self-signed` writes a usable pair, the key private to its owner, and keeps
/// existing files unless told.
#[test]
fn runnel_cert_writes_a_usable_pair() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    let run = |extra: &[&str]| {
        std::process::Command::new(bin())
            .args(["cert", "--self-signed", "--hosts", "pi.local,192.168.1.10"])
            .arg("--cert")
            .arg(&cert)
            .arg("--key")
            .arg(&key)
            .args(extra)
            .output()
            .unwrap()
    };
    let out = run(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("SHA-256 fingerprint: "), "{said}");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    runnel::tls::server_config(&cert, &key).unwrap();
    let again = run(&[]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(run(&["--force"]).status.success());
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // Refusals, each with its reason: `runnel cert <args>` must fail and say `why`.
    let refused = |args: &[&str], why: &str| {
        let out = std::process::Command::new(bin())
            .arg("cert")
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(said.contains(why), "{args:?}: {said}");
    };
    refused(
        &["--self-signed", "--hosts", "not a host"],
        "neither a host name",
    );
    refused(&["--hosts", "pi.local"], "pass --self-signed");
    assert!(!dir.path().join("runnel.crt").exists() && !dir.path().join("runnel.key").exists());
}

/// A connection that never finishes its handshake is closed after `limits.request_timeout`;
/// a shutdown ends HTTP/2 streams with `event: shutdown`, like plain ones.
#[tokio::test]
async fn silent_handshakes_time_out_and_shutdown_ends_h2_streams() {
    use tokio::io::AsyncReadExt;
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, ca) = make_cert(dir.path(), "a");
    let mut hub = TestHub::start_with(move |c| {
        c.tls = Some(TlsConfig { cert, key });
        c.limits.request_timeout = runnel::config::Dur(Duration::from_millis(300));
    })
    .await;
    let mut silent = TcpStream::connect(hub.addr).await.unwrap();
    let started = std::time::Instant::now();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf))
        .await
        .expect("closed within 5 s")
        .unwrap_or(0);
    assert_eq!(n, 0, "closed without an answer");
    assert!(started.elapsed() >= Duration::from_millis(250));

    let mut send = h2(hub.addr, &ca).await;
    let resp = send
        .send_request(get("/events?topic=s", &[]))
        .await
        .unwrap();
    let mut s = Events::new(resp);
    s.connected().await;
    hub.stop().await;
    let e = s.next().await;
    assert_eq!(e.event.as_deref(), Some("shutdown"), "{e:?}");
    // Then the stream ends: no more events, only the end of the body.
    loop {
        match tokio::time::timeout(Duration::from_secs(5), s.body.frame())
            .await
            .expect("the stream ends")
        {
            None | Some(Err(_)) => break,
            Some(Ok(f)) => {
                let data = f.into_data().unwrap_or_default();
                assert!(
                    s.parser.feed(&data).is_empty(),
                    "an event after shutdown: {data:?}"
                );
            }
        }
    }
}

/// `runnel pub` and `runnel sub` speak HTTPS, trusting `--ca`; without it they use the
/// system's certificates, which do not include a self-signed one: a clear refusal.
#[tokio::test]
async fn runnel_pub_and_sub_over_https() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, _) = make_cert(dir.path(), "a");
    let hub = tls_hub(&cert, &key).await;
    let url = format!("https://localhost:{}", hub.addr.port());
    let mut sub = std::process::Command::new(bin())
        .args(["sub", "news", "--data-only", "--url", &url, "--ca"])
        .arg(&cert)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let rx = stdout_lines(&mut sub);
    // Publish with `runnel pub` until the subscriber (connecting meanwhile) prints it. (The
    // hub runs on this test's runtime: wait for child processes off it.)
    let runnel = |args: Vec<String>, ca: PathBuf| {
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(bin())
                .args(args)
                .env("RUNNEL_CA", ca)
                .output()
                .unwrap()
        })
    };
    let pub_args: Vec<String> = ["pub", "news", "over https", "--url", &url]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut got = None;
    for _ in 0..50 {
        let out = runnel(pub_args.clone(), cert.clone()).await.unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Ok(line) = rx.try_recv() {
            got = Some(line);
            break;
        }
    }
    let _ = sub.kill();
    let _ = sub.wait();
    assert_eq!(got.as_deref(), Some("over https"));
    let out = runnel(pub_args, dir.path().join("missing.pem"))
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read --ca"));
}

/// `runnel check` reads the certificate and key too, so a renewal can be checked before a
/// reload.
#[test]
fn runnel_check_reads_the_certificate_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, _) = make_cert(dir.path(), "a");
    let (_, other_key, _) = make_cert(dir.path(), "b");
    let check = |key: &Path| {
        let conf = dir.path().join("runnel.toml");
        std::fs::write(
            &conf,
            format!("[tls]\ncert = {:?}\nkey = {:?}\n", cert, key),
        )
        .unwrap();
        std::process::Command::new(bin())
            .args(["check", "-c"])
            .arg(&conf)
            .output()
            .unwrap()
    };
    let good = check(&key);
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    assert!(String::from_utf8_lossy(&good.stdout).contains("[tls]"));
    let bad = check(&other_key);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("does not belong"));
}

/// Streams open on the hub, from `/stats`.
async fn open_streams(hub: &TestHub, ca: &str) -> u64 {
    let (_, stats) = call(hub.addr, ca, "GET", "/stats", None).await;
    stats["connections"]["total"].as_u64().unwrap()
}

/// HTTP/1.1 over TLS is served like plain HTTP/1.1 (streams written by the hub itself, not
/// through hyper): the framing is chunked, a client that hangs up, with or without
/// close_notify, is noticed at once, and a non-stream answer keeps the connection for the
/// next request.
#[tokio::test]
async fn http1_tls_streams_see_hang_ups_and_keep_alive_works() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, ca) = make_cert(dir.path(), "a");
    let hub = tls_hub(&cert, &key).await;

    for close_notify in [true, false] {
        let (mut tls, mut seen) = h1_stream(&hub, &ca, "h").await;
        let head = String::from_utf8_lossy(&seen).to_lowercase();
        assert!(head.starts_with("http/1.1 200 ok\r\n"), "{head}");
        assert!(head.contains("transfer-encoding: chunked\r\n"), "{head}");
        assert_eq!(open_streams(&hub, &ca).await, 1);
        publish(&hub, &ca, json!({"topic": "h", "data": "one"})).await;
        read_until(&mut tls, &mut seen, "data: one").await;
        // With close_notify the TCP connection stays open until the hub has noticed.
        let kept = if close_notify {
            tls.shutdown().await.unwrap();
            Some(tls)
        } else {
            drop(tls);
            None
        };
        assert!(
            eventually(Duration::from_secs(5), async || open_streams(&hub, &ca)
                .await
                == 0)
            .await,
            "close_notify={close_notify}: the stream is still registered after 5 s"
        );
        drop(kept);
    }

    // A refused stream (bad topic) is answered here; the connection stays open for hyper.
    let tls = connect(hub.addr, &[&ca], &[b"http/1.1"]).await;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let resp = send.send_request(get("/events?topic=", &[])).await.unwrap();
    assert_eq!(resp.status(), 400);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("\"error\""));
    let resp = send.send_request(get("/health", &[])).await.unwrap();
    assert_eq!(resp.status(), 200);

    // At shutdown the stream gets `event: shutdown` and a finished chunked body.
    let (mut tls, _) = h1_stream(&hub, &ca, "h").await;
    let mut buf = [0u8; 4096];
    let mut hub = hub;
    let stopping = tokio::spawn(async move {
        hub.stop().await;
    });
    let rest = tokio::time::timeout(Duration::from_secs(10), async {
        let mut rest = Vec::new();
        loop {
            match tls.read(&mut buf).await {
                Ok(0) | Err(_) => return rest,
                Ok(n) => rest.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("the stream ends at shutdown");
    let rest = String::from_utf8_lossy(&rest);
    assert!(rest.contains("event: shutdown"), "{rest}");
    assert!(rest.ends_with("0\r\n\r\n"), "{rest:?}");
    stopping.await.unwrap();
}

/// `runnel health` (the container's health check) says yes for a healthy hub, over HTTP
/// and over HTTPS with `--ca`, and no, with exit status 1, for a hub that is not there or
/// is stopping.
#[tokio::test]
async fn runnel_health_exits_by_the_hubs_health() {
    let health = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            let out = std::process::Command::new(bin())
                .arg("health")
                .args(args)
                .env_remove("RUNNEL_URL")
                .output()
                .unwrap();
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).to_string(),
                String::from_utf8_lossy(&out.stderr).to_string(),
            )
        })
    };
    let plain = TestHub::start().await;
    let url = format!("http://{}", plain.addr);
    let (code, out, _) = health(vec!["--url".into(), url.clone()]).await.unwrap();
    assert_eq!(code, Some(0));
    assert!(out.contains("\"ok\""), "{out}");
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, _) = make_cert(dir.path(), "a");
    let hub = tls_hub(&cert, &key).await;
    let tls_url = format!("https://localhost:{}", hub.addr.port());
    let args = vec![
        "--url".into(),
        tls_url,
        "--ca".into(),
        cert.display().to_string(),
    ];
    assert_eq!(health(args).await.unwrap().0, Some(0));
    let closed = format!("http://127.0.0.1:{}", {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    });
    let (code, _, err) = health(vec![
        "--url".into(),
        closed,
        "--timeout".into(),
        "2s".into(),
    ])
    .await
    .unwrap();
    assert_eq!(code, Some(1));
    assert!(err.contains("cannot connect"), "{err}");
}

/// Paths in a configuration file are its own directory's: the snippet `runnel cert` prints
/// works from wherever the hub starts. A file that cannot be read is named once, with its
/// full path and the reason once.
#[tokio::test]
async fn paths_in_a_config_file_are_relative_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str], cwd: &std::path::Path| {
        let out = std::process::Command::new(bin())
            .args(args)
            .current_dir(cwd)
            .env_remove("RUNNEL_CONFIG")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, out) = run(
        &["cert", "--self-signed", "--hosts", "localhost"],
        dir.path(),
    );
    assert!(ok, "{out}");
    // The snippet it prints names the files wherever it is pasted.
    let full = dir.path().canonicalize().unwrap().join("runnel.crt");
    assert!(
        out.contains(&format!("cert = {:?}", full.display().to_string())),
        "{out}"
    );
    let conf = dir.path().join("runnel.toml");
    std::fs::write(
        &conf,
        "[tls]\ncert = \"runnel.crt\"\nkey = \"runnel.key\"\n",
    )
    .unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let (ok, out) = run(&["check", "-c", conf.to_str().unwrap()], elsewhere.path());
    assert!(ok, "{out}");
    assert!(
        out.contains(&dir.path().join("runnel.crt").display().to_string()),
        "{out}"
    );
    std::fs::write(&conf, "[tls]\ncert = \"gone.crt\"\nkey = \"runnel.key\"\n").unwrap();
    let (ok, out) = run(&["check", "-c", conf.to_str().unwrap()], elsewhere.path());
    assert!(!ok);
    assert!(
        out.contains(&dir.path().join("gone.crt").display().to_string()),
        "{out}"
    );
    assert_eq!(out.matches("os error 2").count(), 1, "{out}");
}

/// `runnel token --ttl 0s` would print a token that has already expired: refused.
#[test]
fn a_token_that_never_lives_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("runnel.toml");
    std::fs::write(&conf, format!("[auth]\njwt_secret = \"{SECRET}\"\n")).unwrap();
    let out = std::process::Command::new(bin())
        .args([
            "token",
            "--sub",
            "al",
            "--ttl",
            "0s",
            "-c",
            conf.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--ttl"),
        "{out:?}"
    );
}
