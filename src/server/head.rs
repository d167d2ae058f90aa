//! Reading a connection's first request head, and writing a response head as hyper
//! would: what lets event streams skip hyper (see `conn`).

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_LENGTH, HeaderName, HeaderValue, TRANSFER_ENCODING};
use http::{Method, Request, StatusCode, Uri, Version};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::config::{ByteSize, LimitsConfig};
use crate::error::Error;
use crate::http::{Req, ReqBody};
use crate::hub::Hub;
use crate::shutdown::Shutdown;

/// Most request heads fit; the buffer grows (up to `limits.max_header_bytes`) for the rest.
const FIRST_READ: usize = 2048;
/// Header lines parsed here; a head with more goes to hyper.
const MAX_HEADERS: usize = 64;

/// How large a request head may grow (`limits.max_header_bytes`), for hyper's builders.
pub(super) fn header_limit(limits: &LimitsConfig) -> usize {
    usize::try_from(limits.max_header_bytes.0).unwrap_or(16 << 10)
}

pub(super) enum Head {
    /// The client went away, sent nothing in time, or the hub is stopping.
    Closed,
    /// The head is unusable (too large, malformed, too slow): answer with this error and
    /// close.
    Refused(Error),
    /// Not an event stream (or not parsed here): hyper's, with these bytes first.
    Other(Bytes),
    /// `GET /events…` or `GET /ws`; `rest` is what followed the head.
    Stream {
        req: Box<Req>,
        keep_alive: bool,
        rest: Bytes,
    },
}

pub(super) async fn read_head<S: AsyncRead + Unpin>(
    hub: &Hub,
    io: &mut S,
    shutdown: &Shutdown,
) -> Head {
    let limits = &hub.config().limits;
    let max = header_limit(limits);
    // Whether any of a head arrived, for the timeout's answer.
    let started = std::sync::atomic::AtomicBool::new(false);
    let read = async {
        let mut buf: Vec<u8> = Vec::with_capacity(FIRST_READ.min(max));
        loop {
            if buf.len() == buf.capacity() {
                if buf.len() >= max {
                    return Head::Refused(Error::HeadersTooLarge(format!(
                        "the request head is larger than limits.max_header_bytes ({})",
                        ByteSize(limits.max_header_bytes.0)
                    )));
                }
                buf.reserve((buf.len() * 2).min(max) - buf.len());
            }
            match io.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return Head::Closed,
                Ok(_) => started.store(true, std::sync::atomic::Ordering::Relaxed),
            }
            match parse_head(&buf) {
                Parsed::Partial => {}
                Parsed::Malformed(why) => {
                    return Head::Refused(Error::BadRequest(format!(
                        "the request head is not HTTP/1: {why}"
                    )));
                }
                Parsed::Other => return Head::Other(Bytes::from(buf)),
                Parsed::Stream {
                    req,
                    keep_alive,
                    len,
                } => {
                    let rest = Bytes::copy_from_slice(&buf[len..]);
                    return Head::Stream {
                        req,
                        keep_alive,
                        rest,
                    };
                }
            }
        }
    };
    let timeout = limits.request_timeout;
    tokio::select! {
        _ = shutdown.wait() => Head::Closed,
        r = tokio::time::timeout(timeout.0, read) => match r {
            Ok(head) => head,
            // A connection that never sent anything is closed quietly (browsers open some
            // ahead of need); a head that started but did not finish in time gets a 408.
            Err(_) if started.load(std::sync::atomic::Ordering::Relaxed) => Head::Refused(Error::RequestTimeout(format!(
                "the request head did not arrive within limits.request_timeout ({timeout})"
            ))),
            Err(_) => Head::Closed,
        },
    }
}

enum Parsed {
    Partial,
    /// Not an HTTP request head.
    Malformed(httparse::Error),
    Other,
    Stream {
        req: Box<Req>,
        keep_alive: bool,
        len: usize,
    },
}

/// Parses a request head: an event-stream request becomes a `Request`, anything else (or
/// anything odd) is left to hyper.
fn parse_head(buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut r = httparse::Request::new(&mut headers);
    let len = match r.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        // More header lines than parsed here: hyper takes up to 100.
        Err(httparse::Error::TooManyHeaders) => return Parsed::Other,
        Err(e) => return Parsed::Malformed(e),
    };
    let (Some("GET"), Some(path), Some(1)) = (r.method, r.path, r.version) else {
        return Parsed::Other;
    };
    let route = path.split('?').next().unwrap_or("");
    // runnel's WebSocket, and ntfy's (`/<topics>/ws`).
    let ws = route == "/ws"
        || route
            .strip_suffix("/ws")
            .and_then(|t| t.strip_prefix('/'))
            .is_some_and(|t| !t.is_empty() && !t.contains('/'));
    if route != "/events" && !route.starts_with("/events/") && !ws {
        return Parsed::Other;
    }
    let Ok(uri) = Uri::try_from(path) else {
        return Parsed::Other;
    };
    let mut req = Request::new(ReqBody::Empty);
    *req.method_mut() = Method::GET;
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;
    if ws {
        req.extensions_mut().insert(crate::http::OwnConnection);
    }
    let map = req.headers_mut();
    let mut keep_alive = true;
    for h in r.headers.iter() {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_bytes(h.value),
        ) else {
            return Parsed::Other;
        };
        if name == TRANSFER_ENCODING || (name == CONTENT_LENGTH && h.value.trim_ascii() != b"0") {
            // A body on a GET: rare enough to leave to hyper.
            return Parsed::Other;
        }
        if name == CONNECTION
            && value
                .to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
        {
            keep_alive = false;
        }
        map.append(name, value);
    }
    Parsed::Stream {
        req: Box::new(req),
        keep_alive,
        len,
    }
}

/// A response head as hyper would write it: status line, headers, `date`, and the framing.
pub(super) fn response_head(
    status: StatusCode,
    headers: &http::HeaderMap,
    content_length: Option<usize>,
    close: bool,
) -> Vec<u8> {
    let mut h = Vec::with_capacity(256);
    h.extend_from_slice(b"HTTP/1.1 ");
    h.extend_from_slice(status.as_str().as_bytes());
    h.push(b' ');
    h.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    h.extend_from_slice(b"\r\n");
    for (k, v) in headers {
        if k == CONTENT_LENGTH || k == TRANSFER_ENCODING || k == CONNECTION {
            continue;
        }
        h.extend_from_slice(k.as_str().as_bytes());
        h.extend_from_slice(b": ");
        h.extend_from_slice(v.as_bytes());
        h.extend_from_slice(b"\r\n");
    }
    h.extend_from_slice(b"date: ");
    h.extend_from_slice(httpdate::fmt_http_date(std::time::SystemTime::now()).as_bytes());
    h.extend_from_slice(b"\r\n");
    match content_length {
        Some(n) => h.extend_from_slice(format!("content-length: {n}\r\n").as_bytes()),
        None => h.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    if close {
        h.extend_from_slice(b"connection: close\r\n");
    }
    h.extend_from_slice(b"\r\n");
    h
}

/// The `101 Switching Protocols` head of an accepted WebSocket: no body framing.
pub(super) fn upgrade_head(headers: &http::HeaderMap) -> Vec<u8> {
    let mut h = Vec::with_capacity(256);
    h.extend_from_slice(b"HTTP/1.1 101 Switching Protocols\r\n");
    for (k, v) in headers {
        h.extend_from_slice(k.as_str().as_bytes());
        h.extend_from_slice(b": ");
        h.extend_from_slice(v.as_bytes());
        h.extend_from_slice(b"\r\n");
    }
    h.extend_from_slice(b"\r\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_stream(raw: &str) -> bool {
        matches!(parse_head(raw.as_bytes()), Parsed::Stream { .. })
    }

    #[test]
    fn only_bodiless_http11_event_gets_are_taken() {
        assert!(is_stream("GET /events?topic=a HTTP/1.1\r\nhost: x\r\n\r\n"));
        assert!(is_stream("GET /events/a%2Fb HTTP/1.1\r\n\r\n"));
        assert!(is_stream(
            "GET /events HTTP/1.1\r\ncontent-length: 0\r\n\r\n"
        ));
        assert!(!is_stream("GET /eventsx HTTP/1.1\r\n\r\n"));
        assert!(is_stream(
            "GET /ws?topic=a HTTP/1.1\r\nupgrade: websocket\r\n\r\n"
        ));
        assert!(!is_stream("GET /wsx HTTP/1.1\r\n\r\n"));
        assert!(is_stream(
            "GET /a,b/ws HTTP/1.1\r\nupgrade: websocket\r\n\r\n"
        ));
        assert!(!is_stream("GET /a/b/ws HTTP/1.1\r\n\r\n"));
        assert!(!is_stream("GET //ws HTTP/1.1\r\n\r\n"));
        assert!(!is_stream("GET /health HTTP/1.1\r\n\r\n"));
        assert!(!is_stream("POST /events HTTP/1.1\r\n\r\n"));
        assert!(!is_stream("HEAD /events HTTP/1.1\r\n\r\n"));
        assert!(!is_stream("GET /events HTTP/1.0\r\n\r\n"));
        assert!(!is_stream(
            "GET /events HTTP/1.1\r\ncontent-length: 5\r\n\r\nhello"
        ));
        assert!(!is_stream(
            "GET /events HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n"
        ));
        assert!(!is_stream("GET /events HTTP/1.1\r\nbad header\r\n\r\n"));
        assert!(matches!(
            parse_head(b"GET /events HTTP/1.1\r\nhost: x\r\n"),
            Parsed::Partial
        ));
    }

    #[test]
    fn connection_close_is_seen() {
        let raw = b"GET /events HTTP/1.1\r\nConnection: keep-alive, Close\r\n\r\nXY";
        let Parsed::Stream {
            keep_alive, len, ..
        } = parse_head(raw)
        else {
            panic!("not a stream");
        };
        assert!(!keep_alive);
        assert_eq!(&raw[len..], b"XY");
    }

    #[test]
    fn heads_look_like_hypers() {
        let mut h = http::HeaderMap::new();
        h.insert(
            "content-type",
            HeaderValue::from_static("text/event-stream"),
        );
        h.insert(CONTENT_LENGTH, HeaderValue::from_static("99"));
        let s = String::from_utf8(response_head(StatusCode::OK, &h, None, false)).unwrap();
        assert!(s.starts_with("HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ndate: "));
        assert!(s.ends_with("\r\ntransfer-encoding: chunked\r\n\r\n"));
        assert!(!s.contains("99"));
        let s =
            String::from_utf8(response_head(StatusCode::UNAUTHORIZED, &h, Some(12), true)).unwrap();
        assert!(s.starts_with("HTTP/1.1 401 Unauthorized\r\n"));
        assert!(s.ends_with("content-length: 12\r\nconnection: close\r\n\r\n"));
    }
}
