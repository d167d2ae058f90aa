//! The client's SSE parser on arbitrary input, fed in arbitrary pieces: never a panic, and
//! the pieces do not change the result.
#![no_main]
use libfuzzer_sys::fuzz_target;
use runnel::sse::Parser;

fuzz_target!(|data: &[u8]| {
    let whole = Parser::default().feed(data);
    let mut p = Parser::default();
    let mut pieces = Vec::new();
    let cut = data.first().map_or(1, |b| usize::from(*b % 7) + 1);
    for chunk in data.chunks(cut) {
        pieces.extend(p.feed(chunk));
    }
    assert_eq!(whole, pieces);
});
