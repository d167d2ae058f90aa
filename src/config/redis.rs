//! `[redis]` and its `[[redis.ingress]]` rules (SPEC §11.2), and the two small languages the
//! rules are written in: channel patterns whose `*`s capture, and templates over `{channel}`
//! and the captures (`{1}`, `{2}`…).

use std::fmt;

use serde::{Deserialize, Serialize, Serializer};

use super::{ConfigError, err};

/// `[redis]`: where Redis is, and what to read from it.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `redis://[user:password@]host[:port][/db]`, or `rediss://` for TLS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<RedisUrl>,
    /// With `rediss://`: PEM certificates to trust instead of the system's (a self-signed
    /// Redis on the LAN).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<std::path::PathBuf>,
    pub ingress: Vec<IngressRule>,
}

/// `[cluster]` (SPEC §11.3): several hubs sharing one log, a Redis Stream.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// The Redis every hub of the cluster uses (`redis://` or `rediss://`; with `rediss://`,
    /// `redis.ca_file` is trusted too).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisUrl>,
    /// The prefix of the cluster's keys: `<key>:log` (the stream), `<key>:seq`,
    /// `<key>:incarnation`, `<key>:hubs`, `<key>:conn:<hub>`. Two clusters on one Redis need
    /// two prefixes.
    pub key: String,
    /// About how many entries (publishes) the stream keeps (`XADD MAXLEN ~`): how far behind
    /// a hub may fall, or how long it may be away, and still catch up without a gap.
    pub max_len: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            redis: None,
            key: "runnel".into(),
            max_len: 100_000,
        }
    }
}

/// A Redis URL; `runnel check` prints it with the password masked.
#[derive(Clone, Deserialize)]
pub struct RedisUrl(pub String);

impl RedisUrl {
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with any password replaced by `***`.
    pub fn masked(&self) -> String {
        let Some((scheme, rest)) = self.0.split_once("://") else {
            return self.0.clone();
        };
        let (auth, host) = match rest.rsplit_once('@') {
            Some((a, h)) => (Some(a), h),
            None => (None, rest),
        };
        match auth {
            Some(a) => {
                let user = a.split_once(':').map_or("", |(u, _)| u);
                if a.contains(':') {
                    format!("{scheme}://{user}:***@{host}")
                } else {
                    format!("{scheme}://***@{host}")
                }
            }
            None => self.0.clone(),
        }
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl Serialize for RedisUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.masked())
    }
}

/// One `[[redis.ingress]]` rule: where messages come from, and where they go.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IngressRule {
    /// A pub/sub channel (`SUBSCRIBE`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// A pub/sub pattern (`PSUBSCRIBE`); each `*` is a capture, `{1}`, `{2}`…
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// A Redis Stream read through a consumer group (at least once).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    /// The topic, a template over `{channel}` and the captures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// The user whose personal topic receives it, a template likewise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The event type: literal, or `"{field}"` from a JSON payload (a stream entry's own
    /// field of that name first).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// Streams: the consumer group (created at the stream's end if missing).
    #[serde(default = "default_group")]
    pub group: String,
    /// Streams: the entry field that holds the payload.
    #[serde(default = "default_field")]
    pub field: String,
}

fn default_group() -> String {
    "runnel".into()
}

fn default_field() -> String {
    "data".into()
}

/// Where a rule reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Channel(String),
    Pattern(Glob),
    Stream(String),
}

/// Where a rule's messages go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Topic(Template),
    User(Template),
}

/// A rule's event type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventName {
    Literal(String),
    /// `"{field}"`: the field of a JSON payload (a missing field: no type).
    Field(String),
}

impl IngressRule {
    /// The rule, checked and compiled.
    pub fn compile(&self) -> Result<(Source, Target, Option<EventName>), ConfigError> {
        let source = match (&self.channel, &self.pattern, &self.stream) {
            (Some(c), None, None) if !c.is_empty() => Source::Channel(c.clone()),
            (None, Some(p), None) => Source::Pattern(Glob::parse(p).map_err(ConfigError)?),
            (None, None, Some(s)) if !s.is_empty() => Source::Stream(s.clone()),
            _ => {
                return err(
                    "redis.ingress: each rule names exactly one of channel, pattern or stream",
                );
            }
        };
        let stars = match &source {
            Source::Pattern(g) => g.stars(),
            _ => 0,
        };
        let target = match (&self.topic, &self.user) {
            (Some(t), None) => Target::Topic(Template::parse(t, stars).map_err(ConfigError)?),
            (None, Some(u)) => Target::User(Template::parse(u, stars).map_err(ConfigError)?),
            _ => {
                return err("redis.ingress: each rule names exactly one of topic or user");
            }
        };
        let event = self.event.as_ref().map(|e| {
            match e.strip_prefix('{').and_then(|f| f.strip_suffix('}')) {
                Some(f) if !f.is_empty() && !f.contains(['{', '}']) => {
                    EventName::Field(f.to_string())
                }
                _ => EventName::Literal(e.clone()),
            }
        });
        if let Some(EventName::Literal(e)) = &event
            && (e.is_empty() || e.contains(['\n', '\r']))
        {
            return err(format!("redis.ingress: event = {e:?} is not an event type"));
        }
        Ok((source, target, event))
    }
}

/// A channel pattern whose `*`s capture: each matches as few characters as it can, left to
/// right, and the last takes the rest. Redis's other glob syntax (`?`, `[...]`, `\`) is not
/// taken, so that what a capture holds is always clear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    pattern: String,
    /// The literal text around the `*`s: one more than there are `*`s.
    parts: Vec<String>,
}

impl Glob {
    pub fn parse(p: &str) -> Result<Glob, String> {
        if p.is_empty() || p.contains(['?', '[', ']', '\\']) {
            return Err(format!(
                "redis.ingress: pattern = {p:?}: use text and * (which captures), not ?, [ ] or \\"
            ));
        }
        if p.contains("**") {
            return Err(format!(
                "redis.ingress: pattern = {p:?}: two * in a row capture nothing apart"
            ));
        }
        Ok(Glob {
            pattern: p.to_string(),
            parts: p.split('*').map(str::to_string).collect(),
        })
    }

    /// As given (for `PSUBSCRIBE`).
    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    pub fn stars(&self) -> usize {
        self.parts.len() - 1
    }

    /// What each `*` matched in `channel`, or `None` if it does not match.
    pub fn captures<'a>(&self, channel: &'a str) -> Option<Vec<&'a str>> {
        let (first, rest) = self.parts.split_first()?;
        let mut at = first.len();
        if !channel.starts_with(first.as_str()) {
            return None;
        }
        let Some((last, middle)) = rest.split_last() else {
            return (channel == first).then(Vec::new);
        };
        let mut caps = Vec::with_capacity(rest.len());
        for lit in middle {
            let found = channel[at..].find(lit.as_str())?;
            caps.push(&channel[at..at + found]);
            at += found + lit.len();
        }
        let end = channel.len().checked_sub(last.len())?;
        if end < at || !channel.ends_with(last.as_str()) {
            return None;
        }
        caps.push(&channel[at..end]);
        Some(caps)
    }
}

/// A template over `{channel}` and `{1}`…`{n}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(Vec<Piece>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Channel,
    Capture(usize),
}

impl Template {
    /// Parses `t`, whose captures may go up to `stars`.
    pub fn parse(t: &str, stars: usize) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut rest = t;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                pieces.push(Piece::Text(rest[..open].to_string()));
            }
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| format!("redis.ingress: template {t:?} has a {{ without its }}"))?
                + open;
            let name = &rest[open + 1..close];
            pieces.push(match name {
                "channel" => Piece::Channel,
                n => match n.parse::<usize>() {
                    Ok(i) if (1..=stars).contains(&i) => Piece::Capture(i - 1),
                    _ => {
                        return Err(format!(
                            "redis.ingress: template {t:?}: {{{n}}} is not {{channel}} or one \
                             of the pattern's {stars} capture(s)"
                        ));
                    }
                },
            });
            rest = &rest[close + 1..];
        }
        if rest.contains('}') {
            return Err(format!(
                "redis.ingress: template {t:?} has a }} without its {{"
            ));
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_string()));
        }
        if pieces.is_empty() {
            return Err("redis.ingress: a template is empty".into());
        }
        Ok(Template(pieces))
    }

    pub fn render(&self, channel: &str, captures: &[&str]) -> String {
        let mut out = String::new();
        for p in &self.0 {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Channel => out.push_str(channel),
                Piece::Capture(i) => out.push_str(captures.get(*i).copied().unwrap_or("")),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stars_capture_as_little_as_they_can_and_the_last_takes_the_rest() {
        let g = Glob::parse("follower:*").unwrap();
        assert_eq!(g.captures("follower:42"), Some(vec!["42"]));
        assert_eq!(g.captures("follower:"), Some(vec![""]));
        assert_eq!(g.captures("followers:1"), None);
        let g = Glob::parse("app:*:user:*").unwrap();
        assert_eq!(g.captures("app:a:b:user:7:x"), Some(vec!["a:b", "7:x"]));
        let g = Glob::parse("*.*").unwrap();
        assert_eq!(g.captures("a.b.c"), Some(vec!["a", "b.c"]));
        let g = Glob::parse("x*y").unwrap();
        assert_eq!(g.captures("xy"), Some(vec![""]));
        assert_eq!(g.captures("x"), None);
        assert_eq!(Glob::parse("news").unwrap().captures("news"), Some(vec![]));
        assert_eq!(Glob::parse("news").unwrap().captures("newsy"), None);
        for bad in ["a?", "a[bc]", "", "a**"] {
            assert!(Glob::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn templates_render_the_channel_and_captures() {
        let t = Template::parse("feed/{1}/{2}", 2).unwrap();
        assert_eq!(t.render("c", &["a", "b"]), "feed/a/b");
        let t = Template::parse("{channel}", 0).unwrap();
        assert_eq!(t.render("news", &[]), "news");
        assert!(Template::parse("{2}", 1).is_err());
        assert!(Template::parse("{0}", 1).is_err());
        assert!(Template::parse("{nope}", 1).is_err());
        assert!(Template::parse("a{1", 1).is_err());
        assert!(Template::parse("a}", 1).is_err());
    }

    #[test]
    fn rules_name_one_source_and_one_target() {
        let rule = |f: &dyn Fn(&mut IngressRule)| {
            let mut r = IngressRule {
                group: default_group(),
                field: default_field(),
                ..IngressRule::default()
            };
            f(&mut r);
            r.compile()
        };
        let (s, t, e) = rule(&|r| {
            r.pattern = Some("follower:*".into());
            r.user = Some("{1}".into());
            r.event = Some("{type}".into());
        })
        .unwrap();
        assert!(matches!(s, Source::Pattern(_)) && matches!(t, Target::User(_)));
        assert_eq!(e, Some(EventName::Field("type".into())));
        assert!(rule(&|r| r.topic = Some("x".into())).is_err(), "no source");
        assert!(
            rule(&|r| {
                r.channel = Some("a".into());
                r.stream = Some("b".into());
                r.topic = Some("x".into());
            })
            .is_err()
        );
        assert!(
            rule(&|r| r.channel = Some("a".into())).is_err(),
            "no target"
        );
        assert!(
            rule(&|r| {
                r.channel = Some("a".into());
                r.topic = Some("{1}".into());
            })
            .is_err(),
            "a channel has no captures"
        );
    }

    #[test]
    fn passwords_are_masked() {
        let m = |u: &str| RedisUrl(u.into()).masked();
        assert_eq!(m("redis://:s3cret@h:6379/0"), "redis://:***@h:6379/0");
        assert_eq!(m("rediss://me:s3cret@h/1"), "rediss://me:***@h/1");
        assert_eq!(m("redis://s3cret@h"), "redis://***@h");
        assert_eq!(m("redis://h:6379"), "redis://h:6379");
    }
}
