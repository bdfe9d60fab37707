//! `--target HOST:PORT` with a name: resolved through the system resolver when read, and a
//! name that does not resolve is a usage error (exit 64, one line) before anything listens.
//! Run in a network namespace of its own, so the lookup cannot leave the machine. A kernel
//! test (root); skips loudly without it, except in CI.

use stampede_lab::{Netns, kernel_tests_enabled};

mod support;

#[test]
fn a_target_name_that_does_not_resolve_is_a_usage_error() {
    if !kernel_tests_enabled("a_target_name_that_does_not_resolve_is_a_usage_error") {
        return;
    }
    let ns = Netns::new("tname").unwrap();
    let out = ns
        .command(support::sibling_bin("stampede"))
        .args([
            "run",
            "--target",
            "no-such-host.invalid:8000",
            "--agent-wait",
            "1s",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(
        err.contains("cannot resolve the target's host \"no-such-host.invalid\""),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}
