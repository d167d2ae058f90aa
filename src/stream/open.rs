//! Opening a stream: who may, what it receives, and how it resumes.

use bytes::{Bytes, BytesMut};

use super::replay::Replay;
use super::{Skip, StreamRequest, Streams, Subscription};
use crate::auth::Caller;
use crate::broker::StreamSpec;
use crate::error::Error;
use crate::event::{Control, ResetReason};
use crate::store::{Resume, Selector};
use crate::topic;

impl Streams {
    /// Would this stream open? The checks of [`Streams::open`] short of registering: the
    /// caller may stream at all, names few enough topics, and may read each. Removes
    /// repeated names from the request.
    pub fn check(&self, caller: &Caller, req: &mut StreamRequest) -> Result<(), Error> {
        if !caller.may_stream() {
            return Err(Error::Unauthorized("credentials are required".into()));
        }
        topic::dedup(&mut req.named);
        let max = self.max_topics;
        if req.named.len() > max {
            return Err(Error::BadRequest(format!(
                "a stream names at most {max} topics (limits.max_topics_per_stream), got {}",
                req.named.len()
            )));
        }
        caller.check_readable(&req.named)
    }

    /// [`Streams::check`], and the connection limits as they stand (for `HEAD /events`).
    pub fn check_now(&self, caller: &Caller, req: &mut StreamRequest) -> Result<(), Error> {
        self.check(caller, req)?;
        self.broker.would_admit(caller.user.as_deref(), req.ip)
    }

    /// Opens a stream: it receives the topics it names, its user's personal topic and
    /// session topics, and the broadcast; it is subscribed before this returns.
    pub fn open(&self, caller: &Caller, mut req: StreamRequest) -> Result<Subscription, Error> {
        self.check(caller, &mut req)?;
        let mut topics = std::mem::take(&mut req.named);
        if let Some(u) = &caller.user {
            topics.push(topic::personal_topic(u));
        }
        topics.push(topic::BROADCAST.to_string());
        topic::dedup(&mut topics);
        let reg = self.broker.register(
            StreamSpec {
                user: caller.user.clone(),
                admin: caller.admin,
                ip: req.ip,
                topics,
                expires_at: caller.expires_at,
                format: req.format,
                filter: req.filter.clone(),
            },
            |t| caller.can_read(t),
        )?;
        let last_id = req.last_event_id;
        let live_from = reg.live_from;
        // What to replay: up to `live_from`, every later event arrives live.
        let (reset, after) = self.resume(last_id.as_deref(), live_from);
        let mut opening = BytesMut::with_capacity(512);
        opening.extend_from_slice(&req.format.opening(self.retry_ms));
        let connected = Control::Connected {
            connection_id: reg.sub.id.clone(),
            user: caller.user.clone(),
            topics: reg.topics.clone(),
            last_event_id: last_id.clone(),
        };
        opening.extend_from_slice(&connected.encode(req.format));
        if let Some(reason) = reset {
            let reset = Control::Reset {
                reason,
                last_event_id: last_id.clone(),
            };
            opening.extend_from_slice(&reset.encode(req.format));
        }
        let replay = after.filter(|a| *a < live_from).map(|after| {
            Box::new(Replay::new(
                self.log.clone(),
                Selector::new(&reg.topics, caller.user.clone(), caller.admin),
                after,
                live_from,
                // Continuity is promised only when resuming from an id without a reset:
                // then retention cutting into the range is a `reset` (pruned) of its own.
                last_id.clone().filter(|_| reset.is_none() && after > 0),
            ))
        });
        let topics = reg.topics.join(",");
        tracing::info!(
            conn = %reg.sub.id,
            user = caller.user.as_deref().unwrap_or("-"),
            topics,
            last_event_id = last_id.as_deref().unwrap_or("-"),
            reset = reset.map_or("-", |r| r.as_str()),
            "stream opened"
        );
        Ok(Subscription {
            broker: self.broker.clone(),
            sub: reg.sub,
            format: req.format,
            opening: Some(Bytes::from(opening)),
            replay,
            topics: topics.into(),
            opened: std::time::Instant::now(),
            sent: 0,
            failed: false,
        })
    }
}

impl Streams {
    /// How a stream resumes from `last_id` when it is registered at `live_from`: the reset
    /// due, if any, and the seq to replay after (`None`: live only).
    fn resume(&self, last_id: Option<&str>, live_from: u64) -> (Option<ResetReason>, Option<u64>) {
        match last_id.map(|id| self.log.ids().parse(id)) {
            None => (None, None),
            Some(Resume::After(seq)) if seq > live_from => (Some(ResetReason::UnknownId), Some(0)),
            Some(Resume::After(seq)) => (None, Some(seq)),
            Some(Resume::Unknown) => (Some(ResetReason::UnknownId), Some(0)),
        }
    }

    /// Adds topics to an open connection from the connection itself (a WebSocket
    /// `subscribe`), checked as at opening. With `last_id`, the new topics' events after it
    /// and up to the registration point are replayed (after any replay under way) before
    /// live events continue: no gap, no duplicate; a foreign or pruned id is a `reset` as at
    /// opening. `covered` are the topics the connection has every event of after a seq:
    /// an event on one of those is not replayed again. Returns what the connection receives
    /// now, and the seq after which it has every event of the new topics.
    pub fn add_topics(
        &self,
        caller: &Caller,
        sub: &mut Subscription,
        mut topics: Vec<String>,
        last_id: Option<String>,
        covered: Vec<(String, u64)>,
    ) -> Result<(Vec<String>, u64), Error> {
        topic::dedup(&mut topics);
        if topics.is_empty() {
            return Err(Error::BadRequest("\"topics\" is empty".into()));
        }
        caller.check_readable(&topics)?;
        let (now, live_from) = self.broker.connection_subscribe(&sub.sub, &topics)?;
        let (reset, after) = self.resume(last_id.as_deref(), live_from);
        if let Some(after) = after.filter(|a| *a < live_from || reset.is_some()) {
            let mut replay = Replay::new(
                self.log.clone(),
                Selector::new(&topics, caller.user.clone(), caller.admin),
                after,
                live_from,
                last_id.clone().filter(|_| reset.is_none() && after > 0),
            )
            .skipping(Skip {
                covered,
                user: caller.user.clone(),
                admin: caller.admin,
            });
            if let Some(reason) = reset {
                let reset = Control::Reset {
                    reason,
                    last_event_id: last_id,
                };
                replay = replay.after_message(reset.encode(sub.format));
            }
            sub.replay_after(replay);
        }
        Ok((now, after.map_or(live_from, |a| a.min(live_from))))
    }

    /// Removes topics from an open connection, from the connection itself.
    pub fn remove_topics(
        &self,
        sub: &Subscription,
        mut topics: Vec<String>,
    ) -> Result<Vec<String>, Error> {
        topic::dedup(&mut topics);
        if topics.is_empty() {
            return Err(Error::BadRequest("\"topics\" is empty".into()));
        }
        for t in &topics {
            topic::validate_pattern(t)?;
        }
        self.broker.connection_unsubscribe(&sub.sub, &topics)
    }
}
