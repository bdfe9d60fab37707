//! A running `stampede-target supervise` for the tests that talk to it (`supervise.rs`,
//! `supervise_down.rs`, each through `#[path]`): started in the test's namespace and waited
//! for until it says it is supervising, then stopped with SIGTERM and required to exit 0;
//! between the two, a Configure that must restart its server at a new backlog.

use std::process::Command;
use std::time::Duration;

use stampede_lab::{ChildGuard, SIGTERM};
use stampede_proto::pb::{self, target_control_client::TargetControlClient};

/// Spawns `cmd` (a `supervise` command line; its stdout as the caller set it) and returns
/// once its log says "supervising"; its stderr is drained from then on. Its own bounds
/// (`--listen-timeout`) end it if it never gets there, and the wait with it.
pub(crate) fn start(cmd: &mut Command) -> ChildGuard {
    ChildGuard::spawn_until_logged(cmd, "supervising", Duration::from_secs(60))
}

/// SIGTERM, and a clean exit within 30 s.
pub(crate) fn stop(child: &mut ChildGuard) {
    child.signal(SIGTERM).unwrap();
    let status = child
        .wait_exit(Duration::from_secs(30))
        .expect("stops on SIGTERM");
    assert!(status.success(), "{status:?}");
}

/// Configure(backlog) restarts the server: a pid other than `old_pid`, the whole backlog
/// requested and effective. The stats it answered with.
pub(crate) async fn restart_at(
    c: &mut TargetControlClient<tonic::transport::Channel>,
    backlog: u32,
    old_pid: u32,
) -> pb::TargetStats {
    let after = c
        .configure(pb::ConfigureRequest {
            backlog: Some(backlog as i32),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (after.backlog_requested, after.backlog_effective),
        (Some(backlog as i32), backlog)
    );
    assert_ne!(after.server_pid, Some(old_pid), "a new server");
    after
}
