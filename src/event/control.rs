//! The hub's own messages (`connected`, `reset`, `closed`, `shutdown`) and why a stream
//! resets or ends, in each wire format.

use bytes::Bytes;
use serde_json::{Value, json};

use super::Format;
use crate::ntfy::{self, Wire};
use crate::sse;
use crate::ws;

/// Why a client must refetch its state (SPEC §5.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetReason {
    /// The client's id is not one of this store's.
    UnknownId,
    /// Retention removed events the client never saw.
    Pruned,
}

impl ResetReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ResetReason::UnknownId => "unknown_id",
            ResetReason::Pruned => "pruned",
        }
    }
}

/// Why the hub ended a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Its queue overflowed (SPEC §8).
    SlowReader,
    /// A newer stream of the same user replaced it (`single_connection_per_user`).
    Replaced,
    /// Its credential expired.
    TokenExpired,
    /// `DELETE /connections/{id}`.
    ClosedByAdmin,
}

impl CloseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::SlowReader => "slow_reader",
            CloseReason::Replaced => "replaced",
            CloseReason::TokenExpired => "token_expired",
            CloseReason::ClosedByAdmin => "closed_by_admin",
        }
    }

    fn message(self) -> &'static str {
        match self {
            CloseReason::SlowReader => "this stream fell behind; reconnect with Last-Event-ID",
            CloseReason::Replaced => "a newer stream of the same user replaced this one",
            CloseReason::TokenExpired => "the stream's credential expired",
            CloseReason::ClosedByAdmin => "an admin closed this stream",
        }
    }
}

/// How the hub ends a stream: its last message. Small, so a stream's queue carries it
/// until the stream is written to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Closed(CloseReason),
    Shutdown,
}

impl Ending {
    pub fn control(self) -> Control {
        match self {
            Ending::Closed(r) => Control::Closed(r),
            Ending::Shutdown => Control::Shutdown,
        }
    }
}

/// A message of the hub's own: no id, and always a JSON object as data (browsers drop an
/// event without data).
#[derive(Debug, Clone, PartialEq)]
pub enum Control {
    /// The first message of every stream: it is subscribed from here on.
    Connected {
        connection_id: String,
        user: Option<String>,
        topics: Vec<String>,
        last_event_id: Option<String>,
    },
    Reset {
        reason: ResetReason,
        last_event_id: Option<String>,
    },
    Closed(CloseReason),
    Shutdown,
}

impl Control {
    /// The event type (`event:` in SSE).
    pub fn name(&self) -> &'static str {
        match self {
            Control::Connected { .. } => "connected",
            Control::Reset { .. } => "reset",
            Control::Closed(_) => "closed",
            Control::Shutdown => "shutdown",
        }
    }

    /// The JSON object the message carries.
    pub fn data(&self) -> Value {
        match self {
            Control::Connected {
                connection_id,
                user,
                topics,
                last_event_id,
            } => json!({
                "connection_id": connection_id,
                "user": user,
                "topics": topics,
                "last_event_id": last_event_id,
            }),
            Control::Reset {
                reason,
                last_event_id,
            } => json!({"reason": reason.as_str(), "last_event_id": last_event_id}),
            Control::Closed(r) => json!({"reason": r.as_str(), "message": r.message()}),
            Control::Shutdown => json!({
                "reason": "shutdown",
                "message": "the hub is shutting down; reconnect with Last-Event-ID",
            }),
        }
    }

    /// The message in a stream's format. Over WebSocket, `{"type": name, ...data}`, and
    /// for the messages that end a connection, the close frame with its code after it.
    pub fn encode(&self, format: Format) -> Bytes {
        if let Some(wire) = format.ntfy() {
            return self.encode_ntfy(wire);
        }
        match format {
            Format::Sse | Format::SseEnvelope => sse::control_frame(self.name(), &self.data()),
            _ => {
                let mut v = self.data();
                if let Value::Object(m) = &mut v {
                    m.shift_insert(0, "type".into(), Value::from(self.name()));
                }
                let text = v.to_string();
                match self.close_code() {
                    Some((code, why)) => ws::text_then_close(text.as_bytes(), code, why),
                    None => ws::text_frame(text.as_bytes()),
                }
            }
        }
    }

    /// Through ntfy, `connected` is ntfy's `open`; a `reset` has no counterpart (the stream
    /// replays from the oldest retained event, as ntfy's `since=all`); an ending is the end
    /// of the response, or over ntfy's `/ws` the close frame alone.
    fn encode_ntfy(&self, wire: Wire) -> Bytes {
        match self {
            Control::Connected { topics, .. } => ntfy::notice(
                wire,
                "open",
                &ntfy::topic_list(topics.iter().map(String::as_str)),
                crate::time::unix_ms(),
            ),
            Control::Reset { .. } => Bytes::new(),
            Control::Closed(_) | Control::Shutdown => match (wire, self.close_code()) {
                (Wire::Ws, Some((code, why))) => ws::close_frame(code, why),
                _ => Bytes::new(),
            },
        }
    }

    /// The WebSocket close code (and reason) that follows a message ending the connection.
    fn close_code(&self) -> Option<(u16, &'static str)> {
        match self {
            Control::Connected { .. } | Control::Reset { .. } => None,
            Control::Shutdown => Some((ws::close::RESTART, "shutdown")),
            Control::Closed(r) => Some(match r {
                CloseReason::SlowReader => (ws::close::TRY_AGAIN_LATER, r.as_str()),
                CloseReason::TokenExpired => (ws::close::POLICY, r.as_str()),
                CloseReason::Replaced | CloseReason::ClosedByAdmin => {
                    (ws::close::NORMAL, r.as_str())
                }
            }),
        }
    }
}
