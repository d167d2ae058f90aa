//! Event ids as clients send them back: never a panic; whatever parses formats back to the
//! same position.
#![no_main]
use libfuzzer_sys::fuzz_target;
use runnel::store::{format_id, parse_id};

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    if let Some((inc, seq)) = parse_id(&s) {
        assert_eq!(parse_id(&format_id(inc, seq)), Some((inc, seq)));
        assert!(s.eq_ignore_ascii_case(&format_id(inc, seq)));
    }
    if data.len() >= 12 {
        let inc = u32::from_le_bytes(data[..4].try_into().unwrap());
        let seq = u64::from_le_bytes(data[4..12].try_into().unwrap());
        assert_eq!(parse_id(&format_id(inc, seq)), Some((inc, seq)));
    }
});
