//! The form of `--target` / `target =`: `HOST:PORT`, where HOST is an IP literal or a name
//! (a Kubernetes Service, a compose service, anything the resolver knows), looked up once,
//! when the setting is read. The run carries the address, never the name: every agent must
//! load the same address, and each checks it against its `--allow-target` blocks, which
//! are CIDRs.

use std::net::{SocketAddr, ToSocketAddrs};

use serde::{Deserialize, Deserializer};
use stampede_proto::usage::cut;

/// `HOST:PORT` as an address: an IP literal as it is, a name through the system resolver
/// (getaddrinfo: /etc/hosts, then DNS), taking the first address it gives.
pub fn parse(input: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = input.parse::<SocketAddr>() {
        return Ok(addr);
    }
    // Only a host name goes to the resolver: letters, digits, '-' and '.', at least one
    // letter (RFC 1123). Anything else, "1.2" or "[::1" included, is a typo, not a lookup.
    let (host, port) = input
        .rsplit_once(':')
        .filter(|(h, p)| {
            h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
                && h.bytes().any(|b| b.is_ascii_alphabetic())
                && p.parse::<u16>().is_ok()
        })
        .ok_or_else(|| format!("invalid target \"{}\": expected HOST:PORT", cut(input)))?;
    let port: u16 = port.parse().expect("checked by the filter above");
    let mut addrs = (host, port).to_socket_addrs().map_err(|e| {
        format!(
            "cannot resolve the target's host \"{}\": {e} (give an IP literal or a name this \
             host resolves)",
            cut(host)
        )
    })?;
    addrs
        .next()
        .ok_or_else(|| format!("the target's host \"{}\" has no address", cut(host)))
}

/// serde's side of [`parse`], for `target = "HOST:PORT"` in a scenario file.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    Option::<String>::deserialize(d)?
        .map(|s| parse(&s).map_err(serde::de::Error::custom))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_pass_names_resolve_and_bad_forms_are_named() {
        assert_eq!(
            parse("198.18.0.5:8000").unwrap(),
            "198.18.0.5:8000".parse().unwrap()
        );
        assert_eq!(parse("[::1]:80").unwrap(), "[::1]:80".parse().unwrap());
        // "localhost" is in every /etc/hosts: a loopback address, the given port.
        let local = parse("localhost:8000").unwrap();
        assert!(local.ip().is_loopback() && local.port() == 8000, "{local}");
        assert!(parse("8000").unwrap_err().contains("expected HOST:PORT"));
        assert!(
            parse("host:99999")
                .unwrap_err()
                .contains("expected HOST:PORT")
        );
        for typo in ["1.2:80", "[::1:80", "a b:80", ":80", "1.2.3.4.5:80"] {
            assert!(
                parse(typo).unwrap_err().contains("expected HOST:PORT"),
                "{typo}"
            );
        }
        // A name that does not resolve: tests/target_name.rs, in a namespace of its own
        // (a lookup may leave the machine).
    }
}
