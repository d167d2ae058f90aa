//! API keys (`[[auth.api_keys]]`): the configuration holds only each key's SHA-256, and a
//! presented key is compared with every one in constant time.

use std::sync::Arc;

use subtle::ConstantTimeEq;

use super::{Caller, Via, patterns};
use crate::config::ApiKeyConfig;
use crate::error::Error;
use crate::topic::Pattern;

struct ApiKey {
    name: String,
    hash: [u8; 32],
    publish: Vec<Pattern>,
    subscribe: Vec<Pattern>,
    admin: bool,
}

/// The configured API keys.
pub(super) struct ApiKeys(Vec<ApiKey>);

impl ApiKeys {
    /// From the (validated) configuration: every `key_sha256` is 64 hex digits.
    pub(super) fn new(keys: &[ApiKeyConfig]) -> ApiKeys {
        ApiKeys(
            keys.iter()
                .map(|k| {
                    let mut hash = [0u8; 32];
                    // Checked by `Config::validate`; a bad one would match nothing.
                    let _ = hex::decode_to_slice(&k.key_sha256, &mut hash);
                    ApiKey {
                        name: k.name.clone(),
                        hash,
                        publish: patterns(&k.publish),
                        subscribe: patterns(&k.subscribe),
                        admin: k.admin,
                    }
                })
                .collect(),
        )
    }

    pub(super) fn len(&self) -> usize {
        self.0.len()
    }

    /// The caller a key stands for, or 401.
    pub(super) fn verify(
        &self,
        token: &str,
        via: Via,
        anonymous: &Arc<[Pattern]>,
    ) -> Result<Caller, Error> {
        let hash = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
        // Compare with every key, without stopping early.
        let mut found = None;
        for k in &self.0 {
            if bool::from(hash.as_ref().ct_eq(&k.hash)) {
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
            anonymous: anonymous.clone(),
        })
    }
}
