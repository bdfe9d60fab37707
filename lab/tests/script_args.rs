//! `deploy/netns/lab.sh`'s command line as a user meets it: the usage it prints without a
//! subcommand is its comment and nothing of its code, `--prefix` is an option of lab.sh only
//! before the command `exec` runs (after it, the command's own argument), and the hint `up`
//! prints names the prefix it was given.

use std::process::{Command, Output};

use stampede_lab::kernel_tests_enabled;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/netns/lab.sh");

fn lab(args: &[&str]) -> Output {
    Command::new("bash")
        .arg(SCRIPT)
        .args(args)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `lab.sh down` for the prefix even when the test fails half-way.
struct Down(String);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = lab(&["down", "--prefix", &self.0]);
    }
}

#[test]
fn usage_is_the_comment_only() {
    // lab.sh checks for root before it reads its subcommand.
    if !kernel_tests_enabled("usage_is_the_comment_only") {
        return;
    }
    let out = lab(&[]);
    assert_eq!(out.status.code(), Some(64));
    let usage = text(&out.stdout);
    assert!(usage.contains("lab.sh up N [--prefix NAME]"), "{usage}");
    assert!(!usage.contains("set -euo"), "{usage}");
    assert_eq!(
        usage.lines().last(),
        Some("  ip netns exec stplab2 sysctl -w net.core.somaxconn=64"),
        "{usage}"
    );
}

#[test]
fn exec_leaves_the_commands_own_prefix_alone() {
    if !kernel_tests_enabled("exec_leaves_the_commands_own_prefix_alone") {
        return;
    }
    let prefix = format!("stpsa{}", std::process::id());
    let _down = Down(prefix.clone());
    let up = lab(&["up", "1", "--prefix", &prefix]);
    assert!(up.status.success(), "{}", text(&up.stderr));
    let hint = text(&up.stdout);
    assert!(
        hint.contains(&format!(
            "ip netns exec {prefix}0 COMMAND (or lab.sh --prefix {prefix} exec 0 COMMAND)"
        )),
        "{hint}"
    );
    // Before the command, --prefix picks the lab (either place); after it, it is the command's.
    for args in [
        vec![
            "--prefix",
            &prefix,
            "exec",
            "0",
            "echo",
            "hello",
            "--prefix=x",
        ],
        vec![
            "exec",
            "0",
            "--prefix",
            &prefix,
            "echo",
            "hello",
            "--prefix=x",
        ],
    ] {
        let out = lab(&args);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout), "hello --prefix=x\n", "{args:?}");
    }
    let down = lab(&["down", "--prefix", &prefix]);
    assert!(down.status.success(), "{}", text(&down.stderr));
}
