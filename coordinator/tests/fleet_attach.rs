//! The admission gate against a fleet dialling at once: 1,000 real agent sessions (the agent
//! library's daemon loop, in this process) attach to one coordinator with the default
//! limits in the same instant. Every one is admitted at its first connection: none is closed
//! as an unauthenticated connection to make room (the pending pool holds 1,024) or timed
//! out. Kernel test: 2,000 real TCP connections, in a network namespace of its own (root).

use std::net::SocketAddr;
use std::time::Duration;

use stampede::admission::Limits;
use stampede::auth::Token;
use stampede_agent::session::{self, SessionConfig};
use stampede_lab::{Netns, kernel_tests_enabled};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "fleet-attach";
const AGENTS: usize = 1_000;

/// A real agent session for `addr`, reconnecting as a daemon does.
fn spawn_agent(addr: SocketAddr, id: String, stop: &CancellationToken) {
    let config = SessionConfig {
        coordinator: format!("http://{addr}"),
        token: Token::new(TOKEN),
        id,
        ..SessionConfig::loopback()
    };
    let stop = stop.clone();
    tokio::spawn(async move {
        let _ = session::run(config, stop).await;
    });
}

#[test]
fn a_thousand_agents_dialling_at_once_are_all_admitted() {
    if !kernel_tests_enabled("a_thousand_agents_dialling_at_once_are_all_admitted") {
        return;
    }
    // Both ends of every connection are in this process.
    let fd = stampede_proto::rlimit::raise_fd_limit().unwrap();
    assert!(
        fd.soft >= 2 * AGENTS as u64 + 200,
        "cannot run: {AGENTS} agents need {} descriptors here, RLIMIT_NOFILE is {fd:?}",
        2 * AGENTS + 200
    );
    let ns = Netns::new("attach").unwrap();
    ns.block_on(async {
        let stop = CancellationToken::new();
        let c = stampede::serve_with_limits(
            stampede::ServeConfig::new("127.0.0.1:0".parse().unwrap(), Token::new(TOKEN)),
            Limits::default(),
            stop.clone(),
        )
        .await
        .unwrap();
        let began = Instant::now();
        for i in 0..AGENTS {
            spawn_agent(c.addr, format!("a{i:04}"), &stop);
        }
        // Bounded: a loaded 2-core machine attaches 1,000 in a few seconds.
        let until = began + Duration::from_secs(120);
        while c.registry.agents().len() < AGENTS && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let took = began.elapsed();
        let stats = c.registry.stats();
        eprintln!("{AGENTS} agents attached in {took:?}: {:?}", stats.gate);
        assert_eq!(c.registry.agents().len(), AGENTS, "{stats:?}");
        // Nobody was turned away and had to dial again.
        assert_eq!(stats.gate.evicted, 0, "{stats:?}");
        assert_eq!(stats.gate.timed_out, 0, "{stats:?}");
        assert_eq!(stats.gate.admitted, AGENTS as u64, "{stats:?}");
        assert_eq!(stats.gate.accepted, AGENTS as u64, "{stats:?}");
        assert_eq!(stats.gate.pending, 0, "{stats:?}");
        stop.cancel();
    });
}
