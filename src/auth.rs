//! Who is calling and what they may do (SPEC §6).
//!
//! Every request is turned into a [`Caller`] before a handler looks at it. With auth open
//! (SPEC §6.1: `auth.required = false`, or nothing configured and listening on loopback)
//! every caller may read, publish and use the operations endpoints.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use http::request::Parts;

use crate::config::Config;
use crate::error::Error;
use crate::topic;

/// What a request may do, decided once per request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The authenticated user (`sub`), if any.
    pub user: Option<String>,
    /// Admins may do everything, including reading anyone's `user/...` topic.
    pub admin: bool,
    open: bool,
}

impl Caller {
    /// A caller on an open hub.
    pub fn open() -> Self {
        Caller {
            user: None,
            admin: true,
            open: true,
        }
    }

    /// May this caller read a topic or pattern?
    pub fn can_read(&self, pattern: &str) -> bool {
        if self.open || self.admin {
            return true;
        }
        if let Some(owner) = topic::personal_owner(pattern) {
            return self.user.as_deref() == Some(owner);
        }
        false
    }

    /// May this caller publish to a topic?
    pub fn can_publish(&self, _topic: &str) -> bool {
        self.open || self.admin
    }

    /// May this caller use the operations endpoints (`/stats`, `/connections`, ...)?
    pub fn is_admin(&self) -> bool {
        self.open || self.admin
    }
}

/// The request authenticator built from `[auth]`.
#[derive(Debug)]
pub struct Auth {
    open: bool,
}

impl Auth {
    pub fn new(config: &Config) -> Result<Auth, crate::config::ConfigError> {
        Ok(Auth {
            open: config.auth.is_open(),
        })
    }

    pub fn is_open(&self) -> bool {
        self.open
    }

    /// Works out who sent a request.
    pub fn authenticate(&self, _parts: &Parts, _peer: IpAddr) -> Result<Caller, Error> {
        if self.open {
            return Ok(Caller::open());
        }
        Err(Error::Unauthorized("credentials are required".into()))
    }
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
}
