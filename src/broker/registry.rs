//! The broker's indexes: open streams by key, by topic, by user and by address, and the
//! users' sessions. Only the broker touches them, under its one lock.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use subtle::ConstantTimeEq;

use super::queue::Subscriber;
use crate::topic::Pattern;

#[derive(Default)]
pub(super) struct Registry {
    pub next_key: u64,
    pub streams: HashMap<u64, Entry>,
    /// Exact topic → the streams that receive it.
    pub by_topic: HashMap<String, HashMap<u64, Arc<Subscriber>>>,
    /// Wildcard subscriptions, matched against every event's topics.
    pub wildcards: Vec<(Pattern, Arc<Subscriber>)>,
    /// A user's open streams.
    pub by_user: HashMap<String, Vec<u64>>,
    pub per_ip: HashMap<IpAddr, usize>,
    /// Topics users added with `POST /subscribe`, applied to all their streams.
    pub sessions: HashMap<String, Session>,
    /// The seq of the last event fanned out.
    pub fanned_through: u64,
    /// Shutting down: no new streams.
    pub closed: bool,
}

pub(super) struct Entry {
    pub sub: Arc<Subscriber>,
    /// Everything the stream receives.
    pub topics: Vec<String>,
    /// What it received without the session: named at open (or added to this stream by
    /// connection id), its personal topic and the broadcast.
    pub base: Vec<String>,
}

/// A user's session: topics added with `POST /subscribe`.
#[derive(Default)]
pub(super) struct Session {
    pub topics: Vec<String>,
    /// Coarse time of the last session call or of the user's last stream closing.
    pub touched_ms: u64,
}

impl Registry {
    /// The registry key of a public connection id, if the id is exactly right.
    pub fn key_of(&self, id: &str) -> Option<u64> {
        let key = u64::from_str_radix(id.split('-').next()?, 16).ok()?;
        let e = self.streams.get(&key)?;
        // The random part makes the id unguessable; compare it in constant time.
        bool::from(e.sub.id.as_bytes().ct_eq(id.as_bytes())).then_some(key)
    }

    /// Adds a stream under `key` with its topics.
    pub fn insert(&mut self, sub: Arc<Subscriber>, topics: Vec<String>, base: Vec<String>) {
        if let Some(user) = &sub.user {
            self.by_user.entry(user.clone()).or_default().push(sub.key);
        }
        *self.per_ip.entry(sub.ip).or_default() += 1;
        for t in &topics {
            self.subscribe(t, &sub);
        }
        sub.set_receives(&topics);
        self.streams.insert(sub.key, Entry { sub, topics, base });
    }

    /// Takes a stream out of every index.
    pub fn remove(&mut self, key: u64, now_ms: u64) -> Option<Entry> {
        let entry = self.streams.remove(&key)?;
        for t in &entry.topics {
            self.unsubscribe(t, key);
        }
        if let Some(user) = &entry.sub.user
            && let Some(keys) = self.by_user.get_mut(user)
        {
            keys.retain(|k| *k != key);
            if keys.is_empty() {
                self.by_user.remove(user);
                // The session's idle time starts when the user's last stream closes.
                if let Some(s) = self.sessions.get_mut(user) {
                    s.touched_ms = now_ms;
                }
            }
        }
        if let Some(n) = self.per_ip.get_mut(&entry.sub.ip) {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&entry.sub.ip);
            }
        }
        Some(entry)
    }

    /// Adds topics to a stream (and to what it names itself, if `named`).
    pub fn add_topics(&mut self, key: u64, topics: &[String], named: bool) {
        let Some(e) = self.streams.get_mut(&key) else {
            return;
        };
        let sub = e.sub.clone();
        let mut added = Vec::new();
        for t in topics {
            if named && !e.base.contains(t) {
                e.base.push(t.clone());
            }
            if !e.topics.contains(t) {
                e.topics.push(t.clone());
                added.push(t.clone());
            }
        }
        sub.set_receives(&e.topics);
        for t in &added {
            self.subscribe(t, &sub);
        }
    }

    /// Removes topics from a stream; without `named`, topics the stream named stay.
    pub fn remove_topics(&mut self, key: u64, topics: &[String], named: bool) {
        let Some(e) = self.streams.get_mut(&key) else {
            return;
        };
        let mut removed = Vec::new();
        for t in topics {
            if named {
                e.base.retain(|b| b != t);
            } else if e.base.contains(t) {
                continue;
            }
            if let Some(i) = e.topics.iter().position(|x| x == t) {
                e.topics.remove(i);
                removed.push(t.clone());
            }
        }
        e.sub.set_receives(&e.topics);
        for t in &removed {
            self.unsubscribe(t, key);
        }
    }

    fn subscribe(&mut self, t: &str, sub: &Arc<Subscriber>) {
        if t.contains('*') {
            if let Ok(p) = Pattern::new(t) {
                self.wildcards.push((p, sub.clone()));
            }
        } else {
            self.by_topic
                .entry(t.to_string())
                .or_default()
                .insert(sub.key, sub.clone());
        }
    }

    fn unsubscribe(&mut self, t: &str, key: u64) {
        if t.contains('*') {
            self.wildcards
                .retain(|(p, s)| !(s.key == key && p.as_str() == t));
        } else if let Some(m) = self.by_topic.get_mut(t) {
            m.remove(&key);
            if m.is_empty() {
                self.by_topic.remove(t);
            }
        }
    }
}
