//! The fields of ntfy's publish API that have a syntax of their own: actions in JSON or in
//! ntfy's short form, and header values in RFC 2047 encoded words.

use serde_json::{Map, Value};

use crate::error::Error;

/// The most actions ntfy allows on one message.
const MAX_ACTIONS: usize = 3;

/// Actions as JSON (an array of objects) or in ntfy's short form: `action, label, url[,
/// key=value...]`, actions separated by `;`.
pub(super) fn actions(v: &str) -> Result<Vec<Value>, Error> {
    let v = v.trim();
    if v.starts_with('[') {
        let parsed: Value = serde_json::from_str(v)
            .map_err(|e| Error::BadRequest(format!("the actions are not valid JSON: {e}")))?;
        let Value::Array(a) = parsed else {
            return Err(Error::BadRequest("the actions must be a JSON array".into()));
        };
        return check_actions(a);
    }
    let mut out = Vec::new();
    for spec in split_quoted(v, ';') {
        if spec.trim().is_empty() {
            continue;
        }
        let mut o = Map::new();
        let mut positional = 0;
        for part in split_quoted(&spec, ',') {
            let part = part.trim();
            match part.split_once('=') {
                Some((k, val)) if !k.contains(' ') && !k.is_empty() && positional > 0 => {
                    let val = unquote(val.trim());
                    let value = match (k, val.as_str()) {
                        ("clear", "true") => Value::Bool(true),
                        ("clear", "false") => Value::Bool(false),
                        _ => Value::String(val),
                    };
                    if let Some((group, key)) = k.split_once('.') {
                        let entry = o
                            .entry(group.to_string())
                            .or_insert_with(|| Value::Object(Map::new()));
                        if let Value::Object(g) = entry {
                            g.insert(key.to_string(), value);
                        }
                    } else {
                        o.insert(k.to_string(), value);
                    }
                }
                _ => {
                    let field = match (positional, o.get("action").and_then(Value::as_str)) {
                        (0, _) => "action",
                        (1, _) => "label",
                        (2, Some("broadcast")) => "intent",
                        (2, Some("copy")) => "value",
                        (2, _) => "url",
                        _ => {
                            return Err(Error::BadRequest(format!(
                                "action {spec:?}: too many values; use key=value after the url"
                            )));
                        }
                    };
                    o.insert(field.into(), unquote(part).into());
                    positional += 1;
                }
            }
        }
        out.push(Value::Object(o));
    }
    check_actions(out)
}

/// Each action has a known `action`, a `label`, and what its kind needs; at most three.
pub(super) fn check_actions(a: Vec<Value>) -> Result<Vec<Value>, Error> {
    if a.len() > MAX_ACTIONS {
        return Err(Error::BadRequest(format!(
            "at most {MAX_ACTIONS} actions, got {}",
            a.len()
        )));
    }
    for (i, act) in a.iter().enumerate() {
        let Value::Object(o) = act else {
            return Err(Error::BadRequest(format!("action {i} is not an object")));
        };
        let s = |k: &str| o.get(k).and_then(Value::as_str).unwrap_or("");
        let kind = s("action");
        if !matches!(kind, "view" | "http" | "broadcast" | "copy") {
            return Err(Error::BadRequest(format!(
                "action {i}: {kind:?} is not view, http, broadcast or copy"
            )));
        }
        if s("label").is_empty() {
            return Err(Error::BadRequest(format!("action {i} needs a label")));
        }
        if matches!(kind, "view" | "http") && s("url").is_empty() {
            return Err(Error::BadRequest(format!(
                "action {i} ({kind}) needs a url"
            )));
        }
    }
    Ok(a)
}

/// Splits on `sep` outside single or double quotes.
fn split_quoted(s: &str, sep: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote = None;
    for c in s.chars() {
        match (quote, c) {
            (None, '"' | '\'') => {
                quote = Some(c);
                cur.push(c);
            }
            (Some(q), c) if c == q => {
                quote = None;
                cur.push(c);
            }
            (None, c) if c == sep => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

fn unquote(s: &str) -> String {
    let s = s.trim();
    for q in ['"', '\''] {
        if s.len() >= 2 && s.starts_with(q) && s.ends_with(q) {
            return s[1..s.len() - 1].to_string();
        }
    }
    s.to_string()
}

/// RFC 2047 encoded words (`=?UTF-8?B?...?=`, `=?UTF-8?Q?...?=`), which ntfy decodes in
/// headers so that titles can carry any text; anything else is returned as it is.
pub(super) fn decode_words(v: &str) -> String {
    if !v.contains("=?") {
        return v.to_string();
    }
    let mut out = String::new();
    let mut rest = v;
    while let Some(start) = rest.find("=?") {
        let (before, word) = rest.split_at(start);
        let decoded = decode_word(word);
        match decoded {
            Some((text, len)) => {
                // Whitespace between two encoded words is dropped (RFC 2047 §6.2).
                if !before.trim().is_empty() || out.is_empty() {
                    out.push_str(before);
                }
                out.push_str(&text);
                rest = &word[len..];
            }
            None => {
                out.push_str(before);
                out.push_str("=?");
                rest = &word[2..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// One encoded word at the start of `w`: its text and its length.
fn decode_word(w: &str) -> Option<(String, usize)> {
    use base64::Engine as _;
    let inner = w.strip_prefix("=?")?;
    let mut it = inner.splitn(3, '?');
    let charset = it.next()?;
    let enc = it.next()?;
    let tail = it.next()?;
    let end = tail.find("?=")?;
    let text = &tail[..end];
    let len = 2 + charset.len() + 1 + enc.len() + 1 + end + 2;
    if !charset.eq_ignore_ascii_case("utf-8") && !charset.eq_ignore_ascii_case("us-ascii") {
        return None;
    }
    let bytes = match enc {
        "B" | "b" => base64::engine::general_purpose::STANDARD
            .decode(text)
            .ok()?,
        "Q" | "q" => {
            let mut b = Vec::with_capacity(text.len());
            let raw = text.as_bytes();
            let mut i = 0;
            while i < raw.len() {
                match raw[i] {
                    b'_' => b.push(b' '),
                    b'=' if i + 2 < raw.len() => {
                        b.push(u8::from_str_radix(text.get(i + 1..i + 3)?, 16).ok()?);
                        i += 2;
                    }
                    c => b.push(c),
                }
                i += 1;
            }
            b
        }
        _ => return None,
    };
    Some((String::from_utf8(bytes).ok()?, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_form_actions_read_as_ntfy_reads_them() {
        let a = actions(
            "view, Open portal, https://home.test/, clear=true; http, \"Close door\", \
             https://api.test/door, method=PUT, headers.Authorization=Bearer x, body='{\"a\":1}'",
        )
        .unwrap();
        assert_eq!(a[0]["action"], "view");
        assert_eq!(a[0]["label"], "Open portal");
        assert_eq!(a[0]["url"], "https://home.test/");
        assert_eq!(a[0]["clear"], true);
        assert_eq!(a[1]["label"], "Close door");
        assert_eq!(a[1]["method"], "PUT");
        assert_eq!(a[1]["headers"]["Authorization"], "Bearer x");
        assert_eq!(a[1]["body"], "{\"a\":1}");
        assert!(actions("dance, x, y").is_err());
        assert!(actions("view, Open").is_err(), "a view needs a url");
        assert!(
            actions("view,a,http://x;view,b,http://x;view,c,http://x;view,d,http://x").is_err()
        );
        let json = actions(r#"[{"action":"broadcast","label":"Go","intent":"x"}]"#).unwrap();
        assert_eq!(json[0]["intent"], "x");
    }

    #[test]
    fn encoded_words_decode() {
        assert_eq!(decode_words("=?UTF-8?B?8J+UpSBGaXJl?="), "🔥 Fire");
        assert_eq!(
            decode_words("=?utf-8?Q?caf=C3=A9_time?= now"),
            "café time now"
        );
        assert_eq!(decode_words("=?UTF-8?B?YQ==?= =?UTF-8?B?Yg==?="), "ab");
        assert_eq!(decode_words("plain =? text"), "plain =? text");
    }
}
