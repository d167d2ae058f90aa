//! The one error type of the HTTP API and its mapping to a status and a JSON body.
//!
//! Every handler returns `Result<_, Error>`; [`Error::to_response_parts`] is the single
//! place where an error becomes `{"error": {"code": "...", "message": "..."}}`.

use http::StatusCode;

/// An error a client can see. The variant decides the status and the machine-readable code;
/// the message is for humans and names what was wrong (the field, the topic, the limit).
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    InvalidJson(String),
    #[error("{0}")]
    InvalidTopic(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{method} is not allowed here; use {allow}")]
    MethodNotAllowed { method: String, allow: &'static str },
    #[error("{0}")]
    RequestTimeout(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    HeadersTooLarge(String),
    /// A request that must be a WebSocket upgrade is not one (426).
    #[error("{0}")]
    UpgradeRequired(String),
    #[error("{message}")]
    TooManyRequests { message: String, retry_after: u64 },
    #[error("{message}")]
    Unavailable {
        message: String,
        retry_after: Option<u64>,
    },
}

impl Error {
    pub fn status(&self) -> StatusCode {
        match self {
            Error::BadRequest(_) | Error::InvalidJson(_) | Error::InvalidTopic(_) => {
                StatusCode::BAD_REQUEST
            }
            Error::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Error::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Error::Conflict(_) => StatusCode::CONFLICT,
            Error::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Error::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::HeadersTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Error::UpgradeRequired(_) => StatusCode::UPGRADE_REQUIRED,
            Error::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The stable, machine-readable code of the JSON body.
    pub fn code(&self) -> &'static str {
        match self {
            Error::BadRequest(_) => "bad_request",
            Error::InvalidJson(_) => "invalid_json",
            Error::InvalidTopic(_) => "invalid_topic",
            Error::Unauthorized(_) => "unauthorized",
            Error::Forbidden(_) => "forbidden",
            Error::NotFound(_) => "not_found",
            Error::MethodNotAllowed { .. } => "method_not_allowed",
            Error::RequestTimeout(_) => "request_timeout",
            Error::Conflict(_) => "conflict",
            Error::PayloadTooLarge(_) => "payload_too_large",
            Error::UnsupportedMediaType(_) => "unsupported_media_type",
            Error::HeadersTooLarge(_) => "headers_too_large",
            Error::UpgradeRequired(_) => "upgrade_required",
            Error::TooManyRequests { .. } => "too_many_requests",
            Error::Unavailable { .. } => "unavailable",
        }
    }

    /// The JSON body: `{"error": {"code": ..., "message": ...}}`.
    pub fn body(&self) -> Vec<u8> {
        let v = serde_json::json!({
            "error": { "code": self.code(), "message": self.to_string() }
        });
        // Serializing a `Value` made of strings cannot fail.
        serde_json::to_vec(&v).unwrap_or_default()
    }

    /// Extra headers the status calls for (`Allow`, `Retry-After`).
    pub fn extra_headers(&self) -> Vec<(&'static str, String)> {
        match self {
            Error::MethodNotAllowed { allow, .. } => vec![("allow", (*allow).to_string())],
            Error::Unauthorized(_) => vec![("www-authenticate", "Bearer realm=\"runnel\"".into())],
            Error::UpgradeRequired(_) => vec![
                ("upgrade", "websocket".into()),
                ("sec-websocket-version", "13".into()),
            ],
            Error::TooManyRequests { retry_after, .. } => {
                vec![("retry-after", retry_after.to_string())]
            }
            Error::Unavailable {
                retry_after: Some(s),
                ..
            } => vec![("retry-after", s.to_string())],
            _ => Vec::new(),
        }
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Error::Unavailable {
            message: message.into(),
            retry_after: None,
        }
    }
}

impl From<crate::topic::TopicError> for Error {
    fn from(e: crate::topic::TopicError) -> Self {
        Error::InvalidTopic(e.to_string())
    }
}
