//! Where the configuration comes from: the file (and the files it includes), then the
//! `RUNNEL_*` environment. Flags are applied by the caller, then [`Config::validate`].

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{Config, ConfigError, err};

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
const SECTIONS: &[&str] = &[
    "stream", "store", "limits", "auth", "cors", "tls", "ntfy", "redis", "cluster",
];

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
    // Relative paths in the file are its directory's (absolute, so that `runnel check`
    // shows where they point).
    let dir = file
        .as_deref()
        .map(|f| std::fs::canonicalize(f).unwrap_or_else(|_| f.to_path_buf()));
    let base = dir.as_deref().and_then(Path::parent);
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
    let mut main: toml::Table =
        toml::from_str(text).map_err(|e| ConfigError(format!("{origin}: {e}")))?;
    // Check the file alone first, so its errors point at the file.
    let alone =
        Config::deserialize(main.clone()).map_err(|e| ConfigError(format!("{origin}: {e}")))?;
    if let Some(base) = base {
        anchor(&mut main, base);
    }
    let mut table = includes(&alone.include, origin, base)?;
    merge(&mut table, main);
    let applied = apply_env(&mut table, env)?;
    let config = Config::deserialize(table)
        .map_err(|e| ConfigError(format!("{origin} with environment overrides: {e}")))?;
    Ok((config, applied))
}

/// The included files, merged in order (they may not include others).
fn includes(
    paths: &[PathBuf],
    origin: &str,
    base: Option<&Path>,
) -> Result<toml::Table, ConfigError> {
    let mut table = toml::Table::new();
    for inc in paths {
        let path = match base {
            Some(b) if inc.is_relative() => b.join(inc),
            _ => inc.clone(),
        };
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(&path)
            .map_err(|e| ConfigError(format!("{origin}: include {shown}: {e}")))?;
        let mut t: toml::Table =
            toml::from_str(&text).map_err(|e| ConfigError(format!("{shown}: {e}")))?;
        let c = Config::deserialize(t.clone()).map_err(|e| ConfigError(format!("{shown}: {e}")))?;
        if let Some(dir) = path.parent() {
            anchor(&mut t, dir);
        }
        if !c.include.is_empty() {
            return err(format!("{shown}: an included file cannot include others"));
        }
        merge(&mut table, t);
    }
    Ok(table)
}

/// Applies `RUNNEL_<SECTION>_<KEY>` variables to the table; returns the names applied.
fn apply_env(
    table: &mut toml::Table,
    env: &[(String, String)],
) -> Result<Vec<String>, ConfigError> {
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
        // Each variable is checked on its own, so an unknown one is reported by name. (A
        // field that needs a partner, like tls.cert and tls.key, is checked with the whole
        // table afterwards.)
        let mut single = toml::Table::new();
        insert(&mut single, section, key.clone(), value.clone());
        if let Err(e) = Config::deserialize(single)
            && !e.to_string().contains("missing field")
        {
            return err(format!("environment variable {name}: {e}"));
        }
        insert(table, section, key, value);
        applied.push(name.clone());
    }
    Ok(applied)
}

/// The keys that name files or directories.
const PATH_KEYS: &[(Option<&str>, &str)] = &[
    (None, "data_dir"),
    (Some("tls"), "cert"),
    (Some("tls"), "key"),
    (Some("auth"), "jwt_public_key_file"),
    (Some("redis"), "ca_file"),
];

/// Makes the relative paths a file names relative to that file's directory (SPEC §3), so a
/// hub started from anywhere finds them.
fn anchor(table: &mut toml::Table, dir: &Path) {
    for (section, key) in PATH_KEYS {
        let holder = match section {
            Some(s) => match table.get_mut(*s) {
                Some(toml::Value::Table(t)) => t,
                _ => continue,
            },
            None => &mut *table,
        };
        if let Some(toml::Value::String(p)) = holder.get_mut(*key)
            && Path::new(p.as_str()).is_relative()
        {
            *p = dir.join(p.as_str()).display().to_string();
        }
    }
}

/// Sets `key` at the top level or in `[section]`.
fn insert(table: &mut toml::Table, section: Option<&str>, key: String, value: toml::Value) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SyncMode;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
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
    fn relative_paths_are_the_files_own() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("inc")).unwrap();
        std::fs::write(
            dir.path().join("inc/tls.toml"),
            "[tls]\ncert = \"a.crt\"\nkey = \"/abs/a.key\"\n",
        )
        .unwrap();
        let main = "include = [\"inc/tls.toml\"]\ndata_dir = \"data\"\n";
        let env = env(&[("RUNNEL_AUTH_JWT_PUBLIC_KEY_FILE", "rel.pem")]);
        let (c, _) = parse_with_env_in(main, "main", Some(dir.path()), &env).unwrap();
        assert_eq!(c.data_dir, dir.path().join("data"));
        let tls = c.tls.unwrap();
        assert_eq!(
            tls.cert,
            dir.path().join("inc/a.crt"),
            "an include's are its own"
        );
        assert_eq!(tls.key, PathBuf::from("/abs/a.key"));
        assert_eq!(
            c.auth.jwt_public_key_file,
            Some(PathBuf::from("rel.pem")),
            "the environment's stay the working directory's"
        );
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
    fn includes_merge_under_the_main_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("secrets.toml"),
            "[auth]\njwt_secret = \"from-include-from-include-from-include\"\n[[auth.api_keys]]\nname = \"admin\"\n\
             key_sha256 = \"2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae\"\n\
             admin = true\n[limits]\nstream_queue = 5\n",
        )
        .unwrap();
        let main = "include = [\"secrets.toml\"]\n[limits]\nstream_queue = 7\n\
                    [[auth.api_keys]]\nname = \"backend\"\n\
                    key_sha256 = \"fcde2b2edba56bf408601fb721fe9b5c338d10ee429ea04fae5511b68fbf8fb9\"\n";
        let (c, _) = parse_with_env_in(main, "main", Some(dir.path()), &[]).unwrap();
        c.validate().unwrap();
        assert_eq!(
            c.auth.jwt_secret.as_ref().unwrap().expose(),
            "from-include-from-include-from-include"
        );
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
}
