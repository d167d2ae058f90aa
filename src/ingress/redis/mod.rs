//! The Redis side of ingress: one pub/sub connection for every `channel` and `pattern` rule,
//! and one connection per `stream` rule. Each task reconnects with capped backoff while the
//! hub serves on, logs once when an outage starts and once when it ends, and reports its
//! state to the hub (`/health`, `/stats`, `/metrics`). Messages read together are published
//! together, as one batch, in the order Redis gave them.

mod pubsub;
mod source;
mod stream;

use crate::config::Source;
use crate::hub::Hub;
use crate::ingress::rule::Rule;
use crate::shutdown::Shutdown;
use pubsub::PubSubTask;
use stream::StreamTask;

/// Starts the ingress tasks `[redis]` asks for (none without rules).
pub fn spawn(hub: &Hub, shutdown: &Shutdown) {
    let cfg = &hub.config().redis;
    let (Some(url), false) = (&cfg.url, cfg.ingress.is_empty()) else {
        return;
    };
    let ca = cfg.ca_file.as_deref();
    // Pub/sub messages arrive as RESP3 pushes (see `PubSubTask::connect`).
    let sep = if url.expose().contains('?') { '&' } else { '?' };
    let resp3 = format!("{}{sep}protocol=resp3", url.expose());
    let (client, pushes) = match (
        crate::cluster::client(url.expose(), ca),
        crate::cluster::client(&resp3, ca),
    ) {
        (Ok(c), Ok(p)) => (c, p),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(url = %url.masked(), error = %e, "redis ingress cannot start");
            return;
        }
    };
    let rules: Vec<Rule> = cfg.ingress.iter().filter_map(Rule::compile).collect();
    let (pubsub, streams): (Vec<Rule>, Vec<Rule>) = rules
        .into_iter()
        .partition(|r| !matches!(r.source, Source::Stream(_)));
    if !pubsub.is_empty() {
        let names: Vec<String> = pubsub.iter().map(Rule::name).collect();
        let status = hub.add_source(names.join(", "));
        let task = PubSubTask {
            hub: hub.clone(),
            client: pushes,
            rules: pubsub,
            status,
        };
        tokio::spawn(task.run(shutdown.clone()));
    }
    for rule in streams {
        let status = hub.add_source(rule.name());
        let task = StreamTask {
            hub: hub.clone(),
            client: client.clone(),
            rule,
            status,
        };
        tokio::spawn(task.run(shutdown.clone()));
    }
}
