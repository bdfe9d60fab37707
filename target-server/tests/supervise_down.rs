//! `stampede-target supervise` after a restart that failed: the old server was stopped and
//! no new one listens, so Stats must say the server is down (FailedPrecondition naming the
//! failed restart), never the old server's pid and backlog as if it were healthy; a later
//! restart that works brings the stats back.
//!
//! The supervised server is stampede-target itself behind `sh`, which refuses one backlog
//! (exits 9 at backlog 7): the failure is the event, no timing. In a network namespace of its
//! own (fixed ports collide with nothing there); the kernel-test gate fails or skips visibly.

#[path = "support/supervised.rs"]
mod supervised;

use std::process::Stdio;

use stampede_lab::{Netns, kernel_tests_enabled};
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
    let mut child = supervised::start(
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

        let back = supervised::restart_at(&mut c, 32, pid).await;
        let stats = c
            .stats(pb::StatsRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(stats.server_pid, back.server_pid);
    });
    supervised::stop(&mut child);
}
