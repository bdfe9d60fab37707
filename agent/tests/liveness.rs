//! The agent never fires unwatched or late, against the real kernel: each test runs the
//! `stampede-agent` binary as a child process in a network namespace of its own, with a
//! listener that time-stamps every connection it accepts (the target's view), and injects
//! its fault on an event the agent reports:
//! - SIGSTOP mid-ramp (after the first progress line), SIGCONT after the late bound: what
//!   fell due meanwhile is cancelled and counted, never fired in a catch-up burst;
//! - SIGSTOP while waiting for the start instant (after its heartbeat names the run),
//!   SIGCONT well after it: nothing fires late, the result says why it is partial;
//! - a coordinator that goes silent (after the first interval): the agent stops firing
//!   within the liveness bound its Welcome stated, and says why in a cancelled result;
//! - a partition (the agent's host link taken down after the first interval, coordinator
//!   and agent on two hosts of a lab): the agent stops firing within the bound;
//! - SIGTERM mid-run: the cut-short result goes out marked cancelled; after a normal run
//!   the agent attaches to the next coordinator at once, without a warning.
//!
//! The coordinator here is a fake written with tonic, scripted message by message.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use stampede_agent::FireConfig;
use stampede_agent::engine::LATE_BOUND;
use stampede_lab::{Acceptor, ChildGuard, Lab, Netns, kernel_tests_enabled};
use stampede_proto::clock::unix_nanos_now;
use stampede_proto::pb::{self, agent_message::Msg as Out, coordinator_message::Msg as In};
use stampede_proto::report::FireReport;
use tokio_util::sync::CancellationToken;

#[path = "support/fake_coordinator.rs"]
mod fake_coordinator;
use fake_coordinator::{Attached, Fake, HEARTBEAT_MS, msg, until};

const AGENT: &str = env!("CARGO_BIN_EXE_stampede-agent");

/// The agent's stderr, line by line, on a channel.
fn stderr_lines(child: &mut ChildGuard) -> mpsc::Receiver<String> {
    let stderr = child.0.stderr.take().expect("stderr piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn wait_for_line(lines: &mpsc::Receiver<String>, needle: &str, within: Duration) -> String {
    let until = Instant::now() + within;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return line,
            Ok(_) => {}
            Err(e) => panic!("no line with {needle:?} from the agent within {within:?}: {e}"),
        }
    }
}

/// Item 2 of issue 9: an agent stopped mid-ramp and resumed fired 3,313 overdue SYNs in
/// 93 ms. Now what fell due during the stop is cancelled and counted: the target never sees
/// more than the ramp's own rate, and the run says it is partial (exit 1).
#[test]
fn sigstop_mid_ramp_fires_no_catch_up_burst() {
    if !kernel_tests_enabled("sigstop_mid_ramp_fires_no_catch_up_burst") {
        return;
    }
    const STALL: Duration = Duration::from_millis(1500);
    let ns = Netns::new("lvstop").unwrap();
    let acceptor = ns.run(Acceptor::start).unwrap();
    let json = std::env::temp_dir().join(format!("stampede-lvstop-{}.json", std::process::id()));
    let mut child = ChildGuard::spawn(
        ns.command(AGENT)
            .args(["fire", "--target", &acceptor.addr.to_string()])
            .args(["--connections", "4000", "--pattern", "ramp:1000:4s"])
            .args(["--timeout", "1s", "--json"])
            .arg(&json)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    )
    .unwrap();
    let lines = stderr_lines(&mut child);
    // Its first progress line: it is firing, about a second into the ramp (3 s of it left,
    // more than the stall).
    wait_for_line(&lines, "attempts classified", Duration::from_secs(10));
    child.signal(libc::SIGSTOP).unwrap();
    let stopped_at = acceptor.count();
    std::thread::sleep(STALL);
    let during = acceptor.count() - stopped_at;
    child.signal(libc::SIGCONT).unwrap();
    let status = child
        .wait_exit(Duration::from_secs(20))
        .expect("the process did not exit in time");
    let report: FireReport =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let _ = std::fs::remove_file(&json);

    // Handshakes in flight at the stop still complete; nothing new goes out meanwhile.
    assert!(during < 50, "{during} accepted while the agent was stopped");
    // 1000/s is 100 per 100 ms; the catch-up burst was ~1500 at once.
    let densest = acceptor.densest(Duration::from_millis(100));
    assert!(
        densest <= 200,
        "{densest} connections within 100 ms: a catch-up burst"
    );
    assert!(report.partial, "{report:?}");
    assert!(
        (1000..=2000).contains(&report.skipped_overdue),
        "~1.5 s of a 1000/s ramp fell due while stopped: {report:?}"
    );
    assert_eq!(
        report.outcomes.total() + report.skipped_overdue,
        4000,
        "every attempt is either classified or skipped: {report:?}"
    );
    assert_eq!(acceptor.count() as u64, report.outcomes.established);
    assert!(
        report
            .cut_reason
            .as_deref()
            .is_some_and(|r| r.contains("stalled")),
        "{report:?}"
    );
    assert_eq!(status.code(), Some(1), "a partial run is not a success");
}

/// Serves a [`Fake`] on loopback in the current namespace; its URL and the attached
/// streams. It stops with `stop`.
async fn fake_coordinator(
    liveness_ms: u64,
    stop: CancellationToken,
) -> (String, tokio::sync::mpsc::UnboundedReceiver<Attached>) {
    fake_coordinator_at("127.0.0.1:0", liveness_ms, stop).await
}

/// [`fake_coordinator`] on `addr`.
async fn fake_coordinator_at(
    addr: &str,
    liveness_ms: u64,
    stop: CancellationToken,
) -> (String, tokio::sync::mpsc::UnboundedReceiver<Attached>) {
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (attached, rx) = tokio::sync::mpsc::unbounded_channel();
    let fake = Fake {
        attached,
        liveness_ms,
    };
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(pb::coordinator_server::CoordinatorServer::new(fake))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                stop.cancelled_owned(),
            ),
    );
    (url, rx)
}

/// Spawns the agent daemon against `url` in `ns`.
fn agent_daemon(ns: &Netns, url: &str) -> ChildGuard {
    ChildGuard::spawn(
        ns.command(AGENT)
            .args(["--coordinator", url, "--id", "lv"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .unwrap()
}

/// Attaches the agent, prepares `load` as run "r1" and waits for Ready.
async fn prepared(
    attached: &mut tokio::sync::mpsc::UnboundedReceiver<Attached>,
    prepare: pb::Prepare,
) -> Attached {
    let mut a = tokio::time::timeout(Duration::from_secs(10), attached.recv())
        .await
        .expect("the agent attaches within 10 s")
        .unwrap();
    a.out.send(Ok(msg(In::Prepare(prepare)))).await.unwrap();
    until(&mut a, |m| match m {
        Out::Ready(_) => Some(()),
        Out::Rejected(r) => panic!("plan rejected: {}", r.reason),
        _ => None,
    })
    .await;
    a
}

/// Item 3 of issue 9: the refuse-late check ran only before waiting for the start instant,
/// so a stall during the wait fired the whole burst late, reported clean. Now the burst the
/// agent reaches a second late is cancelled, and its result says why it is partial.
#[test]
fn a_stall_across_the_start_instant_fires_nothing_late() {
    if !kernel_tests_enabled("a_stall_across_the_start_instant_fires_nothing_late") {
        return;
    }
    let ns = Netns::new("lvstart").unwrap();
    ns.block_on(async {
        let acceptor = Acceptor::start().unwrap();
        let stop = CancellationToken::new();
        let (url, mut attached) = fake_coordinator(0, stop.clone()).await;
        let child = agent_daemon(&ns, &url);
        let mut load = FireConfig::new(acceptor.addr, 200).load;
        load.timeout = Duration::from_secs(2);
        let mut a = prepared(&mut attached, load.to_prepare("r1")).await;

        let start_at = unix_nanos_now() + 1_000_000_000;
        let start = In::Start(pb::Start {
            run_id: "r1".into(),
            start_at_unix_nanos: start_at,
        });
        a.out.send(Ok(msg(start))).await.unwrap();
        // Its heartbeat names the run: Start is taken, the agent waits for the instant.
        until(&mut a, |m| match m {
            Out::Heartbeat(h) if h.run_id == "r1" => Some(()),
            _ => None,
        })
        .await;
        child.signal(libc::SIGSTOP).unwrap();
        assert!(
            unix_nanos_now() < start_at,
            "stopped only after the start instant: the machine is too loaded for this test"
        );
        // Resumed a second after the instant: far past the late bound.
        let resume_in = start_at + 1_000_000_000 - unix_nanos_now();
        tokio::time::sleep(Duration::from_nanos(resume_in as u64)).await;
        child.signal(libc::SIGCONT).unwrap();
        let result = until(&mut a, |m| match m {
            Out::Result(r) => Some(r),
            Out::Rejected(r) => panic!("rejected: {}", r.reason),
            _ => None,
        })
        .await;
        // Give a late SYN every chance to show before counting.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(acceptor.count(), 0, "connections fired late: {result:?}");
        assert_eq!(result.skipped_overdue, 200, "{result:?}");
        assert_eq!(result.issued_late, 0, "{result:?}");
        assert!(!result.cancelled, "{result:?}");
        assert!(result.cut_reason.contains("stalled"), "{result:?}");
        assert!(
            result.cut_reason.contains(&format!("{LATE_BOUND:?}")),
            "the reason states the bound: {result:?}"
        );
        stop.cancel();
    });
}

/// Item 2 of issue 9: with its coordinator cut off, an agent kept firing for 10.4 s, until
/// HTTP/2 keepalive gave up. Now it stops within the liveness bound of its Welcome, and
/// the result it sends (if the coordinator still reads) is cancelled with the reason.
#[test]
fn a_silent_coordinator_stops_the_agent_within_its_liveness_bound() {
    if !kernel_tests_enabled("a_silent_coordinator_stops_the_agent_within_its_liveness_bound") {
        return;
    }
    const LIVENESS: Duration = Duration::from_millis(600);
    let ns = Netns::new("lvsilent").unwrap();
    ns.block_on(async {
        let acceptor = Acceptor::start().unwrap();
        let stop = CancellationToken::new();
        let (url, mut attached) = fake_coordinator(LIVENESS.as_millis() as u64, stop.clone()).await;
        let _child = agent_daemon(&ns, &url);
        let mut load = FireConfig::new(acceptor.addr, 3000).load;
        load.pattern = "ramp:500:6s".parse().unwrap();
        load.timeout = Duration::from_secs(1);
        let mut a = prepared(&mut attached, load.to_prepare("r1")).await;

        // Pings every heartbeat until the coordinator goes silent.
        let silent = CancellationToken::new();
        tokio::spawn({
            let (out, silent) = (a.out.clone(), silent.clone());
            async move {
                let mut every = tokio::time::interval(Duration::from_millis(HEARTBEAT_MS));
                loop {
                    tokio::select! {
                        _ = silent.cancelled() => return,
                        _ = every.tick() => {}
                    }
                    let ping = In::Ping(pb::Ping {
                        sent_unix_nanos: unix_nanos_now(),
                        ..Default::default()
                    });
                    if out.send(Ok(msg(ping))).await.is_err() {
                        return;
                    }
                }
            }
        });
        let start = In::Start(pb::Start {
            run_id: "r1".into(),
            start_at_unix_nanos: unix_nanos_now() + 300_000_000,
        });
        a.out.send(Ok(msg(start))).await.unwrap();
        // Its first interval: it is firing. Then the coordinator says nothing more.
        until(&mut a, |m| matches!(m, Out::Interval(_)).then_some(())).await;
        silent.cancel();
        let silent_at = Instant::now();
        let result = until(&mut a, |m| match m {
            Out::Result(r) => Some(r),
            _ => None,
        })
        .await;
        let stopped_after = silent_at.elapsed();
        let at_result = acceptor.count();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = acceptor.count() - at_result;

        assert!(
            stopped_after < LIVENESS + Duration::from_millis(700),
            "stopped {stopped_after:?} after the coordinator went silent"
        );
        assert!(
            stopped_after >= LIVENESS - Duration::from_millis(HEARTBEAT_MS + 50),
            "stopped before the bound: {stopped_after:?}"
        );
        assert_eq!(after, 0, "connections after the agent's final result");
        assert!(result.cancelled, "{result:?}");
        assert!(result.unfinished > 0, "{result:?}");
        assert!(
            result.cut_reason.contains("no word from the coordinator"),
            "{result:?}"
        );
        stop.cancel();
    });
}

/// Item 6 of issue 9: SIGTERM mid-run sent no final result, so a clean stop looked like a
/// crash. Now the run's cut-short result goes out marked cancelled, saying why.
#[test]
fn sigterm_sends_the_cut_short_result_marked_cancelled() {
    if !kernel_tests_enabled("sigterm_sends_the_cut_short_result_marked_cancelled") {
        return;
    }
    let ns = Netns::new("lvterm").unwrap();
    ns.block_on(async {
        let acceptor = Acceptor::start().unwrap();
        let stop = CancellationToken::new();
        let (url, mut attached) = fake_coordinator(0, stop.clone()).await;
        let mut child = agent_daemon(&ns, &url);
        let mut load = FireConfig::new(acceptor.addr, 2000).load;
        load.pattern = "ramp:500:4s".parse().unwrap();
        load.timeout = Duration::from_secs(1);
        let mut a = prepared(&mut attached, load.to_prepare("r1")).await;
        let start = In::Start(pb::Start {
            run_id: "r1".into(),
            start_at_unix_nanos: unix_nanos_now() + 300_000_000,
        });
        a.out.send(Ok(msg(start))).await.unwrap();
        until(&mut a, |m| matches!(m, Out::Interval(_)).then_some(())).await;
        child.signal(libc::SIGTERM).unwrap();
        let result = until(&mut a, |m| match m {
            Out::Result(r) => Some(r),
            _ => None,
        })
        .await;
        assert!(result.cancelled, "{result:?}");
        assert!(result.unfinished > 0, "{result:?}");
        assert!(result.cut_reason.contains("SIGTERM"), "{result:?}");
        let status = tokio::task::spawn_blocking(move || {
            let status = child
                .wait_exit(Duration::from_secs(5))
                .expect("the process did not exit in time");
            drop(child);
            status
        })
        .await
        .unwrap();
        assert_eq!(status.code(), Some(0), "a signal is a clean stop");
        stop.cancel();
    });
}

/// Item 6 of issue 9: after a normal run every agent logged WARN "coordinator unavailable"
/// and backed off up to ~15 s, so the next run waited for it. Now, once its run is over and
/// the coordinator leaves, the agent keeps trying quietly at a short pace and attaches to
/// the next coordinator at once.
#[test]
fn after_a_run_the_agent_attaches_to_the_next_coordinator_at_once_and_quietly() {
    if !kernel_tests_enabled(
        "after_a_run_the_agent_attaches_to_the_next_coordinator_at_once_and_quietly",
    ) {
        return;
    }
    const GAP: Duration = Duration::from_secs(4);
    let ns = Netns::new("lvagain").unwrap();
    ns.block_on(async {
        let acceptor = Acceptor::start().unwrap();
        let stop = CancellationToken::new();
        let (url, mut attached) = fake_coordinator(0, stop.clone()).await;
        let mut child = ChildGuard::spawn(
            ns.command(AGENT)
                .args(["--coordinator", &url, "--id", "lv"])
                .env("RUST_LOG", "info")
                .stdout(Stdio::null())
                .stderr(Stdio::piped()),
        )
        .unwrap();
        let lines = stderr_lines(&mut child);
        let mut load = FireConfig::new(acceptor.addr, 20).load;
        load.timeout = Duration::from_secs(1);
        let mut a = prepared(&mut attached, load.to_prepare("r1")).await;
        let start = In::Start(pb::Start {
            run_id: "r1".into(),
            start_at_unix_nanos: unix_nanos_now() + 200_000_000,
        });
        a.out.send(Ok(msg(start))).await.unwrap();
        let result = until(&mut a, |m| match m {
            Out::Result(r) => Some(r),
            _ => None,
        })
        .await;
        assert!(!result.cancelled, "{result:?}");
        // The run is over: the coordinator leaves (`stampede run` exits) ...
        drop(a);
        stop.cancel();
        tokio::time::sleep(GAP).await;
        // ... and the next one comes up where it was.
        let addr = url.trim_start_matches("http://");
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let up = Instant::now();
        let (tx, mut again) = tokio::sync::mpsc::unbounded_channel();
        let next = CancellationToken::new();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(pb::coordinator_server::CoordinatorServer::new(Fake {
                    attached: tx,
                    liveness_ms: 0,
                }))
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    next.clone().cancelled_owned(),
                ),
        );
        let b = tokio::time::timeout(Duration::from_secs(10), again.recv())
            .await
            .expect("the agent attaches to the next coordinator")
            .unwrap();
        let waited = up.elapsed();
        // Everything it logged up to its second "attached".
        let mut logged = Vec::new();
        while logged
            .iter()
            .filter(|l: &&String| l.contains("attached"))
            .count()
            < 2
        {
            match lines.recv_timeout(Duration::from_secs(3)) {
                Ok(line) => logged.push(line),
                Err(_) => break,
            }
        }
        drop(b);
        next.cancel();
        drop(child);
        assert!(
            waited < Duration::from_millis(1500),
            "attached {waited:?} after the next coordinator came up"
        );
        let warned: Vec<&String> = logged.iter().filter(|l| l.contains("WARN")).collect();
        assert!(warned.is_empty(), "warnings after a normal run: {warned:?}");
        // The normal end reads as such: no cause (an h2 "error reading a body" when the
        // coordinator's process exits) shown as if something failed.
        assert!(
            logged
                .iter()
                .any(|l| l.contains("run over and the coordinator gone")),
            "{logged:?}"
        );
        let causes: Vec<&String> = logged
            .iter()
            .filter(|l| l.contains("INFO") && l.contains("cause="))
            .collect();
        assert!(causes.is_empty(), "a cause after a normal run: {causes:?}");
        assert!(
            logged.iter().filter(|l| l.contains("attached")).count() >= 2,
            "{logged:?}"
        );
    });
}

/// Item 2 of issue 9, as a partition: coordinator and agent on two hosts of a lab, the
/// agent's link taken down once it fires. The coordinator keeps sending its Pings, but none
/// arrives: the agent stops firing within its liveness bound (before: until HTTP/2
/// keepalive gave up, 10 s and more).
#[test]
fn a_partitioned_agent_stops_firing_within_its_liveness_bound() {
    if !kernel_tests_enabled("a_partitioned_agent_stops_firing_within_its_liveness_bound") {
        return;
    }
    const LIVENESS: Duration = Duration::from_millis(600);
    let lab = Lab::new("lvcut", 2).unwrap();
    let (coord, agent_host) = (lab.host(0), lab.host(1));
    let acceptor = agent_host.run(Acceptor::start).unwrap();
    coord.block_on(async {
        let stop = CancellationToken::new();
        let at = format!("{}:0", lab.addr(0));
        let (url, mut attached) =
            fake_coordinator_at(&at, LIVENESS.as_millis() as u64, stop.clone()).await;
        let mut child = ChildGuard::spawn(
            agent_host
                .command(AGENT)
                .args(["--coordinator", &url, "--id", "lv"])
                .env("RUST_LOG", "info")
                .stdout(Stdio::null())
                .stderr(Stdio::piped()),
        )
        .unwrap();
        let lines = stderr_lines(&mut child);
        let mut load = FireConfig::new(acceptor.addr, 4000).load;
        load.pattern = "ramp:500:8s".parse().unwrap();
        load.timeout = Duration::from_secs(1);
        let mut a = prepared(&mut attached, load.to_prepare("r1")).await;
        // Pings every heartbeat, for the whole test: the partition is what silences them.
        tokio::spawn({
            let out = a.out.clone();
            async move {
                let mut every = tokio::time::interval(Duration::from_millis(HEARTBEAT_MS));
                loop {
                    every.tick().await;
                    let ping = In::Ping(pb::Ping {
                        sent_unix_nanos: unix_nanos_now(),
                        ..Default::default()
                    });
                    if out.send(Ok(msg(ping))).await.is_err() {
                        return;
                    }
                }
            }
        });
        let start = In::Start(pb::Start {
            run_id: "r1".into(),
            start_at_unix_nanos: unix_nanos_now() + 300_000_000,
        });
        a.out.send(Ok(msg(start))).await.unwrap();
        until(&mut a, |m| matches!(m, Out::Interval(_)).then_some(())).await;
        let status = Command::new("ip")
            .args(["-n", agent_host.name(), "link", "set", "eth0", "down"])
            .status()
            .unwrap();
        assert!(status.success(), "taking the agent's link down");
        let cut_at = Instant::now();
        let cut_short = tokio::task::spawn_blocking(move || {
            wait_for_line(&lines, "run cut short", Duration::from_secs(5))
        })
        .await
        .unwrap();
        let stopped_after = cut_at.elapsed();
        // The engine notices the cancellation within ~50 ms of the log line.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let at_stop = acceptor.count();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = acceptor.count() - at_stop;

        assert!(
            cut_short.contains("no word from the coordinator"),
            "{cut_short}"
        );
        assert!(
            stopped_after < LIVENESS + Duration::from_millis(700),
            "stopped {stopped_after:?} after the partition"
        );
        // 500/s would be ~250 more in 500 ms.
        assert!(after <= 5, "{after} connections after the agent stopped");
        assert!(acceptor.count() < 4000, "the ramp was cut short");
        drop(child);
        stop.cancel();
    });
}
