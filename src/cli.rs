//! The command line (SPEC §2).

use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use tracing_subscriber::filter::LevelFilter;

use crate::client::{self, Endpoint, Output};
use crate::config::{self, Config};

#[derive(Parser, Debug)]
#[command(
    name = "runnel",
    version,
    about = "A single-binary Server-Sent Events hub",
    long_about = "A single-binary Server-Sent Events hub. With no command, runs the hub \
                  (`runnel serve`).",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the hub (the default).
    Serve(ServeArgs),
    /// Validate the configuration and print the effective settings (secrets masked).
    Check {
        /// Configuration file (default: $RUNNEL_CONFIG, ./runnel.toml, /etc/runnel/runnel.toml).
        #[arg(short = 'c', long = "config", value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Mint a JWT with the configured auth.jwt_secret.
    Token(TokenArgs),
    /// Write a TLS key and certificate for LAN use (see docs/tls.md).
    Cert(CertArgs),
    /// Publish an event; DATA or standard input is the data.
    Pub(PubArgs),
    /// Print events as they arrive; reconnects and resumes by itself.
    Sub(SubArgs),
    /// Ask a hub whether it is healthy (`/health`): exit status 0 if so, 1 if not (for
    /// container health checks; no shell or curl needed).
    Health(HealthArgs),
}

#[derive(Args, Debug)]
struct HealthArgs {
    /// The hub's URL.
    #[arg(long, env = "RUNNEL_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// For an https URL: PEM certificates to trust (default: the system's).
    #[arg(long, env = "RUNNEL_CA", value_name = "FILE")]
    ca: Option<PathBuf>,
    /// How long to wait for the answer.
    #[arg(long, default_value = "5s")]
    timeout: crate::config::Dur,
}

#[derive(Args, Debug, Clone, Default)]
struct ServeArgs {
    /// Configuration file (default: $RUNNEL_CONFIG, ./runnel.toml, /etc/runnel/runnel.toml).
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on, overriding `listen` (e.g. 127.0.0.1:8080).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Data directory, overriding `data_dir`.
    #[arg(long = "data", value_name = "DIR")]
    data: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct CertArgs {
    /// A self-signed certificate (the only kind this command makes; required, so that a
    /// later kind cannot be made by mistake).
    #[arg(long)]
    self_signed: bool,
    /// Host names and IP addresses the certificate is for, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    hosts: Vec<String>,
    /// Where to write the certificate (PEM).
    #[arg(long, default_value = "runnel.crt")]
    cert: PathBuf,
    /// Where to write the private key (PEM, PKCS#8; created readable by its owner only).
    #[arg(long, default_value = "runnel.key")]
    key: PathBuf,
    /// Replace existing files.
    #[arg(long)]
    force: bool,
}

#[derive(Args, Debug)]
struct Remote {
    /// The hub's URL.
    #[arg(long, env = "RUNNEL_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// An API key, sent as `Authorization: Bearer`.
    #[arg(long, env = "RUNNEL_KEY", hide_env_values = true)]
    key: Option<String>,
    /// A JWT, sent as `Authorization: Bearer`.
    #[arg(long, env = "RUNNEL_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// For an https URL: PEM certificates to trust (default: the system's), e.g. the one
    /// `runnel cert --self-signed` wrote.
    #[arg(long, env = "RUNNEL_CA", value_name = "FILE")]
    ca: Option<PathBuf>,
}

impl Remote {
    fn credential(&self) -> Option<&str> {
        self.token.as_deref().or(self.key.as_deref())
    }
}

#[derive(Args, Debug)]
struct TokenArgs {
    /// The user the token names (`sub`); their personal topic is user/<sub>.
    #[arg(long)]
    sub: String,
    /// A pattern the token may read (repeatable; default: auth.default_subscribe).
    #[arg(long, value_name = "PATTERN")]
    subscribe: Vec<String>,
    /// A pattern the token may publish to (repeatable).
    #[arg(long, value_name = "PATTERN")]
    publish: Vec<String>,
    /// `admin` for a token that may do everything.
    #[arg(long, value_parser = ["admin"])]
    role: Option<String>,
    /// How long the token is valid, like 1h, 30m or 7d.
    #[arg(long, default_value = "1h")]
    ttl: crate::config::Dur,
    /// Configuration file holding auth.jwt_secret.
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct PubArgs {
    /// The topic to publish to.
    topic: String,
    /// The data (read from standard input when absent).
    data: Option<String>,
    /// The event type (`event:`); without it browsers fire `onmessage`.
    #[arg(long)]
    event: Option<String>,
    #[command(flatten)]
    remote: Remote,
}

#[derive(Args, Debug)]
struct SubArgs {
    /// Topics or patterns to receive (none: only broadcast and your personal topic).
    topics: Vec<String>,
    /// Start after this event id (`earliest` for everything retained).
    #[arg(long, value_name = "ID")]
    last_event_id: Option<String>,
    /// Print only each event's data instead of one JSON object per line.
    #[arg(long, conflicts_with = "raw")]
    data_only: bool,
    /// Keep each event's data as text in the JSON lines (`{"id", "event", "data"}`), as
    /// runnel 0.1.0 printed them, instead of the JSON value it holds.
    #[arg(long)]
    raw: bool,
    #[command(flatten)]
    remote: Remote,
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command.unwrap_or(Command::Serve(cli.serve)) {
        Command::Serve(args) => serve(args),
        Command::Check { config } => return check(config),
        Command::Token(args) => token(args),
        Command::Cert(args) => cert(args),
        Command::Pub(args) => client_runtime(publish(args)),
        Command::Sub(args) => client_runtime(subscribe(args)),
        Command::Health(args) => client_runtime(health(args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("runnel: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load(args: &ServeArgs) -> anyhow::Result<(Config, config::Loaded)> {
    let loaded = config::load(args.config.as_deref())?;
    let mut c = loaded.config.clone();
    if let Some(l) = &args.listen {
        c.listen.clone_from(l);
    }
    if let Some(d) = &args.data {
        c.data_dir.clone_from(d);
    }
    c.validate()?;
    Ok((c, loaded))
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let (config, loaded) = load(&args)?;
    let log = init_logging(&config.log, config.log_format == "json");
    match &loaded.file {
        Some(f) => {
            tracing::info!(file = %f.display(), env = ?loaded.env_keys, "configuration loaded")
        }
        None => tracing::info!(env = ?loaded.env_keys, "no configuration file; using defaults"),
    }
    raise_fd_limit(config.limits.max_connections);
    let running = std::sync::Mutex::new(config.clone());
    let reload = move || reload(&args, &running, &log);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("runnel-worker")
        .build()?;
    rt.block_on(crate::server::run(config, reload))
}

/// Every stream is a file descriptor, and the usual soft limit (1024) is far below
/// `limits.max_connections`: lift the soft limit to the hard one, as most servers do, and
/// say so when even that is too low.
fn raise_fd_limit(max_connections: usize) {
    // A refusal to raise it (a seccomp filter, say) leaves the soft limit as it was: judge
    // by that one.
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or_else(|_| {
        rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft)
    });
    // Headroom for the log, publishers and the listener.
    if u128::from(limit) < max_connections as u128 + 64 {
        tracing::warn!(
            limit,
            max_connections,
            "the open-file limit is below limits.max_connections; raise LimitNOFILE (or ulimit -n)"
        );
    }
}

/// SIGHUP: reads the configuration again and applies what can change without dropping
/// streams (the log level); names the settings that need a restart.
fn reload(args: &ServeArgs, running: &std::sync::Mutex<Config>, log: &LogHandle) {
    let (new, _) = match load(args) {
        Ok(x) => x,
        Err(e) => {
            tracing::error!("reload failed, keeping the running configuration: {e:#}");
            return;
        }
    };
    let mut current = running.lock().unwrap_or_else(|e| e.into_inner());
    if let Ok(level) = new.log.parse::<tracing::Level>() {
        let _ = log.modify(|f| *f = LevelFilter::from_level(level));
    }
    let restart: Vec<String> = changed_keys(&current, &new)
        .into_iter()
        .filter(|k| k != "log")
        .collect();
    current.log.clone_from(&new.log);
    if restart.is_empty() {
        tracing::info!(log = %new.log, "configuration reloaded");
    } else {
        tracing::warn!(log = %new.log, needs_restart = ?restart,
            "configuration reloaded; these settings take effect at the next restart");
    }
}

/// `section.key` names whose values differ.
fn changed_keys(a: &Config, b: &Config) -> Vec<String> {
    fn flat(c: &Config) -> Vec<(String, String)> {
        let v = toml::Value::try_from(c).unwrap_or(toml::Value::Table(Default::default()));
        let mut out = Vec::new();
        if let toml::Value::Table(t) = v {
            for (k, v) in t {
                match v {
                    toml::Value::Table(sub) => {
                        for (k2, v2) in sub {
                            out.push((format!("{k}.{k2}"), v2.to_string()));
                        }
                    }
                    other => out.push((k, other.to_string())),
                }
            }
        }
        out
    }
    let (fa, fb) = (flat(a), flat(b));
    let mut keys: Vec<String> = fa
        .iter()
        .filter(|kv| !fb.contains(kv))
        .chain(fb.iter().filter(|kv| !fa.contains(kv)))
        .map(|(k, _)| k.clone())
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

fn check(path: Option<PathBuf>) -> ExitCode {
    let args = ServeArgs {
        config: path,
        ..ServeArgs::default()
    };
    // The certificate and key are read too, so a renewal can be checked before a reload.
    let loaded = load(&args).and_then(|(config, loaded)| {
        if let Some(t) = &config.tls {
            crate::tls::Tls::load(t)?;
        }
        Ok((config, loaded))
    });
    match loaded {
        Ok((config, loaded)) => {
            let file = loaded
                .file
                .map(|f| f.display().to_string())
                .unwrap_or_else(|| "none (defaults)".into());
            println!("# runnel {}: configuration OK", env!("CARGO_PKG_VERSION"));
            println!("# file: {file}");
            for inc in &config.include {
                println!("# includes: {}", inc.display());
            }
            if !loaded.env_keys.is_empty() {
                println!("# environment: {}", loaded.env_keys.join(", "));
            }
            println!(
                "# auth: {}",
                if config.auth.is_open() {
                    "open (no credentials needed)"
                } else {
                    "required"
                }
            );
            print!("{}", config.to_toml());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("runnel: configuration error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn token(args: TokenArgs) -> anyhow::Result<()> {
    let (config, _) = load(&ServeArgs {
        config: args.config,
        ..ServeArgs::default()
    })?;
    let t = crate::auth::mint(
        &config,
        &crate::auth::TokenRequest {
            sub: args.sub,
            subscribe: args.subscribe,
            publish: args.publish,
            admin: args.role.is_some(),
            ttl: args.ttl.0,
        },
    )
    .map_err(|e| anyhow::anyhow!(e))?;
    println!("{t}");
    Ok(())
}

fn cert(args: CertArgs) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    if !args.self_signed {
        anyhow::bail!(
            "runnel cert only makes self-signed certificates: pass --self-signed \
             (for a certificate from a CA, point [tls] at its files; see docs/tls.md)"
        );
    }
    for p in [&args.cert, &args.key] {
        if p.exists() && !args.force {
            anyhow::bail!("{} exists; pass --force to replace it", p.display());
        }
    }
    let made = crate::tls::self_signed(&args.hosts).map_err(|e| anyhow::anyhow!(e))?;
    let mut key = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&args.key)
        .with_context(|| format!("cannot write {}", args.key.display()))?;
    key.write_all(made.key_pem.as_bytes())?;
    // `mode` applies only to a new file: a replaced one gets the same.
    std::fs::set_permissions(
        &args.key,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600),
    )?;
    std::fs::write(&args.cert, &made.cert_pem)
        .with_context(|| format!("cannot write {}", args.cert.display()))?;
    println!("wrote {} and {}", args.cert.display(), args.key.display());
    println!("for: {}", args.hosts.join(", "));
    println!("SHA-256 fingerprint: {}", made.fingerprint);
    // Absolute paths: the snippet may be pasted into a config file anywhere.
    let full = |p: &std::path::Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    println!(
        "use it with:\n[tls]\ncert = {:?}\nkey = {:?}\ntrust it on phones and desktops: docs/tls.md",
        full(&args.cert).display().to_string(),
        full(&args.key).display().to_string()
    );
    Ok(())
}

fn client_runtime(f: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(f)
}

async fn publish(args: PubArgs) -> anyhow::Result<()> {
    let ep = Endpoint::parse(&args.remote.url, args.remote.ca.as_deref())?;
    let data = match args.data {
        Some(d) => d.into_bytes(),
        None => {
            if std::io::stdin().is_terminal() {
                anyhow::bail!("give the data as an argument or on standard input");
            }
            // The hub takes a trailing line break off a raw body, as `echo` adds one.
            let mut buf = Vec::new();
            std::io::stdin().read_to_end(&mut buf)?;
            buf
        }
    };
    let answer = client::publish(
        &ep,
        &args.topic,
        data,
        args.event.as_deref(),
        args.remote.credential(),
    )
    .await?;
    println!("{answer}");
    Ok(())
}

async fn health(args: HealthArgs) -> anyhow::Result<()> {
    let ep = Endpoint::parse(&args.url, args.ca.as_deref())?;
    let v = client::health(&ep, args.timeout.0).await?;
    println!("{v}");
    Ok(())
}

async fn subscribe(args: SubArgs) -> anyhow::Result<()> {
    let ep = Endpoint::parse(&args.remote.url, args.remote.ca.as_deref())?;
    let output = match (args.data_only, args.raw) {
        (true, _) => Output::Data,
        (false, true) => Output::Raw,
        (false, false) => Output::Json,
    };
    client::subscribe(
        &ep,
        &args.topics,
        args.remote.credential(),
        args.last_event_id,
        output,
    )
    .await
}

type LogHandle = tracing_subscriber::reload::Handle<LevelFilter, tracing_subscriber::Registry>;

/// Logs go to stderr: plain text without colours unless it is a terminal, and without
/// timestamps under systemd (journald adds its own). The level can change at run time.
fn init_logging(level: &str, json: bool) -> LogHandle {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let level = level.parse().unwrap_or(tracing::Level::INFO);
    let (filter, handle) = tracing_subscriber::reload::Layer::new(LevelFilter::from_level(level));
    let base = tracing_subscriber::registry().with(filter);
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    if json {
        // One object per line, its fields at the top level, for log shippers.
        base.with(fmt.json().flatten_event(true).with_current_span(false))
            .init();
        return handle;
    }
    let fmt = fmt
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        // journald stamps each line itself.
        base.with(fmt.without_time()).init();
    } else {
        base.with(fmt).init();
    }
    handle
}
