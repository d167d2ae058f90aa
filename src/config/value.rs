//! Values as the configuration file writes them: durations, sizes, secrets, networks.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration written as a string: `"500ms"`, `"15s"`, `"5m"`, `"24h"`, `"7d"`, `"1h30m"`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

impl Dur {
    pub const fn secs(s: u64) -> Dur {
        Dur(Duration::from_secs(s))
    }
    pub fn as_millis(self) -> u64 {
        u64::try_from(self.0.as_millis()).unwrap_or(u64::MAX)
    }
}

impl FromStr for Dur {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "invalid duration {s:?}: use numbers with units ms, s, m, h or d, like \"15s\" \
                 or \"1h30m\""
            )
        };
        let t = s.trim();
        if t == "0" {
            return Ok(Dur(Duration::ZERO));
        }
        let mut total: u64 = 0;
        let mut rest = t;
        if rest.is_empty() {
            return Err(bad());
        }
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(bad());
            }
            let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
            rest = &rest[digits..];
            let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
            let ms_per = match &rest[..unit_len] {
                "ms" => 1,
                "s" => 1000,
                "m" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                _ => return Err(bad()),
            };
            rest = &rest[unit_len..];
            total = n
                .checked_mul(ms_per)
                .and_then(|v| total.checked_add(v))
                .ok_or_else(bad)?;
        }
        Ok(Dur(Duration::from_millis(total)))
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ms = self.as_millis();
        if ms == 0 {
            return f.write_str("0s");
        }
        for (unit, size) in [
            ("d", 86_400_000),
            ("h", 3_600_000),
            ("m", 60_000),
            ("s", 1000),
            ("ms", 1),
        ] {
            if ms >= size {
                write!(f, "{}{unit}", ms / size)?;
                ms %= size;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A size written as a string (`"64KiB"`, `"8MiB"`, `"1GiB"`, `"500KB"`) or a byte count.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "invalid size {s:?}: use a number and a unit (B, KiB, MiB, GiB, KB, MB, GB), like \"64KiB\""
            )
        };
        let t = s.trim();
        let digits = t.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = t[..digits].parse().map_err(|_| bad())?;
        let mult: u64 = match t[digits..].trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kib" | "k" => 1 << 10,
            "mib" | "m" => 1 << 20,
            "gib" | "g" => 1 << 30,
            "kb" => 1_000,
            "mb" => 1_000_000,
            "gb" => 1_000_000_000,
            _ => return Err(bad()),
        };
        n.checked_mul(mult).map(ByteSize).ok_or_else(bad)
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        for (unit, size) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
            if n >= size && n.is_multiple_of(size) {
                return write!(f, "{}{unit}", n / size);
            }
        }
        write!(f, "{n}B")
    }
}

impl fmt::Debug for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(ByteSize(n)),
            Raw::S(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A secret from the configuration. It prints as `***` everywhere.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("***")
    }
}

/// An IP network as `auth.allow_ips` writes it: `192.168.1.0/24`, `fd00::/8`, or a single
/// address (`10.0.0.7`). An IPv4 address written as IPv6 (`::ffff:10.0.0.7`) is IPv4, as
/// [`IpAddr::to_canonical`] makes a peer's address.
pub fn parse_net(s: &str) -> Result<IpNet, String> {
    let bad = || format!("{s:?} is not an address or CIDR (like 192.168.1.0/24 or fd00::/8)");
    let t = s.trim();
    let net = match t.parse::<IpNet>() {
        Ok(n) => n,
        Err(_) => IpNet::from(t.parse::<IpAddr>().map_err(|_| bad())?),
    };
    Ok(match net {
        IpNet::V6(v6) => match v6.addr().to_ipv4_mapped() {
            Some(v4) if v6.prefix_len() >= 96 => {
                IpNet::V4(Ipv4Net::new(v4, v6.prefix_len() - 96).map_err(|_| bad())?)
            }
            _ => net,
        },
        v4 => v4,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let d = |s: &str| s.parse::<Dur>().map(|d| d.as_millis());
        assert_eq!(d("500ms"), Ok(500));
        assert_eq!(d("15s"), Ok(15_000));
        assert_eq!(d("1h30m"), Ok(5_400_000));
        assert_eq!(d("24h"), Ok(86_400_000));
        assert_eq!(d("0"), Ok(0));
        for bad in [
            "",
            "15",
            "15 sec",
            "s",
            "1y",
            "-1s",
            "99999999999999999999d",
        ] {
            assert!(d(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            Dur(Duration::from_millis(5_400_500)).to_string(),
            "1h30m500ms"
        );
    }

    #[test]
    fn sizes() {
        let b = |s: &str| s.parse::<ByteSize>().map(|b| b.0);
        assert_eq!(b("64KiB"), Ok(65536));
        assert_eq!(b("8MiB"), Ok(8 << 20));
        assert_eq!(b("1GiB"), Ok(1 << 30));
        assert_eq!(b("10KB"), Ok(10_000));
        assert_eq!(b("123"), Ok(123));
        for bad in ["", "KiB", "1.5MiB", "12 parsecs"] {
            assert!(b(bad).is_err(), "{bad:?}");
        }
        assert_eq!(ByteSize(65536).to_string(), "64KiB");
        assert_eq!(ByteSize(1000).to_string(), "1000B");
    }

    #[test]
    fn networks() {
        let net = |s: &str| parse_net(s).unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap().to_canonical();
        assert!(net("192.168.1.0/24").contains(&ip("192.168.1.77")));
        assert!(!net("192.168.1.0/24").contains(&ip("192.168.2.1")));
        assert!(net("10.0.0.7").contains(&ip("10.0.0.7")));
        assert!(!net("10.0.0.7").contains(&ip("10.0.0.8")));
        assert!(net("0.0.0.0/0").contains(&ip("8.8.8.8")));
        assert!(net("127.0.0.1").contains(&ip("::ffff:127.0.0.1")));
        assert!(net("::ffff:10.0.0.0/104").contains(&ip("10.1.2.3")));
        assert!(net("fd00::/8").contains(&ip("fd12::1")));
        assert!(!net("fd00::/8").contains(&ip("fe80::1")));
        for bad in ["", "300.1.1.1", "10.0.0.0/33", "fd00::/129", "x/8"] {
            assert!(parse_net(bad).is_err(), "{bad}");
        }
    }
}
