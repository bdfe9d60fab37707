//! The whole system in one process on loopback, over real gRPC and real sockets:
//! coordinator, three agent sessions and a target. Checks the merge against the agents'
//! own histograms, the clock and start figures, allow-list refusals and lost agents.
//!
//! Kernel tests: each runs in a network namespace of its own (stampede-lab), so the kernel's
//! counters it asserts (overflows, accept queue peaks) are exactly its own, never another
//! test's. Faults (an agent stopped, the target killed) are injected on events: once the
//! target has accepted a given number of this run's connections, never after a fixed sleep.

use std::collections::BTreeMap;
use std::time::Duration;

use stampede::auth::Token;
use stampede::run::{Finished, RunError, RunPlan};
use stampede_agent::cidr::Cidr;
use stampede_agent::session::{self, SessionConfig};
use stampede_lab::{Netns, kernel_tests_enabled};
use stampede_proto::pb;
use stampede_proto::plan::Load;
use stampede_target::config::{Config as TargetConfig, OnAccept};
use stampede_target::{Target, TargetHandle};
use tokio_util::sync::CancellationToken;

struct System {
    stop: CancellationToken,
    coordinator: stampede::Coordinator,
    target: std::net::SocketAddr,
    control: std::net::SocketAddr,
    target_stop: CancellationToken,
    target_handle: TargetHandle,
    agent_stops: BTreeMap<String, CancellationToken>,
}

async fn system(agents: usize, allow: Vec<Cidr>) -> System {
    let stop = CancellationToken::new();
    let target = Target::bind(&TargetConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        backlog: 1024,
        on_accept: OnAccept::Greet,
        control: Some("127.0.0.1:0".parse().unwrap()),
        ..TargetConfig::default()
    })
    .unwrap();
    let (addr, control) = (target.local_addr(), target.control_addr().unwrap());
    let target_handle = target.handle();
    let target_stop = stop.child_token();
    tokio::spawn(target.run(target_stop.clone()));
    let coordinator = stampede::serve(
        stampede::ServeConfig::new("127.0.0.1:0".parse().unwrap(), Token::new("t0ken")),
        stop.clone(),
    )
    .await
    .unwrap();
    let mut agent_stops = BTreeMap::new();
    for i in 1..=agents {
        let id = format!("agent-{i}");
        let agent_stop = stop.child_token();
        agent_stops.insert(id.clone(), agent_stop.clone());
        let config = SessionConfig {
            coordinator: format!("http://{}", coordinator.addr),
            token: Token::new("t0ken"),
            id,
            allow: allow.clone(),
            ..SessionConfig::loopback()
        };
        tokio::spawn(session::run(config, agent_stop));
    }
    System {
        stop,
        coordinator,
        target: addr,
        control,
        target_stop,
        target_handle,
        agent_stops,
    }
}

/// Runs a whole-system test body in a fresh network namespace of its own (kernel tests:
/// root needed; the gate fails or skips visibly without it).
fn in_own_netns<F: std::future::Future<Output = ()> + Send>(test: &str, body: F) {
    if !kernel_tests_enabled(test) {
        return;
    }
    Netns::new("e2e").unwrap().block_on(body);
}

/// Resolves once the target has accepted `n` connections since the run reset its counters:
/// the event faults are injected on. Polls the target's own counter (every 2 ms, bounded by
/// the test's run).
async fn accepted_at_least(target: TargetHandle, n: u64) {
    loop {
        let accepted = target.stats().ok().and_then(|s| s.accepted).unwrap_or(0);
        if accepted >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn plan(s: &System, agents: usize, connections: u64, pattern: pb::Pattern) -> RunPlan {
    RunPlan {
        agents,
        agent_wait: Duration::from_secs(10),
        load: Load {
            pattern: pattern.try_into().unwrap(),
            timeout: Duration::from_secs(3),
            expect_greeting: true,
            ..Load::burst(s.target, connections)
        },
        lead: Duration::from_millis(200),
        target_control: Some(format!("http://{}", s.control)),
        target_auth: Default::default(),
        backlog: None,
        accept_rate: None,
        scenario: serde_json::Value::Null,
    }
}

fn burst() -> pb::Pattern {
    pb::Pattern {
        kind: pb::PatternKind::Burst as i32,
        ..Default::default()
    }
}

async fn execute(s: &System, plan: &RunPlan) -> Result<Finished, RunError> {
    stampede::run::execute(
        &s.coordinator.registry,
        plan,
        &CancellationToken::new(),
        &|_| {},
    )
    .await
}

#[test]
fn three_agents_merge_exactly() {
    in_own_netns("three_agents_merge_exactly", async {
        let s = system(3, Cidr::loopback()).await;
        let done = execute(&s, &plan(&s, 3, 301, burst())).await.unwrap();
        let r = &done.report;
        assert!(!r.partial && r.lost_agents.is_empty(), "{r:?}");
        assert_eq!(r.agents.len(), 3);
        // Every attempt accounted for, and the merge is the sum of the agents.
        assert_eq!(r.outcomes.total(), 301);
        let mut sum = stampede_proto::report::Outcomes::default();
        for a in &r.agents {
            assert_eq!(a.attempts, a.connections, "{a:?}");
            assert!(a.complete);
            sum.add(&a.outcomes);
        }
        assert_eq!(sum, r.outcomes);
        assert_eq!(
            r.agents.iter().map(|a| a.connections).collect::<Vec<_>>(),
            vec![101, 100, 100]
        );
        // The merged percentiles equal those of the union of the agents' samples, rebuilt
        // here value by value from each agent's histogram (not with Histogram::add).
        let mut union = stampede_proto::histogram::new_latency();
        let tallies: Vec<_> = r.agents.iter().map(|a| done.tally(&a.id)).collect();
        for t in &tallies {
            for v in t.connect_latency.iter_recorded() {
                union
                    .record_n(v.value_iterated_to(), v.count_at_value())
                    .unwrap();
            }
        }
        assert_eq!(union.len(), 301);
        let merged = tallies
            .iter()
            .fold(stampede_proto::tally::Tally::default(), |mut acc, t| {
                acc.merge(t).unwrap();
                acc
            });
        assert_eq!(
            &merged,
            done.merged(),
            "the report's merge is the agents' merge"
        );
        for q in [0.0, 0.5, 0.9, 0.99, 0.999, 1.0] {
            assert_eq!(
                merged.connect_latency.value_at_quantile(q),
                union.value_at_quantile(q),
                "quantile {q}"
            );
        }
        // And the report's percentiles are those of that union.
        assert_eq!(
            r.connect_latency_us,
            stampede::report::Latency::from(&union)
        );
        // A big backlog on loopback: everything established and greeted.
        assert_eq!(r.outcomes.established, 301, "{r:?}");
        assert_eq!(r.ttfb_us.count, 301);
        let target = r.target.as_ref().unwrap();
        assert_eq!(target.accepted, Some(301));
        // Clocks: one host, so each offset lies within its stated uncertainty; the spread is
        // what the agents' own first connects say.
        let mut starts = Vec::new();
        for a in &r.agents {
            assert!(
                a.clock_offset_us.unsigned_abs() <= a.clock_uncertainty_us + 1,
                "{a:?}"
            );
            starts.push(a.start_error_us.unwrap());
        }
        let spread = r.start_spread_us.unwrap() as i64;
        let (lo, hi) = (starts.iter().min().unwrap(), starts.iter().max().unwrap());
        assert!((spread - (hi - lo)).abs() <= 2, "{spread} vs {starts:?}");
        assert!(r.kernel.fd_limit > 0);
        // The interval log: the untagged lines, second by second, hold every attempt once; each
        // agent has its own tagged series, and their sum is that agent's count.
        // Written while the run went, copied where the reports go.
        let dir = std::env::temp_dir().join(format!("stampede-e2e-hlog-{}", std::process::id()));
        done.write(&dir).unwrap();
        let hlog = std::fs::read(dir.join("report.hlog")).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let mut by_tag = BTreeMap::<String, u64>::new();
        for line in stampede_proto::hlog::parse(&hlog).unwrap() {
            *by_tag.entry(line.tag.unwrap_or_default()).or_default() += line.histogram.len();
        }
        assert_eq!(by_tag[""], 301, "{by_tag:?}");
        assert_eq!(by_tag["ttfb"], 301, "{by_tag:?}");
        for a in &r.agents {
            assert_eq!(by_tag[&format!("agent.{}", a.id)], a.attempts, "{by_tag:?}");
        }
        // Every attempt issued once, with its issue lag, second by second.
        assert_eq!(by_tag["issue_lag"], 301, "{by_tag:?}");
        assert_eq!(r.issue_lag_us.count, 301);
        assert_eq!(by_tag.len(), 3 + 2 * r.agents.len(), "{by_tag:?}");
        s.stop.cancel();
    });
}

#[test]
fn agents_run_one_plan_after_another() {
    in_own_netns("agents_run_one_plan_after_another", async {
        let s = system(2, Cidr::loopback()).await;
        for run in 0..3 {
            let done = execute(&s, &plan(&s, 2, 40, burst())).await.unwrap();
            assert!(!done.report.partial, "run {run}: {:?}", done.report);
            assert_eq!(done.report.outcomes.total(), 40, "run {run}");
        }
        s.stop.cancel();
    });
}

#[test]
fn allow_list_refusal_reaches_the_coordinator() {
    in_own_netns("allow_list_refusal_reaches_the_coordinator", async {
        // The agents may only target the benchmarking range; the target is on loopback.
        let s = system(2, vec!["198.18.0.0/15".parse().unwrap()]).await;
        let err = execute(&s, &plan(&s, 2, 10, burst())).await.unwrap_err();
        match &err {
            RunError::Rejected { agent, reason } => {
                assert!(agent.starts_with("agent-"));
                assert!(reason.contains("127.0.0.1"), "{reason}");
            }
            other => panic!("expected a rejection, got {other}"),
        }
        let msg = err.to_string();
        assert!(msg.contains("rejected the plan"), "{msg}");
        s.stop.cancel();
    });
}

#[test]
fn lost_agent_makes_the_run_partial_and_the_rest_complete() {
    in_own_netns(
        "lost_agent_makes_the_run_partial_and_the_rest_complete",
        async {
            let s = system(3, Cidr::loopback()).await;
            // An open-loop ramp of 2 s, so the run is in progress when agent-2 dies.
            let ramp = pb::Pattern {
                kind: pb::PatternKind::Ramp as i32,
                rate_per_sec: 150.0,
                duration_ms: 2_000,
                ..Default::default()
            };
            let plan = plan(&s, 3, 300, ramp);
            // agent-2 stops once the target has accepted 90 of the 300 (about 0.6 s into
            // the 2 s ramp): the run is surely in progress, whatever the machine's load.
            let victim = s.agent_stops["agent-2"].clone();
            let watch = s.target_handle.clone();
            tokio::spawn(async move {
                accepted_at_least(watch, 90).await;
                victim.cancel();
            });
            let t = std::time::Instant::now();
            let done = execute(&s, &plan).await.unwrap();
            assert!(t.elapsed() < Duration::from_secs(20));
            let r = done.report;
            assert!(r.partial);
            assert_eq!(r.lost_agents, vec!["agent-2".to_owned()]);
            for a in &r.agents {
                if a.id == "agent-2" {
                    assert!(!a.complete);
                    // Its delivered intervals still count.
                    assert!(a.attempts < a.connections, "{a:?}");
                } else {
                    assert!(a.complete, "{a:?}");
                    assert_eq!(a.attempts, a.connections, "{a:?}");
                }
            }
            s.stop.cancel();
        },
    );
}

/// The target dies mid-run: the agents' results still make a report, which says why the
/// target's section is missing.
#[test]
fn a_target_that_dies_costs_its_section_not_the_report() {
    in_own_netns(
        "a_target_that_dies_costs_its_section_not_the_report",
        async {
            let s = system(2, Cidr::loopback()).await;
            let ramp = pb::Pattern {
                kind: pb::PatternKind::Ramp as i32,
                rate_per_sec: 100.0,
                duration_ms: 1_000,
                ..Default::default()
            };
            let plan = plan(&s, 2, 100, ramp);
            // The target dies once it has accepted 30 of the 100 (about 0.3 s into the 1 s
            // ramp), so it surely dies mid-run.
            let target = s.target_stop.clone();
            let watch = s.target_handle.clone();
            tokio::spawn(async move {
                accepted_at_least(watch, 30).await;
                target.cancel();
            });
            let done = execute(&s, &plan).await.unwrap();
            let r = &done.report;
            assert_eq!(r.outcomes.total(), 100, "{r:?}");
            // It accepted 30 before it died.
            assert!(r.outcomes.established >= 30, "{:?}", r.outcomes);
            assert!(r.target.is_none());
            let why = r.target_error.as_deref().unwrap();
            assert!(why.contains(&s.control.to_string()), "{why}");
            assert!(
                r.summary().contains("target: no final stats"),
                "{}",
                r.summary()
            );
            s.stop.cancel();
        },
    );
}

/// 40 connects from 2 agents at a target that accepts nothing during a step, over `backlogs`.
fn sweep_plan(s: &System, backlogs: Vec<i32>) -> stampede::sweep::SweepPlan {
    let mut run = plan(s, 2, 40, burst());
    run.load.expect_greeting = false;
    run.load.timeout = Duration::from_millis(1500);
    stampede::sweep::SweepPlan {
        accept_rates: vec![0.0],
        ..stampede::sweep::SweepPlan::new(run, backlogs)
    }
}

#[test]
fn sweep_finds_the_smallest_backlog_that_absorbs_the_burst() {
    in_own_netns(
        "sweep_finds_the_smallest_backlog_that_absorbs_the_burst",
        async {
            let s = system(2, Cidr::loopback()).await;
            // A target that never accepts during the burst: backlog B admits exactly B+1 on
            // loopback (docs/kernel.md §1), so 40 connects need B >= 39. Out of order and repeated on
            // purpose: steps run smallest first, once each.
            let sweep = sweep_plan(&s, vec![64, 1, 64]);
            let r = stampede::sweep::execute(
                &s.coordinator.registry,
                &sweep,
                &CancellationToken::new(),
                &|_| {},
            )
            .await
            .unwrap();
            assert_eq!(r.steps.len(), 2);
            assert!(r.stopped.is_none());
            let (small, big) = (&r.steps[0], &r.steps[1]);
            assert_eq!((small.backlog, small.backlog_effective), (1, 1));
            // B+1 = 2 fit the queue; with two agents connecting at once a third may complete its
            // handshake while its final ACK is dropped by the then-full queue (docs/kernel.md §2): its
            // connect() succeeds although the server never admitted it.
            assert!((2..=4).contains(&small.outcomes.established), "{small:?}");
            assert_eq!(
                small.outcomes.pending,
                40 - small.outcomes.established,
                "{small:?}"
            );
            assert_eq!(small.outcomes.total(), 40);
            // In a namespace of its own every overflow counted is this step's: each of the
            // 36+ connects left out overflowed at least once.
            assert!(small.listen_overflows >= 36, "{small:?}");
            assert_eq!(small.syncookies_sent, 0, "{small:?}");
            // A+1 is the rule, A+2 happens: two agents' handshakes completing on two CPUs at
            // once can both pass the lockless full-queue check (docs/kernel.md §1).
            assert!(
                (2..=3).contains(&small.accept_queue_max),
                "backlog 1 must hold A+1..=A+2: {small:?}"
            );
            assert_eq!(small.accepted, 0, "rate 0 accepts nothing during the step");
            // The queue was drained between steps: the second starts empty and holds all 40.
            assert_eq!(big.outcomes.established, 40, "{big:?}");
            assert_eq!(big.listen_overflows, 0, "{big:?}");
            assert_eq!(big.accept_queue_max, 40);
            assert_eq!(big.syncookies_sent, 0, "{big:?}");
            let rec = &r.recommendations[0];
            assert_eq!(rec.backlog, Some(64), "{rec:?}");
            assert_eq!(
                rec.model_backlog, 39,
                "rate 0: nothing accepted during the burst"
            );
            assert!(r.summary().contains("backlog 64"), "{}", r.summary());
            // Written out: the JSON round-trips, the page plots both steps.
            let dir = std::env::temp_dir().join(format!("stampede-sweep-{}", std::process::id()));
            r.write(&dir).unwrap();
            let json: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(dir.join("sweep.json")).unwrap())
                    .unwrap();
            assert_eq!(json["recommendations"][0]["backlog"], 64);
            let page = std::fs::read_to_string(dir.join("sweep.html")).unwrap();
            assert_eq!(page.matches("<figure class=\"chart\"").count(), 3);
            // The recommendation table's row: backlog 64, somaxconn at least 64.
            let rec = &page[page.find("Recommendation</h2>").unwrap()..];
            let rec = &rec[..rec.find("</table>").unwrap()];
            assert!(rec.contains("<td>64</td><td>64</td>"), "{rec}");
            std::fs::remove_dir_all(&dir).unwrap();
            s.stop.cancel();
        },
    );
}

/// Ctrl-C in the middle of a sweep keeps the steps already done, says it stopped, and still
/// recommends from what it has.
#[test]
fn an_interrupted_sweep_keeps_its_finished_steps() {
    in_own_netns("an_interrupted_sweep_keeps_its_finished_steps", async {
        let s = system(2, Cidr::loopback()).await;
        let sweep = sweep_plan(&s, vec![64, 128]);
        let cancel = CancellationToken::new();
        // "Ctrl-C" as the second step begins.
        let progress = |line: &str| {
            if line.starts_with("step 2/2") {
                cancel.cancel();
            }
        };
        let r = stampede::sweep::execute(&s.coordinator.registry, &sweep, &cancel, &progress)
            .await
            .unwrap();
        assert_eq!(r.stopped.as_deref(), Some("interrupted"), "{r:?}");
        assert!(!r.steps.is_empty());
        assert_eq!(r.steps[0].backlog, 64);
        assert!(!r.steps[0].partial);
        assert_eq!(r.steps[0].outcomes.total(), 40);
        // The kernel counters behind the recommendation are this test's own (its own
        // namespace): 40 connects into backlog 64 never overflow, so the finished step is
        // recommended.
        assert_eq!(r.steps[0].listen_overflows, 0, "{r:?}");
        assert_eq!(r.recommendations.len(), 1);
        assert_eq!(r.recommendations[0].backlog, Some(64), "{r:?}");
        assert!(
            r.summary().contains("sweep stopped after"),
            "{}",
            r.summary()
        );
        s.stop.cancel();
    });
}
