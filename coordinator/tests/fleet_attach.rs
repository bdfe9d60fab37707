//! The admission gate against a fleet dialling at once: 1,000 real agent sessions (the agent
//! library's daemon loop, in this process) attach to one coordinator with the default
//! limits in the same instant. Every one is admitted: no connection is closed as
//! unauthenticated to make room (the pending pool holds 1,024) or timed out (kernel test:
//! 2,000 real TCP connections, in a network namespace of its own; root). And a fleet larger
//! than the descriptor limit allows is refused at once by `stampede run`.

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
        // The gate turned nobody away: every connection it accepted authenticated, none was
        // closed to make room or for taking too long. (An agent may dial more than once on
        // its own, when its first attach gives up on a starved machine: accepted counts
        // those too.)
        assert_eq!(stats.gate.evicted, 0, "{stats:?}");
        assert_eq!(stats.gate.timed_out, 0, "{stats:?}");
        assert_eq!(stats.gate.admitted, stats.gate.accepted, "{stats:?}");
        assert!(stats.gate.accepted >= AGENTS as u64, "{stats:?}");
        assert_eq!(stats.gate.pending, 0, "{stats:?}");
        stop.cancel();
    });
}

/// A fleet larger than the coordinator's descriptors can hold is refused at once, with one
/// line naming the limit and what to do, exit 64: not a wait for agents that could never
/// all attach. The limit is lowered for the coordinator alone (hard 4,096: room for 3,008).
#[test]
fn a_fleet_too_large_for_the_descriptors_is_refused_at_once() {
    let began = std::time::Instant::now();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(r#"ulimit -Sn 1024 && ulimit -Hn 4096 && exec "$0" run --agents 5000 --target 127.0.0.1:9 --listen 127.0.0.1:0 --agent-wait 60s"#)
        .arg(env!("CARGO_BIN_EXE_stampede"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(
        began.elapsed() < Duration::from_secs(30),
        "{:?}",
        began.elapsed()
    );
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    let line = stderr.trim_end();
    assert!(line.starts_with("stampede: error:"), "{line}");
    for part in [
        "5000 agents cannot attach",
        "RLIMIT_NOFILE 4096 (hard limit 4096)",
        "room for 3008",
        "ulimit -Hn",
    ] {
        assert!(line.contains(part), "{part}: {line}");
    }
    // A fleet that fits is served, and the limit it was raised to is logged once.
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(r#"ulimit -Sn 1024 && ulimit -Hn 4096 && exec "$0" run --agents 1 --target 127.0.0.1:9 --listen 127.0.0.1:0 --agent-wait 1s"#)
        .arg(env!("CARGO_BIN_EXE_stampede"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "no agent came: {stderr}");
    assert_eq!(
        stderr
            .matches("file descriptor limit soft=4096 hard=4096 max_agents=3008")
            .count(),
        1,
        "{stderr}"
    );
}
