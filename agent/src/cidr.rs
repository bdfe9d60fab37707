//! CIDR blocks for the agent's `--allow-target` list (DESIGN.md "Safety": an agent refuses
//! targets outside its allow-list; the default allows loopback only).

use std::net::IpAddr;
use std::str::FromStr;

/// An address block such as `127.0.0.0/8` or `198.18.0.0/15`; a bare address is a /32 (/128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

/// A CIDR that could not be parsed; the message names the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid CIDR \"{input}\": {reason} (expected ADDRESS/PREFIX, e.g. 198.18.0.0/15)")]
pub struct ParseCidrError {
    input: String,
    reason: &'static str,
}

impl Cidr {
    /// The default allow-list: IPv4 and IPv6 loopback.
    pub fn loopback() -> Vec<Cidr> {
        vec![
            Cidr {
                addr: IpAddr::from([127, 0, 0, 0]),
                prefix: 8,
            },
            Cidr {
                addr: IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]),
                prefix: 128,
            },
        ]
    }

    /// True if `ip` lies in this block (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
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

impl FromStr for Cidr {
    type Err = ParseCidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| ParseCidrError {
            input: s.to_owned(),
            reason,
        };
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| err("not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| err("prefix length out of range"))?,
        };
        Ok(Cidr { addr, prefix })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contains_and_parses() {
        let bench: Cidr = "198.18.0.0/15".parse().unwrap();
        assert!(bench.contains("198.19.255.1".parse().unwrap()));
        assert!(!bench.contains("198.20.0.1".parse().unwrap()));
        assert!(!bench.contains("::1".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        let one: Cidr = "10.0.0.7".parse().unwrap();
        assert_eq!(one.to_string(), "10.0.0.7/32");
        assert!(!one.contains("10.0.0.8".parse().unwrap()));
        let lo = Cidr::loopback();
        assert!(lo.iter().any(|c| c.contains("127.0.0.2".parse().unwrap())));
        assert!(lo.iter().any(|c| c.contains("::1".parse().unwrap())));
        assert!(
            lo.iter()
                .any(|c| c.contains("::ffff:127.0.0.1".parse().unwrap()))
        );
        assert!(!lo.iter().any(|c| c.contains("10.1.1.1".parse().unwrap())));
        for bad in ["", "10.0.0.0/33", "fe80::/129", "host/8", "10.0.0.0/x"] {
            let e = bad.parse::<Cidr>().unwrap_err();
            assert!(e.to_string().contains(&format!("\"{bad}\"")), "{e}");
        }
    }
}
