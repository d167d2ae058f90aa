//! Request and response bodies, and the small helpers every handler uses to read a request
//! and build an answer.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use http::request::Parts;
use http::{Response, StatusCode};
use http_body::{Frame, SizeHint};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use serde_json::Value;

use super::Resp;
use crate::config::{ByteSize, Dur};
use crate::error::Error;
use crate::hub::Hub;
use crate::stream::Subscription;

/// A response body: a complete buffer, an event stream, or an accepted WebSocket (for the
/// server's own connection path, which alone can upgrade; hyper never gets one).
pub(crate) enum Body {
    Full(Option<Bytes>),
    Stream(Subscription),
    Upgrade(Box<super::WsSession>),
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Body::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Body::Stream(s) => s.poll_next(cx).map(|b| b.map(|b| Ok(Frame::data(b)))),
            Body::Upgrade(_) => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Body::Full(None) | Body::Upgrade(_))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Body::Full(None) => SizeHint::with_exact(0),
            Body::Stream(_) => SizeHint::default(),
            Body::Upgrade(_) => SizeHint::with_exact(0),
        }
    }
}

/// A request body: hyper's, or none (a request whose head the server read itself, which
/// it does only for bodiless `GET`s).
pub(crate) enum ReqBody {
    Hyper(Incoming),
    Empty,
}

impl http_body::Body for ReqBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ReqBody::Hyper(b) => Pin::new(b).poll_frame(cx),
            ReqBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReqBody::Hyper(b) => b.is_end_stream(),
            ReqBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReqBody::Hyper(b) => b.size_hint(),
            ReqBody::Empty => SizeHint::with_exact(0),
        }
    }
}

/// Reads a request body, refusing it (413) from `Content-Length` or as soon as it grows past
/// `limits.max_body_bytes`, without buffering more than that; a body that does not arrive
/// within `limits.request_timeout` is a 408.
pub(super) async fn read_body(hub: &Hub, body: ReqBody, parts: &Parts) -> Result<Bytes, Error> {
    let limits = &hub.config().limits;
    let limit = limits.max_body_bytes.0;
    let timeout = limits.request_timeout.0;
    let too_large = || {
        Error::PayloadTooLarge(format!(
            "the request body is larger than limits.max_body_bytes ({})",
            ByteSize(limit)
        ))
    };
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let collected = tokio::time::timeout(timeout, Limited::new(body, limit).collect())
        .await
        .map_err(|_| {
            Error::RequestTimeout(format!(
                "the request body did not arrive within limits.request_timeout ({})",
                Dur(timeout)
            ))
        })?;
    match collected {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Err(e) => Err(Error::BadRequest(format!(
            "could not read the request body: {e}"
        ))),
    }
}

/// JSON endpoints take `application/json` (or `+json`), or no content type at all.
pub(super) fn require_json(parts: &Parts) -> Result<(), Error> {
    let Some(ct) = parts.headers.get(CONTENT_TYPE) else {
        return Ok(());
    };
    let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
    let essence = ct.split(';').next().unwrap_or("").trim();
    if essence == "application/json" || essence.ends_with("+json") {
        Ok(())
    } else {
        Err(Error::UnsupportedMediaType(format!(
            "this endpoint takes JSON (content-type: application/json), not {essence:?}; \
             to publish raw text use POST /publish/{{topic}}"
        )))
    }
}

/// The query string's pairs, decoded.
pub(super) fn query(parts: &Parts) -> Vec<(String, String)> {
    parts
        .uri
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

/// A topic from the path, percent-decoded.
pub(super) fn decode_path(raw: &str) -> Result<String, Error> {
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| Error::InvalidTopic("the topic in the path is not valid UTF-8".into()))
}

pub(super) fn json_response(status: StatusCode, v: &Value) -> Resp {
    let body = serde_json::to_vec(v).unwrap_or_default();
    let mut r = Response::new(Body::Full(Some(Bytes::from(body))));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

pub(super) fn text_response(status: StatusCode, content_type: &'static str, body: String) -> Resp {
    let mut r = Response::new(Body::Full(Some(Bytes::from(body))));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// An empty `204 No Content`.
pub(super) fn no_content() -> Resp {
    let mut r = Response::new(Body::Full(None));
    *r.status_mut() = StatusCode::NO_CONTENT;
    r
}

/// The JSON error answer, with the headers its status calls for.
pub(crate) fn error_response(e: &Error) -> Resp {
    let mut r = Response::new(Body::Full(Some(Bytes::from(e.body()))));
    *r.status_mut() = e.status();
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    for (k, v) in e.extra_headers() {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(k, v);
        }
    }
    r
}
