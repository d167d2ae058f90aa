//! SPEC §5.4, §6: credentials and permissions: where a credential may be carried, JWTs and
//! API keys, what each may subscribe and publish to, exchange tokens, tokens that expire, and
//! the `token`, `pub` and `sub` commands with tokens.

use std::time::Duration;

use crate::common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use runnel::config::{Config, Secret};
use serde_json::{Value, json};

#[tokio::test]
async fn every_credential_carrier_works() {
    let hub = secure_hub().await;
    let t = jwt(json!({"sub": "alice"}));
    let cookie = format!("theme=dark; runnel_token={t}");
    let query = format!("/events?topic=news&token={t}");
    let auth = bearer(&t);
    for (path, headers) in [
        ("/events?topic=news", vec![("authorization", auth.as_str())]),
        ("/events?topic=news", vec![("x-auth-token", t.as_str())]),
        (query.as_str(), vec![]),
        ("/events?topic=news", vec![("cookie", cookie.as_str())]),
    ] {
        let mut s = stream_as(&hub, path, &headers).await;
        assert_eq!(
            s.status,
            200,
            "{path} {headers:?}: {:?}",
            String::from_utf8_lossy(&s.error_body)
        );
        let c = s.connected().await;
        assert_eq!(c["user"], "alice");
        assert_eq!(c["topics"], json!(["news", "user/alice", "$broadcast"]));
    }
    // API keys: as a bearer token or in X-API-Key.
    let body = json!({"topic": "news", "data": 1});
    let r = publish_as(
        &hub,
        &[("authorization", "Bearer backend-key")],
        body.clone(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = publish_as(&hub, &[("x-api-key", "backend-key")], body.clone()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // A JWT with a publish claim can publish too.
    let p = jwt(json!({"sub": "svc", "publish": ["news"]}));
    let r = publish_as(&hub, &[("authorization", &bearer(&p))], body).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test]
async fn the_first_carrier_found_wins() {
    let hub = secure_hub().await;
    let good = jwt(json!({"sub": "alice"}));
    let cookie = format!("runnel_token={good}");
    // A bad Authorization header is not rescued by a good cookie.
    let s = stream_as(
        &hub,
        "/events",
        &[("authorization", "Bearer nope"), ("cookie", &cookie)],
    )
    .await;
    assert_eq!(s.status, 401);
    let s = stream_as(
        &hub,
        "/events",
        &[("x-api-key", "wrong"), ("x-auth-token", &good)],
    )
    .await;
    assert_eq!(s.status, 401);
}

#[tokio::test]
async fn bad_credentials_are_401() {
    let hub = secure_hub().await;
    let other_secret = jwt_with(
        "another-secret-entirely-0123456789abc",
        Algorithm::HS256,
        json!({"sub": "alice"}),
    );
    let expired = jwt(json!({"sub": "alice", "exp": now() - 60}));
    let not_yet = jwt(json!({"sub": "alice", "nbf": now() + 3600}));
    let wrong_alg = jwt_with(SECRET, Algorithm::HS384, json!({"sub": "alice"}));
    let no_sub = jwt(json!({"name": "alice"}));
    // alg "none": header {"alg":"none"}, claims, empty signature.
    let b64 = |v: &Value| {
        use std::fmt::Write;
        let bytes = v.to_string().into_bytes();
        // base64url without padding, by hand (no extra dependency for one test).
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b))
                << (8 * (3 - chunk.len()));
            for i in 0..=chunk.len() {
                out.write_char(A[((n >> (18 - 6 * i)) & 63) as usize] as char)
                    .unwrap();
            }
        }
        out
    };
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&json!({"sub": "mallory", "role": "admin"}))
    );
    let cases: Vec<(String, &str)> = vec![
        (String::new(), "credentials are required"),
        (bearer("not-a-key"), "unknown API key"),
        (bearer("aaa.bbb.ccc"), "malformed"),
        (bearer(&other_secret), "signature"),
        (bearer(&expired), "expired"),
        (bearer(&not_yet), "not valid yet"),
        (bearer(&wrong_alg), "algorithm"),
        (bearer(&no_sub), "sub"),
        (bearer(&none), ""),
        // Basic carries the credential as its password (ntfy's clients send it so).
        ("Basic YWxpY2U6cHc=".to_string(), "unknown API key"),
        ("Digest x".to_string(), "Bearer"),
    ];
    for (auth, needle) in cases {
        let headers: Vec<(&str, &str)> = if auth.is_empty() {
            vec![]
        } else {
            vec![("authorization", auth.as_str())]
        };
        let s = stream_as(&hub, "/events?topic=news", &headers).await;
        assert_eq!(s.status, 401, "{auth}");
        assert_eq!(
            s.header("www-authenticate"),
            Some("Bearer realm=\"runnel\"")
        );
        let e = s.error_json();
        assert_eq!(e["error"]["code"], "unauthorized");
        let msg = e["error"]["message"].as_str().unwrap();
        assert!(msg.contains(needle), "{auth}: {msg}");
        let r = publish_as(&hub, &headers, json!({"topic": "news", "data": 1})).await;
        assert_eq!(r.status, 401, "publish with {auth:?}: {}", r.text());
    }
    // Without credentials, every protected endpoint is 401; /health stays public.
    for (m, path) in [
        ("GET", "/stats"),
        ("GET", "/metrics"),
        ("GET", "/connections"),
        ("POST", "/notify"),
        ("POST", "/auth/sse-token"),
    ] {
        request(hub.addr, m, path, &[], b"")
            .await
            .assert_error(401, "unauthorized");
    }
    assert_eq!(hub.get("/health").await.json(), json!({"status": "ok"}));
}

#[tokio::test]
async fn valid_but_not_allowed_is_403() {
    let hub = secure_hub().await;
    let narrow = jwt(json!({"sub": "alice", "subscribe": ["news/*"]}));
    let auth = bearer(&narrow);
    let h = [("authorization", auth.as_str())];
    let s = stream_as(&hub, "/events?topic=sport", &h).await;
    assert_eq!(s.status, 403);
    assert!(
        s.error_json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("sport")
    );
    // A pattern is allowed only when the claim covers all it can match.
    assert_eq!(
        stream_as(&hub, "/events?topic=news/eu/*", &h).await.status,
        200
    );
    assert_eq!(stream_as(&hub, "/events?topic=*", &h).await.status, 403);
    // Someone else's personal topic, even with subscribe ["*"].
    let wide = bearer(&jwt(json!({"sub": "alice", "subscribe": ["*"]})));
    let s = stream_as(&hub, "/events/user%2Fbob", &[("authorization", &wide)]).await;
    assert_eq!(s.status, 403);
    assert_eq!(s.error_json()["error"]["code"], "forbidden");
    // Publishing needs a publish permission.
    let r = publish_as(
        &hub,
        &[("authorization", &wide)],
        json!({"topic": "news", "data": 1}),
    )
    .await;
    r.assert_error(403, "forbidden");
    let r = publish_as(
        &hub,
        &[("x-api-key", "narrow-key")],
        json!({"topic": "news", "data": 1}),
    )
    .await;
    r.assert_error(403, "forbidden");
    let r = publish_as(
        &hub,
        &[("x-api-key", "narrow-key")],
        json!({"topic": "alerts/disk", "data": 1}),
    )
    .await;
    assert_eq!(r.status, 200);
    let r = publish_as(
        &hub,
        &[("x-api-key", "narrow-key")],
        json!({"broadcast": true, "data": 1}),
    )
    .await;
    r.assert_error(403, "forbidden");
    let r = publish_as(
        &hub,
        &[("x-api-key", "narrow-key")],
        json!({"user": "bob", "data": 1}),
    )
    .await;
    r.assert_error(403, "forbidden");
    // Admin endpoints refuse non-admins.
    for h in [
        ("authorization", wide.as_str()),
        ("x-api-key", "backend-key"),
    ] {
        for (m, path) in [
            ("GET", "/stats"),
            ("GET", "/metrics"),
            ("GET", "/connections"),
            ("DELETE", "/connections/1-00"),
        ] {
            request(hub.addr, m, path, &[h], b"")
                .await
                .assert_error(403, "forbidden");
        }
    }
    // Admins (role claim or admin API key) may.
    let admin = bearer(&jwt(json!({"sub": "root", "role": "admin"})));
    for h in [
        ("authorization", admin.as_str()),
        ("x-api-key", "admin-key"),
    ] {
        for path in ["/stats", "/metrics", "/connections"] {
            assert_eq!(
                request(hub.addr, "GET", path, &[h], b"").await.status,
                200,
                "{path}"
            );
        }
    }
}

#[tokio::test]
async fn personal_topics_reach_only_their_user() {
    let hub = secure_hub().await;
    let alice = bearer(&jwt(json!({"sub": "alice"})));
    let root = bearer(&jwt(json!({"sub": "root", "role": "admin"})));
    // default_subscribe is ["*"]: alice's wildcard stream sees everything but bob's topic.
    let mut a = stream_as(&hub, "/events?topic=*", &[("authorization", &alice)]).await;
    a.connected().await;
    let mut admin = stream_as(&hub, "/events?topic=*", &[("authorization", &root)]).await;
    admin.connected().await;
    for (target, data) in [
        (json!({"user": "bob"}), "for bob"),
        (json!({"user": "alice"}), "for alice"),
        (json!({"topic": "news"}), "news"),
    ] {
        let mut body = target;
        body["data"] = json!(data);
        let r = publish_as(&hub, &[("x-api-key", "backend-key")], body).await;
        assert_eq!(r.status, 200);
    }
    assert_eq!(a.next().await.data, "for alice");
    assert_eq!(a.next().await.data, "news");
    for d in ["for bob", "for alice", "news"] {
        assert_eq!(admin.next().await.data, d);
    }
    // The same holds for the replay of a wildcard stream.
    let mut r = stream_as(
        &hub,
        "/events?topic=*&last_event_id=earliest",
        &[("authorization", &alice)],
    )
    .await;
    r.connected().await;
    assert_eq!(r.next().await.data, "for alice");
    assert_eq!(r.next().await.data, "news");
    r.assert_quiet(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn exchange_tokens_are_single_use_and_only_for_streams() {
    let hub = secure_hub().await;
    let alice = bearer(&jwt(json!({"sub": "alice"})));
    let r = request(
        hub.addr,
        "POST",
        "/auth/sse-token",
        &[("authorization", &alice)],
        b"",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["expires_in"], 30);
    let t = v["token"].as_str().unwrap().to_string();
    let mut s = hub.sse(&format!("/events?topic=news&token={t}")).await;
    assert_eq!(s.connected().await["user"], "alice");
    let again = hub.sse(&format!("/events?topic=news&token={t}")).await;
    assert_eq!(again.status, 401, "reuse is refused");
    assert!(
        again.error_json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("used already")
    );
    // Not accepted elsewhere.
    let r = request(
        hub.addr,
        "POST",
        "/auth/sse-token",
        &[("x-api-key", "backend-key")],
        b"",
    )
    .await;
    let t2 = r.json()["token"].as_str().unwrap().to_string();
    let r = request(
        hub.addr,
        "POST",
        &format!("/publish/news?token={t2}"),
        &[],
        b"x",
    )
    .await;
    r.assert_error(401, "unauthorized");
}

#[tokio::test]
async fn anonymous_topics_need_no_credentials() {
    let hub = TestHub::start_with(|c| {
        secured(c);
        c.auth.anonymous_subscribe = vec!["public/*".into()];
    })
    .await;
    let mut s = hub.sse("/events?topic=public/status").await;
    let c = s.connected().await;
    assert_eq!(c["user"], json!(null));
    let r = publish_as(
        &hub,
        &[("x-api-key", "backend-key")],
        json!({"topic": "public/status", "data": "up"}),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(s.next().await.data, "up");
    // Anything else still needs credentials: 401, not 403.
    assert_eq!(hub.sse("/events?topic=private").await.status, 401);
    // An anonymous stream can still take topics by connection id.
    let id = c["connection_id"].as_str().unwrap();
    let r = hub
        .post_json(
            "/subscribe",
            &json!({"topics": ["public/more"], "connection_id": id}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = hub
        .post_json(
            "/subscribe",
            &json!({"topics": ["private"], "connection_id": id}),
        )
        .await;
    r.assert_error(401, "unauthorized");
}

#[tokio::test]
async fn a_stream_ends_when_its_token_expires() {
    let hub = secure_hub().await;
    let t = bearer(&jwt(json!({"sub": "alice", "exp": now() + 2})));
    let mut s = stream_as(&hub, "/events", &[("authorization", &t)]).await;
    s.connected().await;
    let started = std::time::Instant::now();
    let closed = s.next().await;
    assert!(closed.is_control("closed"), "{closed:?}");
    assert_eq!(closed.json()["reason"], "token_expired");
    assert!(s.rest(Duration::from_secs(5)).await.is_empty());
    assert!(started.elapsed() < Duration::from_secs(5));
    // The stream ends when the token stops being accepted: reconnecting with it at once is
    // refused (a client is not cut off and let straight back in).
    let again = stream_as(&hub, "/events", &[("authorization", &t)]).await;
    assert_eq!(again.status, 401);
}

#[tokio::test]
async fn a_stalled_stream_whose_token_expires_leaves_at_once() {
    let hub = patient_hub().await;
    let token = jwt(json!({"sub": "bob", "exp": now() + 6}));
    let (_id, _stalled) = stalled_stream(&hub, "big", &token).await;
    assert_eq!(open_streams(&hub).await, 1);
    // The token ends within 6 s; the write timeout would take a minute.
    assert!(
        eventually(Duration::from_secs(12), async || open_streams(&hub).await
            == 0)
        .await,
        "the expired stream is still counted"
    );
}

#[tokio::test]
async fn ip_allow_list() {
    let hub = TestHub::start_with(|c| c.auth.allow_ips = vec!["10.0.0.0/8".into()]).await;
    for path in ["/health", "/events", "/nope"] {
        let r = hub.get(path).await;
        r.assert_error(403, "forbidden");
        assert!(
            r.json()["error"]["message"]
                .as_str()
                .unwrap()
                .contains("allow_ips")
        );
    }
    let hub =
        TestHub::start_with(|c| c.auth.allow_ips = vec!["10.0.0.0/8".into(), "127.0.0.1".into()])
            .await;
    assert_eq!(hub.get("/health").await.status, 200);
}

#[tokio::test]
async fn auth_off_still_names_the_user() {
    let hub = TestHub::start_with(|c| {
        c.auth.required = Some(false);
        c.auth.jwt_secret = Some(Secret::new(SECRET));
    })
    .await;
    let t = bearer(&jwt(json!({"sub": "alice"})));
    let mut s = stream_as(&hub, "/events/user%2Fbob", &[("authorization", &t)]).await;
    let c = s.connected().await;
    assert_eq!(c["user"], "alice");
    assert_eq!(c["topics"], json!(["user/bob", "user/alice", "$broadcast"]));
    // Bad credentials on an open hub are ignored, not refused.
    let mut s = stream_as(
        &hub,
        "/events",
        &[("authorization", "Bearer junk.junk.junk")],
    )
    .await;
    assert_eq!(s.connected().await["user"], json!(null));
    assert_eq!(hub.get("/stats").await.status, 200);
}

#[tokio::test]
async fn public_metrics_when_configured() {
    let hub = TestHub::start_with(|c| {
        secured(c);
        c.auth.public_metrics = true;
    })
    .await;
    assert_eq!(hub.get("/metrics").await.status, 200);
    hub.get("/stats").await.assert_error(401, "unauthorized");
}

#[tokio::test]
async fn rs256_and_es256_public_keys() {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    for (alg, name) in [(Algorithm::RS256, "rs256"), (Algorithm::ES256, "es256")] {
        let public = format!("{fixtures}/{name}-public.pem");
        let private = std::fs::read(format!("{fixtures}/{name}-private.pem")).unwrap();
        let hub =
            TestHub::start_with(|c| c.auth.jwt_public_key_file = Some(public.clone().into())).await;
        let key = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(&private).unwrap(),
            _ => EncodingKey::from_ec_pem(&private).unwrap(),
        };
        let t = jsonwebtoken::encode(
            &Header::new(alg),
            &json!({"sub": "carol", "exp": now() + 60}),
            &key,
        )
        .unwrap();
        let mut s = stream_as(&hub, "/events", &[("authorization", &bearer(&t))]).await;
        assert_eq!(s.connected().await["user"], "carol", "{name}");
        // An HS256 token signed with the public key's bytes (the classic confusion) fails.
        let pem = std::fs::read_to_string(&public).unwrap();
        let forged = jwt_with(&pem, Algorithm::HS256, json!({"sub": "mallory"}));
        assert_eq!(
            stream_as(&hub, "/events", &[("authorization", &bearer(&forged))])
                .await
                .status,
            401
        );
    }
}

#[test]
fn bad_key_files_give_clear_errors() {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let mut c = Config::default();
    c.auth.jwt_public_key_file = Some(format!("{fixtures}/rs256-private.pem").into());
    let e = runnel::auth::Auth::new(&c).unwrap_err().to_string();
    assert!(e.contains("private key"), "{e}");
    c.auth.jwt_public_key_file = Some("/nonexistent.pem".into());
    let e = runnel::auth::Auth::new(&c).unwrap_err().to_string();
    assert!(e.contains("cannot read"), "{e}");
    c.auth.jwt_public_key_file = Some(format!("{fixtures}/README").into());
    let e = runnel::auth::Auth::new(&c).unwrap_err().to_string();
    assert!(e.contains("not a PEM"), "{e}");
}

#[tokio::test]
async fn runnel_token_mints_usable_tokens() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("runnel.toml");
    std::fs::write(&file, format!("[auth]\njwt_secret = \"{SECRET}\"\n")).unwrap();
    let out = std::process::Command::new(bin())
        .args([
            "token",
            "--sub",
            "dave",
            "--subscribe",
            "news/*",
            "--publish",
            "news/*",
            "--ttl",
            "10m",
            "-c",
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let hub = secure_hub().await;
    let auth = bearer(&t);
    let mut s = stream_as(&hub, "/events?topic=news/x", &[("authorization", &auth)]).await;
    assert_eq!(s.connected().await["user"], "dave");
    assert_eq!(
        stream_as(&hub, "/events?topic=other", &[("authorization", &auth)])
            .await
            .status,
        403
    );
    let r = publish_as(
        &hub,
        &[("authorization", &auth)],
        json!({"topic": "news/x", "data": "by dave"}),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(s.next().await.data, "by dave");
    // The CLI sends the token too.
    // The hub runs on this test's thread: run the CLI off it.
    let url = format!("http://{}", hub.addr);
    let token = t.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(bin())
            .args([
                "pub", "news/x", "from cli", "--url", &url, "--token", &token,
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(s.next().await.data, "from cli");
    // Without a secret it says what is missing.
    std::fs::write(&file, "").unwrap();
    let out = std::process::Command::new(bin())
        .args(["token", "--sub", "x", "-c"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("jwt_secret"));
}

#[tokio::test]
async fn audience_and_issuer_are_checked_when_configured() {
    let hub = TestHub::start_with(|c| {
        secured(c);
        c.auth.jwt_audience = Some("runnel".into());
        c.auth.jwt_issuer = Some("https://auth.example".into());
    })
    .await;
    let cases = [
        (json!({"sub": "a"}), 401),
        (json!({"sub": "a", "aud": "runnel"}), 401),
        (
            json!({"sub": "a", "aud": "other", "iss": "https://auth.example"}),
            401,
        ),
        (
            json!({"sub": "a", "aud": "runnel", "iss": "https://evil.example"}),
            401,
        ),
        (
            json!({"sub": "a", "aud": "runnel", "iss": "https://auth.example"}),
            200,
        ),
    ];
    for (claims, status) in cases {
        let t = bearer(&jwt(claims.clone()));
        let s = stream_as(&hub, "/events", &[("authorization", &t)]).await;
        assert_eq!(s.status, status, "{claims}");
    }
}

#[tokio::test]
async fn runnel_sub_sends_its_token() {
    let hub = secure_hub().await;
    let t = jwt(json!({"sub": "erin"}));
    let mut child = std::process::Command::new(bin())
        .args([
            "sub",
            "--url",
            &format!("http://{}", hub.addr),
            "--token",
            &t,
            "--data-only",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let rx = stdout_lines(&mut child);
    // Publish to erin's personal topic until the subscriber has connected and prints it.
    let mut got = None;
    for _ in 0..50 {
        publish_as(
            &hub,
            &[("x-api-key", "backend-key")],
            json!({"user": "erin", "data": "for erin"}),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Ok(line) = rx.try_recv() {
            got = Some(line);
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(got.as_deref(), Some("for erin"));
}
