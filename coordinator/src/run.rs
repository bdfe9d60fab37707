//! One run, start to report (DESIGN.md "A run, step by step", steps 2–9): wait for agents,
//! split the connections, configure the target, prepare and arm every agent, start them
//! together, collect intervals and results while watching for lost agents, pull the
//! target's stats and merge exactly.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use stampede_proto::clock::unix_nanos_now;
use stampede_proto::pb::{self, agent_message::Msg as In, coordinator_message::Msg as Out};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::merge::{MergeError, Tally};
use crate::report::{Admission, AgentReport, Latency, Report};
use crate::service::{AgentEvent, Registry};
use crate::target::{TargetControl, TargetError};
use stampede_proto::clock::rfc3339;

/// What to run, already validated.
#[derive(Debug, Clone)]
pub struct RunPlan {
    /// How many agents to wait for and use.
    pub agents: usize,
    /// How long to wait for them.
    pub agent_wait: Duration,
    /// Connections in total, split across agents.
    pub connections: u64,
    /// The target, HOST:PORT.
    pub target: SocketAddr,
    /// When the connects happen.
    pub pattern: pb::Pattern,
    /// Per-attempt deadline.
    pub timeout: Duration,
    /// Hold established connections this long.
    pub hold: Duration,
    /// How agents close connections.
    pub close: pb::CloseMode,
    /// The target greets on accept (time to first byte, ghosts).
    pub expect_greeting: bool,
    /// Agents send one byte after connecting and watch it being acknowledged (ghosts, for
    /// client-speaks-first servers).
    pub probe_admission: bool,
    /// Minimum lead between Start and the start instant.
    pub lead: Duration,
    /// The target's control service (`http://HOST:PORT`).
    pub target_control: Option<String>,
    /// Backlog to configure on the target before the run.
    pub backlog: Option<i32>,
    /// Accept rate to configure on the target before the run (`f64::INFINITY`: as fast as
    /// possible, 0: never).
    pub accept_rate: Option<f64>,
    /// The scenario as the user gave it, echoed into the report.
    pub scenario: serde_json::Value,
}

impl RunPlan {
    /// How long the pattern itself lasts.
    fn pattern_span(&self) -> Duration {
        match pb::PatternKind::try_from(self.pattern.kind) {
            Ok(pb::PatternKind::Ramp) => Duration::from_millis(self.pattern.duration_ms),
            Ok(pb::PatternKind::Waves) => Duration::from_millis(
                self.pattern.period_ms * u64::from(self.pattern.waves.saturating_sub(1)),
            ),
            _ => Duration::ZERO,
        }
    }

    /// Connections for agent `i` of `n`: an even split, the remainder to the first ones.
    pub fn share(&self, i: usize, n: usize) -> u64 {
        let n = n as u64;
        let i = i as u64;
        self.connections / n + u64::from(i < self.connections % n)
    }
}

/// Why a run could not happen or finish.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Not enough agents attached in time.
    #[error("waited {waited:?} for {want} agents, {} attached{}", have.len(), if have.is_empty() { String::new() } else { format!(" ({})", have.join(", ")) })]
    NotEnoughAgents {
        /// Wanted.
        want: usize,
        /// Attached.
        have: Vec<String>,
        /// How long we waited.
        waited: Duration,
    },
    /// An agent refused the plan.
    #[error("agent {agent} rejected the plan: {reason}")]
    Rejected {
        /// Agent id.
        agent: String,
        /// Its reason.
        reason: String,
    },
    /// An agent left before the start.
    #[error("agent {agent} was lost before the start: {reason}")]
    LostBeforeStart {
        /// Agent id.
        agent: String,
        /// Why.
        reason: String,
    },
    /// Agents did not answer Prepare in time.
    #[error("no answer to the plan within {0:?} from: {1}")]
    PrepareTimeout(Duration, String),
    /// The target's control service failed.
    #[error(transparent)]
    TargetControl(#[from] TargetError),
    /// An agent's data could not be merged.
    #[error(transparent)]
    Merge(#[from] MergeError),
    /// Aborted before the start.
    #[error("aborted before the start")]
    Aborted,
}

/// A finished (or partial) run: the report, and each agent's counts and histograms as
/// merged into it (for interval logs and for checking the merge).
#[derive(Debug)]
pub struct Finished {
    /// The report.
    pub report: Report,
    /// Per agent: its final result, or the intervals it delivered before it was lost.
    pub tallies: BTreeMap<String, Tally>,
    /// Per agent: the interval results it sent, in arrival order (for `report.hlog`).
    pub intervals: BTreeMap<String, Vec<pb::IntervalResult>>,
    /// The agreed start instant, coordinator time.
    pub start_at_unix_nanos: i64,
}

impl Finished {
    /// All agents' tallies merged: the histograms behind the report's percentiles.
    pub fn merged(&self) -> Tally {
        self.tallies.values().fold(Tally::default(), |mut acc, t| {
            acc.merge(t);
            acc
        })
    }

    /// Writes `report.json`, `report.csv`, `report.html` and `report.hlog` into `dir`.
    pub fn write(&self, dir: &std::path::Path) -> std::io::Result<()> {
        let out = crate::report::OutDir::create(dir)?;
        out.json("report.json", &self.report)?;
        out.file("report.csv", crate::report::csv::render(&self.report))?;
        out.file(
            "report.html",
            crate::report::html::render(&self.report, &self.merged().connect_us),
        )?;
        let hlog = crate::report::hlog::render(
            &self.report.run_id,
            self.start_at_unix_nanos,
            &self.intervals,
        )
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
        out.file("report.hlog", hlog)
    }
}

/// The shortest lead between Start and the start instant, whatever the plan says.
const MIN_LEAD: Duration = Duration::from_millis(50);

/// Per-agent bookkeeping during a run.
#[derive(Debug, Default)]
struct AgentState {
    connections: u64,
    host: String,
    clock_offset_ns: i64,
    clock_rtt_ns: u64,
    /// The interval results received, as sent: a lost agent counts with their sum.
    intervals: Vec<pb::IntervalResult>,
    completed: u64,
    result: Option<pb::FinalResult>,
    last_seen: Option<Instant>,
}

/// Runs `plan` with the registry's agents. `progress` receives one-line status updates.
pub async fn execute(
    registry: &Registry,
    plan: &RunPlan,
    cancel: &CancellationToken,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Finished, RunError> {
    let mut events = registry.events().await;
    // Events from before this run (agents that came and went) are no longer news.
    while events.try_recv().is_ok() {}

    let ids = wait_for_agents(registry, plan, cancel, progress).await?;
    let run_id = format!("{:x}", unix_nanos_now());
    let infos = registry.agents();
    let mut states: BTreeMap<String, AgentState> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let st = AgentState {
                connections: plan.share(i, ids.len()),
                host: infos
                    .get(id)
                    .map(|a| a.hello.host.clone())
                    .unwrap_or_default(),
                ..Default::default()
            };
            (id.clone(), st)
        })
        .collect();

    let mut target = match &plan.target_control {
        Some(url) => {
            let mut t = TargetControl::connect(url).await?;
            if plan.backlog.is_some() || plan.accept_rate.is_some() {
                t.configure(plan.backlog, plan.accept_rate).await?;
            }
            t.reset().await?;
            Some(t)
        }
        None => None,
    };

    // Prepare: every agent validates, syncs its clock and arms, or says why not.
    let total_connections = plan.connections.max(1);
    for (id, st) in &states {
        // The pattern's rate is the whole run's: each agent ramps at its share of it.
        let mut pattern = plan.pattern;
        pattern.rate_per_sec *= st.connections as f64 / total_connections as f64;
        let prepare = pb::Prepare {
            run_id: run_id.clone(),
            targets: vec![plan.target.to_string()],
            connections: st.connections,
            pattern: Some(pattern),
            timeout_ms: plan.timeout.as_millis() as u64,
            hold_ms: plan.hold.as_millis() as u64,
            close: plan.close as i32,
            expect_greeting: plan.expect_greeting,
            probe_admission: plan.probe_admission,
        };
        if !registry.send(id, Out::Prepare(prepare)).await {
            return Err(RunError::LostBeforeStart {
                agent: id.clone(),
                reason: "stream closed".into(),
            });
        }
    }
    progress(&format!("preparing {} agents", states.len()));
    let prepare_timeout = Duration::from_secs(30);
    let deadline = Instant::now() + prepare_timeout;
    let mut ready: BTreeSet<String> = BTreeSet::new();
    while ready.len() < states.len() {
        let event = tokio::select! {
            _ = cancel.cancelled() => {
                abort_all(registry, &states, &run_id, "aborted by the coordinator").await;
                return Err(RunError::Aborted);
            }
            e = tokio::time::timeout_at(deadline, events.recv()) => match e {
                Ok(Some(e)) => e,
                _ => {
                    let missing: Vec<_> = states.keys().filter(|k| !ready.contains(*k)).cloned().collect();
                    abort_all(registry, &states, &run_id, "prepare timed out").await;
                    return Err(RunError::PrepareTimeout(prepare_timeout, missing.join(", ")));
                }
            },
        };
        let (agent, msg) = match event {
            AgentEvent::Gone { agent, reason } => {
                if states.contains_key(&agent) {
                    abort_all(registry, &states, &run_id, "another agent was lost").await;
                    return Err(RunError::LostBeforeStart { agent, reason });
                }
                continue;
            }
            AgentEvent::Message { agent, msg } => (agent, *msg),
        };
        match msg {
            In::Ready(r) if r.run_id == run_id => {
                if let Some(st) = states.get_mut(&agent) {
                    st.clock_offset_ns = r.clock_offset_ns;
                    st.clock_rtt_ns = r.clock_rtt_ns;
                    ready.insert(agent);
                }
            }
            In::Rejected(r) if r.run_id == run_id && states.contains_key(&agent) => {
                abort_all(
                    registry,
                    &states,
                    &run_id,
                    "another agent rejected the plan",
                )
                .await;
                return Err(RunError::Rejected {
                    agent,
                    reason: r.reason,
                });
            }
            _ => {}
        }
    }

    // Start: far enough ahead that every agent hears of it in time (≥ 5 × the worst RTT).
    let max_rtt = Duration::from_nanos(states.values().map(|s| s.clock_rtt_ns).max().unwrap_or(0));
    // The RTT is each agent's best probe, so a jittery path can need more than 5 × it: a
    // floor keeps a tiny configured lead (say "0ms") from making every agent refuse.
    let lead = plan.lead.max(max_rtt * 5).max(MIN_LEAD);
    let start_at = unix_nanos_now() + lead.as_nanos() as i64;
    for id in states.keys() {
        registry
            .send(
                id,
                Out::Start(pb::Start {
                    run_id: run_id.clone(),
                    start_at_unix_nanos: start_at,
                }),
            )
            .await;
    }
    progress(&format!("start in {lead:?} at {}", rfc3339(start_at)));

    // Collect until every agent has delivered its result or is lost.
    let total: u64 = states.values().map(|s| s.connections).sum();
    let liveness = (registry.heartbeat() * 4).max(Duration::from_secs(3));
    let end_by = Instant::now()
        + lead
        + plan.pattern_span()
        + plan.timeout
        + plan.hold
        + Duration::from_secs(15);
    let mut lost: BTreeMap<String, String> = BTreeMap::new();
    let mut aborted = false;
    // Agents told to stop at the run's deadline still send what they have.
    let mut overdue = false;
    let started = Instant::now();
    for st in states.values_mut() {
        st.last_seen = Some(started);
    }
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut last_progress = Instant::now();
    loop {
        let pending: Vec<String> = states
            .iter()
            .filter(|(id, s)| s.result.is_none() && !lost.contains_key(*id))
            .map(|(id, _)| id.clone())
            .collect();
        if pending.is_empty() {
            break;
        }
        tokio::select! {
            _ = cancel.cancelled(), if !aborted => {
                aborted = true;
                abort_all(registry, &states, &run_id, "aborted by the coordinator (interrupted)").await;
                // Give agents a moment to send what they have, then stop waiting.
                let grace = Instant::now() + Duration::from_secs(2);
                // Results cut short by our own Abort do not make their agents lost.
                drain_until(&mut events, &mut states, &run_id, grace, &mut BTreeMap::new()).await;
                for id in pending {
                    if states[&id].result.is_none() {
                        lost.insert(id, "run aborted before its result arrived".into());
                    }
                }
                break;
            }
            e = events.recv() => {
                let Some(e) = e else { break };
                handle_event(e, &mut states, &run_id, &mut lost);
            }
            _ = tick.tick() => {
                let now = Instant::now();
                for id in &pending {
                    let st = &states[id];
                    if st.last_seen.is_some_and(|t| now - t > liveness) {
                        lost.insert(id.clone(), format!("no message for {liveness:?}"));
                        registry.send(id, Out::Abort(pb::Abort { run_id: run_id.clone(), reason: "declared lost".into() })).await;
                    } else if now > end_by {
                        overdue = true;
                        lost.insert(id.clone(), "no result by the run's deadline".into());
                        registry.send(id, Out::Abort(pb::Abort { run_id: run_id.clone(), reason: "run deadline passed".into() })).await;
                    }
                }
                if now - last_progress >= Duration::from_secs(1) {
                    last_progress = now;
                    let done: u64 = states.values().map(|s| s.result.as_ref().map_or(s.completed, |r| r.outcomes.as_ref().map_or(0, outcome_total))).sum();
                    progress(&format!("{done}/{total} attempts done, {} of {} agents finished", states.values().filter(|s| s.result.is_some()).count(), states.len()));
                }
            }
        }
    }

    if overdue && !aborted {
        let grace = Instant::now() + Duration::from_secs(2);
        drain_until(&mut events, &mut states, &run_id, grace, &mut lost).await;
    }

    // The agents' results are in: a target that died or stalled under the load costs its
    // own section of the report, never the report.
    let (target_stats, target_error) = match &mut target {
        Some(t) => match t.stats().await {
            Ok(s) => (Some(s), None),
            Err(e) => {
                tracing::warn!(cause = %e, "final target stats unavailable");
                (None, Some(e.to_string()))
            }
        },
        None => (None, None),
    };
    let mut finished = build_report(run_id, start_at, plan, states, lost, aborted, target_stats)?;
    finished.report.target_error = target_error;
    Ok(finished)
}

async fn wait_for_agents(
    registry: &Registry,
    plan: &RunPlan,
    cancel: &CancellationToken,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Vec<String>, RunError> {
    let want = plan.agents;
    let waited = tokio::select! {
        _ = cancel.cancelled() => return Err(RunError::Aborted),
        r = registry.wait_for(want, plan.agent_wait, |n| progress(&format!("waiting for agents: {n}/{want} attached"))) => r,
    };
    match waited {
        Ok(mut ids) => {
            ids.truncate(want);
            Ok(ids)
        }
        Err(have) => Err(RunError::NotEnoughAgents {
            want,
            have,
            waited: plan.agent_wait,
        }),
    }
}

async fn abort_all(
    registry: &Registry,
    states: &BTreeMap<String, AgentState>,
    run_id: &str,
    reason: &str,
) {
    for id in states.keys() {
        registry
            .send(
                id,
                Out::Abort(pb::Abort {
                    run_id: run_id.to_owned(),
                    reason: reason.to_owned(),
                }),
            )
            .await;
    }
}

async fn drain_until(
    events: &mut tokio::sync::mpsc::UnboundedReceiver<AgentEvent>,
    states: &mut BTreeMap<String, AgentState>,
    run_id: &str,
    until: Instant,
    lost: &mut BTreeMap<String, String>,
) {
    while states.values().any(|s| s.result.is_none()) {
        match tokio::time::timeout_at(until, events.recv()).await {
            Ok(Some(e)) => handle_event(e, states, run_id, lost),
            _ => break,
        }
    }
}

fn handle_event(
    e: AgentEvent,
    states: &mut BTreeMap<String, AgentState>,
    run_id: &str,
    lost: &mut BTreeMap<String, String>,
) {
    match e {
        AgentEvent::Message { agent, msg } => {
            let Some(st) = states.get_mut(&agent) else {
                return;
            };
            st.last_seen = Some(Instant::now());
            match *msg {
                In::Interval(r) if r.run_id == run_id => {
                    st.completed += r.outcomes.as_ref().map_or(0, outcome_total);
                    st.intervals.push(r);
                }
                In::Result(r) if r.run_id == run_id => {
                    if r.cancelled {
                        lost.insert(
                            agent.clone(),
                            format!("stopped mid-run with {} attempts unfinished", r.unfinished),
                        );
                    }
                    st.result = Some(r);
                }
                In::Rejected(r) if r.run_id == run_id => {
                    // E.g. the start instant had already passed when Start arrived.
                    lost.insert(agent.clone(), format!("refused to fire: {}", r.reason));
                }
                In::Heartbeat(h) if h.run_id == run_id => {
                    st.completed = st.completed.max(h.completed)
                }
                _ => {}
            }
        }
        AgentEvent::Gone { agent, reason } => {
            if states.get(&agent).is_some_and(|s| s.result.is_none()) {
                lost.insert(agent, reason);
            }
        }
    }
}

/// Counts by k with string keys, as report.json has them (`{"1": n}`).
fn by_k(counts: &BTreeMap<u32, u64>) -> BTreeMap<String, u64> {
    counts.iter().map(|(k, n)| (k.to_string(), *n)).collect()
}

fn outcome_total(o: &pb::Outcomes) -> u64 {
    crate::report::Outcomes::from(o).total()
}

fn build_report(
    run_id: String,
    start_at: i64,
    plan: &RunPlan,
    states: BTreeMap<String, AgentState>,
    mut lost: BTreeMap<String, String>,
    aborted: bool,
    target: Option<pb::TargetStats>,
) -> Result<Finished, RunError> {
    let mut merged = Tally::default();
    let mut agents = Vec::with_capacity(states.len());
    let mut tallies = BTreeMap::new();
    let mut intervals = BTreeMap::new();
    let mut first_connects = Vec::new();
    let mut issue_ends = Vec::new();
    let mut kernel = None;
    for (id, st) in states {
        // A finished agent's final result is authoritative; a lost one counts with the
        // intervals it delivered (it loses at most the interval in flight).
        let mut tally = Tally::default();
        let added = match &st.result {
            Some(r) => tally.add_final(r),
            None => st.intervals.iter().try_for_each(|r| tally.add_interval(r)),
        };
        // One agent's unusable data (a bug, version skew) costs that agent, not the run.
        let usable = match added {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(agent = %id, cause = %e, "agent data dropped");
                lost.insert(id.clone(), format!("its results could not be merged: {e}"));
                tally = Tally::default();
                false
            }
        };
        intervals.insert(id.clone(), if usable { st.intervals } else { Vec::new() });
        merged.merge(&tally);
        let attempts = tally.attempts();
        let outcomes = tally.outcomes;
        let connect_latency_us = Latency::from(&tally.connect_us);
        let errors = tally.errors.clone();
        tallies.insert(id.clone(), tally);
        let mut a = AgentReport {
            id: id.clone(),
            host: st.host,
            connections: st.connections,
            attempts,
            clock_offset_us: st.clock_offset_ns / 1_000,
            clock_uncertainty_us: st.clock_rtt_ns / 2_000,
            outcomes,
            connect_latency_us,
            errors,
            complete: usable && st.result.as_ref().is_some_and(|r| !r.cancelled),
            ..Default::default()
        };
        if let Some(r) = &st.result {
            if r.first_connect_unix_nanos != 0 {
                let first = r.first_connect_unix_nanos + st.clock_offset_ns;
                a.start_error_us = Some((first - start_at) / 1_000);
                a.issue_duration_us = Some(r.issue_duration_us);
                first_connects.push(first);
                issue_ends.push(first + r.issue_duration_us as i64 * 1_000);
            }
            a.kernel = r.kernel.as_ref().map(Into::into).unwrap_or_default();
            a.unfinished = r.unfinished;
            kernel.get_or_insert_with(|| a.kernel.clone());
        }
        agents.push(a);
    }
    let spread = match (first_connects.iter().min(), first_connects.iter().max()) {
        (Some(lo), Some(hi)) => Some(((hi - lo) / 1_000) as u64),
        _ => None,
    };
    let issue = match (first_connects.iter().min(), issue_ends.iter().max()) {
        (Some(lo), Some(hi)) => Some(((hi - lo).max(0) / 1_000) as u64),
        _ => None,
    };
    let report = Report {
        run_id,
        started_at: rfc3339(start_at),
        scenario: plan.scenario.clone(),
        partial: aborted || !lost.is_empty(),
        aborted,
        lost_agents: lost.keys().cloned().collect(),
        lost_reasons: lost,
        agents,
        admission: Admission::of(plan.expect_greeting, plan.probe_admission),
        outcomes: merged.outcomes,
        syn_retransmits: by_k(&merged.syn_retransmits),
        ghost_syn_retransmits: by_k(&merged.ghost_syn_retransmits),
        pending_syn_retransmits: by_k(&merged.pending_syn_retransmits),
        errors: merged.errors.clone(),
        connect_latency_us: Latency::from(&merged.connect_us),
        ttfb_us: Latency::from(&merged.ttfb_us),
        start_spread_us: spread,
        issue_duration_us: issue,
        kernel: kernel.unwrap_or_default(),
        target_error: None,
        target: target.map(|t| {
            serde_json::to_value(stampede_target::stats::TargetStats::from(&t))
                .expect("stats serialize")
        }),
    };
    Ok(Finished {
        report,
        tallies,
        intervals,
        start_at_unix_nanos: start_at,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A plan with every field set to something neutral, for unit tests.
    pub(crate) fn plan_for_tests() -> RunPlan {
        RunPlan {
            agents: 3,
            agent_wait: Duration::ZERO,
            connections: 10,
            target: "127.0.0.1:9".parse().unwrap(),
            pattern: pb::Pattern::default(),
            timeout: Duration::ZERO,
            hold: Duration::ZERO,
            close: pb::CloseMode::Rst,
            expect_greeting: false,
            probe_admission: false,
            lead: Duration::ZERO,
            target_control: None,
            backlog: None,
            accept_rate: None,
            scenario: serde_json::Value::Null,
        }
    }

    #[test]
    fn share_splits_evenly_with_remainder_first() {
        let plan = RunPlan {
            agents: 3,
            connections: 10,
            ..plan_for_tests()
        };
        let shares: Vec<u64> = (0..3).map(|i| plan.share(i, 3)).collect();
        assert_eq!(shares, vec![4, 3, 3]);
        assert_eq!(shares.iter().sum::<u64>(), 10);
    }

    /// An agent whose histogram cannot be decoded is named lost; the others still report.
    #[test]
    fn unusable_agent_data_costs_that_agent_only() {
        let good = pb::FinalResult {
            outcomes: Some(pb::Outcomes {
                established: 5,
                ..Default::default()
            }),
            connections: 5,
            ..Default::default()
        };
        let bad = pb::FinalResult {
            connect_latency_hist: b"garbage".to_vec(),
            ..good.clone()
        };
        let mut states = BTreeMap::new();
        for (id, r) in [("a", good), ("b", bad)] {
            let st = AgentState {
                connections: 5,
                result: Some(r),
                ..Default::default()
            };
            states.insert(id.to_owned(), st);
        }
        let plan = plan_for_tests();
        let done =
            build_report("r".into(), 0, &plan, states, BTreeMap::new(), false, None).unwrap();
        let r = &done.report;
        assert!(r.partial);
        assert_eq!(r.lost_agents, vec!["b".to_owned()]);
        assert!(r.lost_reasons["b"].contains("could not be merged"), "{r:?}");
        assert_eq!(r.outcomes.established, 5);
        assert!(r.agents.iter().find(|a| a.id == "a").unwrap().complete);
        assert!(!r.agents.iter().find(|a| a.id == "b").unwrap().complete);
    }
}
