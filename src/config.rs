//! Configuration (SPEC §3): a TOML file, overridden by `RUNNEL_<SECTION>_<KEY>` environment
//! variables, overridden by command-line flags; then one `validate()` pass.
//!
//! Every struct denies unknown fields, so a typo is an error that names the key. Durations
//! (`"500ms"`, `"15s"`, `"1h30m"`) and sizes (`"64KiB"`, `"8MiB"`) are strings. Secrets live
//! in [`Secret`], whose `Debug` and serialized form are `***`, so `runnel check` and logs never
//! print them.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::topic;

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
    pub stream: StreamConfig,
    pub store: StoreConfig,
    pub limits: LimitsConfig,
    pub auth: AuthConfig,
    pub cors: CorsConfig,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            include: Vec::new(),
            listen: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from("./runnel-data"),
            log: "info".into(),
            stream: StreamConfig::default(),
            store: StoreConfig::default(),
            limits: LimitsConfig::default(),
            auth: AuthConfig::default(),
            cors: CorsConfig::default(),
            tls: None,
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
    /// Acknowledge before the flush (sled flushes in the background every 500 ms).
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

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

// ---------------------------------------------------------------------------------------------
// Loading

/// Where the effective configuration came from, for `runnel check` and the start-up log.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub file: Option<PathBuf>,
    pub env_keys: Vec<String>,
}

/// Environment variables starting with `RUNNEL_` that are not configuration keys.
const NON_CONFIG_ENV: &[&str] = &[
    "RUNNEL_CONFIG",
    "RUNNEL_URL",
    "RUNNEL_KEY",
    "RUNNEL_TOKEN",
    "RUNNEL_CA",
];
const SECTIONS: &[&str] = &["stream", "store", "limits", "auth", "cors", "tls"];

/// Finds and reads the configuration file (`explicit`, then `$RUNNEL_CONFIG`, then
/// `./runnel.toml`, then `/etc/runnel/runnel.toml`; none found = defaults) and applies the
/// `RUNNEL_*` environment. Flags are applied by the caller, then [`Config::validate`].
pub fn load(explicit: Option<&Path>) -> Result<Loaded, ConfigError> {
    let env: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k.starts_with("RUNNEL_"))
        .collect();
    let from_env = env
        .iter()
        .find(|(k, _)| k == "RUNNEL_CONFIG")
        .map(|(_, v)| PathBuf::from(v));
    let file = match explicit.map(Path::to_path_buf).or(from_env) {
        Some(p) => {
            if !p.exists() {
                return err(format!("config file {} does not exist", p.display()));
            }
            Some(p)
        }
        None => ["runnel.toml", "/etc/runnel/runnel.toml"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists()),
    };
    let text = match &file {
        Some(p) => std::fs::read_to_string(p)
            .map_err(|e| ConfigError(format!("cannot read {}: {e}", p.display())))?,
        None => String::new(),
    };
    let origin = file
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "defaults".into());
    let base = file.as_deref().and_then(Path::parent);
    let (config, env_keys) = parse_with_env_in(&text, &origin, base, &env)?;
    Ok(Loaded {
        config,
        file,
        env_keys,
    })
}

/// Parses TOML text and applies environment overrides (given as pairs, so tests need not
/// touch the process environment). Includes are resolved from the current directory.
pub fn parse_with_env(
    text: &str,
    origin: &str,
    env: &[(String, String)],
) -> Result<(Config, Vec<String>), ConfigError> {
    parse_with_env_in(text, origin, None, env)
}

/// Like [`parse_with_env`], resolving relative `include` paths from `base`.
pub fn parse_with_env_in(
    text: &str,
    origin: &str,
    base: Option<&Path>,
    env: &[(String, String)],
) -> Result<(Config, Vec<String>), ConfigError> {
    let main: toml::Table =
        toml::from_str(text).map_err(|e| ConfigError(format!("{origin}: {e}")))?;
    // Check the file alone first, so its errors point at the file.
    let alone =
        Config::deserialize(main.clone()).map_err(|e| ConfigError(format!("{origin}: {e}")))?;
    let mut table = toml::Table::new();
    for inc in &alone.include {
        let path = match base {
            Some(b) if inc.is_relative() => b.join(inc),
            _ => inc.clone(),
        };
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(&path)
            .map_err(|e| ConfigError(format!("{origin}: include {shown}: {e}")))?;
        let t: toml::Table =
            toml::from_str(&text).map_err(|e| ConfigError(format!("{shown}: {e}")))?;
        let c = Config::deserialize(t.clone()).map_err(|e| ConfigError(format!("{shown}: {e}")))?;
        if !c.include.is_empty() {
            return err(format!("{shown}: an included file cannot include others"));
        }
        merge(&mut table, t);
    }
    merge(&mut table, main);

    let mut applied = Vec::new();
    for (name, raw) in env {
        if NON_CONFIG_ENV.contains(&name.as_str()) {
            continue;
        }
        let Some(rest) = name.strip_prefix("RUNNEL_") else {
            continue;
        };
        let lower = rest.to_ascii_lowercase();
        let (section, key) = match SECTIONS
            .iter()
            .find(|s| lower.starts_with(&format!("{s}_")))
        {
            Some(s) => (Some(*s), lower[s.len() + 1..].to_string()),
            None => (None, lower),
        };
        let value = env_value(raw);
        // Each variable is checked on its own, so an unknown one is reported by name.
        let mut single = toml::Table::new();
        match section {
            Some(s) => {
                let mut sub = toml::Table::new();
                sub.insert(key.clone(), value.clone());
                single.insert(s.to_string(), toml::Value::Table(sub));
            }
            None => {
                single.insert(key.clone(), value.clone());
            }
        }
        // (A field that needs a partner, like tls.cert and tls.key, is checked with the
        // whole table below.)
        if let Err(e) = Config::deserialize(single)
            && !e.to_string().contains("missing field")
        {
            return err(format!("environment variable {name}: {e}"));
        }
        match section {
            Some(s) => {
                let entry = table
                    .entry(s.to_string())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                if let toml::Value::Table(t) = entry {
                    t.insert(key, value);
                }
            }
            None => {
                table.insert(key, value);
            }
        }
        applied.push(name.clone());
    }
    let config = Config::deserialize(table)
        .map_err(|e| ConfigError(format!("{origin} with environment overrides: {e}")))?;
    Ok((config, applied))
}

/// Merges `over` into `base`: tables recursively, `api_keys` lists added up, anything else
/// replaced.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (Some(toml::Value::Array(b)), toml::Value::Array(o)) if k == "api_keys" => b.extend(o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// An environment value is TOML when it looks like a number, a boolean or an array, and a
/// plain string otherwise (so `RUNNEL_LISTEN=0.0.0.0:8080` needs no quotes).
fn env_value(raw: &str) -> toml::Value {
    let t = raw.trim();
    let looks_typed = t == "true"
        || t == "false"
        || t.starts_with('[')
        || t.starts_with('"')
        || (!t.is_empty() && t.chars().all(|c| c.is_ascii_digit() || c == '_'));
    if looks_typed
        && let Ok(mut v) = toml::from_str::<toml::Table>(&format!("v = {t}"))
        && let Some(value) = v.remove("v")
    {
        return value;
    }
    toml::Value::String(raw.to_string())
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

    /// Checks everything serde cannot: ranges, patterns, addresses, the loopback rule.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let addr = self.listen_addr()?;
        if self.auth.is_open() && self.auth.required.is_none() && !addr.ip().is_loopback() {
            return err(format!(
                "refusing to listen on {addr} with no credentials configured: anyone on the \
                 network could read and publish. Set auth.jwt_secret (or \
                 auth.jwt_public_key_file) or add an [[auth.api_keys]] entry; or set \
                 auth.required = false to run open on purpose; or listen on 127.0.0.1"
            ));
        }
        if self.auth.required == Some(true) && !self.auth.has_credentials() {
            return err(
                "auth.required = true but no credentials are configured: set auth.jwt_secret, \
                 auth.jwt_public_key_file or an [[auth.api_keys]] entry",
            );
        }
        if !matches!(
            self.log.as_str(),
            "error" | "warn" | "info" | "debug" | "trace"
        ) {
            return err(format!(
                "log = {:?}: use error, warn, info, debug or trace",
                self.log
            ));
        }
        if self.stream.heartbeat.0 < Duration::from_millis(10) {
            return err("stream.heartbeat must be at least 10ms");
        }
        if self.stream.retry.0 > Duration::from_secs(24 * 3600) {
            return err("stream.retry must be at most 24h");
        }
        if self.store.retention_events == 0 {
            return err("store.retention_events must be at least 1");
        }
        if self.store.retention_age.0.is_zero() {
            return err("store.retention_age must be more than 0s");
        }
        if self.store.cache.0 < 64 << 10 {
            return err("store.cache must be at least 64KiB");
        }
        if self.store.max_disk.0 < 1 << 20 {
            return err("store.max_disk must be at least 1MiB");
        }
        let l = &self.limits;
        for (name, v) in [
            ("max_connections", l.max_connections),
            ("max_connections_per_user", l.max_connections_per_user),
            ("max_connections_per_ip", l.max_connections_per_ip),
            ("max_topics_per_stream", l.max_topics_per_stream),
            ("stream_queue", l.stream_queue),
        ] {
            if v == 0 {
                return err(format!("limits.{name} must be at least 1"));
            }
        }
        if l.max_event_bytes.0 == 0 || l.max_body_bytes.0 < 64 {
            return err("limits.max_event_bytes must be at least 1B and max_body_bytes 64B");
        }
        if l.request_timeout.0 < Duration::from_millis(100)
            || l.write_timeout.0 < Duration::from_millis(100)
        {
            return err("limits.request_timeout and limits.write_timeout must be at least 100ms");
        }
        // hyper's read buffer cannot be smaller than 8 KiB.
        if l.max_header_bytes.0 < 8 << 10 || l.max_header_bytes.0 > 1 << 20 {
            return err("limits.max_header_bytes must be between 8KiB and 1MiB");
        }
        let a = &self.auth;
        if a.jwt_secret.is_some() && a.jwt_public_key_file.is_some() {
            return err("auth.jwt_secret and auth.jwt_public_key_file exclude each other");
        }
        if let Some(s) = &a.jwt_secret
            && s.expose().is_empty()
        {
            return err("auth.jwt_secret is empty");
        }
        if let Some(alg) = &a.jwt_algorithm {
            let ok = match alg.as_str() {
                "HS256" => a.jwt_secret.is_some(),
                "RS256" | "ES256" => a.jwt_public_key_file.is_some(),
                _ => false,
            };
            if !ok {
                return err(format!(
                    "auth.jwt_algorithm = {alg:?}: use HS256 with jwt_secret, or RS256/ES256 \
                     with jwt_public_key_file"
                ));
            }
        }
        if a.session_ttl.0 < Duration::from_secs(1) {
            return err("auth.session_ttl must be at least 1s");
        }
        if a.cookie_name.is_empty()
            || !a
                .cookie_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return err(format!(
                "auth.cookie_name = {:?}: use letters, digits, '-', '_' or '.'",
                a.cookie_name
            ));
        }
        for (key, list) in [
            ("auth.anonymous_subscribe", &a.anonymous_subscribe),
            ("auth.default_subscribe", &a.default_subscribe),
        ] {
            for p in list {
                topic::validate_pattern(p).map_err(|e| ConfigError(format!("{key}: {e}")))?;
            }
        }
        for ip in &a.allow_ips {
            crate::auth::Cidr::from_str(ip)
                .map_err(|e| ConfigError(format!("auth.allow_ips: {e}")))?;
        }
        let mut names = std::collections::HashSet::new();
        for k in &a.api_keys {
            if k.name.is_empty() || !names.insert(k.name.as_str()) {
                return err(format!(
                    "auth.api_keys: every key needs a unique, non-empty name ({:?})",
                    k.name
                ));
            }
            if k.key_sha256.len() != 64 || !k.key_sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return err(format!(
                    "auth.api_keys {:?}: key_sha256 must be 64 hex digits (the SHA-256 of the \
                     key, e.g. `printf %s KEY | sha256sum`)",
                    k.name
                ));
            }
            for p in k.publish.iter().chain(&k.subscribe) {
                topic::validate_pattern(p)
                    .map_err(|e| ConfigError(format!("auth.api_keys {:?}: {e}", k.name)))?;
            }
        }
        for o in &self.cors.allow_origins {
            validate_origin(o)?;
        }
        Ok(())
    }

    /// The effective configuration as TOML, secrets masked (`runnel check`).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

fn validate_origin(o: &str) -> Result<(), ConfigError> {
    let rest = o
        .strip_prefix("https://")
        .or_else(|| o.strip_prefix("http://"));
    let ok = match rest {
        Some(host) => {
            !host.is_empty()
                && !host.contains('/')
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
        }
        None => false,
    };
    if ok {
        Ok(())
    } else {
        err(format!(
            "cors.allow_origins: {o:?} is not an origin; write it exactly as a browser sends \
             it, e.g. \"https://app.example.com\" or \"http://localhost:3000\" (no path, no *)"
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// Value types

/// A duration written as a string: `"500ms"`, `"15s"`, `"5m"`, `"24h"`, `"7d"`, `"1h30m"`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

impl Dur {
    pub const fn secs(s: u64) -> Dur {
        Dur(Duration::from_secs(s))
    }
    pub fn as_millis(self) -> u64 {
        u64::try_from(self.0.as_millis()).unwrap_or(u64::MAX)
    }
}

impl FromStr for Dur {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "invalid duration {s:?}: use numbers with units ms, s, m, h or d, like \"15s\" \
                 or \"1h30m\""
            )
        };
        let t = s.trim();
        if t == "0" {
            return Ok(Dur(Duration::ZERO));
        }
        let mut total: u64 = 0;
        let mut rest = t;
        if rest.is_empty() {
            return Err(bad());
        }
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(bad());
            }
            let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
            rest = &rest[digits..];
            let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
            let ms_per = match &rest[..unit_len] {
                "ms" => 1,
                "s" => 1000,
                "m" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                _ => return Err(bad()),
            };
            rest = &rest[unit_len..];
            total = n
                .checked_mul(ms_per)
                .and_then(|v| total.checked_add(v))
                .ok_or_else(bad)?;
        }
        Ok(Dur(Duration::from_millis(total)))
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ms = self.as_millis();
        if ms == 0 {
            return f.write_str("0s");
        }
        for (unit, size) in [
            ("d", 86_400_000),
            ("h", 3_600_000),
            ("m", 60_000),
            ("s", 1000),
            ("ms", 1),
        ] {
            if ms >= size {
                write!(f, "{}{unit}", ms / size)?;
                ms %= size;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A size written as a string (`"64KiB"`, `"8MiB"`, `"1GiB"`, `"500KB"`) or a byte count.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "invalid size {s:?}: use a number and a unit (B, KiB, MiB, GiB, KB, MB, GB), like \"64KiB\""
            )
        };
        let t = s.trim();
        let digits = t.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = t[..digits].parse().map_err(|_| bad())?;
        let mult: u64 = match t[digits..].trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kib" | "k" => 1 << 10,
            "mib" | "m" => 1 << 20,
            "gib" | "g" => 1 << 30,
            "kb" => 1_000,
            "mb" => 1_000_000,
            "gb" => 1_000_000_000,
            _ => return Err(bad()),
        };
        n.checked_mul(mult).map(ByteSize).ok_or_else(bad)
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        for (unit, size) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
            if n >= size && n % size == 0 {
                return write!(f, "{}{unit}", n / size);
            }
        }
        write!(f, "{n}B")
    }
}

impl fmt::Debug for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(ByteSize(n)),
            Raw::S(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A secret from the configuration. It prints as `***` everywhere.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn durations() {
        let d = |s: &str| s.parse::<Dur>().map(|d| d.as_millis());
        assert_eq!(d("500ms"), Ok(500));
        assert_eq!(d("15s"), Ok(15_000));
        assert_eq!(d("1h30m"), Ok(5_400_000));
        assert_eq!(d("24h"), Ok(86_400_000));
        assert_eq!(d("0"), Ok(0));
        for bad in [
            "",
            "15",
            "15 sec",
            "s",
            "1y",
            "-1s",
            "99999999999999999999d",
        ] {
            assert!(d(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            Dur(Duration::from_millis(5_400_500)).to_string(),
            "1h30m500ms"
        );
    }

    #[test]
    fn sizes() {
        let b = |s: &str| s.parse::<ByteSize>().map(|b| b.0);
        assert_eq!(b("64KiB"), Ok(65536));
        assert_eq!(b("8MiB"), Ok(8 << 20));
        assert_eq!(b("1GiB"), Ok(1 << 30));
        assert_eq!(b("10KB"), Ok(10_000));
        assert_eq!(b("123"), Ok(123));
        for bad in ["", "KiB", "1.5MiB", "12 parsecs"] {
            assert!(b(bad).is_err(), "{bad:?}");
        }
        assert_eq!(ByteSize(65536).to_string(), "64KiB");
        assert_eq!(ByteSize(1000).to_string(), "1000B");
    }

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
        let e = parse_with_env("", "t", &env(&[("RUNNEL_STORE_SINK", "always")])).unwrap_err();
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
    fn environment_overrides_the_file() {
        let (c, applied) = parse_with_env(
            "listen = \"127.0.0.1:1\"\n[store]\nsync = \"always\"\n",
            "t",
            &env(&[
                ("RUNNEL_LISTEN", "127.0.0.1:9999"),
                ("RUNNEL_STORE_SYNC", "none"),
                ("RUNNEL_STORE_RETENTION_EVENTS", "5"),
                ("RUNNEL_CORS_ALLOW_ORIGINS", "[\"http://a.test\"]"),
                ("RUNNEL_URL", "http://ignored"),
            ]),
        )
        .unwrap();
        assert_eq!(c.listen, "127.0.0.1:9999");
        assert_eq!(c.store.sync, SyncMode::None);
        assert_eq!(c.store.retention_events, 5);
        assert_eq!(c.cors.allow_origins, vec!["http://a.test".to_string()]);
        assert_eq!(applied.len(), 4);
    }

    #[test]
    fn tls_from_the_environment_needs_both_files() {
        let (c, _) = parse_with_env(
            "",
            "t",
            &env(&[("RUNNEL_TLS_CERT", "/c.pem"), ("RUNNEL_TLS_KEY", "/k.pem")]),
        )
        .unwrap();
        assert_eq!(c.tls.unwrap().key, PathBuf::from("/k.pem"));
        let e = parse_with_env("", "t", &env(&[("RUNNEL_TLS_CERT", "/c.pem")])).unwrap_err();
        assert!(e.to_string().contains("missing field `key`"), "{e}");
        let e = parse_with_env("", "t", &env(&[("RUNNEL_TLS_CRT", "/c.pem")])).unwrap_err();
        assert!(e.to_string().contains("RUNNEL_TLS_CRT"), "{e}");
    }

    #[test]
    fn secrets_are_masked() {
        let c = Config::from_toml("[auth]\njwt_secret = \"hunter2hunter2\"\n").unwrap();
        assert!(!c.to_toml().contains("hunter2"));
        assert!(c.to_toml().contains("***"));
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn open_hub_stays_on_loopback() {
        let e = Config::from_toml("listen = \"0.0.0.0:8080\"\n").unwrap_err();
        assert!(e.to_string().contains("refusing to listen"), "{e}");
        assert!(Config::from_toml("listen = \"0.0.0.0:8080\"\n[auth]\nrequired = false\n").is_ok());
        assert!(Config::from_toml("listen = \"[::1]:8080\"\n").is_ok());
        assert!(Config::from_toml("listen = \"localhost:8080\"\n").is_ok());
    }

    #[test]
    fn includes_merge_under_the_main_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("secrets.toml"),
            "[auth]\njwt_secret = \"from-include\"\n[[auth.api_keys]]\nname = \"admin\"\n\
             key_sha256 = \"2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae\"\n\
             admin = true\n[limits]\nstream_queue = 5\n",
        )
        .unwrap();
        let main = "include = [\"secrets.toml\"]\n[limits]\nstream_queue = 7\n\
                    [[auth.api_keys]]\nname = \"backend\"\n\
                    key_sha256 = \"fcde2b2edba56bf408601fb721fe9b5c338d10ee429ea04fae5511b68fbf8fb9\"\n";
        let (c, _) = parse_with_env_in(main, "main", Some(dir.path()), &[]).unwrap();
        c.validate().unwrap();
        assert_eq!(c.auth.jwt_secret.as_ref().unwrap().expose(), "from-include");
        assert_eq!(c.limits.stream_queue, 7, "the main file wins");
        let names: Vec<_> = c.auth.api_keys.iter().map(|k| k.name.as_str()).collect();
        assert_eq!(names, ["admin", "backend"]);
        let e = parse_with_env_in("include = [\"nope.toml\"]", "main", Some(dir.path()), &[])
            .unwrap_err();
        assert!(e.to_string().contains("nope.toml"), "{e}");
        std::fs::write(dir.path().join("bad.toml"), "[auth]\njwt_secrte = \"x\"\n").unwrap();
        let e = parse_with_env_in("include = [\"bad.toml\"]", "main", Some(dir.path()), &[])
            .unwrap_err();
        assert!(
            e.to_string().contains("bad.toml") && e.to_string().contains("jwt_secrte"),
            "{e}"
        );
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

    #[test]
    fn origins() {
        assert!(validate_origin("https://app.example.com").is_ok());
        assert!(validate_origin("http://localhost:3000").is_ok());
        assert!(validate_origin("*").is_err());
        assert!(validate_origin("https://a.com/").is_err());
    }
}
