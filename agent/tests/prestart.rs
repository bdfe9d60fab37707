//! A daemon agent starts its run's threads at Prepare and keeps a run's longer liveness
//! bound only for the run, against the real kernel: the `stampede-agent` binary as a child
//! process in a network namespace of the test's own, a fake coordinator (tonic) scripted
//! message by message, a target that counts what it accepted, and the agent's firing
//! threads counted by name in `/proc/PID/task`:
//! - after Ready, the run's worker thread already waits for the instant;
//! - an Abort, or the session's end (a coordinator gone silent), sends it home: nothing
//!   fires, and a Start for the aborted run is refused;
//! - a run armed with a longer bound (`Prepare.liveness_ms`) outlives a silence longer than
//!   the Welcome's bound; once the run is over and the coordinator has spoken since, a
//!   silent coordinator is left within the Welcome's bound, not the run's.

use std::process::Stdio;
use std::time::{Duration, Instant};

use stampede_agent::FireConfig;
use stampede_lab::{Acceptor, ChildGuard, Netns, kernel_tests_enabled};
use stampede_proto::clock::unix_nanos_now;
use stampede_proto::pb::{self, agent_message::Msg as Out, coordinator_message::Msg as In};
use tokio_util::sync::CancellationToken;

#[path = "support/fake_coordinator.rs"]
mod fake_coordinator;
use fake_coordinator::{Attached, Fake, msg, until};

const AGENT: &str = env!("CARGO_BIN_EXE_stampede-agent");

/// The Welcome's liveness bound.
const WELCOME_LIVENESS: Duration = Duration::from_secs(2);
/// The bound the last run's Prepare asks for.
const RUN_LIVENESS: Duration = Duration::from_secs(10);

/// The agent's firing threads (`stampede-wN`), counted in `/proc/PID/task`.
fn firing_threads(pid: u32) -> usize {
    // The agent lives through the whole test: a dead one (gone, or a zombie not yet reaped,
    // whose task list shows its leader alone) is never "no firing threads".
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|e| panic!("the agent (pid {pid}) is gone: {e}"));
    let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
    assert!(
        !matches!(state.and_then(|r| r.chars().next()), Some('Z' | 'X')),
        "the agent (pid {pid}) has exited"
    );
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap_or_else(|e| panic!("the agent (pid {pid}) is gone: {e}"));
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
        .filter(|comm| comm.starts_with("stampede-w"))
        .count()
}

/// Polls `cond` every 10 ms, at most `within`: the event the test waits for.
async fn eventually(what: &str, within: Duration, cond: impl Fn() -> bool) {
    let until = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < until, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The next stream the agent attaches (15 s at most).
async fn next_session(attached: &mut tokio::sync::mpsc::UnboundedReceiver<Attached>) -> Attached {
    tokio::time::timeout(Duration::from_secs(15), attached.recv())
        .await
        .expect("the agent attaches within 15 s")
        .unwrap()
}

/// Sends Prepare and waits for Ready.
async fn prepare(a: &mut Attached, prepare: pb::Prepare) {
    a.out.send(Ok(msg(In::Prepare(prepare)))).await.unwrap();
    until(a, |m| match m {
        Out::Ready(_) => Some(()),
        Out::Rejected(r) => panic!("plan rejected: {}", r.reason),
        _ => None,
    })
    .await;
}

fn start(run_id: &str, in_ms: i64) -> In {
    In::Start(pb::Start {
        run_id: run_id.into(),
        start_at_unix_nanos: unix_nanos_now() + in_ms * 1_000_000,
    })
}

#[test]
fn the_runs_threads_wait_from_prepare_and_the_runs_bound_ends_with_it() {
    if !kernel_tests_enabled("the_runs_threads_wait_from_prepare_and_the_runs_bound_ends_with_it") {
        return;
    }
    let ns = Netns::new("prestart").unwrap();
    ns.block_on(async {
        let acceptor = Acceptor::start().unwrap();
        let stop = CancellationToken::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, mut attached) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(pb::coordinator_server::CoordinatorServer::new(Fake {
                    attached: tx,
                    liveness_ms: WELCOME_LIVENESS.as_millis() as u64,
                }))
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    stop.clone().cancelled_owned(),
                ),
        );
        let child = ChildGuard::spawn(
            ns.command(AGENT)
                .args(["--coordinator", &url, "--id", "pre"])
                .env("RUST_LOG", "info")
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
        .unwrap();
        let pid = child.0.id();
        let mut load = FireConfig::new(acceptor.addr, 10).load;
        load.timeout = Duration::from_secs(1);

        // Armed: its worker thread already waits, before any Start.
        let mut a = next_session(&mut attached).await;
        assert_eq!(firing_threads(pid), 0, "no run yet");
        prepare(&mut a, load.to_prepare("r1")).await;
        assert_eq!(firing_threads(pid), 1, "the worker waits from Ready on");
        // An Abort sends it home; a Start for that run is then refused; nothing fired.
        let abort = In::Abort(pb::Abort {
            run_id: "r1".into(),
            reason: "test".into(),
        });
        a.out.send(Ok(msg(abort))).await.unwrap();
        eventually(
            "the aborted run's thread ends",
            Duration::from_secs(5),
            || firing_threads(pid) == 0,
        )
        .await;
        a.out.send(Ok(msg(start("r1", 300)))).await.unwrap();
        let refused = until(&mut a, |m| match m {
            Out::Rejected(r) => Some(r.reason),
            _ => None,
        })
        .await;
        assert!(refused.contains("has not armed"), "{refused}");

        // Armed again, then the coordinator says nothing: the session ends within the
        // Welcome's bound, and with it the run's thread; the agent attaches again.
        prepare(&mut a, load.to_prepare("r2")).await;
        assert_eq!(firing_threads(pid), 1);
        let silent = Instant::now();
        let mut b = next_session(&mut attached).await;
        assert!(
            silent.elapsed() < WELCOME_LIVENESS + Duration::from_secs(3),
            "left the silent coordinator after {:?}",
            silent.elapsed()
        );
        eventually(
            "the run of the ended session ends its thread",
            Duration::from_secs(5),
            || firing_threads(pid) == 0,
        )
        .await;
        assert_eq!(acceptor.count(), 0, "an armed run never fired unstarted");

        // A run asking for a longer bound keeps it while armed: a silence longer than the
        // Welcome's bound, shorter than the run's, does not end the session.
        let mut p = load.to_prepare("r3");
        p.liveness_ms = RUN_LIVENESS.as_millis() as u64;
        prepare(&mut b, p).await;
        tokio::time::sleep(WELCOME_LIVENESS + Duration::from_secs(1)).await;
        b.out.send(Ok(msg(start("r3", 300)))).await.unwrap();
        let result = until(&mut b, |m| match m {
            Out::Result(r) => Some(r),
            Out::Rejected(r) => panic!("rejected: {}", r.reason),
            _ => None,
        })
        .await;
        let over = Instant::now();
        assert!(!result.cancelled, "{result:?}");
        eventually("the run's thread ends", Duration::from_secs(5), || {
            firing_threads(pid) == 0
        })
        .await;
        // Once the run is over and the coordinator has spoken since, the Welcome's bound is
        // back: the coordinator silent after that is left about that long after, long
        // before the run's bound.
        let ping = In::Ping(pb::Ping {
            sent_unix_nanos: unix_nanos_now(),
            ..Default::default()
        });
        b.out.send(Ok(msg(ping))).await.unwrap();
        let spoke = Instant::now();
        let _c = next_session(&mut attached).await;
        let left_after = spoke.elapsed();
        assert!(
            left_after >= WELCOME_LIVENESS - Duration::from_millis(300),
            "left {left_after:?} after the last word: before the Welcome's bound"
        );
        assert!(
            left_after < RUN_LIVENESS - Duration::from_secs(3),
            "left {left_after:?} after the last word: the run's bound still held"
        );
        assert!(over.elapsed() >= left_after);
        assert_eq!(acceptor.count(), 10, "the started run fired, once");
        stop.cancel();
        drop(child);
    });
}
