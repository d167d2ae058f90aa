//! CORS (SPEC §6.2): allowed origins get their origin echoed with credentials allowed, and
//! preflights a 204; other origins get no CORS headers at all.

use http::header::{HeaderMap, HeaderValue};
use http::{Response, StatusCode};

use super::{Body, Req, Resp, error_response};
use crate::error::Error;
use crate::hub::Hub;

/// The request's `Origin`, if it is in `cors.allow_origins`.
pub(super) fn allowed_origin(hub: &Hub, req: &Req) -> Option<HeaderValue> {
    req.headers()
        .get(http::header::ORIGIN)
        .filter(|o| o.to_str().is_ok_and(|o| hub.auth().origin_allowed(o)))
        .cloned()
}

/// The CORS headers of an answer to an allowed origin.
pub(super) fn add_headers(h: &mut HeaderMap, origin: HeaderValue) {
    h.insert("access-control-allow-origin", origin);
    h.insert(
        "access-control-allow-credentials",
        HeaderValue::from_static("true"),
    );
    h.insert(
        "access-control-expose-headers",
        HeaderValue::from_static("x-request-id, retry-after, idempotent-replayed"),
    );
    h.append(http::header::VARY, HeaderValue::from_static("origin"));
}

/// A CORS preflight: 204 for an allowed origin (the caller adds the origin headers),
/// 403 for any other.
pub(super) fn preflight(req: &Req, allowed: bool) -> Resp {
    if !allowed {
        return error_response(&Error::Forbidden(
            "this origin is not in cors.allow_origins".into(),
        ));
    }
    let mut r = Response::new(Body::Full(None));
    *r.status_mut() = StatusCode::NO_CONTENT;
    let h = r.headers_mut();
    h.insert(
        "access-control-allow-methods",
        HeaderValue::from_static("GET, HEAD, POST, DELETE, OPTIONS"),
    );
    let asked = req
        .headers()
        .get("access-control-request-headers")
        .cloned()
        .unwrap_or(HeaderValue::from_static(
            "authorization, content-type, last-event-id, x-api-key, x-auth-token, x-request-id",
        ));
    h.insert("access-control-allow-headers", asked);
    h.insert("access-control-max-age", HeaderValue::from_static("600"));
    r
}
