//! Each agent's bookkeeping during a run: its share of the connections, what it said about
//! its clock, what it has delivered so far and when it was last heard from; and what an
//! agent's message means once the run has started ([`note`]), including which messages make
//! it lost. The run's state machine (`machine`) owns one [`AgentState`] per agent; the
//! report (`report`) reads them when the run is over.

use std::collections::BTreeMap;

use stampede_proto::pb::{self, agent_message::Msg as In};
use tokio::time::Instant;

use super::RunPlan;
use crate::report::hlog::{HlogTo, IntervalLog};
use crate::service::{AgentEvent, AgentInfo};

/// Per-agent bookkeeping during a run.
#[derive(Debug, Default)]
pub(super) struct AgentState {
    /// Its share of the run's connections.
    pub(super) connections: u64,
    /// The host it said it runs on.
    pub(super) host: String,
    /// Its clock's offset from ours, from its Ready.
    pub(super) clock_offset_ns: i64,
    /// The round trip of its best clock probe, from its Ready.
    pub(super) clock_rtt_ns: u64,
    /// The interval results it delivered, summed (results whose tallies add up to the sum),
    /// or why they cannot be counted: read back from the run's spool when the run is over,
    /// only for an agent without a final result (it counts with them; `None`: none).
    pub(super) intervals: Option<Result<Vec<pb::IntervalResult>, String>>,
    /// Attempts finished so far, by its intervals and heartbeats.
    pub(super) completed: u64,
    /// Its final result, once it has arrived.
    pub(super) result: Option<pb::FinalResult>,
    /// When it last sent anything during the collect step.
    pub(super) last_seen: Option<Instant>,
}

/// The agents of one run, by id.
pub(super) type Agents = BTreeMap<String, AgentState>;

/// An agent declared lost, and why in words.
pub(super) type Loss = (String, String);

/// The agents `ids` (in the order the connections are split) with their shares and hosts.
pub(super) fn assign(
    plan: &RunPlan,
    ids: &[String],
    infos: &BTreeMap<String, AgentInfo>,
) -> Agents {
    ids.iter()
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
        .collect()
}

impl AgentState {
    /// Attempts done: the final result's count once it is in, else the running count.
    pub(super) fn done(&self) -> u64 {
        self.result.as_ref().map_or(self.completed, |r| {
            r.outcomes.as_ref().map_or(0, outcome_total)
        })
    }
}

/// [`note_logged`] before the interval log begins (the start's delivery round: no interval
/// of this run can have been sent yet).
pub(super) fn note(agents: &mut Agents, run_id: &str, event: AgentEvent) -> Option<Loss> {
    note_logged(agents, &mut IntervalLog::new(HlogTo::Off), run_id, event)
}

/// Applies an event of the collect step to `agents`: intervals (also to `log`), results and
/// heartbeats of run `run_id` are recorded, and any message counts as a sign of life. Returns the agent
/// the event makes lost, and why: a result cut short, a refusal to fire, or a departure
/// before its result.
pub(super) fn note_logged(
    agents: &mut Agents,
    log: &mut IntervalLog,
    run_id: &str,
    event: AgentEvent,
) -> Option<Loss> {
    match event {
        AgentEvent::Message { agent, msg, .. } => {
            let st = agents.get_mut(&agent)?;
            st.last_seen = Some(Instant::now());
            match *msg {
                In::Interval(r) if r.run_id == run_id => {
                    st.completed += r.outcomes.as_ref().map_or(0, outcome_total);
                    log.add(&agent, r);
                    None
                }
                In::Result(r) if r.run_id == run_id => {
                    log.done(&agent);
                    let loss = r.cancelled.then(|| {
                        let mut why =
                            format!("stopped mid-run with {} attempts unfinished", r.unfinished);
                        if !r.cut_reason.is_empty() {
                            why = format!("{why}: {}", r.cut_reason);
                        }
                        (agent, why)
                    });
                    st.result = Some(r);
                    loss
                }
                // E.g. the start instant had already passed when Start arrived.
                In::Rejected(r) if r.run_id == run_id => {
                    log.done(&agent);
                    Some((agent, format!("refused to fire: {}", r.reason)))
                }
                In::Heartbeat(h) if h.run_id == run_id => {
                    st.completed = st.completed.max(h.completed);
                    None
                }
                _ => None,
            }
        }
        AgentEvent::Gone { agent, reason } => {
            log.done(&agent);
            agents
                .get(&agent)
                .is_some_and(|s| s.result.is_none())
                .then_some((agent, reason))
        }
    }
}

/// Attempts counted in one set of outcomes.
fn outcome_total(o: &pb::Outcomes) -> u64 {
    crate::report::Outcomes::from(o).total()
}
