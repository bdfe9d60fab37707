//! Refused values are echoed as the user typed them (a whole number of hours stays in
//! hours: `25h`, not `1500m`), and the wait for agents counts in the right number.

use std::process::Command;
use std::time::Duration;

use stampede::run::RunError;

fn refused(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_stampede"))
        .args(["run", "--target", "127.0.0.1:9"])
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(64), "{args:?}: {err}");
    err
}

#[test]
fn refused_durations_are_echoed_as_typed() {
    let err = refused(&["--agent-wait", "25h"]);
    assert!(err.contains("invalid agent_wait \"25h\""), "{err}");
    let err = refused(&["--pattern", "waves:2:1000000h"]);
    assert!(err.contains("waves:2:1000000h"), "{err}");
    assert!(!err.contains("60000000m"), "{err}");
}

#[test]
fn the_wait_for_agents_counts_in_the_right_number() {
    let error = |want: usize| RunError::NotEnoughAgents {
        want,
        have: Vec::new(),
        waited: Duration::from_secs(1),
        refused_duplicates: Vec::new(),
    };
    assert_eq!(error(1).to_string(), "waited 1s for 1 agent, 0 attached");
    assert_eq!(error(2).to_string(), "waited 1s for 2 agents, 0 attached");
}
