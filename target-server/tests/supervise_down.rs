//! `stampede-target supervise` after a restart that failed: the old server was stopped and
//! no new one listens, so Stats must say the server is down (FailedPrecondition naming the
//! failed restart), never the old server's pid and backlog as if it were healthy; a later
//! restart that works brings the stats back.
//!
//! The supervised server is stampede-target itself behind `sh`, which refuses one backlog
//! (exits 9 at backlog 7): the failure is the event, no timing. In a network namespace of its
//! own (fixed ports collide with nothing there); the kernel-test gate fails or skips visibly.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use stampede_lab::{ChildGuard, Netns, SIGTERM, kernel_tests_enabled};
use stampede_proto::pb::{self, target_control_client::TargetControlClient};

const BIN: &str = env!("CARGO_BIN_EXE_stampede-target");

#[test]
fn a_failed_restart_leaves_the_stats_saying_the_server_is_down() {
    if !kernel_tests_enabled("a_failed_restart_leaves_the_stats_saying_the_server_is_down") {
        return;
    }
    let ns = Netns::new("supdown").unwrap();
    let server = format!(
        "test \"$1\" != 7 || {{ echo refusing backlog 7 >&2; exit 9; }}; \
         exec {BIN} --listen 127.0.0.1:8080 --backlog \"$1\""
    );
    let mut child = ChildGuard::spawn(
        ns.command(BIN)
            .args(["supervise", "--port", "8080", "--control", "127.0.0.1:9000"])
            .args([
                "--backlog",
                "16",
                "--somaxconn",
                "keep",
                "--listen-timeout",
                "10s",
            ])
            .args(["--", "sh", "-c", &server, "sh", "{backlog}"])
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    )
    .unwrap();
    let mut lines = BufReader::new(child.0.stderr.take().unwrap()).lines();
    // Its own bounds end it (10 s to listen) if it never gets there: the loop ends then.
    let mut seen = Vec::new();
    let supervising = lines.by_ref().map_while(Result::ok).any(|line| {
        seen.push(line.clone());
        line.contains("supervising")
    });
    assert!(supervising, "{seen:#?}");
    std::thread::spawn(move || lines.for_each(drop));
    ns.block_on(async {
        let mut c = TargetControlClient::connect("http://127.0.0.1:9000")
            .await
            .expect("control connects");
        let before = c
            .stats(pb::StatsRequest::default())
            .await
            .unwrap()
            .into_inner();
        let pid = before.server_pid.expect("the server's pid");
        assert_eq!(before.backlog_requested, Some(16));

        let failed = c
            .configure(pb::ConfigureRequest {
                backlog: Some(7),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(failed.code(), tonic::Code::FailedPrecondition);
        assert!(
            failed.message().contains("exited with status 9"),
            "{failed:?}"
        );

        // Not the old server's pid and backlog as if it were up: the stats say it is down.
        for _ in 0..2 {
            let down = c.stats(pb::StatsRequest::default()).await.unwrap_err();
            assert_eq!(down.code(), tonic::Code::FailedPrecondition, "{down:?}");
            assert!(
                down.message().contains("the server is down")
                    && down.message().contains("restart at backlog 7 failed")
                    && down.message().contains("refusing backlog 7"),
                "{down:?}"
            );
        }
        let reset = c
            .reset_counters(pb::ResetCountersRequest {})
            .await
            .unwrap_err();
        assert!(reset.message().contains("the server is down"), "{reset:?}");

        let back = c
            .configure(pb::ConfigureRequest {
                backlog: Some(32),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (back.backlog_requested, back.backlog_effective),
            (Some(32), 32)
        );
        assert_ne!(back.server_pid, Some(pid), "a new server");
        let stats = c
            .stats(pb::StatsRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(stats.server_pid, back.server_pid);
    });
    child.signal(SIGTERM).unwrap();
    let status = child
        .wait_exit(Duration::from_secs(30))
        .expect("stops on SIGTERM");
    assert!(status.success(), "{status:?}");
}
