//! CIDR blocks for the agent's `--allow-target` list (docs/design.md "Safety": an agent refuses
//! targets outside its allow-list; the default allows loopback only).

use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;

/// An address block such as `127.0.0.0/8` or `198.18.0.0/15`; a bare address is a /32 (/128).
/// The arithmetic is `ipnet`'s; this type adds the bare-address form, IPv4-mapped IPv6
/// matching and messages that name the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr(IpNet);

/// A CIDR that could not be parsed; the message names the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid CIDR \"{input}\": {reason} (expected ADDRESS/PREFIX, e.g. 198.18.0.0/15)")]
pub struct ParseCidrError {
    input: String,
    reason: String,
}

impl Cidr {
    /// The default allow-list: IPv4 and IPv6 loopback.
    pub fn loopback() -> Vec<Cidr> {
        ["127.0.0.0/8", "::1/128"]
            .iter()
            .map(|c| Cidr(c.parse().expect("literal CIDR")))
            .collect()
    }

    /// True if `ip` lies in this block (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.0.contains(&ip)
    }
}

impl FromStr for Cidr {
    type Err = ParseCidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Spaces around the slash ("10.0.0.0/ 8") are a typing slip, not another block.
        let compact: String = s.split_whitespace().collect();
        if !compact.contains('/') {
            return compact
                .parse::<IpAddr>()
                .map(|a| Cidr(IpNet::from(a)))
                .map_err(|_| ParseCidrError {
                    input: s.to_owned(),
                    reason: "not an IP address".into(),
                });
        }
        compact
            .parse::<IpNet>()
            .map(|n| Cidr(n.trunc()))
            .map_err(|e| ParseCidrError {
                input: s.to_owned(),
                reason: e.to_string(),
            })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
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
        let spaced: Cidr = "10.0.0.0/ 8".parse().unwrap();
        assert!(spaced.contains("10.9.9.9".parse().unwrap()));
        for bad in ["", "10.0.0.0/33", "fe80::/129", "host/8", "10.0.0.0/x"] {
            let e = bad.parse::<Cidr>().unwrap_err();
            assert!(e.to_string().contains(&format!("\"{bad}\"")), "{e}");
        }
    }
}
