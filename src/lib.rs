//! runnel: a single-binary Server-Sent Events hub for small always-on machines.
//!
//! Backends publish over HTTP, browsers subscribe with `EventSource`, and a client that
//! drops off resumes from a replay log on disk. One process holds topics and streams in
//! memory and the log in sled.
//!
//! # Layout
//! - [`config`]: the TOML file, `RUNNEL_*` environment, validation, masked secrets.
//! - [`server`]: the accept loop, background tasks (heartbeat, retention), shutdown;
//!   [`conn`]: one connection (event streams written directly, the rest through hyper);
//!   [`io`]: the socket wrapper that drops clients which stop reading; [`tls`]: HTTPS
//!   certificates, reloadable.
//! - [`http`]: routing and the HTTP handlers; [`error`]: the one error → status + JSON map.
//! - [`sse`]: SSE frame encoding, the stream body, and a parser for the client.
//! - [`broker`]: streams, topic index, bounded per-stream queues, fan-out.
//! - [`publisher`]: ids, the log write, group commit, in-order fan-out.
//! - [`message`]: publish/notify request bodies → validated events.
//! - [`store`]: the sled replay log, ids, replay, retention.
//! - [`topic`]: topic and pattern rules; [`auth`]: callers and permissions.
//! - [`hub`]: the shared handle; [`idempotency`], [`stats`], [`shutdown`]: as named;
//!   [`systemd`]: readiness and watchdog notifications.
//! - [`cli`] and [`client`]: the command line, including `runnel pub` and `runnel sub`.

pub mod auth;
pub mod broker;
pub mod cli;
pub mod client;
pub mod config;
pub mod conn;
pub mod error;
pub mod http;
pub mod hub;
pub mod idempotency;
pub mod io;
pub mod message;
pub mod publisher;
pub mod server;
pub mod shutdown;
pub mod sse;
pub mod stats;
pub mod store;
pub mod systemd;
pub mod tls;
pub mod topic;

use ring::rand::{SecureRandom, SystemRandom};

/// Random bytes from the OS, as lowercase hex.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    fill_random(&mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// A random u32 from the OS.
pub fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    fill_random(&mut b);
    u32::from_le_bytes(b)
}

fn fill_random(buf: &mut [u8]) {
    // The OS random source failing is not something a server can work around.
    if SystemRandom::new().fill(buf).is_err() {
        panic!("the operating system's random number generator failed");
    }
}
