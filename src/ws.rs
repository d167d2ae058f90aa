//! WebSocket framing for what the hub sends (RFC 6455): unmasked server frames built once
//! and shared like SSE frames, and the handshake's accept key. Reading what clients send
//! (masks, fragments, UTF-8, control frames) is the WebSocket library's, in `server`.

use bytes::{BufMut, Bytes, BytesMut};

/// Close codes the hub sends (RFC 6455 §7.4.1).
pub mod close {
    /// The hub ended the connection normally (an admin closed it, a newer one replaced it).
    pub const NORMAL: u16 = 1000;
    /// A frame broke the protocol.
    pub const PROTOCOL: u16 = 1002;
    /// A text frame that is not UTF-8.
    pub const INVALID_DATA: u16 = 1007;
    /// The credential expired.
    pub const POLICY: u16 = 1008;
    /// A message larger than `limits.max_body_bytes`.
    pub const TOO_BIG: u16 = 1009;
    /// The hub could not go on (the replay failed): reconnect.
    pub const INTERNAL: u16 = 1011;
    /// The hub is restarting or shutting down: reconnect.
    pub const RESTART: u16 = 1012;
    /// The connection fell behind (slow reader): reconnect with the last id.
    pub const TRY_AGAIN_LATER: u16 = 1013;
}

const FIN: u8 = 0x80;
const TEXT: u8 = 0x1;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;

/// The GUID of RFC 6455 §1.3, appended to the client's key.
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// `Sec-WebSocket-Accept` for the client's `Sec-WebSocket-Key`.
pub fn accept_key(key: &str) -> String {
    use base64::Engine as _;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(key.trim().as_bytes());
    ctx.update(ACCEPT_GUID);
    base64::engine::general_purpose::STANDARD.encode(ctx.finish().as_ref())
}

/// Is this a well-formed `Sec-WebSocket-Key` (16 bytes in base64)?
pub fn valid_key(key: &str) -> bool {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(key.trim())
        .is_ok_and(|k| k.len() == 16)
}

fn frame(opcode: u8, payload: &[u8], extra: usize) -> BytesMut {
    let len = payload.len();
    let mut b = BytesMut::with_capacity(len + 10 + extra);
    b.put_u8(FIN | opcode);
    if len < 126 {
        b.put_u8(len as u8);
    } else if let Ok(n) = u16::try_from(len) {
        b.put_u8(126);
        b.put_u16(n);
    } else {
        b.put_u8(127);
        b.put_u64(len as u64);
    }
    b.put_slice(payload);
    b
}

/// One text frame holding `payload` (which must be UTF-8: the hub's JSON).
pub fn text_frame(payload: &[u8]) -> Bytes {
    frame(TEXT, payload, 0).freeze()
}

/// A text frame followed by a close frame with `code`: the hub's last message.
pub fn text_then_close(payload: &[u8], code: u16, reason: &str) -> Bytes {
    let mut b = frame(TEXT, payload, 4 + reason.len());
    b.put_slice(&close_frame(code, reason));
    b.freeze()
}

/// A close frame with `code` and a short reason (at most 123 bytes are kept).
pub fn close_frame(code: u16, reason: &str) -> Bytes {
    let mut cut = reason.len().min(123);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut payload = Vec::with_capacity(2 + cut);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..cut]);
    frame(CLOSE, &payload, 0).freeze()
}

/// The heartbeat: an empty ping, which the client answers with a pong.
pub fn ping_frame() -> Bytes {
    Bytes::from_static(&[FIN | PING, 0])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_is_rfc6455s_example() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert!(valid_key("dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(!valid_key("c2hvcnQ="));
        assert!(!valid_key("not base64!"));
    }

    #[test]
    fn frame_lengths_use_the_three_forms() {
        assert_eq!(&text_frame(b"hi")[..], b"\x81\x02hi");
        let mid = text_frame(&[b'a'; 300]);
        assert_eq!(&mid[..4], &[0x81, 126, 1, 44]);
        assert_eq!(mid.len(), 304);
        let big = text_frame(&vec![b'a'; 70_000]);
        assert_eq!(&big[..2], &[0x81, 127]);
        assert_eq!(&big[2..10], &70_000u64.to_be_bytes());
        assert_eq!(
            &close_frame(1013, "slow")[..],
            b"\x88\x06\x03\xf5slow".as_slice()
        );
        let both = text_then_close(b"{}", 1012, "");
        assert_eq!(&both[..], b"\x81\x02{}\x88\x02\x03\xf4".as_slice());
        assert_eq!(close_frame(1000, &"é".repeat(100)).len(), 2 + 2 + 122);
    }
}
