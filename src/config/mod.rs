//! Configuration (SPEC §3): a TOML file, overridden by `RUNNEL_<SECTION>_<KEY>` environment
//! variables, overridden by command-line flags; then one `validate()` pass.
//!
//! Every struct denies unknown fields, so a typo is an error that names the key. Durations
//! (`"500ms"`, `"15s"`, `"1h30m"`) and sizes (`"64KiB"`, `"8MiB"`) are strings. Secrets live
//! in [`Secret`], whose `Debug` and serialized form are `***`, so `runnel check` and logs never
//! print them.
//!
//! - this file: the sections and their defaults;
//! - [`load`]: finding the file, `include`, the environment;
//! - `validate`: what serde cannot check, one function per section;
//! - [`value`]: durations, sizes, secrets and networks as written in the file.

mod load;
mod redis;
mod validate;
mod value;

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use load::{Loaded, load, parse_with_env, parse_with_env_in};
pub use redis::{
    ClusterConfig, EventName, Glob, IngressRule, RedisConfig, RedisUrl, Source, Target, Template,
};
pub use value::{ByteSize, Dur, Secret, parse_net};

/// A configuration problem, worded for the person editing the file.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError(msg.into()))
}

/// The whole configuration. Field names are the contract of SPEC §3.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Other TOML files merged under this one (relative paths: from this file's directory),
    /// e.g. secrets kept in a file only root and the service can read. Tables merge,
    /// `[[auth.api_keys]]` add up, and this file's values win.
    // `runnel check` prints the merged result, so the includes are not printed as keys.
    #[serde(skip_serializing)]
    pub include: Vec<PathBuf>,
    /// Address to listen on, `host:port`.
    pub listen: String,
    /// Where the replay log lives.
    pub data_dir: PathBuf,
    /// Log level: error, warn, info, debug or trace.
    pub log: String,
    /// `text` (one line per entry, for people and journald) or `json` (one object per line,
    /// for log shippers).
    pub log_format: String,
    pub stream: StreamConfig,
    pub store: StoreConfig,
    pub limits: LimitsConfig,
    pub auth: AuthConfig,
    pub cors: CorsConfig,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    pub ntfy: NtfyConfig,
    pub redis: RedisConfig,
    pub cluster: ClusterConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            include: Vec::new(),
            listen: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from("./runnel-data"),
            log: "info".into(),
            log_format: "text".into(),
            stream: StreamConfig::default(),
            store: StoreConfig::default(),
            limits: LimitsConfig::default(),
            auth: AuthConfig::default(),
            cors: CorsConfig::default(),
            tls: None,
            ntfy: NtfyConfig::default(),
            redis: RedisConfig::default(),
            cluster: ClusterConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamConfig {
    /// A `: keepalive` comment goes to a stream that was silent this long.
    pub heartbeat: Dur,
    /// Sent as `retry:` when a stream opens: how long a browser waits before reconnecting.
    pub retry: Dur,
    /// How long shutdown waits for streams and requests to finish.
    pub shutdown_grace: Dur,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            heartbeat: Dur::secs(15),
            retry: Dur::secs(3),
            shutdown_grace: Dur::secs(10),
        }
    }
}

/// When a publish is acknowledged relative to the disk flush.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    /// Flush before each acknowledgement.
    Always,
    /// Group commit: concurrent publishes share one flush, still before the acknowledgement.
    Batch,
    /// Acknowledge before the flush, which happens every `store.flush_interval`.
    None,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Events kept per topic.
    pub retention_events: u64,
    /// Events older than this are pruned.
    pub retention_age: Dur,
    /// Oldest events are pruned once the log holds more than this.
    pub max_disk: ByteSize,
    pub sync: SyncMode,
    /// With `sync = "none"`: how often what was published is written and flushed (one write
    /// per interval, whatever the rate; a crash loses at most this much).
    pub flush_interval: Dur,
    /// With `sync = "batch"`: while several connections publish, how long a commit may wait
    /// for each to have a publish in it, so that they share one flush ("0s": never wait).
    pub commit_delay: Dur,
    /// sled's page cache (its own default is 1 GiB, far too much for a Pi).
    pub cache: ByteSize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            retention_events: 1000,
            retention_age: Dur::secs(24 * 3600),
            max_disk: ByteSize(256 << 20),
            sync: SyncMode::Batch,
            flush_interval: Dur::secs(2),
            commit_delay: Dur(std::time::Duration::from_millis(5)),
            cache: ByteSize(8 << 20),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub max_connections: usize,
    pub max_connections_per_user: usize,
    pub max_connections_per_ip: usize,
    pub max_topics_per_stream: usize,
    pub max_event_bytes: ByteSize,
    pub max_body_bytes: ByteSize,
    /// Events queued per stream before it counts as slow and is closed.
    pub stream_queue: usize,
    pub single_connection_per_user: bool,
    /// Time allowed to send a request's headers (from the connection's start, or the end of
    /// the previous response) and, separately, its body: slow or silent clients are dropped.
    pub request_timeout: Dur,
    /// A client that takes nothing from its socket for this long is disconnected (its
    /// stream resumes from the log when it reconnects).
    pub write_timeout: Dur,
    /// Largest request head (request line and headers); beyond: 431.
    pub max_header_bytes: ByteSize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections: 10_000,
            max_connections_per_user: 32,
            max_connections_per_ip: 256,
            max_topics_per_stream: 64,
            max_event_bytes: ByteSize(64 << 10),
            max_body_bytes: ByteSize(1 << 20),
            stream_queue: 256,
            single_connection_per_user: false,
            request_timeout: Dur::secs(10),
            write_timeout: Dur::secs(30),
            max_header_bytes: ByteSize(16 << 10),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// `true` (the default when credentials are configured): requests need credentials except
    /// for `anonymous_subscribe` topics. `false`: everything is open. Unset with no credentials
    /// configured: open, but the hub only listens on loopback.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub required: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt_secret: Option<Secret>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt_public_key_file: Option<PathBuf>,
    /// `RS256` or `ES256` for `jwt_public_key_file` (default: from the key's type).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt_algorithm: Option<String>,
    /// When set, tokens must carry this `aud`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt_audience: Option<String>,
    /// When set, tokens must carry this `iss`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt_issuer: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway: Dur,
    pub cookie_name: String,
    pub anonymous_subscribe: Vec<String>,
    pub default_subscribe: Vec<String>,
    pub allow_ips: Vec<String>,
    /// A user's session (topics added with `POST /subscribe`) is forgotten after this long
    /// without an open stream or a session call.
    pub session_ttl: Dur,
    /// `GET /metrics` without credentials (for a Prometheus on the LAN).
    pub public_metrics: bool,
    pub api_keys: Vec<ApiKeyConfig>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            required: None,
            jwt_secret: None,
            jwt_public_key_file: None,
            jwt_algorithm: None,
            jwt_audience: None,
            jwt_issuer: None,
            leeway: Dur::secs(0),
            cookie_name: "runnel_token".into(),
            anonymous_subscribe: Vec::new(),
            default_subscribe: vec!["*".into()],
            allow_ips: Vec::new(),
            session_ttl: Dur::secs(24 * 3600),
            public_metrics: false,
            api_keys: Vec::new(),
        }
    }
}

impl AuthConfig {
    /// True if any way to authenticate is configured.
    pub fn has_credentials(&self) -> bool {
        self.jwt_secret.is_some() || self.jwt_public_key_file.is_some() || !self.api_keys.is_empty()
    }

    /// True if requests run without any credential check (SPEC §6.1).
    pub fn is_open(&self) -> bool {
        match self.required {
            Some(required) => !required,
            None => !self.has_credentials(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    pub name: String,
    /// Hex SHA-256 of the key; the key itself is never stored.
    pub key_sha256: String,
    /// Patterns this key may publish to.
    #[serde(default)]
    pub publish: Vec<String>,
    /// Patterns this key may read (besides `anonymous_subscribe`).
    #[serde(default)]
    pub subscribe: Vec<String>,
    #[serde(default)]
    pub admin: bool,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorsConfig {
    /// Exact origins (`https://app.example.com`); credentials are allowed for them.
    pub allow_origins: Vec<String>,
}

/// ntfy's publish and subscribe API beside runnel's own (SPEC §11.1).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NtfyConfig {
    pub enabled: bool,
}

impl Default for NtfyConfig {
    fn default() -> Self {
        NtfyConfig { enabled: true }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Config {
    /// Parses a TOML document with no environment applied (tests, shipped files).
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let (c, _) = parse_with_env(text, "config", &[])?;
        c.validate()?;
        Ok(c)
    }

    /// The socket address to listen on (host names such as `localhost` are resolved).
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        let mut addrs = self.listen.to_socket_addrs().map_err(|e| {
            ConfigError(format!(
                "listen = {:?} is not a host:port address: {e}",
                self.listen
            ))
        })?;
        addrs.next().map_or_else(
            || err(format!("listen = {:?} resolves to no address", self.listen)),
            Ok,
        )
    }

    /// The effective configuration as TOML, secrets masked (`runnel check`).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_spec() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c.listen, "127.0.0.1:8080");
        assert_eq!(c.stream.heartbeat.as_millis(), 15_000);
        assert_eq!(c.store.sync, SyncMode::Batch);
        assert_eq!(c.store.cache.0, 8 << 20);
        assert_eq!(c.limits.max_event_bytes.0, 64 << 10);
        assert_eq!(c.auth.default_subscribe, vec!["*".to_string()]);
        assert!(c.auth.is_open());
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = Config::from_toml("[stream]\nheartbeet = \"5s\"\n").unwrap_err();
        assert!(e.to_string().contains("heartbeet"), "{e}");
        let e = Config::from_toml("lisen = \"x\"\n").unwrap_err();
        assert!(e.to_string().contains("lisen"), "{e}");
        let env = [("RUNNEL_STORE_SINK".to_string(), "always".to_string())];
        let e = parse_with_env("", "t", &env).unwrap_err();
        assert!(e.to_string().contains("RUNNEL_STORE_SINK"), "{e}");
    }

    #[test]
    fn bad_values_say_what_is_wrong() {
        let e = Config::from_toml("[stream]\nheartbeat = \"soon\"\n").unwrap_err();
        assert!(e.to_string().contains("invalid duration"), "{e}");
        let e = Config::from_toml("[store]\nsync = \"sometimes\"\n").unwrap_err();
        assert!(e.to_string().contains("sometimes"), "{e}");
    }

    #[test]
    fn secrets_are_masked() {
        let c =
            Config::from_toml("[auth]\njwt_secret = \"hunter2hunter2-hunter2hunter2-hunter2\"\n")
                .unwrap();
        assert!(!c.to_toml().contains("hunter2"));
        assert!(c.to_toml().contains("***"));
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn tls_section_is_read() {
        let c = Config::from_toml("[tls]\ncert = \"a.pem\"\nkey = \"b.pem\"\n").unwrap();
        let t = c.tls.unwrap();
        assert_eq!(t.cert, PathBuf::from("a.pem"));
        assert_eq!(t.key, PathBuf::from("b.pem"));
        assert!(
            Config::from_toml("[tls]\ncert = \"a.pem\"\n").is_err(),
            "key is required"
        );
    }
}
