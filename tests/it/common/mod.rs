//! Test helpers: start the real hub on 127.0.0.1:0 (in-process, or as the `runnel` binary),
//! talk raw HTTP/1.1 to it, and read SSE streams with a small independent parser. `tls` (not
//! re-exported) is a client for HTTPS hubs.

mod auth;
mod http;
mod process;
mod sse;
pub mod tls;
pub mod v1;
mod ws;

pub use {auth::*, http::*, process::*, sse::*, ws::*};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use runnel::config::{Config, Dur};
use runnel::server::{self, Running};

pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A hub running inside the test process.
pub struct TestHub {
    pub addr: SocketAddr,
    /// The data directory (no test reads it back yet).
    #[allow(dead_code)]
    pub dir: PathBuf,
    running: Option<Running>,
    _tmp: Option<tempfile::TempDir>,
}

/// A configuration for tests: port 0, a fresh data dir, short timers.
pub fn test_config(dir: &Path) -> Config {
    let mut c = Config {
        listen: "127.0.0.1:0".into(),
        data_dir: dir.to_path_buf(),
        ..Config::default()
    };
    c.stream.retry = Dur(Duration::from_millis(200));
    c.stream.shutdown_grace = Dur(Duration::from_secs(3));
    c
}

impl TestHub {
    pub async fn start() -> TestHub {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(f: impl FnOnce(&mut Config)) -> TestHub {
        let tmp = tempfile::tempdir().unwrap();
        let mut hub = Self::start_in(tmp.path(), f).await;
        hub._tmp = Some(tmp);
        hub
    }

    /// Starts on an existing data directory (to test restarts).
    pub async fn start_in(dir: &Path, f: impl FnOnce(&mut Config)) -> TestHub {
        let mut c = test_config(dir);
        f(&mut c);
        c.validate().expect("test config is valid");
        let running = server::start(c).await.expect("hub starts");
        TestHub {
            addr: running.local_addr(),
            dir: dir.to_path_buf(),
            running: Some(running),
            _tmp: None,
        }
    }

    pub fn running(&self) -> &Running {
        self.running.as_ref().unwrap()
    }

    pub async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }

    pub async fn get(&self, path: &str) -> Resp {
        request(self.addr, "GET", path, &[], b"").await
    }

    pub async fn post_json(&self, path: &str, v: &Value) -> Resp {
        post_json_at(self.addr, path, v).await
    }

    /// Publishes and insists on success; returns the answer.
    pub async fn publish(&self, v: Value) -> Value {
        let r = self.post_json("/publish", &v).await;
        assert_eq!(r.status, 200, "publish failed: {}", r.text());
        r.json()
    }

    pub async fn sse(&self, path: &str) -> Sse {
        Sse::open(self.addr, path, &[]).await
    }
}

/// Polls `f` until it returns true or `t` passes.
pub async fn eventually(t: Duration, mut f: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + t;
    while Instant::now() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}
