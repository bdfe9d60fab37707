//! `stampede-target supervise` as a user meets it: bad input is one line (exit 64), a server
//! that dies or never listens fails with its exit status and last stderr lines (exit 1), and
//! over gRPC a Configure restarts the server with the new backlog (a new pid, the effective
//! backlog read back) while an accept policy is refused with FailedPrecondition.
//!
//! The supervised server is stampede-target itself (`--backlog {backlog}`): no other program
//! needed. Each case with a listener runs in a network namespace of its own (fixed ports
//! collide with nothing there); the kernel-test gate fails or skips visibly without root.

#[path = "support/supervised.rs"]
mod supervised;

use std::io::BufReader;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use stampede_lab::{ChildGuard, Netns, kernel_tests_enabled};
use stampede_proto::pb::{self, target_control_client::TargetControlClient};

const BIN: &str = env!("CARGO_BIN_EXE_stampede-target");

/// Runs `cmd` to its end within 60 s.
fn run(cmd: &mut Command) -> Output {
    let mut child = ChildGuard::spawn(
        cmd.env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )
    .unwrap();
    let err = child.0.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = std::io::Read::read_to_end(&mut BufReader::new(err), &mut s);
        s
    });
    let status = child
        .wait_exit(Duration::from_secs(60))
        .expect("supervise ends within 60s");
    Output {
        status,
        stdout: Vec::new(),
        stderr: reader.join().unwrap(),
    }
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn bad_input_is_one_line_and_exit_64() {
    let dir = std::env::temp_dir().join(format!("stp-sup-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let missing = format!(
        "{}:{}",
        dir.join("nope.tpl").display(),
        dir.join("x").display()
    );
    for (args, needle) in [
        (
            vec!["supervise", "--port", "8080", "--", "no-such-server-xyz"],
            "invalid command \"no-such-server-xyz\": not found in PATH",
        ),
        (
            vec!["supervise", "--port", "8080", "--", "/nonexistent/nginx"],
            "no such executable file",
        ),
        (
            vec!["supervise", "--port", "8080"],
            "give the server's command after --",
        ),
        (
            vec![
                "supervise",
                "--port",
                "8080",
                "--template",
                &missing,
                "--",
                "true",
            ],
            "invalid template",
        ),
        (
            vec![
                "supervise",
                "--port",
                "8080",
                "--template",
                "nocolon",
                "--",
                "true",
            ],
            "expected SRC:DST",
        ),
        (
            vec![
                "supervise",
                "--port",
                "8080",
                "--stop-signal",
                "BOGUS",
                "--",
                "true",
            ],
            "invalid stop signal",
        ),
    ] {
        let out = run(Command::new(BIN).args(&args));
        let err = text(&out);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {needle:?} not in {err}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A server that dies at start, and one that never listens on the port: exit 1, the reason,
/// the exit status and the last stderr lines; a template without {backlog} is warned about.
#[test]
fn a_server_that_dies_or_never_listens_fails_saying_why() {
    if !kernel_tests_enabled("a_server_that_dies_or_never_listens_fails_saying_why") {
        return;
    }
    let ns = Netns::new("supdie").unwrap();
    let out = run(ns
        .command(BIN)
        .args(["supervise", "--port", "8080", "--"])
        .args(["sh", "-c", "echo cannot bind: oops >&2; exit 7"]));
    let err = text(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let last = err.trim_end().lines().last().unwrap();
    assert!(
        last.contains("the server never listened on port 8080: sh exited with status 7")
            && last.contains("its last stderr lines: cannot bind: oops"),
        "{err}"
    );

    let dir = std::env::temp_dir().join(format!("stp-sup-idle-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("t"), "no placeholder here\n").unwrap();
    let started = Instant::now();
    let out = run(ns
        .command(BIN)
        .args(["supervise", "--port", "8080", "--listen-timeout", "500ms"])
        .arg("--template")
        .arg(format!(
            "{}:{}",
            dir.join("t").display(),
            dir.join("out").display()
        ))
        .args(["--", "sleep", "30"]));
    let err = text(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("the template has no {backlog}"), "{err}");
    assert!(
        err.trim_end().lines().last().unwrap().contains(
            "the server did not listen on port 8080 with backlog 511 within 500ms: nothing \
             listens there"
        ),
        "{err}"
    );
    // Stopped, not waited out: sleep 30 was killed once the bound passed.
    assert!(started.elapsed() < Duration::from_secs(25));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Configure(backlog) restarts the server with it; an accept policy is refused; the stats
/// say what the target is.
#[test]
fn configure_restarts_the_server_and_refuses_an_accept_policy() {
    if !kernel_tests_enabled("configure_restarts_the_server_and_refuses_an_accept_policy") {
        return;
    }
    let ns = Netns::new("supcfg").unwrap();
    let mut child = supervised::start(
        ns.command(BIN)
            .args(["supervise", "--port", "8080", "--control", "127.0.0.1:9000"])
            .args(["--backlog", "16", "--somaxconn", "keep", "--"])
            .arg(BIN)
            .args(["--listen", "127.0.0.1:8080", "--backlog", "{backlog}"])
            .stdout(Stdio::null()),
    );
    ns.block_on(async {
        let mut c = TargetControlClient::connect("http://127.0.0.1:9000")
            .await
            .expect("control connects");
        let before = c
            .stats(pb::StatsRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(before.kind, "supervise");
        assert_eq!(
            (before.backlog_requested, before.backlog_effective),
            (Some(16), 16)
        );
        assert!(before.accept_policy.is_none());
        let pid = before.server_pid.expect("the server's pid");
        let after = supervised::restart_at(&mut c, 100, pid).await;
        let refused = c
            .configure(pb::ConfigureRequest {
                accept_policy: Some(pb::AcceptPolicy {
                    rate_per_sec: Some(10.0),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
        assert!(refused.message().contains("cannot be set"), "{refused:?}");
        let paused = c.pause(pb::PauseRequest {}).await.unwrap_err();
        assert_eq!(paused.code(), tonic::Code::FailedPrecondition);
        // Over somaxconn with --somaxconn keep: the kernel's cap, stated in the stats.
        let somaxconn = after.somaxconn;
        let capped = c
            .configure(pb::ConfigureRequest {
                backlog: Some(somaxconn as i32 + 1000),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(capped.backlog_effective, somaxconn);
        assert_eq!(capped.somaxconn, somaxconn);
    });
    supervised::stop(&mut child);
}

/// With --somaxconn raise (the default, as root) a backlog above somaxconn raises it in the
/// namespace, the server gets the whole backlog, and the old value is back after exit.
#[test]
fn somaxconn_is_raised_for_the_backlog_and_restored_on_exit() {
    if !kernel_tests_enabled("somaxconn_is_raised_for_the_backlog_and_restored_on_exit") {
        return;
    }
    let ns = Netns::new("supmax").unwrap();
    ns.sysctl("net.core.somaxconn", "1000").unwrap();
    let somaxconn = || ns.run(|| stampede_proto::sysctl::read_u64("net.core.somaxconn").unwrap());
    let mut child = supervised::start(
        ns.command(BIN)
            .args(["supervise", "--port", "8080", "--backlog", "3000", "--"])
            .arg(BIN)
            .args(["--listen", "127.0.0.1:8080", "--backlog", "{backlog}"])
            .stdout(Stdio::piped()),
    );
    assert_eq!(somaxconn(), 3000, "raised for the backlog");
    supervised::stop(&mut child);
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.0.stdout.take().unwrap(), &mut out).unwrap();
    // The summary it prints at exit.
    assert!(
        out.contains("backlog 3000 (effective 3000, somaxconn 3000)"),
        "{out}"
    );
    assert_eq!(somaxconn(), 1000, "put back on exit");
}
