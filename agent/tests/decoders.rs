//! Property tests of the agent's `--allow-target` parser (`Cidr`), the decoder that stands
//! between any flag text and the safety rule "no SYN outside the allow-list": any text is
//! Ok or an error, never a panic, and a parsed block contains exactly the addresses a
//! reference computation by mask says it does. And a coordinator message with an absurd
//! value (a Start instant of i64::MIN) answered with a refusal, not a panic.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use proptest::prelude::*;
use stampede_agent::cidr::Cidr;
use stampede_agent::session::{self, SessionConfig};
use stampede_lab::{Netns, kernel_tests_enabled};
use stampede_proto::pb::{self, agent_message::Msg as Out, coordinator_message::Msg as In};
use stampede_proto::plan::Load;
use tokio_util::sync::CancellationToken;

#[path = "support/fake_coordinator.rs"]
mod fake_coordinator;
use fake_coordinator::{Fake, msg, until};

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

/// A Start whose instant is absurd (i64::MIN ns, the year -292 billion) is answered with a
/// refusal: before, `local_start - now` overflowed, which panicked the session in debug
/// builds (the agent's stream just ended) and in release wrapped into a wait of centuries
/// with armed sockets. Armed in a namespace of its own; no SYN is sent (nothing fires).
#[test]
fn an_absurd_start_instant_is_refused_not_a_panic() {
    if !kernel_tests_enabled("an_absurd_start_instant_is_refused_not_a_panic") {
        return;
    }
    let ns = Netns::new("propsstart").unwrap();
    ns.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (attached, mut streams) = tokio::sync::mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(pb::coordinator_server::CoordinatorServer::new(Fake {
                    attached,
                    liveness_ms: 0,
                }))
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    stop.clone().cancelled_owned(),
                ),
        );
        let shutdown = CancellationToken::new();
        let config = SessionConfig {
            coordinator: url,
            ..SessionConfig::loopback()
        };
        let session = tokio::spawn(session::run(config, shutdown.clone()));
        let mut s = tokio::time::timeout(Duration::from_secs(10), streams.recv())
            .await
            .expect("the agent attaches within 10 s")
            .unwrap();
        let prepare = Load::burst("127.0.0.1:9".parse().unwrap(), 1).to_prepare("absurd");
        s.out.send(Ok(msg(In::Prepare(prepare)))).await.unwrap();
        until(&mut s, |m| match m {
            Out::Ready(_) => Some(()),
            Out::Rejected(r) => panic!("plan rejected: {}", r.reason),
            _ => None,
        })
        .await;
        let start = pb::Start {
            run_id: "absurd".into(),
            start_at_unix_nanos: i64::MIN,
        };
        s.out.send(Ok(msg(In::Start(start)))).await.unwrap();
        let reason = until(&mut s, |m| match m {
            Out::Rejected(r) => Some(r.reason),
            _ => None,
        })
        .await;
        assert!(reason.contains("start"), "{reason}");
        shutdown.cancel();
        let ended = tokio::time::timeout(Duration::from_secs(5), session)
            .await
            .expect("the session ends on shutdown");
        assert!(ended.is_ok(), "the session task panicked: {ended:?}");
        stop.cancel();
    });
}
