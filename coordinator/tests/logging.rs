//! `--log-format json` and `--quiet` on the real binary (`stampede demo`, which needs no root
//! and binds only ephemeral loopback ports): JSON log lines are JSON objects, one per line;
//! quiet leaves only warnings and errors on stderr and the summary on stdout.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_stampede");

/// Runs the demo with `flags`; returns stdout and stderr.
fn demo(flags: &[&str]) -> (String, String) {
    let out = Command::new(BIN)
        .arg("demo")
        .args(flags)
        // The default filter is under test, not the caller's.
        .env_remove("RUST_LOG")
        .env_remove("STAMPEDE_LOG_FORMAT")
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    (stdout, stderr)
}

/// Each stderr line as a JSON object.
fn json_lines(stderr: &str) -> Vec<serde_json::Value> {
    stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[test]
fn log_format_json_writes_one_object_per_line() {
    let (stdout, stderr) = demo(&["--log-format", "json"]);
    let lines = json_lines(&stderr);
    // The progress names the wait; every line has a level and a message.
    assert!(
        lines.iter().any(|l| l["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("waiting for agents: "))),
        "{stderr}"
    );
    assert!(
        lines
            .iter()
            .all(|l| l["level"].is_string() && l["fields"]["message"].is_string())
    );
    // The demo's in-process agents and target stay below INFO.
    assert!(
        lines
            .iter()
            .all(|l| !l["target"].as_str().unwrap_or("").starts_with("stampede_")),
        "{stderr}"
    );
    assert!(stdout.starts_with("run "), "{stdout}");
}

#[test]
fn quiet_keeps_stderr_to_warnings_and_the_summary_on_stdout() {
    let (stdout, stderr) = demo(&["--quiet", "--log-format", "json"]);
    for l in json_lines(&stderr) {
        assert!(matches!(l["level"].as_str(), Some("WARN" | "ERROR")), "{l}");
    }
    assert!(stdout.contains("attempts 60"), "{stdout}");
    // The summary still ends on the verdict, a paragraph of its own about the 60 attempts.
    let verdict = stdout.trim_end().rsplit("\n\n").next().unwrap();
    assert!(
        verdict.contains("60") && !verdict.contains("attempts 60"),
        "{stdout}"
    );
}
