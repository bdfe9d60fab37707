//! The kernel-test gate as `cargo test` shows it, run without root: this binary runs its own
//! ignored probe test as a child process (dropped to `nobody` with setpriv when we are root) and
//! reads what the child reports. Without root and without the opt-out the probe must FAIL, with
//! a message that says how to run or skip it; with `STAMPEDE_SKIP_KERNEL_TESTS=1` it is skipped
//! and the skip is printed and counted past libtest's capture; in CI the opt-out is refused.

use std::process::{Command, Output};

use stampede_lab::{is_root, kernel_tests_enabled};

/// Run only as the child of the tests below (`--ignored --exact`), never by a plain run.
#[test]
#[ignore = "a probe the gate tests run as an unprivileged child"]
fn probe_kernel_test() {
    if !kernel_tests_enabled("probe_kernel_test") {
        return;
    }
    // Reached only when the gate lets the probe run: the parent counts on never seeing this.
    println!("PROBE RAN");
}

/// Runs the probe without root, with exactly these of `CI` / the opt-out set.
fn probe(env: &[(&str, &str)]) -> (bool, String) {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = if is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&exe);
        c
    } else {
        Command::new(&exe)
    };
    cmd.args([
        "--ignored",
        "--exact",
        "probe_kernel_test",
        "--test-threads=1",
    ])
    .env_remove("CI")
    .env_remove("STAMPEDE_SKIP_KERNEL_TESTS")
    .env_remove("RUST_TEST_NOCAPTURE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let Output {
        status,
        stdout,
        stderr,
    } = cmd
        .output()
        .expect("running the probe (setpriv, util-linux)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&stdout),
        String::from_utf8_lossy(&stderr)
    );
    assert!(
        !text.contains("PROBE RAN"),
        "the probe ran without root: {text}"
    );
    assert!(
        text.contains("1 passed") || text.contains("1 failed"),
        "the probe did not run at all: {text}"
    );
    (status.success(), text)
}

#[test]
fn without_root_a_kernel_test_fails_and_says_how_to_run_or_skip_it() {
    for env in [
        &[][..],
        &[("CI", "0")][..],
        &[("STAMPEDE_SKIP_KERNEL_TESTS", "0")][..],
    ] {
        let (ok, text) = probe(env);
        assert!(!ok, "{env:?}: reported as passed: {text}");
        assert!(text.contains("1 failed"), "{env:?}: {text}");
        assert!(text.contains("not running as root"), "{env:?}: {text}");
        assert!(text.contains("run it as root"), "{env:?}: {text}");
        assert!(
            text.contains("STAMPEDE_SKIP_KERNEL_TESTS=1"),
            "{env:?}: {text}"
        );
    }
}

#[test]
fn the_opt_out_skips_visibly_and_counts() {
    for value in ["1", "true", "YES"] {
        let (ok, text) = probe(&[("STAMPEDE_SKIP_KERNEL_TESTS", value)]);
        assert!(ok, "{value}: {text}");
        // Shown although the test passed (libtest hides a passing test's captured output).
        assert!(
            text.contains("SKIPPED kernel test probe_kernel_test: not running as root"),
            "{value}: {text}"
        );
        assert!(
            text.contains("1 kernel test SKIPPED in this test binary"),
            "{value}: {text}"
        );
    }
}

#[test]
fn ci_is_a_boolean_and_refuses_the_opt_out() {
    for ci in ["1", "true", "True", "yes"] {
        let (ok, text) = probe(&[("CI", ci), ("STAMPEDE_SKIP_KERNEL_TESTS", "1")]);
        assert!(!ok, "CI={ci}: {text}");
        assert!(text.contains("cannot run in CI"), "CI={ci}: {text}");
        assert!(!text.contains("SKIPPED"), "CI={ci}: {text}");
    }
}
