//! What browsers need beyond credentials: allowed origins (CORS) and the guard that keeps
//! other sites from riding on the auth cookie (CSRF).

use http::Method;
use http::request::Parts;

use crate::error::Error;

/// The origins of `cors.allow_origins`.
#[derive(Debug, Default)]
pub(super) struct Origins(pub(super) Vec<String>);

impl Origins {
    pub(super) fn allowed(&self, origin: &str) -> bool {
        self.0.iter().any(|o| o == origin)
    }

    /// A cookie rides along with any request the browser makes, including ones another
    /// site triggers: a state-changing request with cookie credentials must come from this
    /// origin or an allowed one.
    pub(super) fn csrf_guard(&self, parts: &Parts) -> Result<(), Error> {
        if matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS) {
            return Ok(());
        }
        let origin = parts
            .headers
            .get(http::header::ORIGIN)
            .and_then(|v| v.to_str().ok());
        let cross_site = parts
            .headers
            .get("sec-fetch-site")
            .and_then(|v| v.to_str().ok())
            == Some("cross-site");
        let foreign = match origin {
            Some(o) => !self.allowed(o) && !same_origin(parts, o),
            None => cross_site,
        };
        if foreign {
            return Err(Error::Forbidden(
                "cross-origin request with cookie credentials refused (add the origin to \
                 cors.allow_origins, or send the token in a header)"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// Is `origin` this server's own origin (scheme and the `Host` the client used)?
fn same_origin(parts: &Parts, origin: &str) -> bool {
    let host = parts
        .headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| parts.uri.authority().map(|a| a.as_str()));
    let Some(host) = host else { return false };
    origin
        .split_once("://")
        .is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(host))
}
