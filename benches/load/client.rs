//! Connections: plain TCP, or TLS (HTTP/1.1 over it) when the hub serves HTTPS.

use std::net::SocketAddr;
use std::sync::OnceLock;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

pub trait Conn: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Conn for T {}
pub type Io = Box<dyn Conn>;

static TLS: OnceLock<tokio_rustls::TlsConnector> = OnceLock::new();

/// Trusts these PEM certificates for every connection from now on (which is then TLS).
pub fn use_tls(pem: &[u8]) {
    let cfg = runnel::client::tls_from_pem(pem, &[b"http/1.1"]).expect("usable certificates");
    let _ = TLS.set(tokio_rustls::TlsConnector::from(cfg));
}

pub async fn dial(addr: SocketAddr) -> Io {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.set_nodelay(true).ok();
    match TLS.get() {
        None => Box::new(tcp),
        Some(tls) => {
            let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
            Box::new(tls.connect(name, tcp).await.expect("TLS handshake"))
        }
    }
}

pub fn expand(t: &str, topic: &str, data: &str) -> String {
    t.replace("{topic}", topic).replace("{data}", data)
}

pub fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}
