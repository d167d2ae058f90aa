//! A request's caller: who it is and what it may read and publish.

use std::sync::Arc;

use crate::error::Error;
use crate::topic::{self, Pattern};

/// Where a credential came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    None,
    Bearer,
    ApiKeyHeader,
    AuthTokenHeader,
    Query,
    Exchange,
    Cookie,
}

/// What a request may do, decided once per request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The authenticated user (`sub`), if any.
    pub user: Option<String>,
    /// The API key's name, when one was used.
    pub key: Option<String>,
    /// Admins may do everything, including reading anyone's `user/...` topic.
    pub admin: bool,
    /// Auth is off: everything is allowed.
    pub open: bool,
    pub via: Via,
    /// When the credential expires (Unix ms, leeway included); streams end then.
    pub expires_at: Option<u64>,
    pub(super) read: Vec<Pattern>,
    pub(super) publish: Vec<Pattern>,
    pub(super) anonymous: Arc<[Pattern]>,
}

impl Caller {
    pub(super) fn open(anonymous: Arc<[Pattern]>) -> Caller {
        Caller {
            user: None,
            key: None,
            admin: true,
            open: true,
            via: Via::None,
            expires_at: None,
            read: Vec::new(),
            publish: Vec::new(),
            anonymous,
        }
    }

    pub(super) fn anonymous(anonymous: Arc<[Pattern]>) -> Caller {
        Caller {
            admin: false,
            open: false,
            ..Caller::open(anonymous)
        }
    }

    /// The hub itself, publishing what an outside source it was configured to read (a Redis
    /// ingress rule) brought: it may publish anywhere, as the configuration says.
    pub fn internal(name: &str) -> Caller {
        Caller {
            key: Some(name.to_string()),
            open: false,
            ..Caller::open(Arc::from(Vec::new()))
        }
    }

    /// True if the request carried valid credentials.
    pub fn is_authenticated(&self) -> bool {
        self.user.is_some() || self.key.is_some()
    }

    /// May this caller read a topic or pattern? A pattern is allowed when every topic it
    /// can match is covered by the caller's patterns: matching the requested pattern as if
    /// it were a topic does exactly that, since its `*` is a character a permission's literal
    /// never matches, but a permission's `*` does.
    pub fn can_read(&self, requested: &str) -> bool {
        if self.open || self.admin {
            return true;
        }
        if !requested.contains('*')
            && let Some(owner) = topic::personal_owner(requested)
        {
            return self.user.as_deref() == Some(owner);
        }
        topic::any_matches(&self.read, requested) || topic::any_matches(&self.anonymous, requested)
    }

    /// Validates topics or patterns and checks the caller may read each (SPEC §5.1, §5.4).
    pub fn check_readable(&self, topics: &[String]) -> Result<(), Error> {
        for t in topics {
            topic::validate_pattern(t)?;
            if !self.can_read(t) {
                return Err(self.refuse(format!("you may not read topic {t:?}")));
            }
        }
        Ok(())
    }

    /// May this caller read anything at all without credentials? (Decides 401 vs 403.)
    pub fn may_stream(&self) -> bool {
        self.open || self.is_authenticated() || !self.anonymous.is_empty()
    }

    /// May this caller publish to a topic?
    pub fn can_publish(&self, topic: &str) -> bool {
        self.open || self.admin || topic::any_matches(&self.publish, topic)
    }

    /// May this caller use the operations endpoints (`/stats`, `/connections`, ...)?
    pub fn is_admin(&self) -> bool {
        self.open || self.admin
    }

    /// Scope for idempotency keys: the user, the API key, or nobody.
    pub fn scope(&self) -> String {
        match (&self.user, &self.key) {
            (Some(u), _) => format!("user:{u}"),
            (None, Some(k)) => format!("key:{k}"),
            _ => String::new(),
        }
    }

    /// The error for a refused action: 401 without credentials, 403 with.
    pub fn refuse(&self, what: String) -> Error {
        if self.is_authenticated() || self.open {
            Error::Forbidden(what)
        } else {
            Error::Unauthorized(format!("{what}: credentials are required"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_coverage() {
        let caller = |v: &[&str]| Caller {
            read: v.iter().map(|s| Pattern::new(s).unwrap()).collect(),
            user: Some("u".into()),
            ..Caller::anonymous(Vec::new().into())
        };
        assert!(caller(&["*"]).can_read("anything/*"));
        assert!(caller(&["news/*"]).can_read("news/eu/*"));
        assert!(caller(&["news/*"]).can_read("news/eu"));
        assert!(!caller(&["news/*"]).can_read("*"));
        assert!(!caller(&["news/eu"]).can_read("news/*"));
        assert!(!caller(&["a*"]).can_read("*a"));
    }
}
