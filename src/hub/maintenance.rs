//! The hub's background work: the coarse clock and heartbeats, counting the log found at
//! start, and retention. Each task ends at shutdown.

use std::time::Duration;

use super::Hub;
use crate::shutdown::Shutdown;

impl Hub {
    /// Starts the background tasks on the current runtime.
    pub fn spawn_maintenance(&self, shutdown: &Shutdown) {
        self.spawn_follower(shutdown);
        let hb = self.inner.config.stream.heartbeat.0;
        let tick = (hb / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
        let (hub, stop) = (self.clone(), shutdown.clone());
        tokio::spawn(async move {
            let mut iv = tokio::time::interval(tick);
            iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.wait() => break,
                    _ = iv.tick() => hub.inner.broker.tick(),
                }
            }
        });
        let (hub, stop) = (self.clone(), shutdown.clone());
        tokio::spawn(async move {
            hub.count_log().await;
            let mut iv = tokio::time::interval(Duration::from_secs(1));
            iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.wait() => break,
                    _ = iv.tick() => hub.retain().await,
                }
            }
        });
    }

    /// Counts the log found at start (serving does not wait for it).
    async fn count_log(&self) {
        let log = self.inner.log.clone();
        match tokio::task::spawn_blocking(move || log.count_existing()).await {
            Ok(Ok(())) => tracing::debug!("existing log counted"),
            Ok(Err(e)) => tracing::error!(error = %e, "cannot count the existing log"),
            Err(e) => tracing::error!(error = %e, "log count task failed"),
        }
    }

    /// One retention pass, off the async workers.
    async fn retain(&self) {
        let log = self.inner.log.clone();
        let now = crate::time::unix_ms();
        match tokio::task::spawn_blocking(move || log.enforce_retention(now)).await {
            Ok(Ok(p)) if p.by_count + p.by_age + p.by_size > 0 => {
                tracing::debug!(
                    by_count = p.by_count,
                    by_age = p.by_age,
                    by_size = p.by_size,
                    "retention pruned events"
                );
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "retention pass failed"),
            Err(e) => tracing::warn!(error = %e, "retention task failed"),
        }
    }
}
