//! Nothing lost through unchecked input or output (issue 9, items 5 and 7), with the binaries
//! as black boxes: every bad value is refused with one line and exit 64 before anything runs,
//! values are checked before missing settings, files named by the user are read with bounds,
//! an unusable `--out` is found before the run and results that still cannot be written land
//! in a named fallback directory with the summary printed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use stampede_lab::{ChildGuard, Netns, kernel_tests_enabled};
use support::sibling_bin;

mod support;

const BIN: &str = env!("CARGO_BIN_EXE_stampede");

/// Runs `cmd` to its end, killing it past `limit` (a refusal is immediate; before these
/// checks some of these commands waited for agents, read /dev/zero or blocked on a FIFO).
/// Its output is drained meanwhile, so a huge error line cannot block it.
fn run_within(cmd: &mut Command, limit: Duration) -> (Output, Duration) {
    let started = Instant::now();
    let out = stampede_lab::run_within(cmd, limit);
    (out, started.elapsed())
}

fn stampede(args: &[&str]) -> Output {
    run_within(Command::new(BIN).args(args), Duration::from_secs(20)).0
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Exit 64 and exactly one line on stderr that contains `needle`.
fn assert_refused(args: &[&str], out: &Output, needle: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(64), "{args:?}: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
    assert!(err.contains(needle), "{args:?}: {needle:?} not in {err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// A directory of this test's own, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("stampede-inputs-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn file(&self, name: &str, body: impl AsRef<[u8]>) -> String {
        let p = self.0.join(name);
        std::fs::write(&p, body).unwrap();
        p.display().to_string()
    }

    fn path(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `stampede run` on loopback, waiting long for agents (unless `extra` says how long): a
/// refusal must come at once.
fn run_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["run", "--listen", "127.0.0.1:0"];
    if !extra.contains(&"--agent-wait") {
        v.extend(["--agent-wait", "60s"]);
    }
    v.extend(extra);
    v
}

#[test]
fn values_are_refused_in_one_line_before_missing_settings() {
    let dir = TempDir::new("values");
    let scenario = |name: &str, body: &str| dir.file(name, body);
    let neg_backlog = scenario(
        "neg.toml",
        "target = \"127.0.0.1:9\"\ntarget_control = \"http://127.0.0.1:1\"\nbacklog = -5\n",
    );
    let many_agents = scenario(
        "agents.toml",
        "target = \"127.0.0.1:9\"\nagents = 18446744073709551615\n",
    );
    let sweep_neg = scenario(
        "sweep.toml",
        "target = \"127.0.0.1:9\"\ntarget_control = \"http://127.0.0.1:1\"\n[sweep]\nbacklogs = [8, -5]\n",
    );
    let cases: Vec<(Vec<&str>, &str)> = vec![
        // Values first: no target is given, yet the bad value is what is reported.
        (run_args(&["--connections", "0"]), "invalid connections 0"),
        (
            run_args(&["--connections", "0", "--backlog", "8"]),
            "invalid connections 0",
        ),
        (run_args(&["--backlog=-5"]), "invalid backlog \"-5\""),
        (
            run_args(&[
                "--target",
                "127.0.0.1:9",
                "--target-control",
                "http://127.0.0.1:1",
                "--backlog",
                "-5",
            ]),
            "invalid backlog \"-5\"",
        ),
        (vec!["run", &neg_backlog], "invalid backlog \"-5\""),
        (
            vec!["run", &many_agents],
            "invalid agents \"18446744073709551615\": expected 1 to 10000",
        ),
        (
            run_args(&["--agents", "18446744073709551615"]),
            "expected 1 to 10000",
        ),
        (run_args(&["--agents", "10001"]), "expected 1 to 10000"),
        (
            run_args(&["--connections", "18446744073709551615"]),
            "invalid connections \"18446744073709551615\"",
        ),
        (run_args(&["--connections=-5"]), "'-5'"),
        (run_args(&["--agent-wait", "0"]), "invalid agent_wait \"0\""),
        (run_args(&["--agent-wait", "25h"]), "at most 24h"),
        (run_args(&["--lead", "2m"]), "invalid lead \"2m\""),
        (run_args(&["--hold", "25h"]), "invalid hold"),
        (
            run_args(&["--pattern", "waves:4294967295:1000000h"]),
            "invalid pattern duration",
        ),
        (run_args(&["--timeout", "2h"]), "invalid timeout"),
        (
            vec!["sweep", "--listen", "127.0.0.1:0", "--backlogs", "8,-5"],
            "invalid backlog \"-5\"",
        ),
        (vec!["sweep", &sweep_neg], "invalid backlog \"-5\""),
        (
            vec![
                "sweep",
                "--listen",
                "127.0.0.1:0",
                "--backlogs",
                "8",
                "--p99-max",
                "0",
            ],
            "invalid p99_max \"0\"",
        ),
        (vec!["demo", "--backlog", "-5"], "invalid backlog \"-5\""),
        (vec!["demo", "--agents", "100000"], "agents"),
        // Missing settings still named once the values are good.
        (run_args(&["--connections", "5"]), "no target"),
    ];
    for (args, needle) in &cases {
        assert_refused(args, &stampede(args), needle);
    }
    // The environment goes through the same rule as the flag.
    let args = run_args(&["--target", "127.0.0.1:9"]);
    let (out, _) = run_within(
        Command::new(BIN).args(&args).env("STAMPEDE_BACKLOG", "-5"),
        Duration::from_secs(20),
    );
    assert_refused(&args, &out, "invalid backlog \"-5\"");
}

#[test]
fn stampede_target_refuses_a_negative_backlog() {
    let bin = sibling_bin("stampede-target");
    for (backlog, ok) in [("-5", false), ("-1", false), ("0", true)] {
        let args = [
            "--listen",
            "127.0.0.1:0",
            "--backlog",
            backlog,
            "--duration",
            "50ms",
        ];
        let (out, _) = run_within(Command::new(&bin).args(args), Duration::from_secs(20));
        if ok {
            assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        } else {
            assert_refused(&args, &out, &format!("invalid backlog \"{backlog}\""));
        }
    }
}

#[test]
fn configure_refuses_a_negative_backlog_and_keeps_the_listener() {
    if !kernel_tests_enabled("configure_refuses_a_negative_backlog_and_keeps_the_listener") {
        return;
    }
    let ns = Netns::new("cfgbacklog").unwrap();
    ns.block_on(async {
        let config = stampede_target::config::Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            backlog: 8,
            ..Default::default()
        };
        let target = stampede_target::Target::bind(&config).unwrap();
        let handle = target.handle();
        let change = |backlog| stampede_target::Change {
            backlog: Some(backlog),
            ..Default::default()
        };
        let e = handle.configure(change(-5)).unwrap_err().to_string();
        assert!(e.contains("invalid backlog \"-5\""), "{e}");
        // Refused before re-listening: the kernel still has backlog 8, not somaxconn.
        let stats = handle.stats().unwrap();
        assert_eq!(stats.backlog_requested, Some(8));
        assert_eq!(stats.backlog_effective, 8);
        let stats = handle.configure(change(0)).unwrap();
        assert_eq!(stats.backlog_effective, 0);
    });
}

#[test]
fn long_values_are_cut_in_error_lines() {
    let dir = TempDir::new("long");
    // A flag value near the kernel's limit for one argument, and 900 kB values in a scenario.
    let flag = "x".repeat(120_000);
    let huge = "y".repeat(900_000);
    let files = [
        dir.file(
            "pattern.toml",
            format!("target = \"127.0.0.1:9\"\npattern = \"{huge}\"\n"),
        ),
        dir.file("key.toml", format!("{huge} = 1\n")),
        dir.file(
            "url.toml",
            format!("target = \"127.0.0.1:9\"\ntarget_control = \"http://{huge}\"\n"),
        ),
    ];
    let mut cases = vec![
        run_args(&["--target", "127.0.0.1:9", "--pattern", &flag]),
        run_args(&["--target", &flag]),
        vec!["sweep", "--backlogs", &flag],
    ];
    cases.extend(files.iter().map(|f| vec!["run", f.as_str()]));
    for args in &cases {
        let out = stampede(args);
        let err = stderr(&out);
        assert_eq!(
            out.status.code(),
            Some(64),
            "{}",
            &err[..err.len().min(300)]
        );
        assert_eq!(err.trim_end().lines().count(), 1);
        assert!(err.len() < 1000, "{} bytes: {}", err.len(), &err[..300]);
        assert!(err.contains('…'), "{err}");
    }
}

#[test]
fn scenario_files_are_small_regular_files() {
    let dir = TempDir::new("scn");
    let big = dir.file("big.toml", format!("# {}\n", "z".repeat(2 << 20)));
    let fifo = dir.path("fifo");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let subdir = dir.0.display().to_string();
    for (path, needle) in [
        ("/dev/zero", "not a regular file but a character device"),
        (fifo.as_str(), "not a regular file but a FIFO"),
        (subdir.as_str(), "not a regular file but a directory"),
        (big.as_str(), "larger than 1048576 bytes"),
    ] {
        let args = ["run", path];
        // Before: /dev/zero grew the process without end, the FIFO blocked for ever.
        let (out, _) = run_within(Command::new(BIN).args(args), Duration::from_secs(20));
        assert_refused(&args, &out, needle);
        assert!(stderr(&out).contains(path), "{}", stderr(&out));
    }
}

#[test]
fn token_files_are_regular_and_private() {
    let dir = TempDir::new("tok");
    let loose = dir.file("loose", "s3cret-token\n");
    let tight = dir.file("tight", "s3cret-token\n");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(&tight, std::fs::Permissions::from_mode(0o600)).unwrap();
    for (path, needle) in [
        ("/dev/zero", "is a character device, not a regular file"),
        (
            dir.0.to_str().unwrap(),
            "is a directory, not a regular file",
        ),
    ] {
        let args = run_args(&["--target", "127.0.0.1:9", "--token-file", path]);
        assert_refused(&args, &stampede(&args), needle);
    }
    // Readable by others: used, with a warning that names the file and mode, never the token.
    for (path, warned) in [(&loose, true), (&tight, false)] {
        let args = [
            "run",
            "--listen",
            "127.0.0.1:0",
            "--target",
            "127.0.0.1:9",
            "--agent-wait",
            "50ms",
            "--token-file",
            path,
        ];
        let out = stampede(&args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("0 attached"), "{err}");
        let warning = err
            .lines()
            .find(|l| l.contains("WARN") && l.contains("token file"));
        assert_eq!(warning.is_some(), warned, "{path}: {err}");
        if let Some(w) = warning {
            assert!(w.contains(path.as_str()) && w.contains("0644"), "{w}");
        }
        assert!(!err.contains("s3cret"), "{err}");
    }
}

#[test]
fn unwritable_out_is_refused_before_anything_runs() {
    let dir = TempDir::new("out");
    let file = dir.file("plain", "not a directory");
    let under_file = format!("{file}/out");
    for out_dir in [under_file.as_str(), "/proc/stampede-out"] {
        for args in [
            run_args(&["--target", "127.0.0.1:9", "--out", out_dir]),
            vec![
                "sweep",
                "--listen",
                "127.0.0.1:0",
                "--agent-wait",
                "60s",
                "--target",
                "127.0.0.1:9",
                "--target-control",
                "http://127.0.0.1:1",
                "--backlogs",
                "8",
                "--out",
                out_dir,
            ],
            vec!["demo", "--out", out_dir],
        ] {
            // Before: the coordinator waited for its agents (60 s here), ran, then failed.
            let (out, took) = run_within(Command::new(BIN).args(&args), Duration::from_secs(20));
            assert_refused(&args, &out, "--out is not writable");
            assert!(stderr(&out).contains(out_dir), "{}", stderr(&out));
            assert!(!stderr(&out).contains("waiting for agents"));
            assert!(took < Duration::from_secs(10), "{took:?}");
        }
    }
}

/// The fallback directory the last stderr line names, checked to be new and in the temp dir.
fn fallback_named(err: &str) -> PathBuf {
    let line = err.trim().lines().last().unwrap();
    let (_, rest) = line.split_once("written to ").expect(line);
    let dir = PathBuf::from(rest.strip_suffix(" instead").expect(line));
    assert!(dir.starts_with(std::env::temp_dir()), "{line}");
    dir
}

#[test]
fn demo_results_that_cannot_be_written_go_to_a_named_fallback() {
    if !kernel_tests_enabled("demo_results_that_cannot_be_written_go_to_a_named_fallback") {
        return;
    }
    let dir = TempDir::new("fallback");
    // --out passes the check, but report.json cannot be written: a directory holds its name.
    let out_dir = dir.0.join("out");
    std::fs::create_dir_all(out_dir.join("report.json")).unwrap();
    let ns = Netns::new("fallback").unwrap();
    let (out, _) = run_within(
        ns.command(BIN).args(["demo", "--out"]).arg(&out_dir),
        Duration::from_secs(60),
    );
    let err = stderr(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{err}");
    // The summary is printed all the same, and the error line says where the report went.
    assert!(stdout.contains("attempts 60"), "{stdout}");
    let line = err.trim().lines().last().unwrap();
    assert!(line.contains(&out_dir.display().to_string()), "{line}");
    let fallback = fallback_named(&err);
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fallback.join("report.json")).unwrap())
            .unwrap();
    let total: u64 = report["outcomes"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(total, 60);
    for f in ["report.csv", "report.html", "report.hlog"] {
        assert!(fallback.join(f).is_file(), "{f}");
    }
    std::fs::remove_dir_all(&fallback).unwrap();
}

#[test]
fn sweep_results_that_cannot_be_written_go_to_a_named_fallback() {
    if !kernel_tests_enabled("sweep_results_that_cannot_be_written_go_to_a_named_fallback") {
        return;
    }
    let dir = TempDir::new("sweepfb");
    let out_dir = dir.0.join("out");
    std::fs::create_dir_all(out_dir.join("sweep.json")).unwrap();
    // A namespace of its own: fixed ports collide with nothing.
    let ns = Netns::new("sweepfb").unwrap();
    // The sweep configures the target first: start it once the target says it listens.
    let _target = ChildGuard::spawn_until_logged(
        ns.command(sibling_bin("stampede-target")).args([
            "--listen",
            "127.0.0.1:8000",
            "--control",
            "127.0.0.1:8001",
        ]),
        "listening",
        Duration::from_secs(60),
    );
    let _agent = ChildGuard::spawn(
        ns.command(sibling_bin("stampede-agent"))
            .args(["--coordinator", "http://127.0.0.1:7700", "--id", "a1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .unwrap();
    let (out, _) = run_within(
        ns.command(BIN)
            .args(["sweep", "--listen", "127.0.0.1:7700", "--agent-wait", "30s"])
            .args(["--target", "127.0.0.1:8000"])
            .args(["--target-control", "http://127.0.0.1:8001"])
            .args(["--backlogs", "4,16", "--connections", "20", "--out"])
            .arg(&out_dir),
        Duration::from_secs(90),
    );
    let err = stderr(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(stdout.contains("backlog"), "{stdout}{err}");
    let fallback = fallback_named(&err);
    let sweep: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fallback.join("sweep.json")).unwrap())
            .unwrap();
    assert_eq!(sweep["steps"].as_array().unwrap().len(), 2, "{sweep}");
    assert!(fallback.join("sweep.html").is_file());
    std::fs::remove_dir_all(&fallback).unwrap();
}

#[test]
fn agent_fire_checks_its_flags_before_firing() {
    let bin = sibling_bin("stampede-agent");
    let dir = TempDir::new("fire");
    let file = dir.file("plain", "x");
    let json = format!("{file}/report.json");
    let hlog = dir.0.display().to_string();
    for (extra, needle) in [
        (["--json", json.as_str()], "--json"),
        (["--hlog", hlog.as_str()], "--hlog"),
        (["--workers", "100000"], "invalid workers \"100000\""),
        (["--workers", "0"], "invalid workers \"0\""),
    ] {
        // Port 9 on loopback: nothing listens, and nothing may be fired at it anyway.
        let mut args = vec!["fire", "--target", "127.0.0.1:9", "--connections", "5"];
        args.extend(extra);
        let (out, _) = run_within(Command::new(&bin).args(&args), Duration::from_secs(20));
        assert_refused(&args, &out, needle);
        assert!(out.stdout.is_empty(), "a summary means it fired");
    }
    assert!(!Path::new(&json).exists());
}
