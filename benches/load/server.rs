//! The server: spawned or given, and what /proc says about it.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::Opts;
use crate::client::use_tls;

pub struct Server {
    pub addr: SocketAddr,
    pid: Option<u32>,
    child: Option<Child>,
    dir: Option<tempfile::TempDir>,
}

impl Server {
    pub fn spawn(opts: &Opts, dir: Option<tempfile::TempDir>) -> Server {
        let dir = dir.unwrap_or_else(|| tempfile::tempdir().expect("temp dir"));
        let port = free_port();
        let mut cmd = match &opts.hub_bin {
            Some(bin) => Command::new(bin),
            None => Command::new(env!("CARGO_BIN_EXE_runnel")),
        };
        cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--data")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        // What the hub says (warnings and worse) goes to a file, for when it fails to start.
        let stderr = dir.path().join(STDERR);
        cmd.stderr(std::fs::File::create(&stderr).expect("the hub's stderr file"));
        for (k, _) in std::env::vars() {
            if k.starts_with("RUNNEL_") {
                cmd.env_remove(k);
            }
        }
        // Everything runs from 127.0.0.1; lift the per-host and total stream limits.
        cmd.env("RUNNEL_LIMITS_MAX_CONNECTIONS_PER_IP", "1000000")
            .env("RUNNEL_LIMITS_MAX_CONNECTIONS", "1000000")
            .env("RUNNEL_LOG", "warn");
        for kv in &opts.env {
            let (k, v) = kv.split_once('=').expect("--env KEY=VALUE");
            cmd.env(k, v);
        }
        if opts.tls {
            let made = runnel::tls::self_signed(&["127.0.0.1".into()]).expect("a certificate");
            let (cert, key) = (dir.path().join("bench.crt"), dir.path().join("bench.key"));
            std::fs::write(&cert, &made.cert_pem).unwrap();
            std::fs::write(&key, &made.key_pem).unwrap();
            cmd.env("RUNNEL_TLS_CERT", &cert)
                .env("RUNNEL_TLS_KEY", &key);
            use_tls(made.cert_pem.as_bytes());
        }
        let mut child = cmd.spawn().expect("start runnel");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let start = Instant::now();
        while std::net::TcpStream::connect(addr).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "runnel exited ({status}) before listening: {}",
                    tail(&stderr)
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "runnel did not start: {}",
                tail(&stderr)
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        Server {
            addr,
            pid: Some(child.id()),
            child: Some(child),
            dir: Some(dir),
        }
    }

    pub fn given(opts: &Opts) -> Server {
        if opts.url.starts_with("https://") {
            let ca = opts.ca.as_ref().expect("an https:// --url needs --ca FILE");
            use_tls(&std::fs::read(ca).expect("read --ca"));
        }
        let rest = opts
            .url
            .trim_start_matches("http://")
            .trim_start_matches("https://");
        let hostport = rest.split('/').next().unwrap();
        let addr = std::net::ToSocketAddrs::to_socket_addrs(hostport)
            .ok()
            .and_then(|mut a| a.next())
            .expect("--url must be http(s)://host:port");
        Server {
            addr,
            pid: opts.pid,
            child: None,
            dir: None,
        }
    }

    /// Stops a spawned hub with SIGTERM and keeps its data directory.
    pub fn stop(&mut self) -> Option<tempfile::TempDir> {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
        self.dir.take()
    }

    /// The end of what the spawned hub wrote to stderr (its warnings and errors), if any.
    pub fn stderr_tail(&self) -> Option<String> {
        let text = tail(&self.dir.as_ref()?.path().join(STDERR));
        (!text.is_empty()).then_some(text)
    }

    pub fn rss_kib(&self) -> Option<u64> {
        self.status_kib("VmRSS:")
    }

    /// The most RSS the hub has had.
    pub fn rss_peak_kib(&self) -> Option<u64> {
        self.status_kib("VmHWM:")
    }

    fn status_kib(&self, field: &str) -> Option<u64> {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid?)).ok()?;
        s.lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// Bytes the hub has caused to be sent to the block device (`write_bytes` in
    /// `/proc/<pid>/io`): its log writes and flushes.
    pub fn write_bytes(&self) -> Option<u64> {
        let s = std::fs::read_to_string(format!("/proc/{}/io", self.pid?)).ok()?;
        s.lines()
            .find_map(|l| l.strip_prefix("write_bytes:"))
            .and_then(|v| v.trim().parse().ok())
    }

    /// What the spawned hub's data directory takes (the files' sizes), if it is ours.
    pub fn data_dir_bytes(&self) -> Option<u64> {
        self.dir.as_ref().map(|d| dir_size(d.path()))
    }

    /// User + system CPU time in seconds.
    pub fn cpu_s(&self) -> Option<f64> {
        self.cpu_split().map(|(u, s)| u + s)
    }

    /// User and system CPU time in seconds.
    pub fn cpu_split(&self) -> Option<(f64, f64)> {
        cpu_of(self.pid?)
    }
}

/// A process's user and system CPU time in seconds, from /proc.
pub fn cpu_of(pid: u32) -> Option<(f64, f64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = after.split(' ').collect();
    let user: u64 = f.get(11)?.parse().ok()?;
    let sys: u64 = f.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some((user as f64 / hz, sys as f64 / hz))
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The spawned hub's stderr, in its data directory.
const STDERR: &str = "hub.stderr";

/// The last 2,000 bytes of a file, trimmed (empty if there is none).
fn tail(path: &std::path::Path) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let from = text.len().saturating_sub(2000);
    String::from_utf8_lossy(&text[from..]).trim().to_string()
}

fn dir_size(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn raise_fd_limit() {
    // SAFETY: plain libc calls on a local struct.
    unsafe {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 {
            // Root may lift the hard limit too (the spawned hub inherits it).
            let want = libc::rlimit {
                rlim_cur: 1 << 20,
                rlim_max: 1 << 20,
            };
            if r.rlim_max >= want.rlim_max || libc::setrlimit(libc::RLIMIT_NOFILE, &want) != 0 {
                r.rlim_cur = r.rlim_max;
                libc::setrlimit(libc::RLIMIT_NOFILE, &r);
            }
        }
    }
}
