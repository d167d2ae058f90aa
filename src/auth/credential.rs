//! Finding the credential a request carries: the first carrier present wins, and a carrier
//! that is present but malformed is an error (it never falls through to the next one).

use std::borrow::Cow;

use http::request::Parts;

use super::Via;
use crate::error::Error;

/// The first credential carrier present: `Authorization` (Bearer or Basic), `X-API-Key`,
/// `x-auth-token`, `?token=`, `?auth=` (ntfy's), then the cookie named `cookie`.
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
        return authorization(v).map(|t| Some((Via::Bearer, t)));
    }
    if let Some(v) = text("x-api-key")? {
        return Ok(Some((Via::ApiKeyHeader, Cow::Borrowed(v))));
    }
    if let Some(v) = text("x-auth-token")? {
        return Ok(Some((Via::AuthTokenHeader, Cow::Borrowed(v))));
    }
    if let Some(q) = parts.uri.query() {
        let mut pairs = form_urlencoded::parse(q.as_bytes());
        if let Some((_, t)) = pairs.clone().find(|(k, _)| k == "token") {
            return Ok(Some((Via::Query, Cow::Owned(t.into_owned()))));
        }
        if let Some((_, a)) = pairs.find(|(k, _)| k == "auth") {
            // It stands for an `Authorization` header, and is read as one.
            return auth_param(&a).map(|t| Some((Via::Bearer, Cow::Owned(t))));
        }
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

/// `Authorization: Bearer <credential>`, or `Basic` whose password (or, without one, user
/// name) is the credential: ntfy's clients and tools that only know user and password
/// send it so (SPEC §11.1).
fn authorization(v: &str) -> Result<Cow<'_, str>, Error> {
    let refused = || {
        Error::Unauthorized(
            "use `Authorization: Bearer <token or API key>` (or Basic with it as the password)"
                .into(),
        )
    };
    let (scheme, rest) = v.split_once(' ').ok_or_else(refused)?;
    let rest = rest.trim();
    if rest.is_empty() {
        return Err(refused());
    }
    if scheme.eq_ignore_ascii_case("bearer") {
        return Ok(Cow::Borrowed(rest));
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(refused());
    }
    use base64::Engine as _;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| {
            Error::Unauthorized("`Authorization: Basic` is not base64 of user:password".into())
        })?;
    let (user, password) = decoded.split_once(':').unwrap_or((&decoded, ""));
    let credential = if password.is_empty() { user } else { password };
    if credential.is_empty() {
        return Err(Error::Unauthorized(
            "`Authorization: Basic` carries no password: put the token or API key there".into(),
        ));
    }
    Ok(Cow::Owned(credential.to_string()))
}

/// ntfy's `?auth=`: an `Authorization` header's value in base64 (URL-safe or standard,
/// padded or not).
fn auth_param(a: &str) -> Result<String, Error> {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
    let trimmed = a.trim().trim_end_matches('=');
    let header = URL_SAFE_NO_PAD
        .decode(trimmed)
        .or_else(|_| STANDARD_NO_PAD.decode(trimmed))
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| {
            Error::Unauthorized(
                "auth= is the base64 of an Authorization header (like `Bearer <token>`)".into(),
            )
        })?;
    authorization(header.trim()).map(Cow::into_owned)
}

/// Three dot-separated base64url parts.
pub(super) fn looks_like_jwt(t: &str) -> bool {
    t.split('.').count() == 3
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

    use super::*;

    fn found(req: http::request::Builder) -> Result<Option<(Via, String)>, Error> {
        let (parts, ()) = req.body(()).unwrap().into_parts();
        find(&parts, "runnel_token").map(|o| o.map(|(v, t)| (v, t.into_owned())))
    }

    #[test]
    fn basic_carries_the_credential_as_its_password() {
        let basic = |up: &str| format!("Basic {}", STANDARD.encode(up));
        let get = |h: String| found(http::Request::get("/a/json").header("authorization", h));
        assert_eq!(
            get(basic("me:k1")).unwrap(),
            Some((Via::Bearer, "k1".into()))
        );
        assert_eq!(get(basic(":k2")).unwrap(), Some((Via::Bearer, "k2".into())));
        assert_eq!(get(basic("k3:")).unwrap(), Some((Via::Bearer, "k3".into())));
        assert!(get(basic(":")).is_err());
        assert!(get("Basic !!!".into()).is_err());
        assert!(get("Digest x".into()).is_err());
    }

    #[test]
    fn ntfys_auth_parameter_is_an_authorization_header_in_base64() {
        let q = |v: &str| found(http::Request::get(format!("/a/json?auth={v}")));
        let bearer = URL_SAFE_NO_PAD.encode("Bearer tk1");
        assert_eq!(q(&bearer).unwrap(), Some((Via::Bearer, "tk1".into())));
        let padded = STANDARD.encode("Basic OmsyMw=="); // Basic :k23
        let padded = padded.replace('=', "%3D").replace('+', "%2B");
        assert_eq!(q(&padded).unwrap(), Some((Via::Bearer, "k23".into())));
        assert!(q("not-base64!").is_err());
        // `token=` comes first when both are present.
        let both = found(http::Request::get(format!(
            "/a/json?auth={bearer}&token=t0"
        )));
        assert_eq!(both.unwrap(), Some((Via::Query, "t0".into())));
    }
}
