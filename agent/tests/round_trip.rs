//! What a remote agent sees (docs/kernel.md §3, docs/design.md "Multi-host lab"): with a real round trip
//! between agent and listener, a burst is shorter than the RTT, so every SYN arrives before
//! any final ACK. The first A+1 get request sockets, the rest get syncookies, *every* connect()
//! succeeds on the first try (k = 0), and only A+1 exist on the server: the first wave itself
//! makes phantoms, which loopback (handshake inside connect()) never shows. The round trip is
//! a userspace TUN relay between two namespaces of the test's own (this kernel has no netem).
//! Kernel tests: root needed, loud skip outside CI.

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use stampede_agent::{FireConfig, Plan, RunResult, arm};
use stampede_lab::{Netns, Relay, kernel_tests_enabled};
use stampede_proto::netstat;
use support::Listener;
use tokio_util::sync::CancellationToken;

/// Backlog 2: A + 1 = 3 fit in the accept queue, and 3 in the SYN queue.
const BACKLOG: i32 = 2;
const CONNECTIONS: u64 = 20;
/// 100 ms round trip: far longer than issuing 20 connects (microseconds), with room for a
/// busy test machine to preempt the agent without splitting the wave.
const ONE_WAY: Duration = Duration::from_millis(50);

struct Outcome {
    result: RunResult,
    accepted: u64,
    queued: u32,
    syncookies: u64,
    overflows: u64,
}

/// Fires 20 connects from one namespace at a listener (backlog 2, accepting from
/// `accept_delay`) in another, 2 × ONE_WAY away.
fn relayed_burst(
    tag: &str,
    accept_delay: Duration,
    configure: impl FnOnce(&mut FireConfig),
) -> Outcome {
    let agent_ns = Netns::new(&format!("{tag}a")).unwrap();
    let target_ns = Netns::new(&format!("{tag}t")).unwrap();
    let (agent_ip, target_ip) = (Ipv4Addr::new(198, 18, 7, 1), Ipv4Addr::new(198, 18, 7, 2));
    let relay = Relay::new(
        &agent_ns,
        agent_ip,
        &target_ns,
        target_ip,
        ONE_WAY,
        Duration::from_secs(60),
    )
    .unwrap();
    // The listener's thread is spawned inside the target namespace and stays there.
    let listener = target_ns.run(|| {
        Listener::start_at(
            SocketAddr::from((target_ip, 0)),
            BACKLOG,
            accept_delay,
            true,
        )
    });
    let before = target_ns.counters().unwrap();
    let mut config = FireConfig::new(listener.addr, CONNECTIONS);
    config.allow_targets = vec!["198.18.0.0/15".parse().unwrap()];
    configure(&mut config);
    let result = agent_ns.run(|| {
        let plan = Plan::new(config).unwrap();
        arm(&plan)
            .unwrap()
            .fire(
                Instant::now() + Duration::from_millis(20),
                &CancellationToken::new(),
                None,
            )
            .unwrap()
    });
    let counters = target_ns.counters().unwrap().since(&before);
    let (accepted, queued) = (listener.accepted(), listener.queue_len());
    drop(listener.stop());
    drop(relay);
    Outcome {
        result,
        accepted,
        queued,
        syncookies: counters.get(netstat::SYNCOOKIES_SENT),
        overflows: counters.get(netstat::LISTEN_OVERFLOWS),
    }
}

/// Server speaks first: the 3 real connections are greeted once accepting starts; the 17
/// cookie connections never are, though their connect() succeeded at once.
#[test]
fn first_wave_over_a_round_trip_makes_k0_ghosts() {
    if !kernel_tests_enabled("first_wave_over_a_round_trip_makes_k0_ghosts") {
        return;
    }
    let run = relayed_burst("rtghost", Duration::from_millis(800), |c| {
        c.load.expect_greeting = true;
        c.load.timeout = Duration::from_secs(2);
    });
    let r = &run.result;
    let o = r.tally.outcomes;
    assert_eq!(o.total(), CONNECTIONS, "{o:?}");
    assert_eq!(
        o.connected(),
        CONNECTIONS,
        "every connect() succeeded: {o:?}"
    );
    assert_eq!(o.established, 3, "A + 1 admitted: {o:?}");
    assert_eq!(o.ghost, 17, "{o:?}");
    assert_eq!(
        o.syn_retransmitted, 0,
        "nobody waited for a retransmit: {o:?}"
    );
    assert_eq!(
        r.tally.ghost_syn_retransmits.get(&0).copied(),
        Some(17),
        "the ghosts connected with k = 0: {:?}",
        r.tally.ghost_syn_retransmits
    );
    assert_eq!(
        o.admitted(),
        run.accepted,
        "admitted = the server's accepted count"
    );
    assert_eq!(
        r.tally.ttfb.len(),
        run.accepted,
        "one first byte per admitted connection"
    );
    // Each ghost is a cookie whose final ACK found the queue full (docs/kernel.md §4's table).
    assert_eq!(run.syncookies, 17, "SyncookiesSent");
    assert!(run.overflows >= 17, "ListenOverflows {}", run.overflows);
    // Every connect took the round trip, and no more than a wave's worth: no one waited ~1 s
    // for a SYN retransmit.
    let rtt_us = 2 * ONE_WAY.as_micros() as u64;
    assert!(
        r.tally.connect_latency.min() >= rtt_us,
        "{}",
        r.tally.connect_latency.min()
    );
    assert!(
        r.tally.connect_latency.max() < 900_000,
        "{}",
        r.tally.connect_latency.max()
    );
}

/// Client speaks first: the probe byte of a real connection is acknowledged at once, even
/// though nothing is accepted during the run; a phantom's never is.
#[test]
fn first_wave_over_a_round_trip_probe_tells_queued_from_phantoms() {
    if !kernel_tests_enabled("first_wave_over_a_round_trip_probe_tells_queued_from_phantoms") {
        return;
    }
    let run = relayed_burst("rtprobe", Duration::from_secs(30), |c| {
        c.load.probe_admission = true;
        c.load.timeout = Duration::from_millis(1500);
    });
    let o = run.result.tally.outcomes;
    assert_eq!(o.total(), CONNECTIONS, "{o:?}");
    assert_eq!(o.connected(), CONNECTIONS, "{o:?}");
    assert_eq!(run.accepted, 0);
    assert_eq!(run.queued, 3, "A + 1 wait in the accept queue");
    assert_eq!(
        o.admitted(),
        3,
        "admitted = waiting in the accept queue: {o:?}"
    );
    assert_eq!(o.ghost, 17, "{o:?}");
    assert_eq!(run.syncookies, 17, "SyncookiesSent");
}
