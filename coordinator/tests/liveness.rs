//! A stalled agent in a whole run, as separate processes in a network namespace of the
//! test's own: `stampede run` and `stampede-agent` on loopback, and a listener in the test
//! that time-stamps every connection it accepts (the target's view). The agent is stopped
//! (SIGSTOP) once the target has seen it firing, and resumed (SIGCONT) after the late bound:
//! the target sees no catch-up burst, and the report counts what the agent skipped, names
//! its reason and is partial (exit 1), although no agent was lost. Kernel test: needs root.

use std::process::Stdio;
use std::time::{Duration, Instant};

use stampede_lab::{Acceptor, ChildGuard, Netns, SIGCONT, SIGSTOP, kernel_tests_enabled};
use support::sibling_bin;

mod support;

#[test]
fn a_stalled_agent_skips_what_fell_due_and_the_report_says_so() {
    if !kernel_tests_enabled("a_stalled_agent_skips_what_fell_due_and_the_report_says_so") {
        return;
    }
    const STALL: Duration = Duration::from_millis(1500);
    let ns = Netns::new("lvcoord").unwrap();
    let acceptor = ns.run(Acceptor::start).unwrap();
    let dir = std::env::temp_dir().join(format!("stampede-lvcoord-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut coordinator = ChildGuard::spawn(
        ns.command(sibling_bin("stampede"))
            .args(["run", "--listen", "127.0.0.1:7700", "--agents", "1"])
            .args([
                "--agent-wait",
                "20s",
                "--target",
                &acceptor.addr.to_string(),
            ])
            .args(["--connections", "3000", "--pattern", "ramp:1000:3s"])
            .args(["--timeout", "1s", "--out"])
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .unwrap();
    let agent = ChildGuard::spawn(
        ns.command(sibling_bin("stampede-agent"))
            .args(["--coordinator", "http://127.0.0.1:7700", "--id", "a1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .unwrap();
    // The target has seen the agent firing for a while (~0.3 s of the ramp).
    let until = Instant::now() + Duration::from_secs(30);
    while acceptor.count() < 300 {
        assert!(Instant::now() < until, "the agent never fired");
        std::thread::sleep(Duration::from_millis(5));
    }
    agent.signal(SIGSTOP).unwrap();
    std::thread::sleep(STALL);
    agent.signal(SIGCONT).unwrap();
    let status = coordinator
        .wait_exit(Duration::from_secs(30))
        .expect("the coordinator did not exit in time");
    let text = std::fs::read_to_string(dir.join("report.json")).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let report: serde_json::Value = serde_json::from_str(&text).unwrap();

    let densest = acceptor.densest(Duration::from_millis(100));
    assert!(
        densest <= 200,
        "{densest} accepted within 100 ms: a catch-up burst"
    );
    assert_eq!(report["lost_agents"], serde_json::json!([]), "{report}");
    assert_eq!(report["partial"], true, "{report}");
    let skipped = report["skipped_overdue"].as_u64().expect("skipped_overdue");
    assert!(
        (1000..=2000).contains(&skipped),
        "~1.5 s of a 1000/s ramp fell due while stopped: {skipped}"
    );
    let agent = &report["agents"][0];
    assert_eq!(agent["skipped_overdue"].as_u64(), Some(skipped));
    assert_eq!(
        agent["attempts"].as_u64().unwrap() + skipped,
        3000,
        "every attempt is classified or skipped: {report}"
    );
    let why = report["cut_reasons"]["a1"].as_str().unwrap_or_default();
    assert!(why.contains("stalled"), "{report}");
    assert_eq!(agent["cut_reason"].as_str(), Some(why));
    assert_eq!(status.code(), Some(1), "a partial run is not a success");
}
