//! Checks serde cannot make: ranges, patterns, addresses, the loopback rule, secrets.

use std::time::Duration;

use super::{Config, ConfigError, RedisUrl, err, parse_net};
use crate::topic;

impl Config {
    /// Checks everything serde cannot: ranges, patterns, addresses, the loopback rule.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_listen()?;
        if !matches!(
            self.log.as_str(),
            "error" | "warn" | "info" | "debug" | "trace"
        ) {
            return err(format!(
                "log = {:?}: use error, warn, info, debug or trace",
                self.log
            ));
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return err(format!(
                "log_format = {:?}: use text or json",
                self.log_format
            ));
        }
        self.validate_stream_and_store()?;
        self.validate_limits()?;
        self.validate_auth()?;
        self.validate_api_keys()?;
        for o in &self.cors.allow_origins {
            validate_origin(o)?;
        }
        self.validate_redis()
    }

    /// `[redis]`: a URL Redis clients take, and rules that compile.
    fn validate_redis(&self) -> Result<(), ConfigError> {
        let r = &self.redis;
        if let Some(url) = &r.url {
            check_redis_url("redis.url", url)?;
        } else if !r.ingress.is_empty() {
            return err("[[redis.ingress]] rules need redis.url");
        }
        if let Some(ca) = &r.ca_file {
            let tls = |u: &Option<RedisUrl>| {
                u.as_ref()
                    .is_some_and(|u| u.expose().starts_with("rediss://"))
            };
            if !tls(&r.url) && !tls(&self.cluster.redis) {
                return err("redis.ca_file is for a rediss:// url");
            }
            if !ca.is_file() {
                return err(format!("redis.ca_file {} does not exist", ca.display()));
            }
        }
        for rule in &r.ingress {
            rule.compile()?;
        }
        let c = &self.cluster;
        if let Some(url) = &c.redis {
            check_redis_url("cluster.redis", url)?;
        }
        if c.key.is_empty() || c.key.contains(char::is_whitespace) {
            return err(format!(
                "cluster.key = {:?}: a non-empty prefix without spaces",
                c.key
            ));
        }
        if c.max_len < 1000 {
            return err(format!(
                "cluster.max_len = {}: at least 1000 (entries the stream keeps for hubs \
                 catching up)",
                c.max_len
            ));
        }
        Ok(())
    }

    /// A hub without credentials stays on loopback unless told otherwise (SPEC §6.1).
    fn validate_listen(&self) -> Result<(), ConfigError> {
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
        Ok(())
    }

    fn validate_stream_and_store(&self) -> Result<(), ConfigError> {
        if self.stream.heartbeat.0 < Duration::from_millis(10) {
            return err("stream.heartbeat must be at least 10ms");
        }
        if self.stream.retry.0 > Duration::from_secs(24 * 3600) {
            return err("stream.retry must be at most 24h");
        }
        let s = &self.store;
        if s.retention_events == 0 {
            return err("store.retention_events must be at least 1");
        }
        if s.retention_age.0.is_zero() {
            return err("store.retention_age must be more than 0s");
        }
        if s.flush_interval.0 < Duration::from_millis(10)
            || s.flush_interval.0 > Duration::from_secs(60)
        {
            return err("store.flush_interval must be between 10ms and 60s");
        }
        if s.commit_delay.0 > Duration::from_secs(1) {
            return err("store.commit_delay must be at most 1s");
        }
        if s.cache.0 < 64 << 10 {
            return err("store.cache must be at least 64KiB");
        }
        if s.max_disk.0 < 1 << 20 {
            return err("store.max_disk must be at least 1MiB");
        }
        Ok(())
    }

    fn validate_limits(&self) -> Result<(), ConfigError> {
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
        Ok(())
    }

    fn validate_auth(&self) -> Result<(), ConfigError> {
        let a = &self.auth;
        if a.jwt_secret.is_some() && a.jwt_public_key_file.is_some() {
            return err("auth.jwt_secret and auth.jwt_public_key_file exclude each other");
        }
        if let Some(s) = &a.jwt_secret {
            check_secret(s.expose())?;
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
            parse_net(ip).map_err(|e| ConfigError(format!("auth.allow_ips: {e}")))?;
        }
        Ok(())
    }

    fn validate_api_keys(&self) -> Result<(), ConfigError> {
        let mut names = std::collections::HashSet::new();
        for k in &self.auth.api_keys {
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
        Ok(())
    }
}

/// The shortest `auth.jwt_secret` accepted: HS256 is only as strong as its key.
const MIN_SECRET: usize = 32;

/// A command that prints a good secret, for the error messages.
const MAKE_SECRET: &str = "head -c 32 /dev/urandom | base64";

/// Refuses a secret that is too short or a placeholder copied from the docs.
fn check_secret(s: &str) -> Result<(), ConfigError> {
    let lower = s.to_ascii_lowercase();
    const PLACEHOLDERS: &[&str] = &[
        "replace-me",
        "replace_me",
        "replaceme",
        "change-me",
        "change_me",
        "changeme",
        "placeholder",
        "example",
        "your-secret",
        "your_secret",
        "xxxxxxxx",
        "...",
    ];
    let distinct: std::collections::HashSet<char> = s.chars().collect();
    if PLACEHOLDERS.iter().any(|p| lower.contains(p)) || (!s.is_empty() && distinct.len() <= 4) {
        return err(format!(
            "auth.jwt_secret looks like a placeholder, not a secret: anyone who reads the docs \
             could mint tokens. Set a long random one, e.g. the output of `{MAKE_SECRET}`"
        ));
    }
    if s.len() < MIN_SECRET {
        return err(format!(
            "auth.jwt_secret is {} bytes; use at least {MIN_SECRET} random bytes, e.g. the \
             output of `{MAKE_SECRET}`",
            s.len()
        ));
    }
    Ok(())
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

/// A URL Redis clients take: `redis://` or `rediss://`.
fn check_redis_url(key: &str, url: &RedisUrl) -> Result<(), ConfigError> {
    let u = url.expose();
    if !(u.starts_with("redis://") || u.starts_with("rediss://")) {
        return err(format!(
            "{key} = {:?}: use redis://[user:password@]host[:port][/db], or rediss:// for TLS",
            url.masked()
        ));
    }
    if let Err(e) = redis::Client::open(u) {
        return err(format!("{key} = {:?}: {e}", url.masked()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_hub_stays_on_loopback() {
        let e = Config::from_toml("listen = \"0.0.0.0:8080\"\n").unwrap_err();
        assert!(e.to_string().contains("refusing to listen"), "{e}");
        assert!(Config::from_toml("listen = \"0.0.0.0:8080\"\n[auth]\nrequired = false\n").is_ok());
        assert!(Config::from_toml("listen = \"[::1]:8080\"\n").is_ok());
        assert!(Config::from_toml("listen = \"localhost:8080\"\n").is_ok());
    }

    #[test]
    fn weak_secrets_are_refused_with_a_way_out() {
        let with = |s: &str| Config::from_toml(&format!("[auth]\njwt_secret = \"{s}\"\n"));
        for bad in [
            "",
            "abc",
            "short-but-random-9f3k",
            "replace-me-with-32-or-more-random-bytes",
            "CHANGEME-CHANGEME-CHANGEME-CHANGEME",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        ] {
            let e = with(bad).unwrap_err().to_string();
            assert!(
                e.contains("auth.jwt_secret") && e.contains(MAKE_SECRET),
                "{bad:?}: {e}"
            );
        }
        assert!(with("Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MGFiY2RlZmdo").is_ok());
    }

    #[test]
    fn cluster_keys_are_checked_and_name_the_key() {
        let with = |t: &str| Config::from_toml(&format!("[cluster]\n{t}\n"));
        assert!(with("redis = \"redis://127.0.0.1:6379/2\"").is_ok());
        assert!(with("redis = \"redis://h\"\nkey = \"app:hubs\"\nmax_len = 1000").is_ok());
        for (bad, says) in [
            ("redis = \"http://h:6379\"", "cluster.redis"),
            ("redis = \"redis://h:notaport\"", "cluster.redis"),
            ("key = \"\"", "cluster.key"),
            ("key = \"two words\"", "cluster.key"),
            ("max_len = 999", "cluster.max_len = 999: at least 1000"),
        ] {
            let e = with(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
        // An error about the URL does not show its password.
        let e = with("redis = \"http://u:s3cret@h\"")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("s3cret"), "{e}");
    }

    #[test]
    fn origins() {
        assert!(validate_origin("https://app.example.com").is_ok());
        assert!(validate_origin("http://localhost:3000").is_ok());
        assert!(validate_origin("*").is_err());
        assert!(validate_origin("https://a.com/").is_err());
    }
}
