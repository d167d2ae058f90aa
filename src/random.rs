//! Randomness from the operating system: connection ids, exchange tokens, store incarnations.

use ring::rand::{SecureRandom, SystemRandom};

/// Random bytes from the OS, as lowercase hex.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    fill(&mut buf);
    hex::encode(buf)
}

/// A random u32 from the OS.
pub fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    fill(&mut b);
    u32::from_le_bytes(b)
}

fn fill(buf: &mut [u8]) {
    // The OS random source failing is not something a server can work around.
    if SystemRandom::new().fill(buf).is_err() {
        panic!("the operating system's random number generator failed");
    }
}
