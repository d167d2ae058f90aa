//! Credentials: tokens, API keys, hubs that require them, and requests made with them.

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use runnel::config::{ApiKeyConfig, Config, Secret};
use serde_json::{Value, json};

use super::{Resp, Sse, TestHub, request};

/// The HS256 secret of [`secured`] hubs.
pub const SECRET: &str = "test-secret-that-is-long-enough-0123456789";

/// Seconds since the epoch (for `exp` and `nbf` claims).
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An HS256 token with these claims (exp one hour ahead unless given).
pub fn jwt(claims: Value) -> String {
    jwt_with(SECRET, Algorithm::HS256, claims)
}

/// A token signed with `secret` by `alg` (exp one hour ahead unless given).
pub fn jwt_with(secret: &str, alg: Algorithm, mut claims: Value) -> String {
    if claims.get("exp").is_none() {
        claims["exp"] = json!(now() + 3600);
    }
    jsonwebtoken::encode(
        &Header::new(alg),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// Lowercase hex SHA-256, as `key_sha256` holds it.
pub fn sha256_hex(s: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, s.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// An API key entry for the configuration.
pub fn key(name: &str, key: &str, publish: &[&str], admin: bool) -> ApiKeyConfig {
    ApiKeyConfig {
        name: name.into(),
        key_sha256: sha256_hex(key),
        publish: publish.iter().map(|s| s.to_string()).collect(),
        subscribe: Vec::new(),
        admin,
    }
}

/// Requires credentials: the JWT [`SECRET`], and the API keys `backend-key` (publishes
/// anywhere), `admin-key` (admin) and `narrow-key` (publishes to `alerts/*`).
pub fn secured(c: &mut Config) {
    c.auth.jwt_secret = Some(Secret::new(SECRET));
    c.auth.api_keys = vec![
        key("backend", "backend-key", &["*"], false),
        key("ops", "admin-key", &[], true),
        key("narrow", "narrow-key", &["alerts/*"], false),
    ];
}

/// A hub configured by [`secured`].
pub async fn secure_hub() -> TestHub {
    TestHub::start_with(secured).await
}

/// An `Authorization` value for a token or API key.
pub fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

/// `POST /publish` of a JSON body with these (credential) headers.
pub async fn publish_as(hub: &TestHub, auth: &[(&str, &str)], body: Value) -> Resp {
    let mut h = vec![("content-type", "application/json")];
    h.extend_from_slice(auth);
    request(
        hub.addr,
        "POST",
        "/publish",
        &h,
        body.to_string().as_bytes(),
    )
    .await
}

/// Opens `path` as an event stream with these (credential) headers.
pub async fn stream_as(hub: &TestHub, path: &str, auth: &[(&str, &str)]) -> Sse {
    Sse::open(hub.addr, path, auth).await
}

/// A hub whose streams may fall far behind before they are cut, and whose writes wait a
/// minute: a stream ended by the hub that still showed up afterwards would be one that
/// waits on its stalled client.
pub async fn patient_hub() -> TestHub {
    TestHub::start_with(|c| {
        secured(c);
        c.limits.stream_queue = 1000;
        c.limits.write_timeout = runnel::config::Dur(Duration::from_secs(60));
        c.stream.heartbeat = runnel::config::Dur(Duration::from_millis(100));
    })
    .await
}

/// Opens a stream as `user` on `topic` with `token`, then stops reading it and publishes
/// ~10 MB to it, far more than loopback's socket buffers hold: its writer is now blocked.
pub async fn stalled_stream(
    hub: &TestHub,
    topic: &str,
    token: &str,
) -> (String, tokio::net::TcpStream) {
    let auth = bearer(token);
    let mut s = stream_as(
        hub,
        &format!("/events?topic={topic}"),
        &[("authorization", &auth)],
    )
    .await;
    let id = s.connected().await["connection_id"]
        .as_str()
        .unwrap()
        .to_string();
    let stalled = s.into_stream();
    let data = "s".repeat(50_000);
    for _ in 0..200 {
        let path = format!("/publish/{topic}");
        let r = request(
            hub.addr,
            "POST",
            &path,
            &[("x-api-key", "backend-key")],
            data.as_bytes(),
        )
        .await;
        assert_eq!(r.status, 200);
    }
    (id, stalled)
}

/// A request with the admin API key.
pub async fn as_admin(hub: &TestHub, method: &str, path: &str) -> Resp {
    request(hub.addr, method, path, &[("x-api-key", "admin-key")], b"").await
}

/// Streams open on the hub (`connections.total` of `/stats`, asked with the admin key).
pub async fn open_streams(hub: &TestHub) -> Value {
    as_admin(hub, "GET", "/stats").await.json()["connections"]["total"].clone()
}
