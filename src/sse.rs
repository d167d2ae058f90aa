//! Server-Sent Events on the wire: frame encoding, and a parser for the `runnel sub` client.
//!
//! Every event is encoded once, when it is published, into the exact bytes each stream
//! writes (`id:`, one `topic:` per topic, `event:`, `retry:`, one `data:` line per line of
//! data, a blank line). The
//! same bytes go into the replay log, so a replay writes what the live stream wrote.

use bytes::{BufMut, Bytes, BytesMut};

/// The heartbeat comment.
pub fn keepalive() -> Bytes {
    Bytes::from_static(b": keepalive\n\n")
}

/// `retry: <ms>`, the first frame of every stream.
pub fn retry_frame(ms: u64) -> Bytes {
    Bytes::from(format!("retry: {ms}\n\n"))
}

/// A control event (`connected`, `reset`, `closed`, `shutdown`): no id, JSON object data.
pub fn control_frame(name: &str, data: &serde_json::Value) -> Bytes {
    let json = serde_json::to_string(data).unwrap_or_else(|_| "{}".into());
    Bytes::from(format!("event: {name}\ndata: {json}\n\n"))
}

/// Encodes one event. `event` must hold no line break (checked when publishing); `data` may,
/// and each of its lines (split on CRLF, LF or CR, as the SSE spec reads them) becomes a
/// `data:` line.
pub fn encode_event(
    id: &str,
    topics: &[String],
    event: Option<&str>,
    retry: Option<u64>,
    data: &str,
) -> Bytes {
    let mut b = BytesMut::with_capacity(data.len() + id.len() + 32);
    b.put_slice(b"id: ");
    b.put_slice(id.as_bytes());
    b.put_u8(b'\n');
    // `EventSource` ignores fields it does not know, so the topics ride along for free:
    // raw readers (`curl`, `runnel sub`) see them, and `envelope` streams show them to scripts.
    for t in topics {
        b.put_slice(b"topic: ");
        b.put_slice(t.as_bytes());
        b.put_u8(b'\n');
    }
    if let Some(e) = event {
        b.put_slice(b"event: ");
        b.put_slice(e.as_bytes());
        b.put_u8(b'\n');
    }
    if let Some(r) = retry {
        b.put_slice(format!("retry: {r}\n").as_bytes());
    }
    for line in data_lines(data) {
        b.put_slice(b"data: ");
        b.put_slice(line.as_bytes());
        b.put_u8(b'\n');
    }
    b.put_u8(b'\n');
    b.freeze()
}

/// Splits on `\r\n`, `\n` and `\r`; an empty string is one empty line.
fn data_lines(data: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(data);
    std::iter::from_fn(move || {
        let s = rest?;
        match s.find(['\r', '\n']) {
            Some(i) => {
                let skip = if s[i..].starts_with("\r\n") { 2 } else { 1 };
                rest = Some(&s[i + skip..]);
                Some(&s[..i])
            }
            None => {
                rest = None;
                Some(s)
            }
        }
    })
}

/// The text sent for a JSON `data` value: a string as-is, anything else as compact JSON.
pub fn data_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => serde_json::to_string(other).unwrap_or_default(),
    }
}

/// One event read from an SSE stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedEvent {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
    pub retry: Option<u64>,
    /// runnel's `topic:` fields (other servers send none).
    pub topics: Vec<String>,
}

/// An incremental SSE parser (the reading side of the format, for `runnel sub`).
#[derive(Debug, Default)]
pub struct Parser {
    buf: Vec<u8>,
    cur: ParsedEvent,
    has_data: bool,
}

impl Parser {
    /// Feeds bytes; returns the events completed by them.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<ParsedEvent> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(nl) = self.buf.iter().position(|&b| b == b'\n' || b == b'\r') {
            // A CR at the very end may be the first half of CRLF: wait for more.
            if self.buf[nl] == b'\r' && nl + 1 == self.buf.len() {
                break;
            }
            let skip = if self.buf[nl] == b'\r' && self.buf.get(nl + 1) == Some(&b'\n') {
                2
            } else {
                1
            };
            let line: Vec<u8> = self.buf.drain(..nl + skip).take(nl).collect();
            let line = String::from_utf8_lossy(&line);
            if line.is_empty() {
                let ev = std::mem::take(&mut self.cur);
                if self.has_data || ev.event.is_some() || ev.retry.is_some() {
                    out.push(ev);
                }
                self.has_data = false;
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (&*line, ""),
            };
            match field {
                "data" => {
                    if self.has_data {
                        self.cur.data.push('\n');
                    }
                    self.cur.data.push_str(value);
                    self.has_data = true;
                }
                "event" => self.cur.event = Some(value.to_string()),
                "id" => self.cur.id = Some(value.to_string()),
                "retry" => self.cur.retry = value.parse().ok(),
                "topic" => self.cur.topics.push(value.to_string()),
                _ => {}
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_multiline_data() {
        let f = encode_event("7", &[], Some("update"), Some(500), "a\nb\r\nc\rd");
        assert_eq!(
            &f[..],
            b"id: 7\nevent: update\nretry: 500\ndata: a\ndata: b\ndata: c\ndata: d\n\n"
        );
        assert_eq!(
            &encode_event("1", &[], None, None, "")[..],
            b"id: 1\ndata: \n\n"
        );
        let t = ["news".to_string(), "user/al".to_string()];
        assert_eq!(
            &encode_event("2", &t, None, None, "x")[..],
            b"id: 2\ntopic: news\ntopic: user/al\ndata: x\n\n"
        );
    }

    #[test]
    fn data_text_rules() {
        assert_eq!(data_text(&serde_json::json!("plain")), "plain");
        assert_eq!(
            data_text(&serde_json::json!({"a": [1, 2]})),
            r#"{"a":[1,2]}"#
        );
        assert_eq!(data_text(&serde_json::json!("x\ny")), "x\ny");
    }

    #[test]
    fn parser_roundtrip_in_pieces() {
        let f = encode_event("42", &["t".to_string()], Some("t"), None, "one\ntwo");
        let mut p = Parser::default();
        let mut got = Vec::new();
        for b in f.iter().chain(b": keepalive\n\n".iter()) {
            got.extend(p.feed(&[*b]));
        }
        assert_eq!(
            got,
            vec![ParsedEvent {
                id: Some("42".into()),
                event: Some("t".into()),
                data: "one\ntwo".into(),
                retry: None,
                topics: vec!["t".into()],
            }]
        );
        let got = p.feed(b"retry: 10\r\n\r\ndata:x\r\rdata: y\n\n");
        assert_eq!(got[0].retry, Some(10));
        assert_eq!(got[1].data, "x");
        assert_eq!(got[2].data, "y");
    }
}
