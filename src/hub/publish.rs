//! Publishing (SPEC §5.2): who may publish where, and `idempotency_key`, around the
//! publisher that numbers, logs and fans out.

use std::collections::HashSet;
use std::net::SocketAddr;

use super::Hub;
use crate::auth::Caller;
use crate::error::Error;
use crate::event::{NewEvent, Published};
use crate::idempotency::Begin;
use crate::topic;

/// What a publish came to: one answer per event, in order.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub answers: Vec<Published>,
    /// Every answer was remembered from an earlier publish with the same key: nothing was
    /// published now.
    pub replayed: bool,
}

impl Hub {
    /// Publishes events as one atomic batch, after checking the caller may publish each.
    /// Events whose `idempotency_key` was seen in the last five minutes (from the same
    /// caller) are answered from memory instead of published again. `from` is the
    /// connection the publish came over: publishes from several at once share a flush.
    pub async fn publish(
        &self,
        caller: &Caller,
        events: Vec<NewEvent>,
        from: SocketAddr,
    ) -> Result<Outcome, Error> {
        check_publish(caller, &events)?;
        let scope = caller.scope();
        let mut seen = HashSet::new();
        for k in events.iter().filter_map(|e| e.idempotency_key.as_ref()) {
            if !seen.insert(k) {
                return Err(Error::BadRequest(format!(
                    "idempotency_key {k:?} appears twice in one batch"
                )));
            }
        }
        let mut answers: Vec<Option<Published>> = vec![None; events.len()];
        let mut fresh = Vec::new();
        let mut fresh_at = Vec::new();
        let mut claimed: Vec<(usize, String)> = Vec::new();
        let idem = &self.inner.idempotency;
        for (i, ev) in events.into_iter().enumerate() {
            if let Some(k) = &ev.idempotency_key {
                let key = format!("{scope}\n{k}");
                match idem.begin(&key) {
                    Begin::Done(p) => {
                        answers[i] = Some(p);
                        continue;
                    }
                    Begin::InProgress => {
                        for (_, k) in &claimed {
                            idem.abort(k);
                        }
                        return Err(Error::Conflict(format!(
                            "a publish with idempotency_key {k:?} is in progress; retry later"
                        )));
                    }
                    Begin::Fresh => claimed.push((i, key)),
                }
            }
            fresh_at.push(i);
            fresh.push(ev);
        }
        let replayed = fresh.is_empty();
        if !replayed {
            let published = match &self.inner.cluster {
                Some(link) => self.publish_in_cluster(link, fresh).await,
                None => self.inner.publisher.publish(fresh, source_of(from)).await,
            };
            match published {
                Ok(published) => {
                    for p in &published {
                        tracing::debug!(id = %p.id, topics = ?p.topics, delivered = p.delivered,
                            "published");
                    }
                    for (i, p) in fresh_at.into_iter().zip(published) {
                        answers[i] = Some(p);
                    }
                    for (i, k) in &claimed {
                        if let Some(p) = &answers[*i] {
                            idem.complete(k, p.clone());
                        }
                    }
                }
                Err(e) => {
                    for (_, k) in &claimed {
                        idem.abort(k);
                    }
                    return Err(e);
                }
            }
        }
        Ok(Outcome {
            answers: answers.into_iter().flatten().collect(),
            replayed,
        })
    }
}

/// A connection as the publisher tells sources apart.
fn source_of(from: SocketAddr) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    from.hash(&mut h);
    h.finish()
}

fn check_publish(caller: &Caller, events: &[NewEvent]) -> Result<(), Error> {
    for ev in events {
        for t in &ev.topics {
            if !caller.can_publish(t) {
                let what = if t == topic::BROADCAST {
                    "you may not broadcast (that needs a publish pattern covering \
                     $broadcast, such as *)"
                        .to_string()
                } else {
                    format!("you may not publish to topic {t:?}")
                };
                return Err(caller.refuse(what));
            }
        }
    }
    Ok(())
}
