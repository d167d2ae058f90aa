//! Serving (SPEC §9): the accept loop, one task per connection, and an orderly shutdown.
//!
//! - [`conn`]: one connection (event streams written directly, the rest through hyper);
//!   `head`: reading the first request head and writing response heads;
//! - `ws`: one WebSocket connection (SPEC §5.8), written like an event stream, read through
//!   the WebSocket library; `ws_ops`: what its client sends (subscribe, publish, ping);
//! - `io`: socket wrappers (write timeouts, bytes put back); `systemd`: readiness and
//!   watchdog notifications.

mod conn;
mod head;
mod io;
pub(crate) mod systemd;
mod ws;
mod ws_ops;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::hub::Hub;
use crate::shutdown::Shutdown;
use crate::store;

/// A hub that is serving. Dropping it does not stop it: call [`Running::shutdown`].
pub struct Running {
    addr: SocketAddr,
    hub: Hub,
    shutdown: Shutdown,
    task: JoinHandle<bool>,
}

impl Running {
    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Reads the TLS certificate and key again (SIGHUP does this): new connections get
    /// them, open ones keep theirs. On error the running certificate stays.
    pub fn reload_tls(&self) -> Result<(), crate::tls::TlsError> {
        match self.hub.tls() {
            Some(t) => t.reload(),
            None => Ok(()),
        }
    }

    /// A handle that triggers shutdown.
    pub fn shutdown_handle(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// Stops the hub and waits for it (streams get `event: shutdown`, the log is flushed).
    /// Returns false if the final flush failed.
    pub async fn shutdown(self) -> bool {
        self.shutdown.trigger();
        self.wait().await
    }

    /// Waits until the hub has stopped (after a trigger from elsewhere) and its data
    /// directory is free to open again. Returns false if the final flush failed.
    pub async fn wait(self) -> bool {
        let flushed = self.task.await.unwrap_or(false);
        let dir = self.hub.config().data_dir.clone();
        drop(self.hub);
        let within = Duration::from_secs(5);
        let released = tokio::task::spawn_blocking(move || store::wait_released(&dir, within))
            .await
            .unwrap_or(false);
        if !released {
            tracing::warn!("the log's file lock is still held {within:?} after shutdown");
        }
        flushed
    }
}

/// Binds, opens the store and starts serving. `config` must be validated.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let addr = config.listen_addr()?;
    let listener = listen(addr).with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    let cluster = match &config.cluster.redis {
        Some(url) => Some(
            crate::cluster::Cluster::join(&config.cluster, url, config.redis.ca_file.as_deref())
                .await?,
        ),
        None => None,
    };
    let hub = Hub::open_in(config, cluster).context("cannot open the hub")?;
    let shutdown = Shutdown::default();
    hub.spawn_maintenance(&shutdown);
    crate::ingress::spawn(&hub, &shutdown);
    let streams = streams_runtime()?;
    let task = tokio::spawn(serve(listener, hub.clone(), shutdown.clone(), streams));
    tracing::info!(
        data_dir = %hub.config().data_dir.display(),
        sync = ?hub.config().store.sync,
        open = hub.auth().is_open(),
        "listening on {}://{local}",
        if hub.tls().is_some() { "https" } else { "http" }
    );
    Ok(Running {
        addr: local,
        hub,
        shutdown,
        task,
    })
}

/// Binds with a deep accept queue: after a restart every client reconnects at once, and
/// with the usual 1024 the overflow waits a second or more for its SYN to be resent. (The
/// kernel caps it at `net.core.somaxconn`, 4096 by default.)
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(8192)
}

/// The runtime that writes event streams: one worker per core. The runtime that called
/// [`start`] keeps accepting and answering everything else, so a publish is read and
/// committed at once even while thousands of streams are being written.
fn streams_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores)
        // Replays read the log on blocking threads; a reconnect storm queues its reads
        // here instead of starting hundreds of threads.
        .max_blocking_threads(cores * 2)
        .thread_name("runnel-stream")
        .enable_all()
        .build()
        .context("cannot start the stream runtime")
}

/// Serves until shutdown; returns whether the final flush succeeded.
async fn serve(
    listener: TcpListener,
    hub: Hub,
    shutdown: Shutdown,
    streams: tokio::runtime::Runtime,
) -> bool {
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.wait() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        if let Some(tls) = hub.tls() {
            tokio::spawn(conn::serve_tls(
                hub.clone(),
                stream,
                peer,
                graceful.watcher(),
                shutdown.clone(),
                tls.current(),
            ));
            continue;
        }
        tokio::spawn(conn::serve(
            hub.clone(),
            stream,
            peer,
            graceful.watcher(),
            shutdown.clone(),
            streams.handle().clone(),
        ));
    }
    // Close the listener first: browsers treat a refused connection as a reason to retry,
    // but any non-200 answer (503 too) as final.
    drop(listener);
    let grace = hub.config().stream.shutdown_grace;
    tracing::info!(%grace, "shutting down");
    hub.close_streams();
    if tokio::time::timeout(grace.0, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after stream.shutdown_grace; closing them");
    }
    // Whatever is left on it was cut off by the grace period. Its tasks hold the hub (and
    // so the store): wait for them to be dropped, briefly, so the store really closes.
    let _ =
        tokio::task::spawn_blocking(move || streams.shutdown_timeout(Duration::from_secs(1))).await;
    let h = hub.clone();
    match tokio::task::spawn_blocking(move || h.stop_and_flush()).await {
        Ok(true) => {
            tracing::info!("log flushed; bye");
            true
        }
        Ok(false) => false,
        Err(e) => {
            tracing::error!(error = %e, "final flush task failed");
            false
        }
    }
}

/// Runs the hub until SIGTERM/SIGINT, telling systemd how it goes (readiness, watchdog,
/// stopping). SIGHUP calls `reload`.
pub async fn run(config: Config, reload: impl Fn() + Send + Sync + 'static) -> anyhow::Result<()> {
    let running = start(config).await?;
    systemd::notify("READY=1\nSTATUS=serving");
    let stop = running.shutdown_handle();
    if let Some(every) = systemd::watchdog_interval() {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut iv = tokio::time::interval(every);
            loop {
                tokio::select! {
                    _ = stop.wait() => break,
                    _ = iv.tick() => { systemd::notify("WATCHDOG=1"); }
                }
            }
        });
    }
    #[cfg(unix)]
    {
        let stop = stop.clone();
        let hub = running.hub.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let Ok(mut hup) = signal(SignalKind::hangup()) else {
                return;
            };
            loop {
                tokio::select! {
                    _ = stop.wait() => break,
                    _ = hup.recv() => {
                        systemd::notify("RELOADING=1");
                        reload();
                        match hub.tls().map(|t| t.reload()) {
                            Some(Ok(())) => tracing::info!("TLS certificate reloaded"),
                            Some(Err(e)) => tracing::error!(
                                "TLS reload failed, keeping the running certificate: {e}"),
                            None => {}
                        }
                        systemd::notify("READY=1");
                    }
                }
            }
        });
    }
    tokio::spawn(async move {
        crate::shutdown::signal().await;
        systemd::notify("STOPPING=1");
        stop.trigger();
    });
    if running.wait().await {
        Ok(())
    } else {
        anyhow::bail!("the log could not be flushed at shutdown; see the log above")
    }
}
