//! The built-in pages: the console (`GET /`), the browser client (`GET /runnel.js`), and
//! the console's icon (`GET /favicon.ico`).

use bytes::Bytes;
use http::Response;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};

use super::{Body, Resp};

/// The console: one page, no build step, no outside resources.
const CONSOLE_HTML: &str = include_str!("../../web/console.html");
/// The browser client, an ES module.
const RUNNEL_JS: &str = include_str!("../../web/runnel.js");
/// The icon browsers ask for (`/favicon.ico`), for the console's tab and bookmarks.
const FAVICON: &[u8] = include_bytes!("../../web/favicon.ico");

pub(super) fn console() -> Resp {
    asset("text/html; charset=utf-8", CONSOLE_HTML.as_bytes())
}

pub(super) fn client_js() -> Resp {
    asset("text/javascript; charset=utf-8", RUNNEL_JS.as_bytes())
}

pub(super) fn favicon() -> Resp {
    asset("image/x-icon", FAVICON)
}

fn asset(content_type: &'static str, body: &'static [u8]) -> Resp {
    let mut r = Response::new(Body::Full(Some(Bytes::from_static(body))));
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
