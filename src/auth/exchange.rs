//! Exchange tokens (`POST /auth/sse-token`): single-use, 30-second stand-ins for a caller on
//! `GET /events?token=…`, so a long-lived credential never sits in a URL.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{Caller, Via};
use crate::error::Error;

/// How long an exchange token is valid.
pub const EXCHANGE_TTL: Duration = Duration::from_secs(30);
/// Exchange tokens start with this, so they are told apart from JWTs at a glance.
pub(super) const EXCHANGE_PREFIX: &str = "rx_";
/// Most exchange tokens outstanding at once.
const MAX_EXCHANGE: usize = 10_000;

/// The tokens issued and not yet redeemed.
#[derive(Default)]
pub(super) struct Exchange {
    // Short critical sections over a HashMap; never held across an await.
    tokens: Mutex<HashMap<String, (Caller, Instant)>>,
}

impl Exchange {
    fn tokens(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Caller, Instant)>> {
        self.tokens.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn issue_at(&self, caller: &Caller, now: Instant) -> Result<String, Error> {
        let mut map = self.tokens();
        if map.len() >= MAX_EXCHANGE {
            map.retain(|_, (_, exp)| *exp > now);
        }
        if map.len() >= MAX_EXCHANGE {
            return Err(Error::TooManyRequests {
                message: "too many exchange tokens outstanding".into(),
                retry_after: 30,
            });
        }
        let token = format!("{EXCHANGE_PREFIX}{}", crate::random::random_hex(24));
        let mut c = caller.clone();
        c.via = Via::Exchange;
        map.insert(token.clone(), (c, now + EXCHANGE_TTL));
        Ok(token)
    }

    pub(super) fn redeem_at(&self, token: &str, now: Instant) -> Result<Caller, Error> {
        match self.tokens().remove(token) {
            Some((c, exp)) if exp > now => Ok(c),
            _ => Err(Error::Unauthorized(
                "the exchange token is unknown, used already, or expired".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exchange_tokens_are_single_use_and_expire() {
        let ex = Exchange::default();
        let caller = Caller::anonymous(Vec::new().into());
        let t0 = Instant::now();
        let tok = ex.issue_at(&caller, t0).unwrap();
        assert!(tok.starts_with(EXCHANGE_PREFIX));
        assert!(ex.redeem_at(&tok, t0 + Duration::from_secs(29)).is_ok());
        assert!(ex.redeem_at(&tok, t0).is_err(), "used once already");
        let tok = ex.issue_at(&caller, t0).unwrap();
        assert!(ex.redeem_at(&tok, t0 + EXCHANGE_TTL).is_err(), "expired");
    }
}
