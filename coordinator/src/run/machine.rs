//! The run as a state machine, one method per step:
//!
//! - [`Run::prepare`]: wait for the agents, configure the target, send each agent its
//!   Prepare and gather Ready (or the Rejected, departure or timeout that ends the run);
//! - [`Run::start`]: measure a delivery round, pick a lead every agent can meet and send
//!   Start to every agent at once (`pacing`);
//! - [`Run::collect`]: record intervals and results until every agent has delivered or is
//!   lost, watching each agent's liveness, the run's deadline and cancellation (Ctrl-C);
//! - [`Run::finish`]: read the target's stats and build the report.
//!
//! Each wait is a `select!` whose arms call one `on_*` method each. The collect step, the
//! longest, is in `collect`; the bookkeeping of a single agent is in `agents`, the report
//! in `report`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use stampede_proto::clock::{rfc3339, unix_nanos_now};
use stampede_proto::duration::human_us;
use stampede_proto::pb::{self, agent_message::Msg as In, coordinator_message::Msg as Out};
use tokio::sync::MutexGuard;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::agents::{self, Agents};
use super::pacing;
use super::report::build_report;
use super::{Finished, RunError, RunPlan};
use crate::report::Pacing;
use crate::report::hlog::{HlogTo, IntervalLog};
use crate::service::{ActiveRun, AgentEvent, Registry};
use crate::target::TargetControl;

/// One run in progress.
pub(super) struct Run<'a> {
    pub(super) registry: &'a Registry,
    pub(super) plan: &'a RunPlan,
    pub(super) cancel: &'a CancellationToken,
    pub(super) progress: &'a (dyn Fn(&str) + Sync),
    /// The agents' events; held for the whole run (one run at a time reads them).
    pub(super) events: MutexGuard<'a, UnboundedReceiver<AgentEvent>>,
    /// This run's id; messages of other runs are ignored.
    pub(super) id: String,
    /// The registry's note that this run is in progress: only its messages are queued.
    pub(super) _active: ActiveRun<'a>,
    pub(super) agents: Agents,
    /// Agents lost so far, and why: any makes the report partial.
    pub(super) lost: BTreeMap<String, String>,
    /// The target's control service, when the plan names one.
    pub(super) target: Option<TargetControl>,
    /// Between Start and the start instant (set by `start`).
    pub(super) lead: Duration,
    /// The agreed start instant, coordinator time (set by `start`).
    pub(super) start_at: i64,
    /// Cancelled during the collect step: the agents were told to abort.
    pub(super) aborted: bool,
    /// Agents were told to stop at the run's deadline; they still send what they have.
    pub(super) overdue: bool,
    /// The timeouts and lead chosen for this fleet, as the report states them.
    pub(super) pacing: Pacing,
    /// `report.hlog`, written as the intervals arrive (begun by `collect`).
    pub(super) hlog: IntervalLog,
}

impl<'a> Run<'a> {
    /// Step 1: every agent validates the plan, syncs its clock and arms, or says why not.
    pub(super) async fn prepare(
        registry: &'a Registry,
        plan: &'a RunPlan,
        hlog: HlogTo,
        cancel: &'a CancellationToken,
        progress: &'a (dyn Fn(&str) + Sync),
    ) -> Result<Run<'a>, RunError> {
        let mut events = registry.events().await;
        let id = format!("{:x}", unix_nanos_now());
        // From here on the registry queues this run's messages (and no other run's).
        let active = registry.begin_run(&id);
        // Events from before this run (agents that came and went) are no longer news.
        while events.try_recv().is_ok() {}

        let ids = wait_for_agents(registry, plan, cancel, progress).await?;
        let agents = agents::assign(plan, &ids, &registry.agents());
        let target = configure_target(plan).await?;
        let mut run = Run {
            registry,
            plan,
            cancel,
            progress,
            events,
            id,
            _active: active,
            agents,
            lost: BTreeMap::new(),
            target,
            lead: Duration::ZERO,
            start_at: 0,
            aborted: false,
            overdue: false,
            pacing: Pacing::default(),
            hlog: IntervalLog::new(hlog),
        };
        run.pacing.agent_liveness_ms =
            pacing::agent_liveness(registry.heartbeat() * 2, run.agents.len()).as_millis() as u64;
        run.pacing.prepare_timeout_ms =
            pacing::prepare_timeout(run.agents.len()).as_millis() as u64;
        run.send_prepare().await?;
        run.await_ready().await?;
        Ok(run)
    }

    /// Sends each agent its part of the plan, to all at once.
    async fn send_prepare(&self) -> Result<(), RunError> {
        let liveness_ms = self.pacing.agent_liveness_ms;
        let prepares = self.agents.iter().map(|(id, st)| {
            let mut prepare = self.plan.agent_load(st.connections).to_prepare(&self.id);
            prepare.liveness_ms = liveness_ms;
            (id.clone(), Out::Prepare(prepare))
        });
        let gone = self.registry.send_each(prepares.collect::<Vec<_>>()).await;
        if let Some(agent) = gone.into_iter().min() {
            self.abort_all("another agent was lost").await;
            return Err(RunError::LostBeforeStart {
                agent,
                reason: "stream closed".into(),
            });
        }
        (self.progress)(&format!("preparing {} agents", self.agents.len()));
        Ok(())
    }

    /// Waits until every agent is Ready; anything else ends the run, every agent told why.
    async fn await_ready(&mut self) -> Result<(), RunError> {
        let deadline = Instant::now() + self.prepare_timeout();
        let cancel = self.cancel;
        let mut ready = BTreeSet::new();
        while ready.len() < self.agents.len() {
            let event = tokio::select! {
                _ = cancel.cancelled() => return Err(self.on_cancel_before_start().await),
                e = tokio::time::timeout_at(deadline, self.events.recv()) => e,
            };
            match event {
                Ok(Some(e)) => self.on_prepare_event(e, &mut ready).await?,
                _ => return Err(self.on_prepare_timeout(&ready).await),
            }
        }
        Ok(())
    }

    /// Records a Ready; a Rejected, or the departure of one of this run's agents, ends the
    /// run.
    async fn on_prepare_event(
        &mut self,
        event: AgentEvent,
        ready: &mut BTreeSet<String>,
    ) -> Result<(), RunError> {
        let (agent, msg) = match event {
            AgentEvent::Gone { agent, reason } if self.agents.contains_key(&agent) => {
                self.abort_all("another agent was lost").await;
                return Err(RunError::LostBeforeStart { agent, reason });
            }
            AgentEvent::Gone { .. } => return Ok(()),
            AgentEvent::Message { agent, msg, .. } => (agent, *msg),
        };
        match msg {
            In::Ready(r) if r.run_id == self.id => {
                if let Some(st) = self.agents.get_mut(&agent) {
                    st.clock_offset_ns = r.clock_offset_ns;
                    st.clock_rtt_ns = r.clock_rtt_ns;
                    ready.insert(agent);
                }
            }
            In::Rejected(r) if r.run_id == self.id && self.agents.contains_key(&agent) => {
                self.abort_all("another agent rejected the plan").await;
                return Err(RunError::Rejected {
                    agent,
                    reason: r.reason,
                });
            }
            _ => {}
        }
        Ok(())
    }

    /// Not every agent answered in time: the error names those that did not.
    async fn on_prepare_timeout(&self, ready: &BTreeSet<String>) -> RunError {
        let missing: Vec<_> = self
            .agents
            .keys()
            .filter(|k| !ready.contains(*k))
            .cloned()
            .collect();
        self.abort_all("prepare timed out").await;
        RunError::PrepareTimeout(self.prepare_timeout(), missing.join(", "))
    }

    fn prepare_timeout(&self) -> Duration {
        Duration::from_millis(self.pacing.prepare_timeout_ms)
    }

    /// Cancelled before the start: nothing to report.
    async fn on_cancel_before_start(&self) -> RunError {
        self.abort_all("interrupted before the start").await;
        RunError::Aborted
    }

    /// Step 2: Start, far enough ahead that every agent hears of it in time: the lead is
    /// chosen from a delivery round measured just before (`pacing::choose_lead`), and Start
    /// goes to every agent at once.
    pub(super) async fn start(&mut self) -> Result<(), RunError> {
        let max_rtt = Duration::from_nanos(
            self.agents
                .values()
                .map(|s| s.clock_rtt_ns)
                .max()
                .unwrap_or(0),
        );
        let round = self.delivery_round().await;
        // Cancelled during the round (cut short): no Start, nothing to report.
        if self.cancel.is_cancelled() {
            return Err(self.on_cancel_before_start().await);
        }
        let (lead, basis) = pacing::choose_lead(self.plan.lead, round, max_rtt);
        self.lead = lead;
        self.pacing.start_lead_ms = lead.as_millis() as u64;
        self.pacing.start_lead_basis = basis;
        self.start_at = unix_nanos_now() + self.lead.as_nanos() as i64;
        let start = pb::Start {
            run_id: self.id.clone(),
            start_at_unix_nanos: self.start_at,
        };
        let starts = self
            .agents
            .keys()
            .map(|id| (id.clone(), Out::Start(start.clone())));
        // An agent gone by now is found lost by the collect step (its departure is queued).
        self.registry.send_each(starts.collect::<Vec<_>>()).await;
        (self.progress)(&format!(
            "start in {} at {} ({})",
            human_us(self.lead.as_micros() as u64),
            rfc3339(self.start_at),
            self.pacing.start_lead_basis
        ));
        Ok(())
    }

    /// Step 4: the report. The agents' results are in: a target that died or stalled under
    /// the load costs its own section of the report, never the report.
    pub(super) async fn finish(mut self) -> Result<Finished, RunError> {
        let (target_stats, target_error) = match &mut self.target {
            // With the accept-queue timeline: report.json's `target.timeline`.
            Some(t) => match t.final_stats().await {
                Ok(s) => (Some(s), None),
                Err(e) => {
                    tracing::warn!(cause = %e, "final target stats unavailable");
                    (None, Some(e.to_string()))
                }
            },
            None => (None, None),
        };
        // An agent without its final result counts with the intervals it delivered: their
        // sum, from the spool, once every second still open is written (the log is complete
        // before the report). Awaited: the log's thread does the file work.
        let unfinished: BTreeSet<String> = (self.agents.iter())
            .filter(|(_, s)| s.result.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        let closed = self.hlog.finish(&unfinished).await;
        match closed.delivered {
            Ok(delivered) => {
                // An agent whose intervals cannot be summed is dropped by the report, which
                // names the cause.
                for (id, intervals) in delivered {
                    if let Some(st) = self.agents.get_mut(&id) {
                        st.intervals = Some(intervals);
                    }
                }
            }
            Err(e) => {
                for id in unfinished {
                    if let Some(why) = self.lost.get_mut(&id) {
                        why.push_str(&format!("; its intervals are not counted: {e}"));
                    }
                }
            }
        }
        let hlog = closed.log;
        let mut finished = build_report(
            self.id,
            self.start_at,
            self.plan,
            self.agents,
            self.lost,
            self.aborted,
            target_stats,
        )?;
        finished.hlog = hlog;
        finished.report.target_error = target_error;
        finished.report.target_reset_before_start_us = finished.report.target.as_ref().and(
            self.target
                .as_ref()
                .and_then(TargetControl::reset_at)
                .map(|reset| (self.start_at - reset) / 1_000),
        );
        finished.report.pacing = Some(self.pacing);
        finished.report.verdict = crate::report::story::verdict(&finished.report);
        Ok(finished)
    }

    /// Tells every agent of this run to abort it, all at once.
    pub(super) async fn abort_all(&self, reason: &str) {
        self.send_aborts(self.agents.keys().cloned(), reason).await;
    }

    /// Tells `agents` to abort this run, all at once.
    pub(super) async fn send_aborts(&self, agents: impl IntoIterator<Item = String>, reason: &str) {
        let abort = pb::Abort {
            run_id: self.id.clone(),
            reason: reason.to_owned(),
        };
        let aborts = agents.into_iter().map(|id| (id, Out::Abort(abort.clone())));
        self.registry.send_each(aborts.collect::<Vec<_>>()).await;
    }
}

/// Waits for the plan's number of agents and takes the first ones (by id).
async fn wait_for_agents(
    registry: &Registry,
    plan: &RunPlan,
    cancel: &CancellationToken,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Vec<String>, RunError> {
    let want = plan.agents;
    // The line counts the wait down each second, and changes at once when an agent attaches.
    let deadline = Instant::now() + plan.agent_wait;
    let have = AtomicUsize::new(0);
    let line = |n: usize| {
        let left = deadline.saturating_duration_since(Instant::now());
        format!(
            "waiting for agents: {n} of {want} attached, up to {} s more",
            left.as_secs_f64().ceil() as u64
        )
    };
    let report = |n: usize| {
        have.store(n, Ordering::Relaxed);
        progress(&line(n));
    };
    let wait = registry.wait_for(want, plan.agent_wait, report);
    tokio::pin!(wait);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    // Bounded: `wait` ends by its timeout at the latest.
    let waited = loop {
        tokio::select! {
            _ = cancel.cancelled() => return Err(RunError::Aborted),
            r = &mut wait => break r,
            _ = tick.tick() => progress(&line(have.load(Ordering::Relaxed))),
        }
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
            refused_duplicates: registry.refused_duplicates(),
        }),
    }
}

/// Connects to the target's control service when the plan names one, applies the plan's
/// backlog and accept rate and resets the target's counters for this run.
async fn configure_target(plan: &RunPlan) -> Result<Option<TargetControl>, RunError> {
    let Some(url) = &plan.target_control else {
        return Ok(None);
    };
    let mut t = TargetControl::connect(url, &plan.target_auth).await?;
    if plan.backlog.is_some() || plan.accept_rate.is_some() {
        t.configure(plan.backlog, plan.accept_rate).await?;
    }
    t.reset().await?;
    Ok(Some(t))
}
