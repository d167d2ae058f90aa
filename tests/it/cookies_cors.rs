//! What browsers meet: CORS preflights and headers, the guard against cookie-authenticated
//! posts from foreign origins, and the hub's own auth cookie.

use crate::common::*;
use serde_json::json;

#[tokio::test]
async fn cors_preflight_and_headers() {
    let hub = TestHub::start_with(|c| {
        secured(c);
        c.cors.allow_origins = vec!["https://app.example.com".into()];
    })
    .await;
    let pre = |origin: &'static str| {
        let addr = hub.addr;
        async move {
            request(
                addr,
                "OPTIONS",
                "/publish",
                &[
                    ("origin", origin),
                    ("access-control-request-method", "POST"),
                    (
                        "access-control-request-headers",
                        "authorization, content-type",
                    ),
                ],
                b"",
            )
            .await
        }
    };
    let ok = pre("https://app.example.com").await;
    assert_eq!(ok.status, 204);
    assert_eq!(
        ok.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(ok.header("access-control-allow-credentials"), Some("true"));
    assert!(
        ok.header("access-control-allow-methods")
            .unwrap()
            .contains("POST")
    );
    assert_eq!(
        ok.header("access-control-allow-headers"),
        Some("authorization, content-type")
    );
    assert_eq!(ok.header("vary"), Some("origin"));
    let foreign = pre("https://evil.example").await;
    assert_eq!(foreign.status, 403);
    assert!(foreign.header("access-control-allow-origin").is_none());
    // Actual requests: the allowed origin is echoed, others get nothing.
    let t = bearer(&jwt(json!({"sub": "alice"})));
    let s = stream_as(
        &hub,
        "/events",
        &[("origin", "https://app.example.com"), ("authorization", &t)],
    )
    .await;
    assert_eq!(
        s.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(s.header("access-control-allow-credentials"), Some("true"));
    let s = stream_as(
        &hub,
        "/events",
        &[("origin", "https://evil.example"), ("authorization", &t)],
    )
    .await;
    assert_eq!(s.status, 200);
    assert!(s.header("access-control-allow-origin").is_none());
    // Errors to an allowed origin carry CORS headers too, so the page can read them.
    let r = request(
        hub.addr,
        "GET",
        "/stats",
        &[("origin", "https://app.example.com")],
        b"",
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
}

#[tokio::test]
async fn cookie_posts_from_foreign_origins_are_refused() {
    let hub = TestHub::start_with(|c| {
        secured(c);
        c.cors.allow_origins = vec!["https://app.example.com".into()];
    })
    .await;
    let t = jwt(json!({"sub": "alice", "publish": ["*"]}));
    let cookie = format!("runnel_token={t}");
    let body = json!({"topic": "news", "data": 1});
    let host_origin = format!("http://{}", hub.addr);
    for (origin, status) in [
        (Some("https://evil.example"), 403),
        (Some("https://app.example.com"), 200),
        (Some(host_origin.as_str()), 200),
        (None, 200),
    ] {
        let mut h = vec![("cookie", cookie.as_str())];
        if let Some(o) = origin {
            h.push(("origin", o));
        }
        let r = publish_as(&hub, &h, body.clone()).await;
        assert_eq!(r.status, status, "{origin:?}: {}", r.text());
    }
    let r = publish_as(
        &hub,
        &[("cookie", &cookie), ("sec-fetch-site", "cross-site")],
        body.clone(),
    )
    .await;
    r.assert_error(403, "forbidden");
    // A bearer token is not sent by browsers on their own: no CSRF guard needed.
    let auth = bearer(&t);
    let r = publish_as(
        &hub,
        &[("authorization", &auth), ("origin", "https://evil.example")],
        body,
    )
    .await;
    assert_eq!(r.status, 200);
    // Reading a stream with the cookie from anywhere is fine (GET changes nothing).
    let s = stream_as(
        &hub,
        "/events",
        &[("cookie", &cookie), ("origin", "https://evil.example")],
    )
    .await;
    assert_eq!(s.status, 200);
}

/// `POST /auth/cookie` puts the request's JWT into an HttpOnly cookie for this origin, which
/// then authenticates streams; API keys are not put in cookies; `DELETE` forgets it.
#[tokio::test]
async fn the_hub_sets_and_clears_its_auth_cookie() {
    let hub = secure_hub().await;
    let t = jwt(json!({"sub": "carol", "exp": now() + 600}));
    let r = request(
        hub.addr,
        "POST",
        "/auth/cookie",
        &[("authorization", &bearer(&t))],
        b"",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["user"], "carol");
    let set = r.header("set-cookie").unwrap().to_string();
    assert!(set.starts_with(&format!("runnel_token={t};")), "{set}");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(attr), "{attr} in {set}");
    }
    assert!(
        !set.contains("Secure"),
        "plain HTTP: a Secure cookie would not be kept"
    );
    let age: u64 = set
        .split("Max-Age=")
        .nth(1)
        .and_then(|v| v.split(';').next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(
        (590..=600 + 60).contains(&age),
        "lasts as long as the token: {age}"
    );
    // The cookie alone opens a stream as carol.
    let cookie = set.split(';').next().unwrap().to_string();
    let mut s = stream_as(&hub, "/events", &[("cookie", &cookie)]).await;
    assert_eq!(s.connected().await["user"], "carol");
    // x-auth-token works too; an API key, no credential, or a cookie itself do not.
    let r = request(
        hub.addr,
        "POST",
        "/auth/cookie",
        &[("x-auth-token", &t)],
        b"",
    )
    .await;
    assert_eq!(r.status, 200);
    for h in [
        vec![("authorization", "Bearer backend-key")],
        vec![("x-api-key", "backend-key")],
        vec![("cookie", cookie.as_str())],
        vec![],
    ] {
        request(hub.addr, "POST", "/auth/cookie", &h, b"")
            .await
            .assert_error(401, "unauthorized");
    }
    let r = request(hub.addr, "DELETE", "/auth/cookie", &[], b"").await;
    assert_eq!(r.status, 204);
    assert!(r.header("set-cookie").unwrap().contains("Max-Age=0"));
}
