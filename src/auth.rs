//! Who is calling and what they may do (SPEC §6).
//!
//! Every request becomes a [`Caller`] before a handler looks at it. Credentials are taken
//! from the first carrier present, in this order: `Authorization: Bearer` (a JWT or an API
//! key), `X-API-Key`, `x-auth-token` (a JWT), `?token=` (a JWT, or a single-use exchange
//! token on `GET /events`), and the auth cookie (a JWT). A carrier that is present but wrong
//! is a 401: it never falls through to the next one.
//!
//! Permissions: `role: admin` may do everything. Otherwise a caller reads what its
//! `subscribe` claim (or `auth.default_subscribe`) and `auth.anonymous_subscribe` cover, plus
//! its own `user/<sub>`. Nobody but an admin reads someone else's personal topic, whatever
//! the patterns say. Publishing needs a `publish` claim or an API key's `publish` patterns.
//! With auth open (SPEC §6.1), every caller may do everything, and valid credentials still
//! name the user.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::Method;
use http::request::Parts;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Deserializer};

use crate::config::{Config, ConfigError};
use crate::error::Error;
use crate::topic::{self, Pattern};

/// How long an exchange token (`POST /auth/sse-token`) is valid.
pub const EXCHANGE_TTL: Duration = Duration::from_secs(30);
/// Exchange tokens start with this, so they are told apart from JWTs at a glance.
const EXCHANGE_PREFIX: &str = "rx_";
/// Most exchange tokens outstanding at once.
const MAX_EXCHANGE: usize = 10_000;

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
    read: Vec<Pattern>,
    publish: Vec<Pattern>,
    anonymous: Arc<[Pattern]>,
}

impl Caller {
    fn open(anonymous: Arc<[Pattern]>) -> Caller {
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

    fn anonymous(anonymous: Arc<[Pattern]>) -> Caller {
        Caller {
            admin: false,
            open: false,
            ..Caller::open(anonymous)
        }
    }

    /// True if the request carried valid credentials.
    pub fn is_authenticated(&self) -> bool {
        self.user.is_some() || self.key.is_some()
    }

    /// May this caller read a topic or pattern? A pattern is allowed when every topic it
    /// can match is covered by the caller's patterns.
    pub fn can_read(&self, requested: &str) -> bool {
        if self.open || self.admin {
            return true;
        }
        if !requested.contains('*')
            && let Some(owner) = topic::personal_owner(requested)
        {
            return self.user.as_deref() == Some(owner);
        }
        covers(&self.read, requested) || covers(&self.anonymous, requested)
    }

    /// May this caller read anything at all without credentials? (Decides 401 vs 403.)
    pub fn may_stream(&self) -> bool {
        self.open || self.is_authenticated() || !self.anonymous.is_empty()
    }

    /// May this caller publish to a topic?
    pub fn can_publish(&self, topic: &str) -> bool {
        self.open || self.admin || self.publish.iter().any(|p| p.matches(topic))
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

/// True if a permission pattern covers every topic a requested pattern can match. Matching
/// the requested pattern as if it were a topic does exactly that: its `*` is a character a
/// permission's literal never matches, but a permission's `*` does.
fn covers(perms: &[Pattern], requested: &str) -> bool {
    perms.iter().any(|p| p.matches(requested))
}

/// JWT claims runnel reads. Others are ignored.
#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    exp: Option<f64>,
    #[serde(default)]
    role: Option<String>,
    #[serde(default, deserialize_with = "string_or_list")]
    subscribe: Option<Vec<String>>,
    #[serde(default, deserialize_with = "string_or_list")]
    publish: Option<Vec<String>>,
}

fn string_or_list<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        One(String),
        Many(Vec<String>),
    }
    Ok(Some(match Raw::deserialize(d)? {
        Raw::One(s) => vec![s],
        Raw::Many(v) => v,
    }))
}

struct Jwt {
    key: DecodingKey,
    validation: Validation,
}

struct ApiKey {
    name: String,
    hash: [u8; 32],
    publish: Vec<Pattern>,
    subscribe: Vec<Pattern>,
    admin: bool,
}

/// The request authenticator built from `[auth]` and `[cors]`.
pub struct Auth {
    open: bool,
    jwt: Option<Jwt>,
    keys: Vec<ApiKey>,
    anonymous: Arc<[Pattern]>,
    default_subscribe: Vec<Pattern>,
    cookie_name: String,
    allow_ips: Vec<Cidr>,
    origins: Vec<String>,
    public_metrics: bool,
    leeway_ms: u64,
    exchange: Mutex<HashMap<String, (Caller, Instant)>>,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("open", &self.open)
            .field("jwt", &self.jwt.is_some())
            .field("api_keys", &self.keys.len())
            .finish()
    }
}

fn patterns(list: &[String]) -> Vec<Pattern> {
    // Validated with the configuration.
    list.iter().filter_map(|p| Pattern::new(p).ok()).collect()
}

impl Auth {
    pub fn new(config: &Config) -> Result<Auth, ConfigError> {
        let a = &config.auth;
        let leeway = a.leeway.0.as_secs();
        let jwt = if let Some(secret) = &a.jwt_secret {
            Some(Jwt {
                key: DecodingKey::from_secret(secret.expose().as_bytes()),
                validation: validation(Algorithm::HS256, leeway, a),
            })
        } else if let Some(path) = &a.jwt_public_key_file {
            let pem = std::fs::read(path).map_err(|e| {
                ConfigError(format!(
                    "cannot read auth.jwt_public_key_file {}: {e}",
                    path.display()
                ))
            })?;
            let (key, alg) = public_key(&pem, a.jwt_algorithm.as_deref()).map_err(|e| {
                ConfigError(format!("auth.jwt_public_key_file {}: {e}", path.display()))
            })?;
            Some(Jwt {
                key,
                validation: validation(alg, leeway, a),
            })
        } else {
            None
        };
        let keys = a
            .api_keys
            .iter()
            .map(|k| {
                let mut hash = [0u8; 32];
                for (i, b) in hash.iter_mut().enumerate() {
                    *b = u8::from_str_radix(&k.key_sha256[i * 2..i * 2 + 2], 16).unwrap_or(0);
                }
                ApiKey {
                    name: k.name.clone(),
                    hash,
                    publish: patterns(&k.publish),
                    subscribe: patterns(&k.subscribe),
                    admin: k.admin,
                }
            })
            .collect();
        Ok(Auth {
            open: a.is_open(),
            jwt,
            keys,
            anonymous: patterns(&a.anonymous_subscribe).into(),
            default_subscribe: patterns(&a.default_subscribe),
            cookie_name: a.cookie_name.clone(),
            allow_ips: a.allow_ips.iter().filter_map(|c| c.parse().ok()).collect(),
            origins: config.cors.allow_origins.clone(),
            public_metrics: a.public_metrics,
            leeway_ms: a.leeway.as_millis(),
            exchange: Mutex::new(HashMap::new()),
        })
    }

    pub fn is_open(&self) -> bool {
        self.open
    }

    pub fn public_metrics(&self) -> bool {
        self.public_metrics
    }

    /// The `auth.allow_ips` check (empty list: everyone).
    pub fn ip_allowed(&self, ip: IpAddr) -> bool {
        self.allow_ips.is_empty() || self.allow_ips.iter().any(|c| c.contains(ip))
    }

    /// Is this origin in `cors.allow_origins`?
    pub fn origin_allowed(&self, origin: &str) -> bool {
        self.origins.iter().any(|o| o == origin)
    }

    /// Works out who sent a request. `exchange_ok`: single-use exchange tokens are accepted
    /// (only on `GET /events`).
    pub fn authenticate(&self, parts: &Parts, exchange_ok: bool) -> Result<Caller, Error> {
        let verified = match credential(parts, &self.cookie_name) {
            Ok(None) => Ok(None),
            Ok(Some((via, token))) => self.verify(via, &token, exchange_ok).map(Some),
            Err(e) => Err(e),
        };
        match verified {
            Ok(Some(mut c)) => {
                if c.via == Via::Cookie {
                    self.csrf_guard(parts)?;
                }
                c.open = self.open;
                if self.open {
                    c.admin = true;
                }
                Ok(c)
            }
            Ok(None) if self.open => Ok(Caller::open(self.anonymous.clone())),
            Ok(None) => Ok(Caller::anonymous(self.anonymous.clone())),
            Err(e) if self.open => {
                tracing::debug!(error = %e, "ignoring invalid credentials: auth is open");
                Ok(Caller::open(self.anonymous.clone()))
            }
            Err(e) => Err(e),
        }
    }

    /// A cookie rides along with any request the browser makes, including ones another
    /// site triggers: a state-changing request with cookie credentials must come from this
    /// origin or an allowed one.
    fn csrf_guard(&self, parts: &Parts) -> Result<(), Error> {
        if matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS) {
            return Ok(());
        }
        let origin = parts
            .headers
            .get(http::header::ORIGIN)
            .and_then(|v| v.to_str().ok());
        let cross_site = parts
            .headers
            .get("sec-fetch-site")
            .and_then(|v| v.to_str().ok())
            == Some("cross-site");
        let foreign = match origin {
            Some(o) => !self.origin_allowed(o) && !same_origin(parts, o),
            None => cross_site,
        };
        if foreign {
            return Err(Error::Forbidden(
                "cross-origin request with cookie credentials refused (add the origin to \
                 cors.allow_origins, or send the token in a header)"
                    .into(),
            ));
        }
        Ok(())
    }

    fn verify(&self, via: Via, token: &str, exchange_ok: bool) -> Result<Caller, Error> {
        match via {
            Via::Bearer if looks_like_jwt(token) => self.jwt(token, via),
            Via::Bearer | Via::ApiKeyHeader => self.api_key(token, via),
            Via::Query if token.starts_with(EXCHANGE_PREFIX) => {
                if exchange_ok {
                    self.redeem(token, Instant::now())
                } else {
                    Err(Error::Unauthorized(
                        "exchange tokens are only accepted by GET /events".into(),
                    ))
                }
            }
            _ => self.jwt(token, via),
        }
    }

    fn jwt(&self, token: &str, via: Via) -> Result<Caller, Error> {
        let Some(jwt) = &self.jwt else {
            return Err(Error::Unauthorized(
                "this hub accepts no JWTs (no auth.jwt_secret or auth.jwt_public_key_file)".into(),
            ));
        };
        let data =
            jsonwebtoken::decode::<Claims>(token, &jwt.key, &jwt.validation).map_err(|e| {
                Error::Unauthorized(match e.kind() {
                    ErrorKind::ExpiredSignature => "the token has expired".into(),
                    ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)".into(),
                    ErrorKind::InvalidSignature => "the token's signature is invalid".into(),
                    ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                        "the token's algorithm is not the one this hub uses".into()
                    }
                    ErrorKind::InvalidAudience => "the token's aud is not accepted".into(),
                    ErrorKind::InvalidIssuer => "the token's iss is not accepted".into(),
                    ErrorKind::MissingRequiredClaim(c) => format!("the token has no {c} claim"),
                    _ => format!("the token is malformed: {e}"),
                })
            })?;
        let c = data.claims;
        if topic::validate_topic(&topic::personal_topic(&c.sub)).is_err() {
            return Err(Error::Unauthorized(format!(
                "the token's sub {:?} cannot name a user (use topic characters)",
                c.sub
            )));
        }
        let parse =
            |list: Option<Vec<String>>, name: &str| -> Result<Option<Vec<Pattern>>, Error> {
                list.map(|l| {
                    l.iter()
                        .map(|p| {
                            Pattern::new(p).map_err(|e| {
                                Error::Unauthorized(format!("the token's {name} claim: {e}"))
                            })
                        })
                        .collect()
                })
                .transpose()
            };
        let read =
            parse(c.subscribe, "subscribe")?.unwrap_or_else(|| self.default_subscribe.clone());
        let publish = parse(c.publish, "publish")?.unwrap_or_default();
        Ok(Caller {
            user: Some(c.sub),
            key: None,
            admin: c.role.as_deref() == Some("admin"),
            open: false,
            via,
            // The validator accepts a token through the whole second `exp` (+ leeway): a
            // stream ends when a reconnect with the same token would be refused, not before,
            // or a client would be cut off and let straight back in.
            expires_at: c
                .exp
                .map(|e| (e.max(0.0).floor() as u64 + 1) * 1000 + self.leeway_ms),
            read,
            publish,
            anonymous: self.anonymous.clone(),
        })
    }

    fn api_key(&self, token: &str, via: Via) -> Result<Caller, Error> {
        let hash = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
        // Compare with every key, without stopping early.
        let mut found = None;
        for k in &self.keys {
            if ct_eq(hash.as_ref(), &k.hash) {
                found = Some(k);
            }
        }
        let Some(k) = found else {
            return Err(Error::Unauthorized("unknown API key".into()));
        };
        Ok(Caller {
            user: None,
            key: Some(k.name.clone()),
            admin: k.admin,
            open: false,
            via,
            expires_at: None,
            read: k.subscribe.clone(),
            publish: k.publish.clone(),
            anonymous: self.anonymous.clone(),
        })
    }

    /// `POST /auth/sse-token`: a single-use token that stands for `caller` on `GET /events`
    /// for 30 seconds.
    pub fn issue_exchange(&self, caller: &Caller) -> Result<String, Error> {
        self.issue_exchange_at(caller, Instant::now())
    }

    fn issue_exchange_at(&self, caller: &Caller, now: Instant) -> Result<String, Error> {
        let mut map = self.exchange.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_EXCHANGE {
            map.retain(|_, (_, exp)| *exp > now);
        }
        if map.len() >= MAX_EXCHANGE {
            return Err(Error::TooManyRequests {
                message: "too many exchange tokens outstanding".into(),
                retry_after: 30,
            });
        }
        let token = format!("{EXCHANGE_PREFIX}{}", crate::random_hex(24));
        let mut c = caller.clone();
        c.via = Via::Exchange;
        map.insert(token.clone(), (c, now + EXCHANGE_TTL));
        Ok(token)
    }

    fn redeem(&self, token: &str, now: Instant) -> Result<Caller, Error> {
        let entry = self
            .exchange
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(token);
        match entry {
            Some((c, exp)) if exp > now => Ok(c),
            _ => Err(Error::Unauthorized(
                "the exchange token is unknown, used already, or expired".into(),
            )),
        }
    }
}

fn validation(alg: Algorithm, leeway: u64, a: &crate::config::AuthConfig) -> Validation {
    let mut v = Validation::new(alg);
    v.leeway = leeway;
    v.validate_nbf = true;
    // `sub` is required; `exp` is checked when present; `aud` and `iss` are required when
    // configured (the library only compares them when the token carries them).
    let mut required = vec!["sub"];
    match &a.jwt_audience {
        Some(aud) => {
            v.set_audience(&[aud]);
            required.push("aud");
        }
        None => v.validate_aud = false,
    }
    if let Some(iss) = &a.jwt_issuer {
        v.set_issuer(&[iss]);
        required.push("iss");
    }
    v.set_required_spec_claims(&required);
    v
}

fn public_key(pem: &[u8], alg: Option<&str>) -> Result<(DecodingKey, Algorithm), String> {
    let text = String::from_utf8_lossy(pem);
    if text.contains("PRIVATE KEY") {
        return Err(
            "this is a private key; give the public key (keep the private key with \
                    whoever mints tokens)"
                .into(),
        );
    }
    let rsa = || DecodingKey::from_rsa_pem(pem).map(|k| (k, Algorithm::RS256));
    let ec = || DecodingKey::from_ec_pem(pem).map(|k| (k, Algorithm::ES256));
    let r = match alg {
        Some("RS256") => rsa(),
        Some("ES256") => ec(),
        _ => rsa().or_else(|_| ec()),
    };
    r.map_err(|e| format!("not a PEM RSA or EC (P-256) public key: {e}"))
}

/// Three dot-separated base64url parts.
fn looks_like_jwt(t: &str) -> bool {
    t.split('.').count() == 3
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Is `origin` this server's own origin (scheme and the `Host` the client used)?
fn same_origin(parts: &Parts, origin: &str) -> bool {
    let host = parts
        .headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| parts.uri.authority().map(|a| a.as_str()));
    let Some(host) = host else { return false };
    origin
        .split_once("://")
        .is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(host))
}

/// The first credential carrier present.
fn credential<'a>(parts: &'a Parts, cookie: &str) -> Result<Option<(Via, Cow<'a, str>)>, Error> {
    let h = &parts.headers;
    let text = |name: &str| -> Result<Option<&'a str>, Error> {
        match h.get(name) {
            None => Ok(None),
            Some(v) => v
                .to_str()
                .map(|s| Some(s.trim()))
                .map_err(|_| Error::Unauthorized(format!("the {name} header is not valid text"))),
        }
    };
    if let Some(v) = text("authorization")? {
        return match v.split_once(' ') {
            Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") && !t.trim().is_empty() => {
                Ok(Some((Via::Bearer, Cow::Borrowed(t.trim()))))
            }
            _ => Err(Error::Unauthorized(
                "use `Authorization: Bearer <token or API key>`".into(),
            )),
        };
    }
    if let Some(v) = text("x-api-key")? {
        return Ok(Some((Via::ApiKeyHeader, Cow::Borrowed(v))));
    }
    if let Some(v) = text("x-auth-token")? {
        return Ok(Some((Via::AuthTokenHeader, Cow::Borrowed(v))));
    }
    if let Some(q) = parts.uri.query()
        && let Some((_, t)) = form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "token")
    {
        return Ok(Some((Via::Query, Cow::Owned(t.into_owned()))));
    }
    for v in h.get_all(http::header::COOKIE) {
        let Ok(v) = v.to_str() else { continue };
        for pair in v.split(';') {
            if let Some((k, val)) = pair.trim().split_once('=')
                && k == cookie
            {
                return Ok(Some((Via::Cookie, Cow::Borrowed(val.trim_matches('"')))));
            }
        }
    }
    Ok(None)
}

/// What `runnel token` mints.
#[derive(Debug, Clone, Default)]
pub struct TokenRequest {
    pub sub: String,
    pub subscribe: Vec<String>,
    pub publish: Vec<String>,
    pub admin: bool,
    pub ttl: Duration,
}

/// Mints an HS256 JWT with the configured secret.
pub fn mint(config: &Config, req: &TokenRequest) -> Result<String, String> {
    let Some(secret) = &config.auth.jwt_secret else {
        return Err(
            "runnel token needs auth.jwt_secret (tokens for RS256/ES256 are minted \
                    with the private key, by whoever holds it)"
                .into(),
        );
    };
    topic::validate_topic(&topic::personal_topic(&req.sub))
        .map_err(|e| format!("--sub {:?} cannot name a user: {e}", req.sub))?;
    for p in req.subscribe.iter().chain(&req.publish) {
        topic::validate_pattern(p).map_err(|e| e.to_string())?;
    }
    let now = crate::broker::unix_ms() / 1000;
    let mut claims = serde_json::json!({
        "sub": req.sub,
        "iat": now,
        "exp": now + req.ttl.as_secs(),
    });
    let m = claims.as_object_mut().ok_or("claims are an object")?;
    if req.admin {
        m.insert("role".into(), "admin".into());
    }
    if !req.subscribe.is_empty() {
        m.insert("subscribe".into(), req.subscribe.clone().into());
    }
    if !req.publish.is_empty() {
        m.insert("publish".into(), req.publish.clone().into());
    }
    if let Some(aud) = &config.auth.jwt_audience {
        m.insert("aud".into(), aud.clone().into());
    }
    if let Some(iss) = &config.auth.jwt_issuer {
        m.insert("iss".into(), iss.clone().into());
    }
    let mut header = Header::new(Algorithm::HS256);
    header.typ = Some("JWT".into());
    jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_secret(secret.expose().as_bytes()),
    )
    .map_err(|e| e.to_string())
}

/// An IP network such as `192.168.1.0/24`, `10.0.0.7` or `fd00::/8`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// `::ffff:1.2.3.4` is `1.2.3.4`.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not an address or CIDR (like 192.168.1.0/24 or fd00::/8)");
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr = canonical(addr.trim().parse::<IpAddr>().map_err(|_| bad())?);
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.trim().parse::<u8>().map_err(|_| bad())?,
            None => max,
        };
        if prefix > max {
            return Err(bad());
        }
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Debug for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs() {
        let c = |s: &str| s.parse::<Cidr>().unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(c("192.168.1.0/24").contains(ip("192.168.1.77")));
        assert!(!c("192.168.1.0/24").contains(ip("192.168.2.1")));
        assert!(c("10.0.0.7").contains(ip("10.0.0.7")));
        assert!(!c("10.0.0.7").contains(ip("10.0.0.8")));
        assert!(c("0.0.0.0/0").contains(ip("8.8.8.8")));
        assert!(c("127.0.0.1").contains(ip("::ffff:127.0.0.1")));
        assert!(c("fd00::/8").contains(ip("fd12::1")));
        assert!(!c("fd00::/8").contains(ip("fe80::1")));
        for bad in ["", "300.1.1.1", "10.0.0.0/33", "fd00::/129", "x/8"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn pattern_coverage() {
        let p = |v: &[&str]| {
            v.iter()
                .map(|s| Pattern::new(s).unwrap())
                .collect::<Vec<_>>()
        };
        assert!(covers(&p(&["*"]), "anything/*"));
        assert!(covers(&p(&["news/*"]), "news/eu/*"));
        assert!(covers(&p(&["news/*"]), "news/eu"));
        assert!(!covers(&p(&["news/*"]), "*"));
        assert!(!covers(&p(&["news/eu"]), "news/*"));
        assert!(!covers(&p(&["a*"]), "*a"));
    }

    #[test]
    fn exchange_tokens_are_single_use_and_expire() {
        let auth = Auth::new(&Config::default()).unwrap();
        let caller = Caller::anonymous(Vec::new().into());
        let t0 = Instant::now();
        let tok = auth.issue_exchange_at(&caller, t0).unwrap();
        assert!(tok.starts_with(EXCHANGE_PREFIX));
        assert!(auth.redeem(&tok, t0 + Duration::from_secs(29)).is_ok());
        assert!(auth.redeem(&tok, t0).is_err(), "used once already");
        let tok = auth.issue_exchange_at(&caller, t0).unwrap();
        assert!(auth.redeem(&tok, t0 + EXCHANGE_TTL).is_err(), "expired");
    }
}
