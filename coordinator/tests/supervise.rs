//! A supervised server that dies at one step of a sweep: the sweep keeps the steps it has,
//! stops, and says why (the server's exit status and last stderr lines), exit 1. The server
//! is stampede-target itself, started through `sh` so it can refuse one backlog the way a
//! real server refuses a bad configuration; everything runs in a network namespace of its own.

mod support;

use std::process::Stdio;
use std::time::Duration;

use stampede_lab::{ChildGuard, Netns, SIGTERM, kernel_tests_enabled, run_within};
use support::sibling_bin;

const BIN: &str = env!("CARGO_BIN_EXE_stampede");

#[test]
fn a_server_that_dies_at_a_step_stops_the_sweep_saying_why() {
    if !kernel_tests_enabled("a_server_that_dies_at_a_step_stops_the_sweep_saying_why") {
        return;
    }
    let ns = Netns::new("supsw").unwrap();
    let target = sibling_bin("stampede-target");
    let script = format!(
        "if [ {{backlog}} -gt 100 ]; then echo 'backlog {{backlog}} refused' >&2; exit 3; fi; \
         exec {} --listen 127.0.0.1:8080 --backlog {{backlog}} --on-accept close",
        target.display()
    );
    // Its own bound (10 s to listen) ends it if it never gets there, and the wait with it.
    let mut supervise = ChildGuard::spawn_until_logged(
        ns.command(&target)
            .args(["supervise", "--port", "8080", "--control", "127.0.0.1:9000"])
            .args(["--backlog", "8", "--", "sh", "-c", &script])
            .stdout(Stdio::null()),
        "supervising",
        Duration::from_secs(60),
    );
    let _agent = ChildGuard::spawn(
        ns.command(sibling_bin("stampede-agent"))
            .args(["--coordinator", "http://127.0.0.1:7700", "--id", "a1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .unwrap();
    let out_dir = std::env::temp_dir().join(format!("stampede-supsw-{}", std::process::id()));
    let out = run_within(
        ns.command(BIN)
            .args(["sweep", "--listen", "127.0.0.1:7700", "--agent-wait", "60s"])
            .args(["--target", "127.0.0.1:8080"])
            .args(["--target-control", "http://127.0.0.1:9000"])
            .args([
                "--connections",
                "20",
                "--timeout",
                "2s",
                "--backlogs",
                "8,64,200",
            ])
            .arg("--out")
            .arg(&out_dir),
        Duration::from_secs(180),
    );
    let table = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{table}{err}");
    assert!(
        table.contains(
            "sweep stopped after 2 steps: step backlog 200: target control \
             http://127.0.0.1:9000: the server never listened on port 8080: sh exited with \
             status 3; its last stderr lines: backlog 200 refused"
        ),
        "{table}{err}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("sweep.json")).unwrap())
            .unwrap();
    assert_eq!(json["steps"].as_array().unwrap().len(), 2, "{json}");
    assert_eq!(json["steps"][1]["backlog_effective"], 64);
    std::fs::remove_dir_all(&out_dir).unwrap();
    supervise.signal(SIGTERM).unwrap();
    assert!(
        supervise.wait_exit(Duration::from_secs(30)).is_some(),
        "supervise stops on SIGTERM"
    );
}
