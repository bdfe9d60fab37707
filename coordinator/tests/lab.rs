//! Whole-system runs as separate processes on separate "hosts": network namespaces on a
//! bridge with addresses from 198.18.0.0/15 (stampede-lab). Host 0 runs the coordinator,
//! hosts 1–3 the agents, host 4 the target. Kernel tests: they need root and skip loudly
//! without it, except in CI where they must run.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use stampede_lab::{ChildGuard, Lab, kernel_tests_enabled};
use support::sibling_bin;

mod support;

struct Setup {
    lab: Lab,
    dir: PathBuf,
    token: PathBuf,
    _target: ChildGuard,
    agents: Vec<ChildGuard>,
}

const COORD: usize = 0;
const TARGET: usize = 4;

fn setup(tag: &str, backlog: &str) -> Setup {
    let lab = Lab::new(tag, 5).unwrap();
    let dir = std::env::temp_dir().join(format!("stampede-lab-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let token = dir.join("token");
    std::fs::write(&token, "lab-secret\n").unwrap();
    let target_ip = lab.addr(TARGET);
    let target = wait_for_line(
        lab.host(TARGET)
            .command(sibling_bin("stampede-target"))
            .args([
                "--listen",
                &format!("{target_ip}:8000"),
                "--backlog",
                backlog,
                "--control",
                &format!("{target_ip}:8001"),
                "--token-file",
                token.to_str().unwrap(),
                "--duration",
                "120s",
            ]),
        "listening",
    );
    let coordinator_url = format!("http://{}:7700", lab.addr(COORD));
    let agents = (1..=3)
        .map(|i| {
            let mut cmd = lab.host(i).command(sibling_bin("stampede-agent"));
            cmd.args([
                "--coordinator",
                &coordinator_url,
                "--token-file",
                token.to_str().unwrap(),
                "--allow-target",
                "198.18.0.0/24",
                "--id",
                &format!("a{i}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
            ChildGuard::spawn(&mut cmd).unwrap()
        })
        .collect();
    Setup {
        lab,
        dir,
        token,
        _target: target,
        agents,
    }
}

/// Spawns `cmd` with stderr piped and returns once a stderr line contains `needle`
/// (bounded by the child's own lifetime: it exits on error).
fn wait_for_line(cmd: &mut Command, needle: &str) -> ChildGuard {
    wait_for(cmd, needle, |l| l.contains(needle))
}

/// Spawns `cmd` with stderr piped and returns once a stderr line satisfies `event` (described
/// by `what`), bounded by the child's own lifetime.
fn wait_for(cmd: &mut Command, what: &str, event: impl Fn(&str) -> bool) -> ChildGuard {
    let mut child = ChildGuard::spawn(cmd.stdout(Stdio::null()).stderr(Stdio::piped())).unwrap();
    let mut lines = BufReader::new(child.0.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    loop {
        match lines.next() {
            Some(Ok(l)) if event(&l) => break,
            Some(Ok(l)) => seen.push(l),
            other => panic!(
                "child exited before printing {what:?} ({other:?}):\n{}",
                seen.join("\n")
            ),
        }
    }
    std::thread::spawn(move || for _ in lines {});
    child
}

/// The attempts decided in a coordinator progress line (`N of M attempts decided, ...`).
fn attempts_done(line: &str) -> Option<u64> {
    let head = line
        .split(" attempts decided")
        .next()
        .filter(|_| line.contains(" attempts decided"))?;
    let mut words = head.rsplitn(4, ' ');
    let (_total, of, done) = (words.next()?, words.next()?, words.next()?);
    (of == "of").then_some(())?;
    done.replace(',', "").parse().ok()
}

fn coordinator_cmd(s: &Setup, extra: &[&str]) -> Command {
    let target_ip = s.lab.addr(TARGET);
    let mut cmd = s.lab.host(COORD).command(sibling_bin("stampede"));
    cmd.args([
        "run",
        "--listen",
        &format!("{}:7700", s.lab.addr(COORD)),
        "--agents",
        "3",
        "--agent-wait",
        "20s",
        "--target",
        &format!("{target_ip}:8000"),
        "--target-control",
        &format!("http://{target_ip}:8001"),
        "--token-file",
        s.token.to_str().unwrap(),
        "--expect-greeting",
        "--timeout",
        "3s",
        "--out",
        s.dir.to_str().unwrap(),
    ])
    .args(extra);
    cmd
}

fn read_report(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap()
}

#[test]
fn progress_lines_are_parsed() {
    let line = "2026-11-27T13:00:00Z INFO stampede::progress: 1,120 of 4,000 attempts decided, \
                the rest waiting up to 3 s more for their greeting";
    assert_eq!(attempts_done(line), Some(1120));
    assert_eq!(
        attempts_done("start in 300ms at 2026-11-27T13:00:00Z"),
        None
    );
}

fn outcome_sum(v: &serde_json::Value) -> u64 {
    v.as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum()
}

#[test]
fn three_agent_hosts_synchronized_burst() {
    if !kernel_tests_enabled("three_agent_hosts_synchronized_burst") {
        return;
    }
    let s = setup("sync", "1024");
    let out = coordinator_cmd(&s, &["--connections", "300"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let r = read_report(&s.dir);
    assert_eq!(r["partial"], false);
    let agents = r["agents"].as_array().unwrap();
    assert_eq!(agents.len(), 3);
    // Every attempt accounted for, per agent and in the merge.
    assert_eq!(outcome_sum(&r["outcomes"]), 300, "{r}");
    let mut per_agent = 0;
    let mut starts = Vec::new();
    for a in agents {
        assert_eq!(a["attempts"], a["connections"], "{a}");
        per_agent += a["attempts"].as_u64().unwrap();
        assert!(a["clock_offset_us"].is_i64());
        // Same kernel clock on every host, so the offset is within its own uncertainty
        // (plus rounding) and the uncertainty is a LAN-like figure.
        let unc = a["clock_uncertainty_us"].as_u64().unwrap();
        assert!(unc < 20_000, "{a}");
        assert!(
            a["clock_offset_us"].as_i64().unwrap().unsigned_abs() <= unc + 1,
            "{a}"
        );
        starts.push(a["start_error_us"].as_i64().unwrap());
    }
    assert_eq!(per_agent, 300);
    // The spread is what the agents' own first connects say it is, and it is small: a
    // generous bound here; the benchmark reports the real figure.
    let spread = r["start_spread_us"].as_u64().unwrap();
    let (lo, hi) = (starts.iter().min().unwrap(), starts.iter().max().unwrap());
    assert!(
        (spread as i64 - (hi - lo)).abs() <= 2,
        "{spread} vs {starts:?}"
    );
    assert!(spread < 50_000, "start spread {spread}us");
    assert!(starts.iter().all(|e| e.abs() < 50_000), "{starts:?}");
    // The target saw the run: a big backlog accepts everything.
    assert_eq!(r["target"]["accepted"], 300, "{r}");
    assert_eq!(r["outcomes"]["established"], 300, "{r}");
    std::fs::remove_dir_all(&s.dir).unwrap();
}

#[test]
fn killed_agent_makes_the_run_partial() {
    if !kernel_tests_enabled("killed_agent_makes_the_run_partial") {
        return;
    }
    let mut s = setup("kill", "1024");
    // A 4 s open-loop ramp, so the run is surely in progress when an agent dies.
    // The agent dies once the coordinator reports 50 of the 400 attempts done (the agents'
    // heartbeats and intervals say so): the run is surely in progress, whatever the load.
    let mut coordinator = wait_for(
        &mut coordinator_cmd(&s, &["--connections", "400", "--pattern", "ramp:100:4s"]),
        "50 attempts decided",
        |l| attempts_done(l).is_some_and(|n| n >= 50),
    );
    let victim = &mut s.agents[1];
    victim.0.kill().unwrap();
    let t = Instant::now();
    let status = coordinator.0.wait().unwrap();
    // Bounded: the run ends within its own deadline, not never.
    assert!(t.elapsed() < Duration::from_secs(30));
    assert_eq!(status.code(), Some(1), "a partial run is not a success");
    let r = read_report(&s.dir);
    assert_eq!(r["partial"], true);
    assert_eq!(r["lost_agents"], serde_json::json!(["a2"]));
    for a in r["agents"].as_array().unwrap() {
        if a["id"] == "a2" {
            assert_eq!(a["complete"], false);
            assert!(
                a["attempts"].as_u64().unwrap() < a["connections"].as_u64().unwrap(),
                "{a}"
            );
        } else {
            assert_eq!(a["complete"], true, "{a}");
            assert_eq!(a["attempts"], a["connections"], "{a}");
        }
    }
    std::fs::remove_dir_all(&s.dir).unwrap();
}
