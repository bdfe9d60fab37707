//! `stampede-agent` as a black box: bad input exits 64 with one line, a refused plan exits 64
//! naming the numbers, and a real `fire` on loopback prints a summary and writes the report.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn agent(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stampede-agent"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("running stampede-agent")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn bad_input_is_one_line_and_exit_64() {
    for (args, needle) in [
        (
            &["fire", "--target", "127.0.0.1:9", "--connections", "0"][..],
            "invalid connections 0",
        ),
        (
            &["fire", "--target", "nonsense", "--connections", "5"][..],
            "invalid target \"nonsense\"",
        ),
        (
            &[
                "fire",
                "--target",
                "127.0.0.1:9",
                "--connections",
                "5",
                "--pattern",
                "zigzag",
            ][..],
            "invalid pattern \"zigzag\"",
        ),
        (
            &[
                "fire",
                "--target",
                "127.0.0.1:9",
                "--connections",
                "5",
                "--timeout",
                "5",
            ][..],
            "invalid duration \"5\"",
        ),
        (&["fire", "--connections", "5"][..], "--target"),
        (
            &["fire", "--target", "10.9.8.7:80", "--connections", "5"][..],
            "not allowed",
        ),
    ] {
        let out = agent(args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {needle:?} not in {err}");
    }
    // Neither `fire` nor --coordinator: nothing to do.
    let bare = agent(&[]);
    assert_eq!(bare.status.code(), Some(64));
    assert!(stderr(&bare).contains("fire"), "{}", stderr(&bare));
    let help = agent(&["fire", "--help"]);
    assert_eq!(help.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&help.stdout).contains("--expect-greeting"));
}

#[test]
fn plan_over_the_fd_limit_is_refused_with_numbers() {
    let limit = stampede_agent::raise_fd_limit().unwrap();
    let n = (limit.hard + 1).to_string();
    let out = agent(&[
        "fire",
        "--target",
        "127.0.0.1:9",
        "--connections",
        &n,
        "--max-connections",
        &n,
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(
        err.contains("RLIMIT_NOFILE") && err.contains(&limit.hard.to_string()),
        "{err}"
    );
}

#[test]
fn fire_on_loopback_writes_the_report_contract() {
    // The kernel completes loopback handshakes into the accept queue without accept().
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let target = listener.local_addr().unwrap().to_string();
    let dir = std::env::temp_dir().join(format!("stampede-agent-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("report.json");
    let hlog = dir.join("report.hlog");
    let out = Command::new(env!("CARGO_BIN_EXE_stampede-agent"))
        .args(["fire", "--connections", "20", "--json"])
        .arg(&json)
        .arg("--hlog")
        .arg(&hlog)
        // Flags also come from the environment.
        .env("STAMPEDE_TARGET", &target)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(summary.contains("established"), "{summary}");
    // Nothing checked admission here, and the summary says what that means.
    assert!(
        summary.contains("admission unchecked: 20 connected"),
        "{summary}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    // The interval log holds every connect latency once, untagged (no greeting expected).
    let lines = stampede_proto::hlog::parse(&std::fs::read(&hlog).unwrap()).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(!lines.is_empty() && lines.iter().all(|l| l.tag.is_none()));
    assert_eq!(lines.iter().map(|l| l.histogram.len()).sum::<u64>(), 20);
    assert_eq!(report["outcomes"]["established"], 20, "{report}");
    assert_eq!(report["admission"], "unchecked");
    for key in [
        "outcomes",
        "syn_retransmits",
        "connect_latency_us",
        "ttfb_us",
        "issue_duration_us",
        "kernel",
    ] {
        assert!(report.get(key).is_some(), "{key} missing: {report}");
    }
    assert_eq!(report["connect_latency_us"]["count"], 20);
    for key in ["count", "min", "p50", "p90", "p99", "p999", "max"] {
        assert!(report["connect_latency_us"].get(key).is_some(), "{key}");
    }
    assert!(report["kernel"]["fd_limit"].as_u64().unwrap() > 20);
}

#[test]
fn sigint_stops_the_run_and_marks_the_report_partial() {
    use std::os::fd::AsFd;
    // backlog 0 admits one connection; the other attempts wait in SYN_SENT for 30 s.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
    socket.listen(0).unwrap();
    let listener: std::net::TcpListener = socket.into();
    let target = listener.local_addr().unwrap().to_string();
    let json =
        std::env::temp_dir().join(format!("stampede-agent-sigint-{}.json", std::process::id()));
    let child = Command::new(env!("CARGO_BIN_EXE_stampede-agent"))
        .args([
            "fire",
            "--target",
            &target,
            "--connections",
            "5",
            "--timeout",
            "30s",
        ])
        .arg("--json")
        .arg(&json)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The run has fired once the one admitted connection sits in the accept queue.
    let fired = Instant::now();
    while stampede_proto::tcp_info::listener_queue(listener.as_fd())
        .unwrap()
        .len
        == 0
    {
        assert!(
            fired.elapsed() < Duration::from_secs(10),
            "the agent never fired"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // SAFETY: kill has no memory preconditions; the pid is our own child, not yet reaped.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let out = child.wait_with_output().unwrap();
    assert!(
        fired.elapsed() < Duration::from_secs(10),
        "stopped promptly"
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("interrupted"), "{}", stderr(&out));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    std::fs::remove_file(&json).unwrap();
    assert_eq!(report["partial"], true, "{report}");
    assert_eq!(report["outcomes"]["established"], 1, "{report}");
}
