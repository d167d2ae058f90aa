//! Credentials from arbitrary headers, query strings and cookies: never a panic, and
//! garbage never authenticates.
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use runnel::auth::Auth;
use runnel::config::Config;

fn auth() -> &'static Auth {
    static AUTH: OnceLock<Auth> = OnceLock::new();
    AUTH.get_or_init(|| {
        let c = Config::from_toml(
            "[auth]\njwt_secret = \"fuzz-secret-fuzz-secret-fuzz-secret\"\n\
             [[auth.api_keys]]\nname = \"k\"\n\
             key_sha256 = \"2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae\"\n\
             publish = [\"*\"]\n",
        )
        .unwrap();
        Auth::new(&c).unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |b| *b == 0);
    let header = parts.next().unwrap_or_default();
    let query = parts.next().unwrap_or_default();
    let cookie = parts.next().unwrap_or_default();
    let mut b = http::Request::builder().method("POST");
    let q = String::from_utf8_lossy(query);
    let uri = format!("/events?{}", q.replace(['#', ' '], ""));
    b = b.uri(uri.as_str());
    for (name, value) in [
        ("authorization", header),
        ("x-auth-token", header),
        ("cookie", cookie),
        ("origin", cookie),
    ] {
        if let Ok(v) = http::HeaderValue::from_bytes(value) {
            b = b.header(name, v);
        }
    }
    let Ok(req) = b.body(()) else { return };
    let (parts, ()) = req.into_parts();
    for exchange in [false, true] {
        if let Ok(c) = auth().authenticate(&parts, exchange) {
            // Only the real API key ("foo") authenticates anything here; a JWT needs the
            // secret, which the fuzzer cannot forge.
            if c.is_authenticated() {
                assert_eq!(c.key.as_deref(), Some("k"));
            }
        }
    }
});
