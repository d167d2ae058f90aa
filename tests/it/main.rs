//! The integration tests, in one binary (one link of the library instead of one per file).
//! Each module is one concern; `common` holds the helpers they share.

mod common;

mod auth;
mod connections;
mod cookies_cors;
mod errors;
mod history;
mod layout;
mod lifecycle;
mod limits;
mod logs;
mod ntfy;
mod ops;
mod publish;
mod redis;
mod reliability;
mod replay;
mod sessions;
mod shipped_config;
mod streams;
mod systemd;
mod tls;
mod upgrade;
mod ws;
