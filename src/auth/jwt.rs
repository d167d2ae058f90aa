//! JSON Web Tokens: verifying them (HS256 with `auth.jwt_secret`, RS256/ES256 with
//! `auth.jwt_public_key_file`) and minting them for `runnel token`.

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Deserializer};

use super::{Caller, Via, patterns};
use crate::config::{AuthConfig, Config, ConfigError};
use crate::error::Error;
use crate::topic::{self, Pattern};

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

/// The configured way to check tokens.
pub(super) struct Jwt {
    key: DecodingKey,
    validation: Validation,
    leeway_ms: u64,
    /// What a token without a `subscribe` claim may read.
    default_subscribe: Vec<Pattern>,
}

impl Jwt {
    /// From `[auth]`: `None` when no JWT key is configured.
    pub(super) fn from_config(a: &AuthConfig) -> Result<Option<Jwt>, ConfigError> {
        let leeway = a.leeway.0.as_secs();
        let (key, alg) = if let Some(secret) = &a.jwt_secret {
            (
                DecodingKey::from_secret(secret.expose().as_bytes()),
                Algorithm::HS256,
            )
        } else if let Some(path) = &a.jwt_public_key_file {
            let pem = std::fs::read(path).map_err(|e| {
                ConfigError(format!(
                    "cannot read auth.jwt_public_key_file {}: {e}",
                    path.display()
                ))
            })?;
            public_key(&pem, a.jwt_algorithm.as_deref()).map_err(|e| {
                ConfigError(format!("auth.jwt_public_key_file {}: {e}", path.display()))
            })?
        } else {
            return Ok(None);
        };
        Ok(Some(Jwt {
            key,
            validation: validation(alg, leeway, a),
            leeway_ms: a.leeway.as_millis(),
            default_subscribe: patterns(&a.default_subscribe),
        }))
    }

    /// Checks a token and turns its claims into a caller.
    pub(super) fn verify(
        &self,
        token: &str,
        via: Via,
        anonymous: &Arc<[Pattern]>,
    ) -> Result<Caller, Error> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| Error::Unauthorized(refusal(&e)))?;
        let c = data.claims;
        if topic::validate_topic(&topic::personal_topic(&c.sub)).is_err() {
            return Err(Error::Unauthorized(format!(
                "the token's sub {:?} cannot name a user (use topic characters)",
                c.sub
            )));
        }
        let read = claim_patterns(c.subscribe, "subscribe")?
            .unwrap_or_else(|| self.default_subscribe.clone());
        let publish = claim_patterns(c.publish, "publish")?.unwrap_or_default();
        Ok(Caller {
            user: Some(c.sub),
            key: None,
            admin: c.role.as_deref() == Some("admin"),
            open: false,
            via,
            // The validator accepts a token through the whole second `exp` (+ leeway): a
            // stream ends when a reconnect with the same token would be refused, not before,
            // or a client would be cut off and let straight back in. (Saturating: a token may
            // claim an `exp` far beyond any clock.)
            expires_at: c.exp.map(|e| {
                (e.max(0.0).floor() as u64)
                    .saturating_add(1)
                    .saturating_mul(1000)
                    .saturating_add(self.leeway_ms)
            }),
            read,
            publish,
            anonymous: anonymous.clone(),
        })
    }
}

/// Why a token was refused, in words.
fn refusal(e: &jsonwebtoken::errors::Error) -> String {
    match e.kind() {
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
    }
}

/// A claim's pattern list, each pattern checked.
fn claim_patterns(list: Option<Vec<String>>, name: &str) -> Result<Option<Vec<Pattern>>, Error> {
    list.map(|l| {
        l.iter()
            .map(|p| {
                Pattern::new(p)
                    .map_err(|e| Error::Unauthorized(format!("the token's {name} claim: {e}")))
            })
            .collect()
    })
    .transpose()
}

fn validation(alg: Algorithm, leeway: u64, a: &AuthConfig) -> Validation {
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
    if req.ttl.is_zero() {
        return Err(
            "--ttl must be more than 0s: a token that has already expired is of no use".into(),
        );
    }
    topic::validate_topic(&topic::personal_topic(&req.sub))
        .map_err(|e| format!("--sub {:?} cannot name a user: {e}", req.sub))?;
    for p in req.subscribe.iter().chain(&req.publish) {
        topic::validate_pattern(p).map_err(|e| e.to_string())?;
    }
    let now = crate::time::unix_ms() / 1000;
    let mut claims = serde_json::json!({
        "sub": req.sub,
        "iat": now,
        "exp": now.saturating_add(req.ttl.as_secs()),
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
