//! The `stampede-target` binary as a user meets it: exit codes, one-line errors, clean
//! shutdown on SIGTERM with the stats file written, and `observe` against another process's
//! listener compared with `ss -lnt`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use stampede_lab::{ChildGuard, Netns, kernel_tests_enabled};

const BIN: &str = env!("CARGO_BIN_EXE_stampede-target");

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_input_is_one_line_and_exit_64() {
    for (args, needle) in [
        (&["--backlog", "abc"][..], "abc"),
        (&["--accept-delay", "5x"][..], "5x"),
        (&["--duration", "soon"][..], "soon"),
        (&["--accept-rate", "-1"][..], "-1"),
        (&["--on-accept", "wave"][..], "wave"),
        (&["--listen", "nowhere"][..], "nowhere"),
        (&["observe"][..], "--port"),
    ] {
        let (code, stderr) = run(args);
        assert_eq!(code, 64, "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn address_in_use_is_a_runtime_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, stderr) = run(&["--listen", &addr, "--duration", "1s"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&addr) && stderr.contains("in use"),
        "{stderr}"
    );
}

/// Starts the binary with stderr piped and waits for its "listening" log line (bounded by
/// the child's own --duration), returning the guard.
fn start_and_wait_listening(cmd: &mut Command) -> ChildGuard {
    let mut child = ChildGuard::spawn(cmd.stderr(Stdio::piped()).stdout(Stdio::piped())).unwrap();
    let stderr = child.0.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    loop {
        match lines.next() {
            Some(Ok(line)) if line.contains("listening") => break,
            Some(Ok(_)) => continue,
            other => panic!("target exited before listening: {other:?}"),
        }
    }
    // Keep draining stderr so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    child
}

#[test]
fn sigterm_stops_cleanly_and_writes_stats() {
    let dir = std::env::temp_dir().join(format!("stampede-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let stats = dir.join("target.json");
    let mut child = start_and_wait_listening(Command::new(BIN).args([
        "--listen",
        "127.0.0.1:0",
        "--backlog",
        "3",
        "--duration",
        "30s",
        "--stats-json",
        stats.to_str().unwrap(),
    ]));
    // SAFETY: kill(2) on the pid of a child this test started and has not reaped.
    assert_eq!(unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) }, 0);
    let status = child.0.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&stats).unwrap()).unwrap();
    assert_eq!(v["backlog_requested"], 3);
    assert_eq!(v["backlog_effective"], 3);
    assert!(v["timeline"]["points"].is_array());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `ss -lnt` for one port in a namespace: (Recv-Q, Send-Q) = (queue length, backlog).
fn ss_queue(ns: &Netns, port: u16) -> (u32, u32) {
    let out = ns
        .command("ss")
        .args(["-lntH", &format!("sport = :{port}")])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let fields: Vec<&str> = text.split_whitespace().collect();
    // State Recv-Q Send-Q Local Peer
    (fields[1].parse().unwrap(), fields[2].parse().unwrap())
}

#[test]
fn observe_matches_ss_for_another_process() {
    if !kernel_tests_enabled("observe_matches_ss_for_another_process") {
        return;
    }
    let ns = Netns::new("obs").unwrap();
    // The listener belongs to another process: the target binary, never accepting. A fixed
    // port is fine inside a namespace of this test's own.
    let _target = start_and_wait_listening(ns.command(BIN).args([
        "--listen",
        "127.0.0.1:9000",
        "--backlog",
        "5",
        "--accept-rate",
        "0",
        "--duration",
        "30s",
    ]));
    let _clients: Vec<_> = ns.run(|| {
        (0..3)
            .map(|_| std::net::TcpStream::connect("127.0.0.1:9000").unwrap())
            .collect()
    });
    let (recv_q, send_q) = ss_queue(&ns, 9000);
    assert_eq!((recv_q, send_q), (3, 5));
    let out = ns
        .command(BIN)
        .args(["observe", "--port", "9000", "--duration", "200ms"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(
        summary.contains("effective 5") && summary.contains("queue max 3 now 3"),
        "{summary}"
    );
    // In-process through the library as well, with the full stats.
    let stats = ns.block_on(async {
        let config = stampede_target::observe::ObserveConfig {
            port: 9000,
            addr: Some("127.0.0.1".parse().unwrap()),
            interval: Duration::from_millis(5),
            duration: Some(Duration::from_millis(100)),
            stats_json: None,
            control: None,
        };
        stampede_target::observe::run(&config, Default::default(), &mut |_| {})
            .await
            .unwrap()
    });
    assert_eq!(
        (stats.accept_queue_len, stats.backlog_effective),
        (recv_q, send_q)
    );
    assert_eq!(stats.accepted, None);
    assert!(stats.samples >= 5, "{stats:?}");
    // No listener on a port: a clear error, exit 1.
    let out = ns
        .command(BIN)
        .args(["observe", "--port", "9001", "--duration", "100ms"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no TCP listener on *:9001"));
}
