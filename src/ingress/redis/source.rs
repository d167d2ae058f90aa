//! What the pub/sub and stream sources share: staying connected with capped backoff, telling
//! the hub their state, and publishing a batch.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::auth::Caller;
use crate::event::NewEvent;
use crate::hub::{Hub, SourceStatus};
use crate::ingress::rule::Dropped;
use crate::shutdown::Shutdown;

/// Most messages published as one batch.
pub(super) const BATCH: usize = 256;
/// Backoff between connection attempts: from this, doubling, up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Capped exponential backoff with jitter.
struct Backoff(Duration);

impl Backoff {
    fn new() -> Backoff {
        Backoff(FIRST_BACKOFF)
    }

    fn next(&mut self) -> Duration {
        let d = self.0;
        self.0 = (self.0 * 2).min(MAX_BACKOFF);
        // Up to a quarter more, so that hubs restarted together do not retry in step.
        let jitter = u64::from(crate::random::random_u32()) % (d.as_millis() as u64 / 4 + 1);
        d + Duration::from_millis(jitter)
    }
}

/// A source's connection is made: it is up (logged when it was not).
pub(super) fn connected(status: &SourceStatus) {
    if !status.up.swap(true, Ordering::Relaxed) {
        tracing::info!(source = %status.name, "redis ingress connected");
    }
}

/// Keeps a source connected until shutdown. `serve` makes one connection and uses it until it
/// ends (calling [`connected`] once it is made). An outage (a connection lost, or the first
/// attempt failing) is logged and counted once, not at every retry; retries back off, from the
/// start again after each connection that was made.
pub(super) async fn keep_connected<F, Fut>(status: &SourceStatus, stop: &Shutdown, mut serve: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = redis::RedisResult<()>>,
{
    let mut backoff = Backoff::new();
    let mut first = true;
    loop {
        let ended = tokio::select! {
            _ = stop.wait() => return,
            r = serve() => r,
        };
        let was_up = status.up.swap(false, Ordering::Relaxed);
        if was_up || first {
            status.outages.fetch_add(1, Ordering::Relaxed);
            let why = ended
                .err()
                .map_or_else(|| "closed".to_string(), |e| e.to_string());
            tracing::warn!(source = %status.name, error = %why,
                "redis ingress is not connected; retrying");
        }
        first = false;
        if was_up {
            backoff = Backoff::new();
        }
        tokio::select! {
            _ = stop.wait() => return,
            _ = tokio::time::sleep(backoff.next()) => {}
        }
    }
}

/// The address publishes from ingress count as (publishes from one source share flushes).
fn from() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))
}

/// Publishes `events` as one batch; true if the log holds them.
pub(super) async fn publish(
    hub: &Hub,
    caller: &Caller,
    status: &SourceStatus,
    events: Vec<NewEvent>,
) -> bool {
    if events.is_empty() {
        return true;
    }
    let n = events.len() as u64;
    match hub.publish(caller, events, from()).await {
        Ok(_) => {
            status.published.fetch_add(n, Ordering::Relaxed);
            true
        }
        Err(e) => {
            tracing::warn!(source = %status.name, error = %e, events = n,
                "redis ingress could not publish");
            false
        }
    }
}

/// Counts and logs a dropped message.
pub(super) fn dropped(status: &SourceStatus, channel: &str, why: &Dropped) {
    let counter = match why {
        Dropped::TooLarge(_) => &status.too_large,
        Dropped::NotText | Dropped::Invalid(_) => &status.invalid,
    };
    counter.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(source = %status.name, channel, reason = %why, "redis message dropped");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let mut b = Backoff::new();
        let first = b.next();
        assert!(first >= FIRST_BACKOFF && first <= FIRST_BACKOFF * 5 / 4);
        for _ in 0..20 {
            b.next();
        }
        let capped = b.next();
        assert!(capped >= MAX_BACKOFF && capped <= MAX_BACKOFF * 5 / 4);
    }
}
