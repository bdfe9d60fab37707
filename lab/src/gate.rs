//! Whether a kernel test runs, fails or is skipped: the one gate every kernel test calls.
//!
//! A kernel test that cannot run (no root, no `ip`) must never be reported as passed. So:
//! - it runs when it can (root and iproute2), whatever the environment says;
//! - when it cannot, it FAILS with a message that says how to run it (as root) or skip it
//!   ([`SKIP_VAR`]`=1`);
//! - with that explicit opt-out it is skipped, and the skip is visible: a line per test and a
//!   count per test binary at exit, both written to the process's real stderr (libtest captures
//!   only `print!`/`eprint!`, so a skip notice printed that way would be hidden behind `ok`);
//! - in CI (`CI` true) the opt-out is refused: CI must run the kernel tests.
//!
//! Why not `#[ignore]`: libtest decides "ignored" at compile time, so a root run would need
//! `--ignored` to run them and a plain `cargo test` would hide them; and a test cannot mark
//! itself ignored at run time. Printing to the uncaptured stderr is what shows in the output
//! of `cargo test` today.

use std::io::Write;
use std::sync::Mutex;

/// The explicit opt-out: `STAMPEDE_SKIP_KERNEL_TESTS=1` skips (and counts) kernel tests that
/// cannot run. It never skips a test that can run, and CI refuses it.
pub const SKIP_VAR: &str = "STAMPEDE_SKIP_KERNEL_TESTS";

/// What the gate decided for one test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The test can run: run it.
    Run,
    /// The test cannot run and the user opted out: skip it, visibly.
    Skip {
        /// Why it cannot run.
        why: &'static str,
    },
    /// The test cannot run and nobody said it may be skipped: fail with this message.
    Fail {
        /// What to do about it, in one line.
        message: String,
    },
}

/// What the gate looks at, gathered once so [`decide`] is a pure function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conditions {
    /// Effective uid 0.
    pub root: bool,
    /// `ip -V` succeeds (iproute2 installed).
    pub ip: bool,
    /// `CI` is true.
    pub ci: bool,
    /// [`SKIP_VAR`] is true.
    pub skip: bool,
}

impl Conditions {
    /// The conditions of this process now.
    pub fn current() -> Conditions {
        Conditions {
            root: crate::is_root(),
            ip: crate::ip_available(),
            ci: env_flag("CI"),
            skip: env_flag(SKIP_VAR),
        }
    }
}

/// Reads an environment variable as a boolean: `1`, `true`, `yes` (any case, surrounding
/// blanks ignored) are true; anything else, or unset, is false.
pub fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| truthy(&v))
}

/// `1`, `true`, `yes` in any case (blanks around ignored) are true; everything else is false.
pub fn truthy(value: &str) -> bool {
    let v = value.trim();
    ["1", "true", "yes"]
        .iter()
        .any(|t| v.eq_ignore_ascii_case(t))
}

/// The decision for `test` under `c`.
pub fn decide(test: &str, c: Conditions) -> Verdict {
    let why = match (c.root, c.ip) {
        (true, true) => return Verdict::Run,
        (false, _) => "not running as root",
        (true, false) => "the `ip` command (iproute2) is missing",
    };
    if c.ci {
        return Verdict::Fail {
            message: format!(
                "kernel test {test} cannot run in CI ({why}): CI (CI=true) must run kernel \
                 tests, so {SKIP_VAR} is refused there; run as root with iproute2 installed"
            ),
        };
    }
    if c.skip {
        return Verdict::Skip { why };
    }
    Verdict::Fail {
        message: format!(
            "kernel test {test} cannot run ({why}): it needs root, iproute2 and network \
             namespaces; run it as root (e.g. `sudo -E env PATH=$PATH cargo test`), or skip the \
             kernel tests with {SKIP_VAR}=1 (each skip is counted in the output)"
        ),
    }
}

/// The gate every kernel test starts with: `if !kernel_tests_enabled("name") { return; }`.
///
/// True when the test can run. When it cannot: panics with how to run or skip it, unless
/// [`SKIP_VAR`] is true outside CI, in which case it records and prints the skip (to the real
/// stderr) and returns false.
pub fn kernel_tests_enabled(test: &str) -> bool {
    match decide(test, Conditions::current()) {
        Verdict::Run => true,
        Verdict::Fail { message } => panic!("{message}"),
        Verdict::Skip { why } => {
            record_skip(test, why);
            false
        }
    }
}

/// The names of the tests this process skipped, for the summary at exit.
static SKIPPED: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn record_skip(test: &str, why: &str) {
    let first = {
        let mut skipped = SKIPPED.lock().unwrap_or_else(|p| p.into_inner());
        skipped.push(test.to_owned());
        skipped.len() == 1
    };
    if first {
        // SAFETY: `print_summary` is an `extern "C" fn()` that neither unwinds (it catches
        // nothing that can panic: a poisoned lock is recovered, write errors are ignored) nor
        // touches thread-locals; atexit only stores the pointer.
        unsafe {
            libc::atexit(print_summary);
        }
    }
    uncaptured(&format!(
        "SKIPPED kernel test {test}: {why} and {SKIP_VAR} is set; it did not run\n"
    ));
}

extern "C" fn print_summary() {
    let skipped = SKIPPED.lock().unwrap_or_else(|p| p.into_inner());
    let n = skipped.len();
    uncaptured(&format!(
        "\n*** {n} kernel test{} SKIPPED in this test binary ({SKIP_VAR} is set; they need \
         root): {} ***\n",
        if n == 1 { "" } else { "s" },
        skipped.join(", ")
    ));
}

/// Writes to the process's stderr, past libtest's capture (which only redirects the print
/// macros).
fn uncaptured(text: &str) {
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: Conditions = Conditions {
        root: true,
        ip: true,
        ci: false,
        skip: false,
    };

    #[test]
    fn ci_and_the_opt_out_are_booleans() {
        for yes in ["1", "true", "True", "TRUE", "yes", "YES", " true\n"] {
            assert!(truthy(yes), "{yes:?}");
        }
        for no in ["", "0", "false", "no", "False", "2", "y", "on", "truee"] {
            assert!(!truthy(no), "{no:?}");
        }
    }

    #[test]
    fn a_test_that_can_run_runs_whatever_the_environment_says() {
        for (ci, skip) in [(false, false), (true, false), (false, true), (true, true)] {
            assert_eq!(decide("t", Conditions { ci, skip, ..ROOT }), Verdict::Run);
        }
    }

    #[test]
    fn without_root_and_without_the_opt_out_the_test_fails_saying_how_to_run_or_skip() {
        let c = Conditions {
            root: false,
            ..ROOT
        };
        let Verdict::Fail { message } = decide("burst", c) else {
            panic!("must fail");
        };
        assert!(message.contains("kernel test burst"), "{message}");
        assert!(message.contains("not running as root"), "{message}");
        assert!(message.contains("as root"), "{message}");
        assert!(
            message.contains("STAMPEDE_SKIP_KERNEL_TESTS=1"),
            "{message}"
        );
        // No ip: the same, with the reason.
        let Verdict::Fail { message } = decide("burst", Conditions { ip: false, ..ROOT }) else {
            panic!("must fail");
        };
        assert!(message.contains("iproute2"), "{message}");
    }

    #[test]
    fn the_opt_out_skips_outside_ci_only() {
        let skip = Conditions {
            root: false,
            skip: true,
            ..ROOT
        };
        assert_eq!(
            decide("t", skip),
            Verdict::Skip {
                why: "not running as root"
            }
        );
        let Verdict::Fail { message } = decide("t", Conditions { ci: true, ..skip }) else {
            panic!("CI must refuse the opt-out");
        };
        assert!(message.contains("CI"), "{message}");
        let in_ci = Conditions {
            root: false,
            ci: true,
            ..ROOT
        };
        assert!(matches!(decide("t", in_ci), Verdict::Fail { .. }));
    }
}
