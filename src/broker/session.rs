//! Dynamic subscriptions (SPEC §5.4): a user's session, which all the user's streams follow,
//! and the topics of one stream named by its connection id.

use super::registry::Registry;
use super::{Broker, Subscriber};
use crate::error::Error;
use crate::topic;

impl Broker {
    /// Adds topics to a user's session and to every open stream of the user. Returns the
    /// session's topics.
    pub fn session_subscribe(&self, user: &str, topics: &[String]) -> Result<Vec<String>, Error> {
        let max = self.inner.limits.max_topics;
        let now = self.now_ms();
        let mut reg = self.registry();
        let session = reg.sessions.entry(user.to_string()).or_default();
        let new: Vec<String> = topics
            .iter()
            .filter(|t| !session.topics.contains(t))
            .cloned()
            .collect();
        if session.topics.len() + new.len() > max {
            return Err(Error::BadRequest(format!(
                "a session holds at most {max} topics (limits.max_topics_per_stream)"
            )));
        }
        session.topics.extend(new);
        session.touched_ms = now;
        let result = session.topics.clone();
        let keys = reg.by_user.get(user).cloned().unwrap_or_default();
        for k in keys {
            reg.add_topics(k, topics, false);
        }
        Ok(result)
    }

    /// Removes topics from a user's session and from the user's open streams (except what a
    /// stream named itself). Returns the session's topics.
    pub fn session_unsubscribe(&self, user: &str, topics: &[String]) -> Vec<String> {
        let now = self.now_ms();
        let mut reg = self.registry();
        let result = match reg.sessions.get_mut(user) {
            Some(s) => {
                s.topics.retain(|t| !topics.contains(t));
                s.touched_ms = now;
                s.topics.clone()
            }
            None => Vec::new(),
        };
        let keys = reg.by_user.get(user).cloned().unwrap_or_default();
        for k in keys {
            reg.remove_topics(k, topics, false);
        }
        result
    }

    /// Adds topics to one stream, found by its connection id. Returns the stream's topics.
    pub fn stream_subscribe(&self, id: &str, topics: &[String]) -> Result<Vec<String>, Error> {
        let mut reg = self.registry();
        let key = reg.key_of(id).ok_or_else(|| no_stream(id))?;
        self.add_to_stream(&mut reg, key, topics)
    }

    /// Adds topics to one connection from the connection itself (a WebSocket `subscribe`).
    /// Returns its topics and the registration point: every event after it on the new topics
    /// arrives live, the ones up to it are for a replay.
    pub fn connection_subscribe(
        &self,
        sub: &Subscriber,
        topics: &[String],
    ) -> Result<(Vec<String>, u64), Error> {
        let mut reg = self.registry();
        if !reg.streams.contains_key(&sub.key) {
            return Err(ended());
        }
        let now = self.add_to_stream(&mut reg, sub.key, topics)?;
        Ok((now, reg.fanned_through))
    }

    fn add_to_stream(
        &self,
        reg: &mut Registry,
        key: u64,
        topics: &[String],
    ) -> Result<Vec<String>, Error> {
        let max = self.inner.limits.max_topics;
        let e = &reg.streams[&key];
        let named = e.base.len().saturating_sub(2)
            + topics.iter().filter(|t| !e.topics.contains(t)).count();
        if named > max {
            return Err(Error::BadRequest(format!(
                "a stream names at most {max} topics (limits.max_topics_per_stream)"
            )));
        }
        reg.add_topics(key, topics, true);
        Ok(reg.streams[&key].topics.clone())
    }

    /// Removes topics from one stream. Its personal topic and the broadcast stay.
    pub fn stream_unsubscribe(&self, id: &str, topics: &[String]) -> Result<Vec<String>, Error> {
        let mut reg = self.registry();
        let key = reg.key_of(id).ok_or_else(|| no_stream(id))?;
        remove_from_stream(&mut reg, key, topics)
    }

    /// Removes topics from one connection, from the connection itself.
    pub fn connection_unsubscribe(
        &self,
        sub: &Subscriber,
        topics: &[String],
    ) -> Result<Vec<String>, Error> {
        let mut reg = self.registry();
        if !reg.streams.contains_key(&sub.key) {
            return Err(ended());
        }
        remove_from_stream(&mut reg, sub.key, topics)
    }

    /// True if the stream with this id belongs to `user`.
    pub fn stream_owned_by(&self, id: &str, user: &str) -> Option<bool> {
        let reg = self.registry();
        let key = reg.key_of(id)?;
        Some(reg.streams[&key].sub.user.as_deref() == Some(user))
    }

    /// Forgets sessions idle for `session_ttl` whose user has no open stream.
    pub(super) fn expire_sessions(&self, now_ms: u64) {
        let ttl = self.inner.limits.session_ttl_ms;
        let mut reg = self.registry();
        let super::registry::Registry {
            sessions, by_user, ..
        } = &mut *reg;
        sessions.retain(|user, s| {
            by_user.contains_key(user) || now_ms.saturating_sub(s.touched_ms) < ttl
        });
    }
}

fn remove_from_stream(
    reg: &mut Registry,
    key: u64,
    topics: &[String],
) -> Result<Vec<String>, Error> {
    let sub = &reg.streams[&key].sub;
    let own = sub.user.as_deref().map(topic::personal_topic);
    if let Some(t) = topics
        .iter()
        .find(|t| *t == topic::BROADCAST || Some(t.as_str()) == own.as_deref())
    {
        return Err(Error::BadRequest(format!(
            "{t:?} cannot be unsubscribed: every stream receives the broadcast and its \
             user's personal topic"
        )));
    }
    reg.remove_topics(key, topics, true);
    Ok(reg.streams[&key].topics.clone())
}

fn ended() -> Error {
    Error::unavailable("this connection is ending")
}

fn no_stream(id: &str) -> Error {
    Error::NotFound(format!("no open stream has connection_id {id:?}"))
}
