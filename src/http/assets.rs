//! The built-in pages: the console (`GET /`) and the browser client (`GET /runnel.js`).

use bytes::Bytes;
use http::Response;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};

use super::{Body, Resp};

/// The console: one page, no build step, no outside resources.
const CONSOLE_HTML: &str = include_str!("../../web/console.html");
/// The browser client, an ES module.
const RUNNEL_JS: &str = include_str!("../../web/runnel.js");

pub(super) fn console() -> Resp {
    asset("text/html; charset=utf-8", CONSOLE_HTML)
}

pub(super) fn client_js() -> Resp {
    asset("text/javascript; charset=utf-8", RUNNEL_JS)
}

fn asset(content_type: &'static str, body: &'static str) -> Resp {
    let mut r = Response::new(Body::Full(Some(Bytes::from_static(body.as_bytes()))));
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Small, and must change with the binary: revalidate rather than cache blindly.
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    r
}
