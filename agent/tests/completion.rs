//! Completion times by class against the real kernel (in a network namespace of its own):
//! every classified attempt has one, under its own class and k, at the time its connect()
//! completed, since the start instant. The burst is docs/kernel.md §3's (B=2, M=20, accepts
//! from 2.5 s, a greeting expected): 3 connect at once, the rest after SYN retransmits, and
//! the phantoms among them are ghosts once the 5 s deadline passes without a greeting.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use stampede_agent::{FireConfig, Plan, arm};
use stampede_lab::{Netns, kernel_tests_enabled};
use stampede_proto::outcome::OutcomeClass;
use support::Listener;
use tokio_util::sync::CancellationToken;

#[test]
fn completion_times_follow_each_class_and_the_connect_not_the_verdict() {
    if !kernel_tests_enabled("completion_times_follow_each_class_and_the_connect_not_the_verdict") {
        return;
    }
    let ns = Netns::new("agentdone").unwrap();
    let r = ns.run(|| {
        let listener = Listener::start(2, Duration::from_millis(2500), true);
        let mut c = FireConfig::new(listener.addr, 20);
        c.load.timeout = Duration::from_secs(5);
        c.load.expect_greeting = true;
        let plan = Plan::new(c).unwrap();
        // The instant is set once the sockets are armed: arming under load can take longer
        // than any fixed lead, and a passed instant is refused, never fired late.
        let armed = arm(&plan).unwrap();
        let start = Instant::now() + Duration::from_millis(20);
        let r = armed.fire(start, &CancellationToken::new(), None).unwrap();
        drop(listener.stop());
        r
    });
    let t = &r.tally;
    let count = |class, k| t.completion_times.get(&(class, k)).map_or(0, |h| h.len());
    // One completion time per attempt, under its class (and k).
    let total: u64 = t.completion_times.values().map(|h| h.len()).sum();
    assert_eq!(total, t.outcomes.total(), "{:?}", t.outcomes);
    assert_eq!(count(OutcomeClass::Established, 0), t.outcomes.established);
    assert_eq!(count(OutcomeClass::Ghost, 0), t.outcomes.ghost);
    let by_k: BTreeMap<u32, u64> = t
        .completion_times
        .iter()
        .filter(|((class, _), _)| *class == OutcomeClass::SynRetransmitted)
        .map(|((_, k), h)| (*k, h.len()))
        .collect();
    assert_eq!(by_k, t.syn_retransmits);
    // Those that connected at once did so within the first second; the rest waited for at
    // least the first SYN retransmit (1 s after the first SYN).
    if let Some(h) = t.completion_times.get(&(OutcomeClass::Established, 0)) {
        assert!(h.max() < 1_000_000, "established at {} µs", h.max());
    }
    for ((class, _), h) in &t.completion_times {
        if *class != OutcomeClass::Established {
            assert!(h.min() >= 1_000_000, "{class:?} at {} µs", h.min());
        }
    }
    // Ghosts count when their connect() completed (with the third retransmit, ~3.07 s), not
    // when the 5 s greeting deadline classified them.
    let ghosts = &t.completion_times[&(OutcomeClass::Ghost, 0)];
    assert!(!ghosts.is_empty(), "{:?}", t.outcomes);
    assert!(
        ghosts.max() < 4_500_000,
        "ghost completed at {} µs",
        ghosts.max()
    );
}
