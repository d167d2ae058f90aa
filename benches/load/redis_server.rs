//! Redis for the redis-ingress and cluster scenarios: a `redis-server` of the generator's own
//! (a free port of 127.0.0.1, a temporary directory, no snapshots, no append-only file), or
//! the one `--redis-url` names; and, for redis-ingress, the hub's configuration file that reads
//! from it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::Opts;
use crate::server::cpu_of;

/// The channels are `bench:<k>` and the rule makes each one topic `bench/<k>`.
pub const PATTERN: &str = "bench:*";
pub const TOPIC: &str = "bench/{1}";

pub struct Redis {
    pub url: String,
    child: Option<Child>,
    /// Holds the hub's configuration file (and the server's working directory).
    dir: tempfile::TempDir,
}

impl Redis {
    /// Starts a `redis-server` unless `--redis-url` gives one, writes the hub's configuration
    /// and adds it to the spawned hub's environment (`RUNNEL_CONFIG`).
    pub fn prepare(opts: &mut Opts) -> Redis {
        let redis = Redis::start(opts);
        let url = &redis.url;
        let config = redis.dir.path().join("runnel.toml");
        std::fs::write(
            &config,
            format!(
                "[redis]\nurl = \"{url}\"\n\n[[redis.ingress]]\npattern = \"{PATTERN}\"\n\
                 topic = \"{TOPIC}\"\n"
            ),
        )
        .expect("write the hub's configuration");
        opts.env
            .insert(0, format!("RUNNEL_CONFIG={}", config.display()));
        redis
    }

    /// Starts a `redis-server` unless `--redis-url` gives one; configures no hub.
    pub fn start(opts: &Opts) -> Redis {
        let dir = tempfile::tempdir().expect("temp dir");
        let (url, child) = match &opts.redis_url {
            Some(u) => (u.clone(), None),
            None => {
                let (port, child) = start(dir.path());
                (format!("redis://127.0.0.1:{port}/0"), Some(child))
            }
        };
        Redis { url, child, dir }
    }

    /// The server's user + system CPU seconds (ours only).
    pub fn cpu_s(&self) -> Option<f64> {
        let (u, s) = cpu_of(self.child.as_ref()?.id())?;
        Some(u + s)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Starts `redis-server` in `dir` on a free port and waits for its PONG.
fn start(dir: &std::path::Path) -> (u16, Child) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--dir"])
        .arg(dir)
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start redis-server (Debian's redis-server package)");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !pong(port) {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    (port, child)
}

fn pong(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let mut buf = [0u8; 7];
    s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}
