//! Topic names and the patterns that match them (SPEC §4).
//!
//! A topic is 1–200 bytes of `A–Z a–z 0–9 - _ . : / @`, with no empty, `.` or `..`
//! segment between slashes, so a topic can never be read as a path. Names that start with
//! `$` belong to the hub (`$broadcast`). A pattern is a topic in which `*` matches any run
//! of characters, slashes included.

use std::fmt;

/// The topic every stream receives; published to with `"broadcast": true`.
pub const BROADCAST: &str = "$broadcast";
/// The longest topic name, in bytes.
pub const MAX_TOPIC_LEN: usize = 200;
/// Prefix of a user's personal topic, `user/<sub>`.
pub const USER_PREFIX: &str = "user/";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("{what} must be 1-{MAX_TOPIC_LEN} bytes long, got {len}")]
    Length { what: &'static str, len: usize },
    #[error(
        "{what} {name:?} contains {ch:?} at byte {at}; allowed are A-Z a-z 0-9 - _ . : / @{star}"
    )]
    Char {
        what: &'static str,
        name: String,
        ch: char,
        at: usize,
        star: &'static str,
    },
    #[error("{what} {name:?} has an empty, '.' or '..' segment between '/'")]
    Segment { what: &'static str, name: String },
}

fn check(name: &str, pattern: bool) -> Result<(), TopicError> {
    let what = if pattern { "topic pattern" } else { "topic" };
    if name.is_empty() || name.len() > MAX_TOPIC_LEN {
        return Err(TopicError::Length {
            what,
            len: name.len(),
        });
    }
    for (at, ch) in name.char_indices() {
        let ok = ch.is_ascii_alphanumeric()
            || matches!(ch, '-' | '_' | '.' | ':' | '/' | '@')
            || (ch == '$' && at == 0)
            || (ch == '*' && pattern);
        if !ok {
            return Err(TopicError::Char {
                what,
                name: name.chars().take(MAX_TOPIC_LEN).collect(),
                ch,
                at,
                star: if pattern { " and *" } else { "" },
            });
        }
    }
    if name
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err(TopicError::Segment {
            what,
            name: name.to_string(),
        });
    }
    Ok(())
}

/// Checks a topic name (no `*`).
pub fn validate_topic(name: &str) -> Result<(), TopicError> {
    check(name, false)
}

/// Checks a pattern (a topic that may contain `*`).
pub fn validate_pattern(name: &str) -> Result<(), TopicError> {
    check(name, true)
}

/// True for names the hub reserves (`$...`): clients may not publish to them.
pub fn is_reserved(name: &str) -> bool {
    name.starts_with('$')
}

/// The user a personal topic belongs to: `user/alice` → `alice`.
pub fn personal_owner(topic: &str) -> Option<&str> {
    topic.strip_prefix(USER_PREFIX)
}

/// The personal topic of a user.
pub fn personal_topic(user: &str) -> String {
    format!("{USER_PREFIX}{user}")
}

/// May a reader receive `topic` through a wildcard? Nobody but its owner (or an admin)
/// receives someone else's personal topic, whatever the patterns say.
pub fn visible_to(topic: &str, user: Option<&str>, admin: bool) -> bool {
    match personal_owner(topic) {
        Some(owner) => admin || user == Some(owner),
        None => true,
    }
}

/// Removes repeated names, keeping the first of each in place.
pub fn dedup(names: &mut Vec<String>) {
    let mut seen = std::collections::HashSet::new();
    names.retain(|t| seen.insert(t.clone()));
}

/// A validated pattern. Matching is a linear-time glob with `*` as the only wildcard.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Pattern(Box<str>);

impl Pattern {
    pub fn new(p: &str) -> Result<Self, TopicError> {
        validate_pattern(p)?;
        Ok(Pattern(p.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True if the pattern has a wildcard (otherwise it names exactly one topic).
    pub fn is_wildcard(&self) -> bool {
        self.0.contains('*')
    }

    pub fn matches(&self, topic: &str) -> bool {
        glob(self.0.as_bytes(), topic.as_bytes())
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Glob matching with `*` only: the classic two-pointer algorithm that remembers the last
/// star, so it runs in O(len(p) * len(t)) worst case and O(len(t)) typically, never
/// exponentially.
fn glob(p: &[u8], t: &[u8]) -> bool {
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// True if any of the patterns matches the topic.
pub fn any_matches(patterns: &[Pattern], topic: &str) -> bool {
    patterns.iter().any(|p| p.matches(topic))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics() {
        for ok in [
            "news",
            "a/b/c",
            "user/alice@example.com",
            "x:y-z_1.2",
            "$broadcast",
        ] {
            assert!(validate_topic(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "a b", "a//b", "/a", "a/", "a/../b", "..", ".", "a/./b", "é", "a*", "a$", "a\nb",
        ] {
            assert!(validate_topic(bad).is_err(), "{bad:?}");
        }
        assert!(validate_topic(&"a".repeat(200)).is_ok());
        assert!(validate_topic(&"a".repeat(201)).is_err());
    }

    #[test]
    fn error_names_the_character() {
        let e = validate_topic("news%2F").unwrap_err().to_string();
        assert!(e.contains("'%'") && e.contains("byte 4"), "{e}");
    }

    #[test]
    fn patterns() {
        let m = |p: &str, t: &str| Pattern::new(p).unwrap().matches(t);
        assert!(m("*", "anything/at/all"));
        assert!(m("news/*", "news/eu/fr"));
        assert!(!m("news/*", "news"));
        assert!(m("a*c", "abbbc"));
        assert!(m("a*b*c", "axxbyyc"));
        assert!(!m("a*b*c", "axxbyy"));
        assert!(m("exact", "exact"));
        assert!(!m("exact", "exactly"));
        assert!(m("*/*", "x/y"));
        assert!(!m("*/*", "xy"));
        assert!(Pattern::new("a/**/b").is_ok());
        assert!(Pattern::new("a/../b").is_err());
        // No exponential blow-up.
        let p = Pattern::new(&"*a".repeat(50)).unwrap();
        assert!(!p.matches(&"a".repeat(49)));
    }
}
