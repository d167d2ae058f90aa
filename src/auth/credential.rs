//! Finding the credential a request carries: the first carrier present wins, and a carrier
//! that is present but malformed is an error (it never falls through to the next one).

use std::borrow::Cow;

use http::request::Parts;

use super::Via;
use crate::error::Error;

/// The first credential carrier present: `Authorization: Bearer`, `X-API-Key`,
/// `x-auth-token`, `?token=`, then the cookie named `cookie`.
pub(super) fn find<'a>(
    parts: &'a Parts,
    cookie: &str,
) -> Result<Option<(Via, Cow<'a, str>)>, Error> {
    let h = &parts.headers;
    let text = |name: &str| -> Result<Option<&'a str>, Error> {
        match h.get(name) {
            None => Ok(None),
            Some(v) => v
                .to_str()
                .map(|s| Some(s.trim()))
                .map_err(|_| Error::Unauthorized(format!("the {name} header is not valid text"))),
        }
    };
    if let Some(v) = text("authorization")? {
        return match v.split_once(' ') {
            Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") && !t.trim().is_empty() => {
                Ok(Some((Via::Bearer, Cow::Borrowed(t.trim()))))
            }
            _ => Err(Error::Unauthorized(
                "use `Authorization: Bearer <token or API key>`".into(),
            )),
        };
    }
    if let Some(v) = text("x-api-key")? {
        return Ok(Some((Via::ApiKeyHeader, Cow::Borrowed(v))));
    }
    if let Some(v) = text("x-auth-token")? {
        return Ok(Some((Via::AuthTokenHeader, Cow::Borrowed(v))));
    }
    if let Some(q) = parts.uri.query()
        && let Some((_, t)) = form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "token")
    {
        return Ok(Some((Via::Query, Cow::Owned(t.into_owned()))));
    }
    for v in h.get_all(http::header::COOKIE) {
        let Ok(v) = v.to_str() else { continue };
        for pair in v.split(';') {
            if let Some((k, val)) = pair.trim().split_once('=')
                && k == cookie
            {
                return Ok(Some((Via::Cookie, Cow::Borrowed(val.trim_matches('"')))));
            }
        }
    }
    Ok(None)
}

/// Three dot-separated base64url parts.
pub(super) fn looks_like_jwt(t: &str) -> bool {
    t.split('.').count() == 3
}
