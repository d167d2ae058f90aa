//! One `stream` rule: a Redis Stream read through a consumer group, acknowledged once the
//! log holds what it became.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use redis::AsyncConnectionConfig;
use redis::streams::StreamReadReply;

use super::source::{BATCH, connected, dropped, keep_connected, publish};
use crate::auth::Caller;
use crate::config::Source;
use crate::event::Origin;
use crate::hub::{Hub, SourceStatus};
use crate::ingress::rule::{Dropped, Rule};
use crate::shutdown::Shutdown;

/// How long one `XREADGROUP` waits for entries.
const BLOCK_MS: usize = 2000;

/// One `stream` rule: a consumer group's reader. Entries are acknowledged once the log holds
/// their events; the log also keeps the newest entry id published (in the same write), so
/// an entry redelivered after a crash is acknowledged without being published again.
pub(super) struct StreamTask {
    pub(super) hub: Hub,
    pub(super) client: redis::Client,
    pub(super) rule: Rule,
    pub(super) status: Arc<SourceStatus>,
}

impl StreamTask {
    pub(super) async fn run(self, stop: Shutdown) {
        let caller = Caller::internal("redis-ingress");
        keep_connected(&self.status, &stop, || self.serve(&caller)).await;
    }

    fn stream(&self) -> &str {
        match &self.rule.source {
            Source::Stream(s) => s,
            _ => "",
        }
    }

    /// Connects, makes sure the group exists, reads this consumer's pending entries (those
    /// delivered before a crash), then new ones, until the connection fails.
    async fn serve(&self, caller: &Caller) -> redis::RedisResult<()> {
        let config = AsyncConnectionConfig::new().set_response_timeout(None);
        let mut conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let (stream, group) = (self.stream(), self.rule.group.as_str());
        let created: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(stream)
            .arg(group)
            .arg("$")
            .arg("MKSTREAM")
            .query_async(&mut conn)
            .await;
        match created {
            Err(e) if e.code() != Some("BUSYGROUP") => return Err(e),
            _ => {}
        }
        connected(&self.status);
        // One consumer per data directory: after a restart it finds its own pending entries.
        let consumer = format!("runnel-{:08x}", self.hub.log_incarnation());
        let source = format!("redis-stream:{stream}");
        // The newest entry the log holds from this stream: read once per connection, then
        // kept up to date here (this task is the stream's only publisher).
        let mut last = match self.hub.origin_position(&source).await {
            Ok(p) => p.and_then(|p| entry_id(&p)),
            Err(e) => {
                return Err(redis::RedisError::from((
                    redis::ErrorKind::Client,
                    "cannot read the log",
                    e.to_string(),
                )));
            }
        };
        // "0": this consumer's pending entries, from the start; then ">": new ones.
        let mut cursor = "0".to_string();
        loop {
            let mut cmd = redis::cmd("XREADGROUP");
            cmd.arg("GROUP")
                .arg(group)
                .arg(&consumer)
                .arg("COUNT")
                .arg(BATCH);
            if cursor == ">" {
                cmd.arg("BLOCK").arg(BLOCK_MS);
            }
            cmd.arg("STREAMS").arg(stream).arg(&cursor);
            let reply: Option<StreamReadReply> = cmd.query_async(&mut conn).await?;
            let entries = reply
                .and_then(|r| r.keys.into_iter().next())
                .map(|k| k.ids)
                .unwrap_or_default();
            if entries.is_empty() {
                cursor = ">".into();
                continue;
            }
            if cursor != ">" {
                cursor = entries[entries.len() - 1].id.clone();
            }
            let ids: Vec<String> = entries.iter().map(|e| e.id.clone()).collect();
            let done = self
                .publish_entries(caller, &source, &mut last, entries)
                .await;
            if !done {
                // Not acknowledged: they stay pending, and are read again after a reconnect.
                return Err(redis::RedisError::from((
                    redis::ErrorKind::Client,
                    "publishing failed; the entries stay pending",
                )));
            }
            let _: usize = redis::cmd("XACK")
                .arg(stream)
                .arg(group)
                .arg(&ids)
                .query_async(&mut conn)
                .await?;
        }
    }

    /// Publishes what is new among `entries` (newer than `last`, which it moves on); true
    /// when the log holds it (or nothing was new), so they may be acknowledged.
    async fn publish_entries(
        &self,
        caller: &Caller,
        source: &str,
        last: &mut Option<(u64, u64)>,
        entries: Vec<redis::streams::StreamId>,
    ) -> bool {
        let max = self.hub.publish_limits().max_event_bytes;
        let mut events = Vec::with_capacity(entries.len());
        for entry in entries {
            self.status.received.fetch_add(1, Ordering::Relaxed);
            if let (Some(last), Some(id)) = (*last, entry_id(&entry.id))
                && id <= last
            {
                self.status.duplicates.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let fields: Vec<(String, Vec<u8>)> = entry
                .map
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), bytes_of(v)?)))
                .collect();
            let text: Vec<(&str, &str)> = fields
                .iter()
                .filter_map(|(k, v)| Some((k.as_str(), std::str::from_utf8(v).ok()?)))
                .collect();
            let payload = fields.iter().find(|(k, _)| *k == self.rule.field);
            let made = match payload {
                Some((_, p)) => self.rule.event(self.stream(), p, &text, max),
                None => Err(Dropped::Invalid(format!(
                    "entry {} has no field {:?}",
                    entry.id, self.rule.field
                ))),
            };
            match made {
                Ok(mut e) => {
                    e.origin = Some(Origin {
                        source: source.to_string(),
                        position: entry.id.clone(),
                    });
                    events.push(e);
                }
                Err(why) => dropped(&self.status, self.stream(), &why),
            }
        }
        let newest = events
            .last()
            .and_then(|e| e.origin.as_ref())
            .and_then(|o| entry_id(&o.position));
        let done = publish(&self.hub, caller, &self.status, events).await;
        if done && newest.is_some() {
            *last = newest;
        }
        done
    }
}

/// A stream entry id, `<ms>-<seq>`, as numbers that order like Redis orders them.
fn entry_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// A field's value as bytes.
fn bytes_of(v: &redis::Value) -> Option<Vec<u8>> {
    match v {
        redis::Value::BulkString(b) => Some(b.clone()),
        redis::Value::SimpleString(s) => Some(s.clone().into_bytes()),
        redis::Value::Int(i) => Some(i.to_string().into_bytes()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_ids_order_as_numbers() {
        assert!(entry_id("1700000000000-10") > entry_id("1700000000000-9"));
        assert!(entry_id("1700000000001-0") > entry_id("1700000000000-99"));
        assert_eq!(entry_id("x"), None);
    }
}
