//! Step 3 of a run, [`Run::collect`]: record intervals and results until every agent has
//! delivered or is lost. Each tick declares silent agents lost and stops those past the
//! run's deadline (they get a grace period to send what they have, and count as lost);
//! cancellation (Ctrl-C) aborts every agent, waits the same grace period, and makes the
//! report partial without blaming agents whose results our own Abort cut short.

use std::collections::BTreeSet;
use std::ops::ControlFlow;
use std::time::Duration;

use stampede_proto::clock::unix_nanos_now;
use tokio::time::Instant;

use super::agents::{self, Loss};
use super::machine::Run;
use super::pacing;
use crate::service::AgentEvent;

/// Slack after the run's expected end (lead, pattern, timeout, hold) before agents that have
/// not delivered are told to stop.
const DEADLINE_SLACK: Duration = Duration::from_secs(15);

/// How long agents told to stop get to send what they have.
const GRACE: Duration = Duration::from_secs(2);

/// How often the collect step checks liveness and the deadline.
const TICK: Duration = Duration::from_millis(250);

/// How often the collect step reports progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// What the collect step watches the clock for.
struct Watch {
    /// Attempts in the whole run, for the progress line.
    total: u64,
    /// Silence after which an agent is lost.
    liveness: Duration,
    /// When agents that have not delivered are told to stop.
    end_by: Instant,
    /// When every attempt has met its deadline (the last intended send time + timeout).
    decided_by: Instant,
    /// When the last progress line went out.
    last_progress: Instant,
    /// Agents that have neither delivered their result nor been declared lost.
    pending: BTreeSet<String>,
}

/// What the collect step waits for, with the time left: while attempts can still be
/// decided, for what decides them (the greeting, the probe's acknowledgement or connect()
/// itself) up to their deadline; then for the agents' results up to the run's deadline.
fn progress_line(
    done: u64,
    watch: &Watch,
    (finished, agents): (usize, usize),
    load: &stampede_proto::plan::Load,
    now: Instant,
) -> String {
    let decided = format!(
        "{} of {} attempts decided",
        thousands(done),
        thousands(watch.total)
    );
    let secs = |d: Duration| format!("{} s", d.as_secs_f64().ceil() as u64);
    if done < watch.total && now < watch.decided_by {
        let what = if load.expect_greeting {
            "their greeting"
        } else if load.probe_admission {
            "their probe's acknowledgement"
        } else {
            "connect() to finish"
        };
        return format!(
            "{decided}, the rest waiting up to {} more for {what}",
            secs(watch.decided_by - now)
        );
    }
    format!(
        "{decided}; {finished} of {agents} agents have sent their results, waiting up to {} \
         more for the rest",
        secs(watch.end_by.saturating_duration_since(now))
    )
}

/// `1,524`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl Run<'_> {
    /// Step 3: collect until every agent has delivered its result or is lost.
    pub(super) async fn collect(&mut self) {
        let plan = self.plan;
        // Agents lost during the start (their departure seen by the delivery round) are not
        // waited for.
        let pending: BTreeSet<String> = (self.agents.iter())
            .filter(|(id, s)| s.result.is_none() && !self.lost.contains_key(*id))
            .map(|(id, _)| id.clone())
            .collect();
        self.hlog
            .begin(&self.id, self.start_at, pending.iter().cloned());
        let total = self.agents.values().map(|s| s.connections).sum();
        // By the largest fleet a Welcome allowed for, if larger than this run's: an agent may
        // hold that Welcome's bound, and must still give up before it is judged lost.
        let fleet = self.agents.len().max(self.registry.welcomed_fleet());
        let liveness = pacing::liveness(self.registry.heartbeat(), fleet);
        self.pacing.liveness_ms = liveness.as_millis() as u64;
        // The deadlines count from the start instant itself (docs/fault-matrix.md), however
        // long Start took to go out: its distance now, on the monotonic clock.
        let until_start = (self.start_at - unix_nanos_now()).max(0) as u64;
        let starts = Instant::now() + Duration::from_nanos(until_start);
        let decided_by = starts + plan.load.pattern.duration() + plan.load.timeout;
        let end_by = decided_by + plan.load.hold + DEADLINE_SLACK;
        let started = Instant::now();
        for st in self.agents.values_mut() {
            st.last_seen = Some(started);
        }
        let mut tick = tokio::time::interval(TICK);
        let mut watch = Watch {
            total,
            liveness,
            end_by,
            decided_by,
            last_progress: Instant::now(),
            pending,
        };
        let cancel = self.cancel;
        // Bounded: every agent leaves `pending` by its result, a loss, or the run's deadline
        // (the tick), and the registry's end stops it too.
        while !watch.pending.is_empty() {
            let flow = tokio::select! {
                _ = cancel.cancelled() => self.on_cancel(&mut watch).await,
                e = self.events.recv() => self.on_event(e, &mut watch),
                _ = tick.tick() => self.on_tick(&mut watch).await,
            };
            if flow.is_break() {
                break;
            }
        }
        if self.overdue && !self.aborted {
            let losses = self.drain().await;
            self.lost.extend(losses);
        }
    }

    /// An agent's event; `None`: the registry is gone, so no more can come. An agent whose
    /// result arrived or that is lost leaves `pending` (one lookup, not a pass over the
    /// fleet).
    fn on_event(&mut self, event: Option<AgentEvent>, watch: &mut Watch) -> ControlFlow<()> {
        let Some(event) = event else {
            return ControlFlow::Break(());
        };
        let agent = agent_of(&event).to_owned();
        if let Some((agent, why)) =
            agents::note_logged(&mut self.agents, &mut self.hlog, &self.id, event)
        {
            self.lost.insert(agent, why);
        }
        let settled = self.agents.get(&agent).is_some_and(|s| s.result.is_some())
            || self.lost.contains_key(&agent);
        if settled {
            watch.pending.remove(&agent);
        }
        ControlFlow::Continue(())
    }

    /// Declares silent agents lost, stops those past the run's deadline, reports progress.
    async fn on_tick(&mut self, watch: &mut Watch) -> ControlFlow<()> {
        let now = Instant::now();
        let (mut silent, mut late) = (Vec::new(), Vec::new());
        for id in &watch.pending {
            let st = &self.agents[id];
            if st.last_seen.is_some_and(|t| now - t > watch.liveness) {
                let why = format!("no message for {:?}", watch.liveness);
                self.lost.insert(id.clone(), why);
                // Silent: the interval log waits for it no longer.
                self.hlog.done(id);
                silent.push(id.clone());
            } else if now > watch.end_by {
                self.overdue = true;
                let why = "no result by the run's deadline".to_owned();
                self.lost.insert(id.clone(), why);
                late.push(id.clone());
            }
        }
        for id in silent.iter().chain(&late) {
            watch.pending.remove(id);
        }
        self.send_aborts(silent, "declared lost").await;
        self.send_aborts(late, "run deadline passed").await;
        if now - watch.last_progress >= PROGRESS_EVERY {
            watch.last_progress = now;
            let done: u64 = self.agents.values().map(|s| s.done()).sum();
            let finished = self.agents.values().filter(|s| s.result.is_some()).count();
            (self.progress)(&progress_line(
                done,
                watch,
                (finished, self.agents.len()),
                &self.plan.load,
                now,
            ));
        }
        ControlFlow::Continue(())
    }

    /// Cancelled mid-run: every agent is told to abort and gets a moment to send what it has;
    /// the report will be partial.
    async fn on_cancel(&mut self, watch: &mut Watch) -> ControlFlow<()> {
        self.aborted = true;
        self.abort_all("interrupted").await;
        // Results cut short by our own Abort do not make their agents lost.
        let _cut_short = self.drain().await;
        for id in std::mem::take(&mut watch.pending) {
            if self.agents[&id].result.is_none() {
                let why = "run aborted before its result arrived".to_owned();
                self.lost.insert(id, why);
            }
        }
        ControlFlow::Break(())
    }

    /// Records events for a grace period, or until every agent has delivered; returns the
    /// losses those events report, for the caller to count or not.
    async fn drain(&mut self) -> Vec<Loss> {
        let until = Instant::now() + GRACE;
        let mut losses = Vec::new();
        let mut waiting = self.agents.values().filter(|s| s.result.is_none()).count();
        while waiting > 0 {
            let Ok(Some(e)) = tokio::time::timeout_at(until, self.events.recv()).await else {
                break;
            };
            let agent = agent_of(&e).to_owned();
            let had = self.agents.get(&agent).is_some_and(|s| s.result.is_some());
            losses.extend(agents::note_logged(
                &mut self.agents,
                &mut self.hlog,
                &self.id,
                e,
            ));
            if !had && self.agents.get(&agent).is_some_and(|s| s.result.is_some()) {
                waiting -= 1;
            }
        }
        losses
    }
}

/// The agent an event is about.
fn agent_of(event: &AgentEvent) -> &str {
    match event {
        AgentEvent::Message { agent, .. } | AgentEvent::Gone { agent, .. } => agent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The line names what the run waits for and counts the time left down.
    #[test]
    fn progress_names_the_wait_and_its_deadline() {
        let now = Instant::now();
        let watch = Watch {
            total: 3_000,
            liveness: Duration::from_secs(3),
            end_by: now + Duration::from_secs(25),
            decided_by: now + Duration::from_millis(7_200),
            last_progress: now,
            pending: BTreeSet::new(),
        };
        let mut load = stampede_proto::plan::Load::burst("127.0.0.1:9".parse().unwrap(), 3_000);
        load.expect_greeting = true;
        assert_eq!(
            progress_line(1_524, &watch, (0, 3), &load, now),
            "1,524 of 3,000 attempts decided, the rest waiting up to 8 s more for their greeting"
        );
        load.expect_greeting = false;
        let later = now + Duration::from_secs(10);
        assert_eq!(
            progress_line(2_999, &watch, (2, 3), &load, later),
            "2,999 of 3,000 attempts decided; 2 of 3 agents have sent their results, waiting up \
             to 15 s more for the rest"
        );
        assert!(progress_line(10, &watch, (0, 3), &load, now).ends_with("for connect() to finish"));
    }
}
