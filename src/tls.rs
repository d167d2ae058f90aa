//! HTTPS: certificates from PEM files, served with rustls (ring), reloadable.
//!
//! With `[tls]` set, every connection starts with a TLS handshake (inside its own task, with
//! `limits.request_timeout`), and ALPN offers `h2` and `http/1.1`: browsers then use HTTP/2,
//! where all of a page's streams share one connection instead of six at most. A reload
//! (SIGHUP, `systemctl reload`) reads the files again; connections already open keep the
//! certificate they started with, new ones get the new one, and a reload that fails keeps
//! the old certificate.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsConfig;

/// Why a certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    // Not `source`: the reason is in the message, and an error chain would repeat it.
    #[error("tls.{what} = {path:?}: cannot read it: {reason}")]
    Read {
        what: &'static str,
        path: PathBuf,
        reason: std::io::Error,
    },
    #[error("tls.cert = {0:?}: no PEM certificate in it (expected -----BEGIN CERTIFICATE-----)")]
    NoCertificate(PathBuf),
    #[error("tls.cert = {path:?}: a certificate is damaged: {reason}")]
    BadCertificate { path: PathBuf, reason: String },
    #[error(
        "tls.key = {0:?}: no PEM private key in it (expected PKCS#8 `PRIVATE KEY`, PKCS#1 \
         `RSA PRIVATE KEY` or SEC1 `EC PRIVATE KEY`)"
    )]
    NoKey(PathBuf),
    #[error("tls.key = {key:?} does not belong to the certificate in tls.cert = {cert:?}")]
    Mismatch { cert: PathBuf, key: PathBuf },
    #[error("tls.key = {path:?}: the key cannot be used: {reason}")]
    BadKey { path: PathBuf, reason: String },
}

/// The certificate in use, swapped on reload.
pub struct Tls {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<ServerConfig>>,
}

impl Tls {
    /// Reads and checks the certificate and key.
    pub fn load(cfg: &TlsConfig) -> Result<Tls, TlsError> {
        let config = server_config(&cfg.cert, &cfg.key)?;
        Ok(Tls {
            cert: cfg.cert.clone(),
            key: cfg.key.clone(),
            current: RwLock::new(config),
        })
    }

    /// The configuration for the next handshake.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reads the files again; on error the running certificate stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = server_config(&self.cert, &self.key)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|reason| TlsError::Read {
        what,
        path: path.to_path_buf(),
        reason,
    })
}

/// A rustls server configuration (ring provider, ALPN h2 then http/1.1) from PEM files.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let pem = read("cert", cert)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::BadCertificate {
            path: cert.to_path_buf(),
            reason: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(cert.to_path_buf()));
    }
    let key_pem = read("key", key)?;
    let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoKey(key.to_path_buf()),
        other => TlsError::BadKey {
            path: key.to_path_buf(),
            reason: other.to_string(),
        },
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::BadKey {
            path: key.to_path_buf(),
            reason: e.to_string(),
        })?
        .with_no_client_auth();
    let mut config = builder
        .with_single_cert(chain, private)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => TlsError::Mismatch {
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
            },
            other => TlsError::BadKey {
                path: key.to_path_buf(),
                reason: other.to_string(),
            },
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// What `runnel cert --self-signed` writes.
pub struct SelfSigned {
    pub cert_pem: String,
    pub key_pem: String,
    /// SHA-256 of the certificate (DER), as colon-separated hex: what phones show.
    pub fingerprint: String,
}

/// A self-signed certificate for LAN use: the given host names and IP addresses, valid for
/// 397 days from now, with an ECDSA P-256 key.
pub fn self_signed(hosts: &[String]) -> Result<SelfSigned, String> {
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};
    if hosts.is_empty() {
        return Err("name at least one host (--hosts raspberrypi.local,192.168.1.10)".into());
    }
    let mut params = CertificateParams::default();
    for h in hosts {
        let h = h.trim();
        let san = match h.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => {
                if rustls::pki_types::ServerName::try_from(h).is_err() {
                    return Err(format!("{h:?} is neither a host name nor an IP address"));
                }
                SanType::DnsName(
                    h.to_string()
                        .try_into()
                        .map_err(|e| format!("{h:?} is not a host name: {e}"))?,
                )
            }
        };
        params.subject_alt_names.push(san);
    }
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, hosts[0].trim());
    dn.push(DnType::OrganizationName, "runnel (self-signed)");
    params.distinguished_name = dn;
    let now = std::time::SystemTime::now();
    params.not_before = now.into();
    params.not_after = (now + std::time::Duration::from_secs(397 * 24 * 3600)).into();
    let key = KeyPair::generate().map_err(|e| e.to_string())?;
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.der());
    let fingerprint = digest
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":");
    Ok(SelfSigned {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        fingerprint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        p
    }

    #[test]
    fn self_signed_loads_and_bad_inputs_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let a = self_signed(&["pi.local".into(), "192.168.1.10".into()]).unwrap();
        let b = self_signed(&["other.local".into()]).unwrap();
        let cert = write(dir.path(), "a.crt", &a.cert_pem);
        let key = write(dir.path(), "a.key", &a.key_pem);
        let cfg = server_config(&cert, &key).unwrap();
        assert_eq!(cfg.alpn_protocols, [b"h2".to_vec(), b"http/1.1".to_vec()]);

        let other_key = write(dir.path(), "b.key", &b.key_pem);
        let missing = dir.path().join("nope.pem");
        let empty = write(dir.path(), "empty.pem", "");
        let garbage = write(
            dir.path(),
            "garbage.pem",
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        );
        let cases: Vec<(PathBuf, PathBuf, &str)> = vec![
            (missing.clone(), key.clone(), "tls.cert"),
            (cert.clone(), missing.clone(), "tls.key"),
            (dir.path().to_path_buf(), key.clone(), "cannot read"),
            (empty.clone(), key.clone(), "no PEM certificate"),
            (garbage.clone(), key.clone(), "damaged"),
            (cert.clone(), empty.clone(), "no PEM private key"),
            (cert.clone(), cert.clone(), "no PEM private key"),
            (cert.clone(), other_key.clone(), "does not belong"),
        ];
        for (c, k, want) in cases {
            let e = server_config(&c, &k).unwrap_err().to_string();
            assert!(e.contains(want), "{c:?} {k:?}: {e}");
        }
        assert!(self_signed(&[]).is_err());
        assert!(self_signed(&["bad host name!".into()]).is_err());
        assert_eq!(a.fingerprint.len(), 32 * 3 - 1);
    }
}
