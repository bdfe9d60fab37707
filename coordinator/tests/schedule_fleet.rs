//! `stampede schedule` checks the fleet each capacity entry waits for against the descriptor
//! limit before it listens: the endpoint holds every entry's fleet in turn, so the largest
//! must fit whatever the endpoint's own `--agents` (the default under the entries) says.
//! The real binary, with the limit lowered for it alone (hard 4,096: room for 3,008 agents).

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn temp_dir(tag: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("stampede-sched-fleet-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// One `[[entry]]` running against the discard port, waiting `wait` for `agents`.
fn entry(name: &str, agents: usize) -> String {
    format!(
        "[[entry]]\nname = \"{name}\"\ncron = \"0 3 * * *\"\n[entry.scenario]\n\
         target = \"127.0.0.1:9\"\nagents = {agents}\nagent_wait = \"1s\"\n"
    )
}

/// `stampede schedule --once CAP` under a descriptor limit of 4,096, in `dir` (bounded: a
/// refusal is at once, a run waits 1 s for agents that never come).
fn schedule_once(dir: &std::path::Path, capacity: &str) -> (Output, Duration) {
    let cap = dir.join("cap.toml");
    std::fs::write(&cap, capacity).unwrap();
    let began = Instant::now();
    let out = Command::new("timeout")
        .arg("60")
        .arg("sh")
        .arg("-c")
        .arg(r#"ulimit -Sn 1024 && ulimit -Hn 4096 && exec "$0" schedule --once "$1" --db "$2" --listen 127.0.0.1:0"#)
        .arg(env!("CARGO_BIN_EXE_stampede"))
        .arg(&cap)
        .arg(dir.join("history.db"))
        .output()
        .unwrap();
    (out, began.elapsed())
}

/// An entry whose fleet cannot fit is refused before anything listens, in one line naming
/// the entry and its line, exit 64, although the endpoint's `--agents` (1) would fit; the
/// same file without it is served (its run then finds no agent: exit 1, not 64).
#[test]
fn the_largest_entry_fleet_is_checked_against_the_descriptors() {
    let dir = temp_dir("big");
    let (out, took) = schedule_once(
        &dir,
        &format!("{}{}", entry("small", 2), entry("big", 5000)),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(took < Duration::from_secs(30), "refused at once: {took:?}");
    let line = stderr.trim_end();
    assert_eq!(line.lines().count(), 1, "one line: {stderr}");
    assert!(line.starts_with("stampede: error:"), "{line}");
    for part in [
        "cap.toml:11: scenario: entry \"big\"",
        "5000 agents cannot attach",
        "RLIMIT_NOFILE 4096 (hard limit 4096)",
        "room for 3008",
        "ulimit -Hn",
    ] {
        assert!(line.contains(part), "{part}: {line}");
    }
    assert!(!line.contains("\"small\""), "{line}");

    let (out, _) = schedule_once(&dir, &entry("small", 2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "served, no agent came: {stderr}"
    );
    assert!(!stderr.contains("cannot attach"), "{stderr}");
    assert_eq!(
        stderr
            .matches("file descriptor limit soft=4096 hard=4096 max_agents=3008")
            .count(),
        1,
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
