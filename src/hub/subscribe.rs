//! Streams and what they receive: opening one (SPEC §5.1), and changing subscriptions
//! afterwards, for a user's session or for one stream (SPEC §5.4).

use super::Hub;
use super::cluster::Control;
use crate::auth::Caller;
use crate::error::Error;
use crate::stream::{StreamRequest, Subscription};
use crate::topic;

/// `POST /subscribe` and `POST /unsubscribe`, from whichever front door.
#[derive(Debug, Clone)]
pub(crate) struct SessionChange {
    pub topics: Vec<String>,
    /// The stream to change, for a caller without a user (or one of the user's streams).
    pub connection_id: Option<String>,
    /// Subscribe (true) or unsubscribe.
    pub add: bool,
}

impl Hub {
    /// Would this stream open now? The same checks as [`Hub::subscribe`] (credentials,
    /// topics, connection limits), without opening it.
    pub fn check_stream(&self, caller: &Caller, mut req: StreamRequest) -> Result<(), Error> {
        self.inner.streams.check_now(caller, &mut req)
    }

    /// Opens a stream for `caller`. In a cluster, a stream resuming from an id this hub
    /// has not published yet (the client comes from a hub ahead of it) waits a little for
    /// this hub to catch up, instead of being told the id is unknown.
    pub async fn subscribe(
        &self,
        caller: &Caller,
        req: StreamRequest,
    ) -> Result<Subscription, Error> {
        if self.inner.cluster.is_some()
            && let Some(id) = req.last_event_id.as_deref()
            && let crate::store::Resume::After(seq) = self.inner.log.ids().parse(id)
        {
            self.caught_up(seq).await;
        }
        self.inner.streams.open(caller, req)
    }

    /// Adds topics to one open connection, from the connection itself (a WebSocket
    /// `subscribe`), replaying the new topics after `last_id` first when it is given.
    /// `covered`: the topics the connection has every event of after a seq, whose events
    /// are not replayed again. Returns what the connection receives now, and the seq after
    /// which it has every event of the new topics.
    pub fn subscribe_more(
        &self,
        caller: &Caller,
        sub: &mut Subscription,
        topics: Vec<String>,
        last_id: Option<String>,
        covered: Vec<(String, u64)>,
    ) -> Result<(Vec<String>, u64), Error> {
        self.inner
            .streams
            .add_topics(caller, sub, topics, last_id, covered)
    }

    /// Removes topics from one open connection, from the connection itself.
    pub fn unsubscribe_some(
        &self,
        sub: &Subscription,
        topics: Vec<String>,
    ) -> Result<Vec<String>, Error> {
        self.inner.streams.remove_topics(sub, topics)
    }

    /// Adds or removes topics: for an authenticated user, in the session all the user's
    /// streams follow; otherwise on the stream named by its connection id. Returns the
    /// resulting topics (the session's, or the stream's).
    pub async fn change_subscriptions(
        &self,
        caller: &Caller,
        change: SessionChange,
    ) -> Result<Vec<String>, Error> {
        let SessionChange {
            mut topics,
            connection_id,
            add,
        } = change;
        topic::dedup(&mut topics);
        if topics.is_empty() {
            return Err(Error::BadRequest("\"topics\" is empty".into()));
        }
        if add {
            caller.check_readable(&topics)?;
        } else {
            for t in &topics {
                topic::validate_pattern(t)?;
            }
        }
        let broker = &self.inner.broker;
        match (&caller.user, &connection_id) {
            (Some(user), id) => {
                // A user's change goes into the session; a connection id, if given, must be
                // one of the user's streams.
                if let Some(id) = id
                    && broker.stream_owned_by(id, user) != Some(true)
                    && !self.elsewhere(id).await
                {
                    return Err(Error::NotFound(format!(
                        "you have no open stream with connection_id {id:?}"
                    )));
                }
                let now = if add {
                    broker.session_subscribe(user, &topics)?
                } else {
                    broker.session_unsubscribe(user, &topics)
                };
                // Every hub of a cluster keeps the user's session.
                self.tell_cluster(&Control::Session {
                    user: user.clone(),
                    topics,
                    add,
                })
                .await?;
                Ok(now)
            }
            (None, Some(id)) => {
                if !caller.may_stream() {
                    return Err(Error::Unauthorized("credentials are required".into()));
                }
                let here = if add {
                    broker.stream_subscribe(id, &topics)
                } else {
                    broker.stream_unsubscribe(id, &topics)
                };
                match here {
                    // On another hub of the cluster: that hub applies it.
                    Err(Error::NotFound(_)) if self.elsewhere(id).await => {
                        self.tell_cluster(&Control::Stream {
                            id: id.clone(),
                            topics: topics.clone(),
                            add,
                        })
                        .await?;
                        Ok(topics)
                    }
                    other => other,
                }
            }
            (None, None) => Err(if caller.may_stream() {
                Error::BadRequest(
                    "without a user, name the stream: {\"topics\": [...], \"connection_id\": \
                     \"...\"} (from the stream's `connected` event)"
                        .into(),
                )
            } else {
                Error::Unauthorized("credentials are required".into())
            }),
        }
    }
}
