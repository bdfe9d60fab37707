//! How a run paces itself for the size of its fleet: how long agents get to answer Prepare,
//! how long an agent may stay silent before it is lost, and the start lead, chosen from what
//! the coordinator measured rather than fixed. The three are stated in the report
//! (`report.json` `pacing{}`).
//!
//! The lead comes from a delivery round just before Start ([`Run::delivery_round`]): a Ping
//! naming the run goes to every agent at once, each armed agent echoes it at once, and the
//! time until the last echo is how long the coordinator, the network and every agent's
//! process take to pass a message there and back under this fleet's load. Start follows the
//! same path one way and costs an agent no more than an echo: its firing threads were
//! started at Prepare and wait, so taking in a Start only hands them the instant. The lead is
//! twice the round (the round trip the round measured, once more, as margin for the load
//! to change) plus the clock uncertainty on both sides (docs/design.md "Fleets").

use std::collections::BTreeSet;
use std::time::Duration;

use stampede_proto::clock::unix_nanos_now;
use stampede_proto::pb::{self, agent_message::Msg as In, coordinator_message::Msg as Out};
use tokio::time::Instant;

use super::agents;
use super::machine::Run;
use crate::service::AgentEvent;

/// The shortest lead between Start and the start instant, whatever was measured.
pub(super) const MIN_LEAD: Duration = Duration::from_millis(50);

/// How long agents have to answer Prepare (validate, sync their clock, arm): 30 s, plus
/// 30 ms per agent, as a fleet's clock probes and arming share the coordinator and hosts.
pub(super) fn prepare_timeout(agents: usize) -> Duration {
    Duration::from_secs(30) + Duration::from_millis(30) * agents as u32
}

/// The silence after which an agent is declared lost during the run: 4 heartbeats and at
/// least 3 s, plus 2 ms per agent (a fleet's messages queue up behind each other at the
/// coordinator).
pub(super) fn liveness(heartbeat: Duration, agents: usize) -> Duration {
    (heartbeat * 4).max(Duration::from_secs(3)) + Duration::from_millis(2) * agents as u32
}

/// The agents' own liveness bound for the run (`Prepare.liveness_ms`): two heartbeats
/// (`welcome`, the Welcome's bound for a lone agent), plus 2 ms per agent, as a fleet's Pings
/// reach each agent less promptly. Still below the
/// coordinator's bound ([`liveness`]), so an agent gives up on a silent coordinator before
/// the coordinator gives up on it.
pub(super) fn agent_liveness(welcome: Duration, agents: usize) -> Duration {
    welcome + Duration::from_millis(2) * agents as u32
}

/// How long the delivery round waits for echoes: 2 s plus 5 ms per agent. Agents that do
/// not echo (older versions) cost this wait, and the lead grows by it.
fn round_bound(agents: usize) -> Duration {
    Duration::from_secs(2) + Duration::from_millis(5) * agents as u32
}

/// What the delivery round measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Round {
    /// From sending the Pings to the last echo (or the round's bound if some never came).
    pub(super) took: Duration,
    /// From sending the Pings to the first echo: the round's spread across agents is
    /// `took - first`.
    pub(super) first: Duration,
    /// Agents that neither echoed within the bound nor were lost.
    pub(super) unanswered: usize,
    /// Agents lost during the round (they left, went silent, or were refused a message).
    pub(super) lost: usize,
    /// Agents asked.
    pub(super) agents: usize,
}

/// The lead between Start and the start instant, and what it was chosen from: twice the
/// delivery round plus the worst clock uncertainty (half the worst best-probe RTT on the
/// agent's side and as much on the coordinator's: the whole RTT is added), at least 5 ×
/// that RTT, the plan's lead and [`MIN_LEAD`].
pub(super) fn choose_lead(
    plan_lead: Duration,
    round: Round,
    max_rtt: Duration,
) -> (Duration, String) {
    let measured = round.took * 2 + max_rtt;
    let lead = measured.max(max_rtt * 5).max(plan_lead).max(MIN_LEAD);
    let mut basis = format!(
        "delivery round {} ms to {} agents (x2; echoes spread over {} ms), clock uncertainty \
         up to {:.1} ms on each side ({:.1} ms added), plan lead {} ms",
        round.took.as_millis(),
        round.agents,
        round.took.saturating_sub(round.first).as_millis(),
        ms(max_rtt / 2),
        ms(max_rtt),
        plan_lead.as_millis()
    );
    if round.lost > 0 {
        basis += &format!("; {} agents were lost during the round", round.lost);
    }
    if round.unanswered > 0 {
        basis += &format!(
            "; {} agents did not echo the round (older agents?)",
            round.unanswered
        );
    }
    (lead, basis)
}

/// Milliseconds with a fraction.
fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

impl Run<'_> {
    /// Pings every agent with this run's id and waits until each has echoed (or is lost, or
    /// the round's bound passes). Other events are recorded as the collect step would.
    pub(super) async fn delivery_round(&mut self) -> Round {
        let sent = unix_nanos_now();
        let began = Instant::now();
        let ping = pb::Ping {
            sent_unix_nanos: sent,
            run_id: self.id.clone(),
        };
        let msgs = self
            .agents
            .keys()
            .map(|id| (id.clone(), Out::Ping(ping.clone())));
        let gone = self.registry.send_each(msgs.collect::<Vec<_>>()).await;
        // Agents whose stream is gone are lost: the collect step finds them so (their
        // departure is queued); the round only counts them.
        let mut lost = gone.len();
        let mut settled: BTreeSet<String> = gone.into_iter().collect();
        let deadline = began + round_bound(self.agents.len());
        let (mut answered, mut first) = (0, None);
        while settled.len() < self.agents.len() {
            let event = tokio::select! {
                _ = self.cancel.cancelled() => break,
                e = tokio::time::timeout_at(deadline, self.events.recv()) => e,
            };
            let Ok(Some(event)) = event else { break };
            if let Some(agent) = echo_of(&event, sent) {
                if self.agents.contains_key(agent) && settled.insert(agent.to_owned()) {
                    answered += 1;
                    first.get_or_insert_with(|| began.elapsed());
                }
                continue;
            }
            if let Some((agent, why)) = agents::note(&mut self.agents, &self.id, event) {
                if settled.insert(agent.clone()) {
                    lost += 1;
                }
                self.lost.insert(agent, why);
            }
        }
        let took = began.elapsed();
        Round {
            took,
            first: first.unwrap_or(took),
            unanswered: self.agents.len().saturating_sub(answered + lost),
            lost,
            agents: self.agents.len(),
        }
    }
}

/// The agent whose echo of the round sent at `sent` this event is.
fn echo_of(event: &AgentEvent, sent: i64) -> Option<&str> {
    match event {
        AgentEvent::Message { agent, msg, .. } => match &**msg {
            In::Heartbeat(h) if h.echo_ping_unix_nanos == sent => Some(agent),
            _ => None,
        },
        AgentEvent::Gone { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lead grows with what was measured, never below the plan's lead or the floor;
    /// the basis says what was added, and tells lost agents from silent ones.
    #[test]
    fn the_lead_follows_the_measured_round() {
        let round = |ms, unanswered, lost, agents| Round {
            took: Duration::from_millis(ms),
            first: Duration::from_millis(ms / 4),
            unanswered,
            lost,
            agents,
        };
        let plan = Duration::from_millis(500);
        let rtt = Duration::from_millis(4);
        assert_eq!(choose_lead(plan, round(10, 0, 0, 3), rtt).0, plan);
        // 2 x 700 ms + 4 ms: nothing per agent, a Start costs what an echo does.
        let (lead, basis) = choose_lead(plan, round(700, 0, 0, 1_000), rtt);
        assert_eq!(lead, Duration::from_millis(1_404));
        assert!(
            basis.contains("delivery round 700 ms to 1000 agents (x2; echoes spread over 525 ms)"),
            "{basis}"
        );
        assert!(
            basis.contains("clock uncertainty up to 2.0 ms on each side (4.0 ms added)"),
            "the RTT is what is added, half of it each side: {basis}"
        );
        assert!(!basis.contains("did not echo"), "{basis}");
        assert!(!basis.contains("lost"), "{basis}");
        let (_, basis) = choose_lead(plan, round(2_000, 3, 0, 10), rtt);
        assert!(basis.contains("3 agents did not echo"), "{basis}");
        assert!(!basis.contains("lost"), "{basis}");
        let (_, basis) = choose_lead(plan, round(300, 0, 2, 10), rtt);
        assert!(
            basis.contains("2 agents were lost during the round"),
            "{basis}"
        );
        assert!(!basis.contains("did not echo"), "lost, not silent: {basis}");
        assert_eq!(
            choose_lead(Duration::ZERO, round(1, 0, 0, 0), Duration::ZERO).0,
            MIN_LEAD
        );
        // A jittery clock path: 5 x the worst RTT wins over a fast round.
        let slow = Duration::from_millis(200);
        assert_eq!(
            choose_lead(Duration::ZERO, round(1, 0, 0, 1), slow).0,
            slow * 5
        );
    }

    /// Timeouts grow with the fleet.
    #[test]
    fn timeouts_scale_with_the_fleet() {
        assert_eq!(prepare_timeout(0), Duration::from_secs(30));
        assert_eq!(prepare_timeout(1_000), Duration::from_secs(60));
        let hb = Duration::from_millis(500);
        assert_eq!(liveness(hb, 1), Duration::from_millis(3_002));
        assert_eq!(liveness(hb, 1_000), Duration::from_secs(5));
        assert!(round_bound(1_000) > round_bound(10));
        assert_eq!(agent_liveness(hb * 2, 1_000), Duration::from_secs(3));
        assert!(agent_liveness(hb * 2, 1_000) < liveness(hb, 1_000));
    }
}
