//! `stampede sweep` end to end in one process (coordinator, two agent sessions, a target over
//! real gRPC and real sockets), each test in a network namespace of its own so the kernel
//! counters and queue peaks it asserts are exactly its own:
//! - every step starts from the same state: a target with an accept delay keeps it at every
//!   step (draining between steps must put it back), and after the sweep the target's accept
//!   policy is what it was before;
//! - `--refine` bisects to the smallest backlog that absorbs the burst, `--confirm` reruns it,
//!   and the queue model uses the accepts measured in the target's timeline.

use std::time::Duration;

use stampede::auth::Token;
use stampede::run::RunPlan;
use stampede::sweep::{Phase, SweepPlan, Tolerance};
use stampede_agent::session::{self, SessionConfig};
use stampede_lab::{Netns, kernel_tests_enabled};
use stampede_proto::plan::Load;
use stampede_target::config::{AcceptPolicy, Config as TargetConfig, OnAccept};
use stampede_target::{Target, TargetHandle};
use tokio_util::sync::CancellationToken;

/// Connections per step.
const M: u64 = 40;

struct System {
    stop: CancellationToken,
    coordinator: stampede::Coordinator,
    target: TargetHandle,
    control: std::net::SocketAddr,
}

/// A target with `accept`, two agents, a coordinator, in the calling namespace.
async fn system(accept: AcceptPolicy) -> System {
    let stop = CancellationToken::new();
    let target = Target::bind(&TargetConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        backlog: 1024,
        on_accept: OnAccept::Close,
        accept,
        control: Some("127.0.0.1:0".parse().unwrap()),
        ..TargetConfig::default()
    })
    .unwrap();
    let control = target.control_addr().unwrap();
    let handle = target.handle();
    tokio::spawn(target.run(stop.child_token()));
    let coordinator = stampede::serve(
        stampede::ServeConfig::new("127.0.0.1:0".parse().unwrap(), Token::new("t0ken")),
        stop.clone(),
    )
    .await
    .unwrap();
    for i in 1..=2 {
        let config = SessionConfig {
            coordinator: format!("http://{}", coordinator.addr),
            token: Token::new("t0ken"),
            id: format!("agent-{i}"),
            ..SessionConfig::loopback()
        };
        tokio::spawn(session::run(config, stop.child_token()));
    }
    System {
        stop,
        coordinator,
        target: handle,
        control,
    }
}

/// M connects from 2 agents, no greeting expected, 1.5 s to connect.
fn run_plan(s: &System) -> RunPlan {
    RunPlan {
        agents: 2,
        agent_wait: Duration::from_secs(10),
        load: Load {
            timeout: Duration::from_millis(1500),
            expect_greeting: false,
            ..Load::burst(s.target.local_addr(), M)
        },
        lead: Duration::from_millis(200),
        target_control: Some(format!("http://{}", s.control)),
        target_auth: Default::default(),
        backlog: None,
        accept_rate: None,
        scenario: serde_json::Value::Null,
    }
}

fn in_own_netns<F: std::future::Future<Output = ()> + Send>(test: &str, body: F) {
    if !kernel_tests_enabled(test) {
        return;
    }
    Netns::new("swp").unwrap().block_on(body);
}

/// Without --accept-rates the target's own policy holds at every step: a 60 s accept delay
/// means nothing is accepted during any step, so each queue holds min(M, B+1..=B+2). Before
/// the fix, the first drain left the target accepting as fast as possible, and every later
/// step accepted its whole burst.
#[test]
fn every_step_runs_under_the_targets_own_accept_policy() {
    in_own_netns(
        "every_step_runs_under_the_targets_own_accept_policy",
        async {
            let delayed = AcceptPolicy {
                delay: Duration::from_secs(60),
                ..AcceptPolicy::default()
            };
            let s = system(delayed.clone()).await;
            let before = s.target.stats().unwrap().accept_policy;
            assert_eq!(before.map(|p| p.delay_ms), Some(60_000));
            let plan = SweepPlan::new(run_plan(&s), vec![128, 8, 64]);
            let r = stampede::sweep::execute(
                &s.coordinator.registry,
                &plan,
                &CancellationToken::new(),
                &|_| {},
            )
            .await
            .unwrap();
            assert!(r.stopped.is_none(), "{r:?}");
            assert_eq!(
                r.steps.iter().map(|st| st.backlog).collect::<Vec<_>>(),
                [8, 64, 128]
            );
            for (st, report) in r.steps.iter().zip(&r.reports) {
                assert_eq!(
                    st.accepted, 0,
                    "step {} accepted under the delay",
                    st.backlog
                );
                let t = report.target.as_ref().unwrap();
                assert_eq!(t.accept_policy, before, "step {}", st.backlog);
                let room = (st.backlog as u32 + 1).min(M as u32);
                assert!(
                    (room..=room + 1).contains(&st.accept_queue_max),
                    "step {}: queue {}",
                    st.backlog,
                    st.accept_queue_max
                );
                // The accept queue over time reached the report, its peak the step's peak.
                let tl = t
                    .timeline
                    .as_ref()
                    .expect("the run's final stats carry the timeline");
                let peak = tl.points.iter().map(|p| p.queue_max).max().unwrap();
                assert_eq!(peak, st.accept_queue_max, "step {}", st.backlog);
                // On the run's time axis the queue fills at the start instant, not before
                // (5 ms for the reset call's half round trip) and not a second later.
                let reset_before = report
                    .target_reset_before_start_us
                    .expect("the report places the timeline on the run's axis");
                let first = tl.points.iter().find(|p| p.queue_max > 0).unwrap();
                let (from, to) = (first.t_us as i64, (first.t_us + tl.bucket_us) as i64);
                assert!(
                    to >= reset_before - 5_000 && from <= reset_before + 1_000_000,
                    "step {}: queue rose in [{from}, {to}) µs after the reset, start at {reset_before}",
                    st.backlog
                );
            }
            assert!(r.steps[0].listen_overflows > 0 && !r.steps[0].clean);
            assert!(r.steps[1].clean && r.steps[2].clean, "{}", r.summary());
            assert_eq!(r.recommendations[0].backlog, Some(64));
            // Drained after the last step, then put back exactly as it was.
            let after = s.target.stats().unwrap();
            assert_eq!(after.accept_queue_len, 0);
            assert_eq!(after.accept_policy, before);
            s.stop.cancel();
        },
    );
}

/// A target that accepts nothing during a step (rate 0): backlog B holds B+1, so M connects
/// need B >= M-1 = 39. From 8 and 64, --refine 4 bisects to a clean backlog at most 4 above an
/// unclean one, --confirm 2 reruns it, and the model (accepts measured: none) says 39.
#[test]
fn refine_bisects_to_the_smallest_clean_backlog_and_confirm_reruns_it() {
    in_own_netns(
        "refine_bisects_to_the_smallest_clean_backlog_and_confirm_reruns_it",
        async {
            let s = system(AcceptPolicy::default()).await;
            let plan = SweepPlan {
                accept_rates: vec![0.0],
                refine: Some(Tolerance::Slots(4)),
                confirm: 2,
                ..SweepPlan::new(run_plan(&s), vec![8, 64])
            };
            let r = stampede::sweep::execute(
                &s.coordinator.registry,
                &plan,
                &CancellationToken::new(),
                &|_| {},
            )
            .await
            .unwrap();
            assert!(r.stopped.is_none(), "{r:?}");
            let rec = &r.recommendations[0];
            let b = rec.backlog.unwrap_or_else(|| panic!("{}", r.summary()));
            let [lo, hi] = rec.bracket.unwrap();
            assert_eq!(hi, b);
            assert!(hi - lo <= 4 && lo > 8, "{rec:?}");
            // 36 slots or fewer cannot hold 40 (B+2 at most); 39 always does.
            assert!((37..=39).contains(&b), "{}", r.summary());
            let refined = r
                .steps
                .iter()
                .filter(|st| st.phase == Phase::Refine)
                .count();
            assert!((2..=6).contains(&refined), "{}", r.summary());
            let confirms: Vec<_> = r
                .steps
                .iter()
                .filter(|st| st.phase == Phase::Confirm)
                .collect();
            assert_eq!(confirms.len(), 2);
            assert!(confirms.iter().all(|c| c.backlog == b && c.clean));
            assert_eq!((rec.confirmations, rec.confirmations_clean), (2, 2));
            assert_eq!(rec.model_source, "measured");
            assert_eq!(rec.model_accepted_during_burst, Some(0));
            assert_eq!(rec.model_backlog, M - 1);
            assert_eq!(rec.measured_queue_peak, Some(M as u32));
            let table = r.summary();
            assert!(
                table.contains("(refine)") && table.contains("(confirm)"),
                "{table}"
            );
            s.stop.cancel();
        },
    );
}

/// A sweep against `stampede-target observe` is refused before any step: observe cannot set
/// another process's backlog, and the error says what to run instead.
#[test]
fn a_sweep_against_observe_is_refused_up_front() {
    in_own_netns("a_sweep_against_observe_is_refused_up_front", async {
        let s = system(AcceptPolicy::default()).await;
        // Someone else's listener, watched by observe with a control port.
        let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = other.local_addr().unwrap().port();
        let observe =
            stampede_target::observe::Observe::bind(&stampede_target::observe::ObserveConfig {
                port,
                addr: None,
                interval: Duration::from_millis(5),
                duration: None,
                stats_json: None,
                control: Some("127.0.0.1:0".parse().unwrap()),
            })
            .unwrap();
        let control = observe.control_addr().unwrap();
        let stop = s.stop.child_token();
        tokio::spawn(async move { observe.run(stop, &mut |_| {}).await });
        let mut run = run_plan(&s);
        run.target_control = Some(format!("http://{control}"));
        let plan = SweepPlan::new(run, vec![8, 64]);
        let e = stampede::sweep::execute(
            &s.coordinator.registry,
            &plan,
            &CancellationToken::new(),
            &|_| {},
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("this is stampede-target observe")
                && e.contains("run the server under stampede-target supervise"),
            "{e}"
        );
        s.stop.cancel();
    });
}
