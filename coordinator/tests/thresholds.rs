//! `--fail-if` as a user meets it, through the binary and a real demo run: a threshold that
//! holds fails the run with exit 2, one that does not passes with exit 0, both listed in the
//! summary and in report.json; a bad expression is one line naming it, exit 64.

use std::path::PathBuf;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_stampede");

/// A small demo (6 connections, a backlog that holds them all) with these thresholds.
fn demo(fail_if: &[&str], out: Option<&PathBuf>) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(["demo", "--connections", "6", "--backlog", "64"]);
    for expr in fail_if {
        cmd.args(["--fail-if", expr]);
    }
    if let Some(dir) = out {
        cmd.arg("--out").arg(dir);
    }
    cmd.output().unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn thresholds_that_do_not_hold_pass_with_exit_0() {
    let dir = std::env::temp_dir().join(format!("stampede-thresholds-{}", std::process::id()));
    let out = demo(&["connect.p99 > 1h", "attempts<6"], Some(&dir));
    let summary = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{summary}");
    assert!(summary.contains("thresholds: 0 of 2 failed"), "{summary}");
    assert!(summary.contains("  pass connect.p99 > 1h: "), "{summary}");
    assert!(summary.contains("  pass attempts<6: 6\n"), "{summary}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("report.json")).unwrap()).unwrap();
    let thresholds = report["thresholds"].as_array().unwrap();
    assert_eq!(thresholds.len(), 2);
    assert_eq!(thresholds[1]["expr"], "attempts<6");
    assert_eq!(thresholds[1]["value"], 6);
    assert_eq!(thresholds[1]["unit"], "count");
    assert!(
        thresholds.iter().all(|t| t["passed"] == true),
        "{thresholds:?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_threshold_that_holds_fails_the_run_with_exit_2() {
    let out = demo(&["attempts==6", "connect.p99>1h"], None);
    let summary = stdout(&out);
    assert_eq!(out.status.code(), Some(2), "{summary}");
    assert!(summary.contains("thresholds: 1 of 2 failed"), "{summary}");
    assert!(summary.contains("  FAIL attempts==6: 6\n"), "{summary}");
    assert!(summary.contains("  pass connect.p99>1h: "), "{summary}");
}

#[test]
fn a_bad_expression_is_one_line_and_exit_64() {
    for (expr, needle) in [
        ("ghost>>0", "invalid count"),
        ("p99>50ms", "unknown metric \"p99\""),
        ("connect.p99>50", "missing unit"),
        ("overflows>1%", "only counts of attempts"),
    ] {
        let out = demo(&[expr], None);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{expr}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(
            err.contains(&format!("invalid threshold \"{expr}\"")),
            "{err}"
        );
        assert!(err.contains(needle), "{expr}: {err}");
        // Refused before anything ran: no summary.
        assert!(out.stdout.is_empty());
    }
}
