//! Who is calling and what they may do (SPEC §6).
//!
//! Every request becomes a [`Caller`] before a handler looks at it. Credentials are taken
//! from the first carrier present, in this order: `Authorization: Bearer` (a JWT or an API
//! key; `Basic` with one of those as its password is the same), `X-API-Key`, `x-auth-token`
//! (a JWT), `?token=` (a JWT, or a single-use exchange token on `GET /events`), ntfy's
//! `?auth=` (an `Authorization` value in base64), and the auth cookie (a JWT). A carrier that is present but wrong
//! is a 401: it never falls through to the next one.
//!
//! Permissions: `role: admin` may do everything. Otherwise a caller reads what its
//! `subscribe` claim (or `auth.default_subscribe`) and `auth.anonymous_subscribe` cover, plus
//! its own `user/<sub>`. Nobody but an admin reads someone else's personal topic, whatever
//! the patterns say. Publishing needs a `publish` claim or an API key's `publish` patterns.
//! With auth open (SPEC §6.1), every caller may do everything, and valid credentials still
//! name the user.
//!
//! - [`caller`]: the caller and its permissions; `credential`: finding the carrier;
//! - `jwt`, `keys`, `exchange`: the three kinds of credential;
//! - `browser`: allowed origins and the cookie's CSRF guard.

mod browser;
mod caller;
mod credential;
mod exchange;
mod jwt;
mod keys;

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use http::request::Parts;
use ipnet::IpNet;

pub use caller::{Caller, Via};
pub use exchange::EXCHANGE_TTL;
pub use jwt::{TokenRequest, mint};

use crate::config::{Config, ConfigError};
use crate::error::Error;
use crate::topic::Pattern;

/// The request authenticator built from `[auth]` and `[cors]`.
pub struct Auth {
    open: bool,
    jwt: Option<jwt::Jwt>,
    keys: keys::ApiKeys,
    anonymous: Arc<[Pattern]>,
    cookie_name: String,
    allow_ips: Vec<IpNet>,
    origins: browser::Origins,
    public_metrics: bool,
    exchange: exchange::Exchange,
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

/// Patterns from the (validated) configuration.
fn patterns(list: &[String]) -> Vec<Pattern> {
    list.iter().filter_map(|p| Pattern::new(p).ok()).collect()
}

impl Auth {
    pub fn new(config: &Config) -> Result<Auth, ConfigError> {
        let a = &config.auth;
        Ok(Auth {
            open: a.is_open(),
            jwt: jwt::Jwt::from_config(a)?,
            keys: keys::ApiKeys::new(&a.api_keys),
            anonymous: patterns(&a.anonymous_subscribe).into(),
            cookie_name: a.cookie_name.clone(),
            allow_ips: a
                .allow_ips
                .iter()
                .filter_map(|c| crate::config::parse_net(c).ok())
                .collect(),
            origins: browser::Origins(config.cors.allow_origins.clone()),
            public_metrics: a.public_metrics,
            exchange: exchange::Exchange::default(),
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
        let ip = ip.to_canonical();
        self.allow_ips.is_empty() || self.allow_ips.iter().any(|n| n.contains(&ip))
    }

    /// Is this origin in `cors.allow_origins`?
    pub fn origin_allowed(&self, origin: &str) -> bool {
        self.origins.allowed(origin)
    }

    /// Works out who sent a request. `exchange_ok`: single-use exchange tokens are accepted
    /// (only on `GET /events`).
    pub fn authenticate(&self, parts: &Parts, exchange_ok: bool) -> Result<Caller, Error> {
        let verified = match credential::find(parts, &self.cookie_name) {
            Ok(None) => Ok(None),
            Ok(Some((via, token))) => self.verify(via, &token, exchange_ok).map(Some),
            Err(e) => Err(e),
        };
        match verified {
            Ok(Some(mut c)) => {
                if c.via == Via::Cookie {
                    self.origins.csrf_guard(parts)?;
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

    fn verify(&self, via: Via, token: &str, exchange_ok: bool) -> Result<Caller, Error> {
        match via {
            Via::Bearer if credential::looks_like_jwt(token) => self.jwt(token, via),
            Via::Bearer | Via::ApiKeyHeader => self.keys.verify(token, via, &self.anonymous),
            Via::Query if token.starts_with(exchange::EXCHANGE_PREFIX) => {
                if exchange_ok {
                    self.exchange.redeem_at(token, Instant::now())
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
        match &self.jwt {
            Some(jwt) => jwt.verify(token, via, &self.anonymous),
            None => Err(Error::Unauthorized(
                "this hub accepts no JWTs (no auth.jwt_secret or auth.jwt_public_key_file)".into(),
            )),
        }
    }

    /// `POST /auth/sse-token`: a single-use token that stands for `caller` on `GET /events`
    /// for 30 seconds.
    pub fn issue_exchange(&self, caller: &Caller) -> Result<String, Error> {
        self.exchange.issue_at(caller, Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_bearer(token: &str) -> Parts {
        let req = http::Request::builder()
            .uri("/events")
            .header("authorization", format!("Bearer {token}"))
            .body(())
            .unwrap();
        req.into_parts().0
    }

    /// A token that claims an `exp` far beyond any clock is accepted and never expires,
    /// rather than overflowing the expiry time.
    #[test]
    fn a_far_future_exp_saturates() {
        let c = Config::from_toml(
            "[auth]\njwt_secret = \"a-test-secret-a-test-secret-a-test\"\nleeway = \"5s\"\n",
        )
        .unwrap();
        let auth = Auth::new(&c).unwrap();
        let secret = jsonwebtoken::EncodingKey::from_secret(b"a-test-secret-a-test-secret-a-test");
        for exp in [u64::MAX / 1000, u64::MAX / 1000 + 1, u64::MAX] {
            let token = jsonwebtoken::encode(
                &jsonwebtoken::Header::default(),
                &serde_json::json!({"sub": "al", "exp": exp}),
                &secret,
            )
            .unwrap();
            let caller = auth.authenticate(&with_bearer(&token), false).unwrap();
            assert_eq!(caller.expires_at, Some(u64::MAX), "exp {exp}");
        }
    }
}
