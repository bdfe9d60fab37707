//! Property tests of the agent's `--allow-target` parser (`Cidr`), the decoder that stands
//! between any flag text and the safety rule "no SYN outside the allow-list": any text is
//! Ok or an error, never a panic, and a parsed block contains exactly the addresses a
//! reference computation by mask says it does.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;
use stampede_agent::cidr::Cidr;

/// Cases per property: enough to find a panic, few enough that the suite takes seconds.
fn config() -> ProptestConfig {
    ProptestConfig::with_cases(512)
}

/// The reference: `ip` (an IPv4-mapped IPv6 address counted as IPv4, as the allow-list
/// documents) lies in `net/prefix` when both are of one family and agree on the first
/// `prefix` bits.
fn reference_contains(net: IpAddr, prefix: u8, ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

/// An address near `net` (same leading bits, often), or anywhere; v4, v6, or v4-mapped v6.
fn address_near(net: IpAddr) -> impl Strategy<Value = IpAddr> {
    let flip = prop_oneof![
        Just(0u128),
        any::<u128>(),
        (0..128u32).prop_map(|b| 1u128 << b)
    ];
    (flip, 0..4u8).prop_map(move |(flip, kind)| match (net, kind) {
        (IpAddr::V4(n), 0 | 1) => IpAddr::V4(Ipv4Addr::from(u32::from(n) ^ flip as u32)),
        (IpAddr::V4(n), 2) => {
            IpAddr::V6(Ipv4Addr::from(u32::from(n) ^ flip as u32).to_ipv6_mapped())
        }
        (IpAddr::V6(n), 0 | 1) => IpAddr::V6(Ipv6Addr::from(u128::from(n) ^ flip)),
        (IpAddr::V6(_), 2) => IpAddr::V4(Ipv4Addr::from(flip as u32)),
        _ => IpAddr::V6(Ipv6Addr::from(flip)),
    })
}

fn network() -> impl Strategy<Value = (IpAddr, u8)> {
    prop_oneof![
        (any::<u32>(), 0..=32u8).prop_map(|(a, p)| (IpAddr::V4(Ipv4Addr::from(a)), p)),
        (any::<u128>(), 0..=128u8).prop_map(|(a, p)| (IpAddr::V6(Ipv6Addr::from(a)), p)),
        // IPv4-mapped IPv6 blocks: the allow-list counts such addresses as IPv4.
        (any::<u32>(), 96..=128u8)
            .prop_map(|(a, p)| { (IpAddr::V6(Ipv4Addr::from(a).to_ipv6_mapped()), p) }),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn cidr_from_str_never_panics(s in any::<String>()) {
        let _ = s.parse::<Cidr>();
    }

    /// Text shaped like blocks (digits, dots, colons, a slash, spaces) reaches the parser's
    /// inner branches.
    #[test]
    fn cidr_shaped_text_never_panics_and_reads_back(
        s in "[ ]?[0-9a-fA-F.:]{0,40}(/[ ]?[0-9]{0,4})?[ ]?"
    ) {
        if let Ok(c) = s.parse::<Cidr>() {
            prop_assert_eq!(c.to_string().parse::<Cidr>(), Ok(c));
        }
    }

    /// Every parsed block (bare address or ADDRESS/PREFIX) contains exactly what the mask
    /// reference says, for addresses inside, just outside and far from it.
    #[test]
    fn contains_agrees_with_the_mask(
        (net, prefix, ip) in network()
            .prop_flat_map(|(net, prefix)| (Just(net), Just(prefix), address_near(net))),
        bare in any::<bool>(),
    ) {
        let full = match net {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        let (text, prefix) = if bare { (net.to_string(), full) } else { (format!("{net}/{prefix}"), prefix) };
        let cidr: Cidr = text.parse().unwrap();
        prop_assert_eq!(
            cidr.contains(ip),
            reference_contains(net, prefix, ip),
            "{} contains {}?", text, ip
        );
        // A block always contains its own network address (unless it is a v4-mapped v6
        // block, whose addresses count as IPv4).
        if net.is_ipv4() || matches!(net, IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none()) {
            prop_assert!(cidr.contains(net), "{} contains its own address", text);
        }
    }
}
