//! runnel: a single-binary Server-Sent Events hub for small always-on machines.
//!
//! Backends publish over HTTP, browsers subscribe with `EventSource`, and a client that
//! drops off resumes from a replay log on disk. One process holds topics and streams in
//! memory and the log in sled.
//!
//! # Layout
//! From the outside in (docs/ARCHITECTURE.md draws the same map and both data paths):
//! - [`cli`]: the command line; [`client`]: `runnel pub` and `runnel sub` over HTTP.
//! - [`server`]: the accept loop, connections (event streams written directly, the rest
//!   through hyper), shutdown, systemd; [`tls`]: HTTPS certificates, reloadable.
//! - `http`: the HTTP API, the first front door: routing, one file per group of handlers.
//! - `ingress`: Redis pub/sub and Streams feeding the hub (SPEC §11.2), through `hub`.
//! - `cluster`: several hubs as one (SPEC §11.3): the shared log, a Redis Stream.
//! - `hub`: the one API every front door calls — publish, open a stream, change
//!   subscriptions, connections, stats, health — with the hub's state private behind it.
//! - `stream`: opening a stream, resuming it, the replay joined to live events.
//! - `publisher`: ids, the log write, group commit, fan-out in id order.
//! - `broker`: open streams, the topic index, bounded queues, sessions, fan-out.
//! - [`store`]: the replay log behind one trait; the sled engine: records, replay, retention.
//! - [`auth`]: callers and permissions, JWTs, API keys, exchange tokens, CORS and cookies.
//! - [`message`]: publish and notify request bodies → validated events.
//! - Leaves, which import nothing of the hub: `event` (events, the hub's own messages and
//!   their wire formats), [`sse`] (framing and a parser), [`topic`], [`config`] (and its
//!   value types), [`error`], `idempotency`, [`shutdown`], `time`, `random`, `ws`
//!   (WebSocket frames the hub sends), `ntfy` (ntfy's message object on its wires).

#![warn(clippy::too_many_lines)]

pub mod auth;
pub(crate) mod broker;
pub mod cli;
pub mod client;
pub(crate) mod cluster;
pub mod config;
pub mod error;
pub(crate) mod event;
pub(crate) mod http;
pub(crate) mod hub;
pub(crate) mod idempotency;
pub(crate) mod ingress;
pub mod message;
pub(crate) mod ntfy;
pub(crate) mod publisher;
pub(crate) mod random;
pub mod server;
pub mod shutdown;
pub mod sse;
pub mod store;
pub(crate) mod stream;
pub(crate) mod time;
pub mod tls;
pub mod topic;
pub(crate) mod ws;
