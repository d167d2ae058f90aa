//! SPEC §11.2: Redis ingress, against Debian's `redis-server`: each test starts its own on a
//! free port of 127.0.0.1 with a temporary directory, and stops it.
//!
//! These need `redis-server` and are `#[ignore]`d for `cargo test` on a machine with Rust
//! only; `.ci/run` installs it and runs them with `cargo test --test it redis:: --
//! --ignored`. A missing `redis-server` there fails them: nothing is skipped.

mod cluster;
mod ingress;
mod streams;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use runnel::config::{Config, IngressRule, RedisUrl};
use serde_json::Value;

use crate::common::*;

/// A `redis-server` of the test's own.
pub struct Redis {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// More `redis-server` arguments (a password, TLS), and what `redis-cli` then needs.
    server_args: Vec<String>,
    cli_args: Vec<String>,
}

impl Redis {
    /// Starts one on a free port, with the append-only file on (fsync always), so that a
    /// restart keeps what it acknowledged.
    pub fn start() -> Redis {
        Self::start_with(Vec::new(), Vec::new())
    }

    /// The same with more server arguments, and the arguments `redis-cli` needs for it.
    pub fn start_with(server_args: Vec<String>, cli_args: Vec<String>) -> Redis {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut r = Redis {
            port,
            dir: tempfile::tempdir().unwrap(),
            child: None,
            server_args,
            cli_args,
        };
        r.restart();
        r
    }

    /// Starts it (again) on the same port and directory.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let tls = self.server_args.iter().any(|a| a == "--tls-port");
        let port = self.port.to_string();
        let (plain, tls_port) = if tls {
            ("0", port.as_str())
        } else {
            (port.as_str(), "0")
        };
        let child = Command::new("redis-server")
            .args([
                "--port",
                plain,
                "--tls-port",
                tls_port,
                "--bind",
                "127.0.0.1",
                "--dir",
                self.dir.path().to_str().unwrap(),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .args(self.server_args.iter().filter(|a| *a != "--tls-port"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs (install Debian's redis-server)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.try_cli(&["PING"]).as_deref() != Some("PONG") {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops it (its data stays in the directory).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg(c.id().to_string()).status();
            let _ = c.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn try_cli(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(&self.cli_args)
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// A command through `redis-cli`; its answer as text.
    pub fn cli(&self, args: &[&str]) -> String {
        self.try_cli(args)
            .unwrap_or_else(|| panic!("redis-cli {args:?} failed"))
    }

    /// `PUBLISH`es a payload given as bytes (so it may be anything), through `redis-cli -x`.
    pub fn publish_bytes(&self, channel: &str, payload: &[u8]) {
        use std::io::Write as _;
        let mut c = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(&self.cli_args)
            .args(["-x", "PUBLISH", channel])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(payload).unwrap();
        assert!(c.wait().unwrap().success());
    }

    #[allow(dead_code)]
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A rule: `f` fills in what the test needs.
pub fn rule(f: impl FnOnce(&mut IngressRule)) -> IngressRule {
    let mut r = IngressRule {
        group: "runnel".into(),
        field: "data".into(),
        ..IngressRule::default()
    };
    f(&mut r);
    r
}

/// Points a hub's configuration at `redis` with these rules.
pub fn with_rules(c: &mut Config, redis: &Redis, rules: Vec<IngressRule>) {
    c.redis.url = Some(RedisUrl(redis.url()));
    c.redis.ingress = rules;
}

/// Waits until `/health` says every ingress source is connected.
pub async fn connected(addr: std::net::SocketAddr) {
    let ok = eventually(Duration::from_secs(15), async || {
        let h = request(addr, "GET", "/health", &[], b"").await.json();
        h["status"] == "ok"
    })
    .await;
    assert!(ok, "the ingress did not connect");
}

/// The `/stats` ingress entries.
pub async fn ingress_stats(addr: std::net::SocketAddr) -> Vec<Value> {
    let s = request(addr, "GET", "/stats", &[], b"").await.json();
    s["ingress"].as_array().cloned().unwrap_or_default()
}

/// The `/stats` ingress entries once the first source counts `published` events. A stream
/// can see an event before the ingress counts it: the count follows the publish's return,
/// and the fan-out happens inside it.
pub async fn ingress_stats_once_published(
    addr: std::net::SocketAddr,
    published: u64,
) -> Vec<Value> {
    eventually(Duration::from_secs(5), async || {
        ingress_stats(addr).await[0]["published"].as_u64() >= Some(published)
    })
    .await;
    ingress_stats(addr).await
}
