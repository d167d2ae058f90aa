//! Subscriptions after a stream opened (`POST /subscribe`, `POST /unsubscribe`, SPEC §5.4),
//! and what browsers need to authenticate streams: exchange tokens (§5.5) and the cookie.

use http::StatusCode;
use http::header::{AUTHORIZATION, HeaderValue, SET_COOKIE};
use http::request::Parts;
use serde_json::{Value, json};

use super::body::{json_response, no_content, read_body, require_json};
use super::{ReqBody, Resp};
use crate::auth::{EXCHANGE_TTL, Via};
use crate::error::Error;
use crate::hub::{Hub, SessionChange};

/// `POST /subscribe` and `POST /unsubscribe`.
pub(super) async fn change(
    hub: &Hub,
    parts: Parts,
    body: ReqBody,
    add: bool,
) -> Result<Resp, Error> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Change {
        topics: Vec<String>,
        connection_id: Option<String>,
    }
    let caller = super::caller(&parts)?;
    require_json(&parts)?;
    let bytes = read_body(hub, body, &parts).await?;
    let v: Value = serde_json::from_slice(&bytes)
        .map_err(|e| Error::InvalidJson(format!("invalid JSON: {e}")))?;
    let change: Change = serde_json::from_value(v).map_err(|e| {
        Error::BadRequest(format!(
            "{e}; expected {{\"topics\": [...], \"connection_id\"?: \"...\"}}"
        ))
    })?;
    let topics = hub
        .change_subscriptions(
            &caller,
            SessionChange {
                topics: change.topics,
                connection_id: change.connection_id,
                add,
            },
        )
        .await?;
    Ok(json_response(StatusCode::OK, &json!({"topics": topics})))
}

/// `POST /auth/sse-token`: a 30-second, single-use token for `GET /events?token=`.
pub(super) fn sse_token(hub: &Hub, parts: &Parts) -> Result<Resp, Error> {
    let caller = super::caller(parts)?;
    if !caller.is_authenticated() && !caller.open {
        return Err(Error::Unauthorized("credentials are required".into()));
    }
    let token = hub.auth().issue_exchange(&caller)?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"token": token, "expires_in": EXCHANGE_TTL.as_secs()}),
    ))
}

/// `POST /auth/cookie`: stores the JWT the request carries (`Authorization: Bearer` or
/// `x-auth-token`) in an `HttpOnly` cookie for this origin (`Secure` with `[tls]`), so a
/// page's `EventSource` and `fetch` calls are authenticated without the token ever being
/// readable by scripts. It lasts as long as the token. An API key is refused: it never
/// expires and should not sit in a browser.
pub(super) fn set_cookie(hub: &Hub, parts: &Parts) -> Result<Resp, Error> {
    let caller = super::caller(parts)?;
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let jwt = match caller.via {
        Via::Bearer if caller.key.is_none() => header(AUTHORIZATION.as_str())
            .and_then(|v| v.trim().split_once(' '))
            .map(|(_, t)| t.trim()),
        Via::AuthTokenHeader => header("x-auth-token").map(str::trim),
        _ => None,
    };
    let (Some(jwt), Some(user)) = (jwt, caller.user.as_deref()) else {
        return Err(Error::Unauthorized(
            "send the JWT to store as `Authorization: Bearer <JWT>` or `x-auth-token` \
             (API keys and other carriers are not put in cookies)"
                .into(),
        ));
    };
    let now = crate::time::unix_ms();
    let max_age = caller
        .expires_at
        .map_or(0, |exp| exp.saturating_sub(now) / 1000);
    let mut r = json_response(
        StatusCode::OK,
        &json!({"user": user, "admin": caller.admin, "expires_in": max_age}),
    );
    let cookie = cookie(hub, jwt, max_age);
    r.headers_mut().insert(
        SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(|_| {
            Error::BadRequest("the token holds characters a cookie cannot carry".into())
        })?,
    );
    Ok(r)
}

/// `DELETE /auth/cookie`: forgets the cookie (logs the browser out).
pub(super) fn clear_cookie(hub: &Hub) -> Resp {
    let mut r = no_content();
    if let Ok(v) = HeaderValue::from_str(&cookie(hub, "", 0)) {
        r.headers_mut().insert(SET_COOKIE, v);
    }
    r
}

/// The auth cookie's `Set-Cookie` value. Over HTTPS it is marked `Secure`, so it never
/// travels in clear text.
fn cookie(hub: &Hub, value: &str, max_age: u64) -> String {
    let secure = if hub.tls().is_some() { "; Secure" } else { "" };
    format!(
        "{}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}",
        hub.config().auth.cookie_name
    )
}
