//! `stampede schedule` and `stampede history` as a user runs them: the real binaries
//! (coordinator, agent, target), the history file on disk, capacity.html, /metrics.
//!
//! - The regression flow (a kernel test: its own network namespace, so fixed ports and the
//!   target's counters are this test's alone): the same scenario twice with `schedule
//!   --once`, the second time against a target with backlog 1 accepting 50/s.
//! - A kill -9 in the middle of a history write (injected on an event: a test hook stops
//!   inside the write transaction and says so through a FIFO).
//! - /metrics of a running scheduler, parsed by an independent parser (Python's
//!   prometheus_client).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use stampede_lab::ChildGuard;
use support::sibling_bin;

const BIN: &str = env!("CARGO_BIN_EXE_stampede");

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("stampede-sched-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `stampede ARGS` to its end (at most `bound`): exit code, stdout, stderr.
fn stampede(cmd: &mut Command, bound: Duration) -> (i32, String, String) {
    let mut child = ChildGuard::spawn(cmd.stdout(Stdio::piped()).stderr(Stdio::piped())).unwrap();
    let (mut out, mut err) = (
        child.0.stdout.take().unwrap(),
        child.0.stderr.take().unwrap(),
    );
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut out, &mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut s);
        s
    });
    let status = child
        .wait_exit(bound)
        .unwrap_or_else(|| panic!("still running after {bound:?}"));
    (
        status.code().unwrap_or(-1),
        out.join().unwrap(),
        err.join().unwrap(),
    )
}

fn history(db: &Path, args: &[&str]) -> (i32, String, String) {
    stampede(
        Command::new(BIN)
            .arg("history")
            .args(args)
            .arg("--db")
            .arg(db),
        Duration::from_secs(30),
    )
}

fn list(db: &Path) -> Vec<serde_json::Value> {
    let (code, out, err) = history(db, &["list", "--json"]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str::<serde_json::Value>(&out)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn a_slower_target_is_flagged_as_a_regression_and_charted() {
    if !stampede_lab::kernel_tests_enabled("a_slower_target_is_flagged_as_a_regression_and_charted")
    {
        return;
    }
    let (agent_bin, target_bin) = (
        sibling_bin("stampede-agent"),
        sibling_bin("stampede-target"),
    );
    let ns = stampede_lab::Netns::new("sched").unwrap();
    let dir = temp_dir("e2e");
    // Fixed ports: this namespace is the test's own.
    std::fs::write(
        dir.join("burst.toml"),
        "target = \"127.0.0.1:8000\"\ntarget_control = \"http://127.0.0.1:8001\"\n\
         connections = 200\nexpect_greeting = true\ntimeout = \"3s\"\nagent_wait = \"30s\"\nlead = \"200ms\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("capacity.toml"),
        "[[entry]]\nname = \"web-burst\"\ncron = \"0 3 * * *\"\nscenario = \"burst.toml\"\n",
    )
    .unwrap();
    let db = dir.join("history.db");
    let target = |extra: &[&str]| {
        ChildGuard::spawn(
            ns.command(&target_bin)
                .args(["--listen", "127.0.0.1:8000", "--control", "127.0.0.1:8001"])
                .args(extra)
                .stderr(Stdio::null()),
        )
        .unwrap()
    };
    let schedule = || {
        stampede(
            ns.command(BIN)
                .arg("schedule")
                .arg(dir.join("capacity.toml"))
                .arg("--db")
                .arg(&db)
                .arg("--once"),
            Duration::from_secs(90),
        )
    };
    // The agent stays up and re-attaches to the second scheduler on its own.
    let _agent = ChildGuard::spawn(
        ns.command(&agent_bin)
            .args(["--coordinator", "http://127.0.0.1:7700"])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .unwrap();
    let fast = target(&["--backlog", "1024"]);
    let (code, out, err) = schedule();
    assert_eq!(code, 0, "first run: {out}\n{err}");
    assert!(out.contains("verdict no-baseline"), "{out}");
    drop(fast);
    let _slow = target(&["--backlog", "1", "--accept-rate", "50"]);
    let (code, out, err) = schedule();
    assert_eq!(code, 2, "second run: a regression: {out}\n{err}");
    let runs = list(&db);
    assert_eq!(runs.len(), 2, "{runs:?}");
    for r in &runs {
        for key in ["run_id", "entry", "started_at", "status", "verdict"] {
            assert!(r.get(key).is_some_and(|v| !v.is_null()), "{key} in {r}");
        }
        assert_eq!(r["entry"], "web-burst");
        assert_eq!(r["status"], "complete", "{r}");
    }
    assert_eq!(runs[1]["verdict"], "regression");
    let (old, new) = (
        runs[0]["run_id"].as_str().unwrap(),
        runs[1]["run_id"].as_str().unwrap(),
    );
    // The same figures the history holds, as report.json had them.
    assert!(
        runs[1]["figures"]["listen_overflows"].as_u64().unwrap() > 0,
        "{}",
        runs[1]
    );
    let (code, out, _) = history(&db, &["compare", old, new]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("verdict: regression"), "{out}");
    assert!(out.contains("new overflows: "), "{out}");
    assert!(
        out.contains("new ghosts: ") || out.contains("new syn_retransmitted: "),
        "{out}"
    );
    assert!(out.contains("connect p99 worse: "), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("listen_overflows") && l.ends_with("changed")),
        "{out}"
    );
    // Compared the other way round nothing got worse: exit 0.
    let (code, out, _) = history(&db, &["compare", new, old]);
    assert_eq!(code, 0, "{out}");
    // capacity.html: both runs, the second marked.
    let (code, out, err) = history(
        &db,
        &[
            "report",
            "--entry",
            "web-burst",
            "--out",
            dir.join("page").to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let page = std::fs::read_to_string(dir.join("page/capacity.html")).unwrap();
    assert!(
        page.contains(&format!("<code>{old}</code>"))
            && page.contains(&format!("<code>{new}</code>"))
    );
    let row = page
        .find("<tr class=\"regression\">")
        .expect("the regressed run's row is marked");
    assert!(
        page[row..].find(new) < page[row..].find("</tr>"),
        "the marked row is run {new}"
    );
    assert!(
        !page[..row].contains(&format!("<td><code>{new}")),
        "run {new} is listed once"
    );
    // The connect chart: its axis title, the p99 line with a point per run, and the second
    // run's regression labelled on the chart.
    let start = page
        .find("data-chart=\"connect\"")
        .expect("a connect chart");
    let fig = &page[start..start + page[start..].find("</figure>").unwrap()];
    for text in ["connect latency (ms)", "connect p99", "run 2 regressed"] {
        assert!(fig.contains(text), "{text} missing from the connect chart");
    }
    let p99 = fig
        .split("<li ")
        .find(|li| li.contains("connect p99"))
        .expect("a legend entry for p99");
    assert!(p99.contains("data-points=\"2\""), "{p99}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A kill -9 while the third run is being written: the file opens, the two earlier runs
/// are listed, nothing half-written appears, and the file takes new runs.
#[test]
fn a_kill_mid_write_leaves_every_earlier_run() {
    let dir = temp_dir("kill");
    let pipe = dir.join("hook");
    let ok = Command::new("mkfifo").arg(&pipe).status().unwrap();
    assert!(ok.success());
    // No agent ever attaches: each run fails after 100 ms and is recorded as failed.
    let mut cap = String::new();
    for name in ["a", "b", "c"] {
        cap.push_str(&format!(
            "[[entry]]\nname = \"{name}\"\ncron = \"0 3 * * *\"\n[entry.scenario]\n\
             target = \"127.0.0.1:9\"\nagent_wait = \"100ms\"\n"
        ));
    }
    std::fs::write(dir.join("cap.toml"), cap).unwrap();
    let db = dir.join("h.db");
    let child = ChildGuard::spawn(
        Command::new(BIN)
            .arg("schedule")
            .arg(dir.join("cap.toml"))
            .args(["--once", "--listen", "127.0.0.1:0", "--db"])
            .arg(&db)
            .env("STAMPEDE_TEST_HOOK_HISTORY_PIPE", &pipe)
            .env("STAMPEDE_TEST_HOOK_HISTORY_AT", "3")
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .unwrap();
    // The event: the hook opened the FIFO from inside the third write's transaction.
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = pipe.clone();
    std::thread::spawn(move || {
        let _ = tx.send(std::fs::read_to_string(reader));
    });
    let said = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the scheduler reached its third write within 60 s")
        .unwrap();
    assert_eq!(said.trim(), "in transaction");
    child.signal(stampede_lab::SIGKILL).unwrap();
    drop(child);
    let runs = list(&db);
    let entries: Vec<&str> = runs.iter().map(|r| r["entry"].as_str().unwrap()).collect();
    assert_eq!(entries, ["a", "b"], "{runs:?}");
    for r in &runs {
        assert_eq!(r["status"], "failed");
        assert!(
            r["reason"].as_str().unwrap().contains("agent, 0 attached"),
            "{r}"
        );
    }
    // And it takes new runs (its WAL recovered, its lock released).
    let (code, out, err) = stampede(
        Command::new(BIN)
            .arg("schedule")
            .arg(dir.join("cap.toml"))
            .args(["--once", "--listen", "127.0.0.1:0", "--db"])
            .arg(&db),
        Duration::from_secs(60),
    );
    assert_eq!(code, 1, "failed runs exit 1: {out}{err}");
    assert_eq!(list(&db).len(), 5);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_capacity_files_are_one_line_naming_file_line_and_key() {
    let dir = temp_dir("bad");
    let path = dir.join("cap.toml");
    for (text, want) in [
        (
            "[[entry]]\nname = \"x\"\ncron = \"61 * * * *\"\nscenario = {target = \"127.0.0.1:9\"}\n",
            ":3: cron: invalid cron",
        ),
        (
            "[[entry]]\nname = \"x\"\ncron = \"* * * * *\"\nscenario = {target = \"127.0.0.1:9\"}\nnmae = 1\n",
            ":5: unknown field `nmae`",
        ),
        (
            "[[entry]]\nname = \"x\"\ncron = \"* * * * *\"\nscenario = {target = \"127.0.0.1:9\"}\n\
             [[entry]]\nname = \"x\"\ncron = \"* * * * *\"\nscenario = {target = \"127.0.0.1:9\"}\n",
            ":6: name: duplicate entry name \"x\"",
        ),
    ] {
        std::fs::write(&path, text).unwrap();
        let (code, out, err) = stampede(
            Command::new(BIN)
                .arg("schedule")
                .arg(&path)
                .arg("--db")
                .arg(dir.join("h.db")),
            Duration::from_secs(30),
        );
        assert_eq!(code, 64, "{out}{err}");
        let line = err.trim();
        assert!(!line.contains('\n'), "one line: {err}");
        assert!(line.contains(&format!("{}{want}", path.display())), "{err}");
    }
    assert!(
        !dir.join("h.db").exists(),
        "nothing is created for a refused file"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `stampede run --db`: a run that could not happen (no agent came) is recorded with its
/// reason, under the scenario file's name, and the run's own error and exit code stay.
#[test]
fn run_with_db_records_a_failed_run_with_its_reason() {
    let dir = temp_dir("rundb");
    std::fs::write(
        dir.join("nightly.toml"),
        "target = \"127.0.0.1:9\"\nagent_wait = \"100ms\"\n",
    )
    .unwrap();
    let db = dir.join("h.db");
    let (code, out, err) = stampede(
        Command::new(BIN)
            .arg("run")
            .arg(dir.join("nightly.toml"))
            .args(["--listen", "127.0.0.1:0", "--db"])
            .arg(&db),
        Duration::from_secs(30),
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.trim()
            .lines()
            .last()
            .unwrap()
            .contains("for 1 agent, 0 attached"),
        "{err}"
    );
    let runs = list(&db);
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0]["entry"], "nightly");
    assert_eq!(runs[0]["status"], "failed");
    assert_eq!(runs[0]["verdict"], "not-judged");
    assert!(
        runs[0]["reason"].as_str().unwrap().contains("0 attached"),
        "{}",
        runs[0]
    );
    // Reading commands never create a history: a wrong --db is an error, not an empty list.
    let (code, _, err) = history(&dir.join("nope.db"), &["list"]);
    assert_eq!(code, 1);
    assert!(err.contains("no history at"), "{err}");
    assert!(!dir.join("nope.db").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}
