//! Ingress (SPEC §11.2): messages from Redis become events, through the same publish path as
//! every front door's (persisted, numbered, retention, limits).
//!
//! - `rule`: a rule, compiled from `[[redis.ingress]]`, turns one message (a channel or
//!   stream name, the pattern's captures, a payload, a stream entry's fields) into a
//!   `NewEvent`, or says why it is dropped;
//! - `redis`: the connections: pub/sub (at most once) and Streams through a consumer group
//!   (at least once, redeliveries recognised by the entry id the log keeps), reconnecting
//!   with capped backoff while the hub serves on.

mod redis;
mod rule;

pub use self::redis::spawn;
