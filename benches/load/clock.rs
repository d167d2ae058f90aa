//! Clock: send times are nanoseconds since this process started. Each event's data is
//! `<seq> <send time>`, padded to the payload size.

use std::sync::OnceLock;
use std::time::Instant;

pub fn epoch() -> Instant {
    static E: OnceLock<Instant> = OnceLock::new();
    *E.get_or_init(Instant::now)
}

pub fn now_ns() -> u64 {
    epoch().elapsed().as_nanos() as u64
}

pub fn data_for(seq: u64, payload: usize) -> String {
    let mut d = format!("{seq} {}", now_ns());
    if d.len() < payload {
        d.push(' ');
        while d.len() < payload {
            d.push('x');
        }
    }
    d
}
