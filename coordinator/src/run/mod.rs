//! One run, start to report (docs/design.md "A run, step by step", steps 2–9): wait for agents,
//! split the connections, configure the target, prepare and arm every agent, start them
//! together, collect intervals and results while watching for lost agents, pull the
//! target's stats and merge exactly.
//!
//! This module holds the run's contract with its callers (`main`, `demo`, `sweep`, the
//! tests): [`RunPlan`] in, [`execute`], [`Finished`] or [`RunError`] out. The run itself is
//! a state machine, `machine::Run`, with one method per step (prepare, start, collect,
//! finish; the collect step, the longest, in `collect`). Each agent's bookkeeping and the
//! meaning of its messages are in `agents`; the merge into a report is in `report`.

mod agents;
mod collect;
mod machine;
mod pacing;
mod report;

use std::collections::BTreeMap;
use std::time::Duration;

use stampede_proto::pb;
use tokio_util::sync::CancellationToken;

use self::machine::Run;
use stampede_proto::plan::Load;

use crate::report::Report;
pub use crate::report::hlog::HlogTo;
use crate::report::hlog::LogFile;
use crate::service::Registry;
use crate::target::{TargetAuth, TargetError};
use stampede_proto::tally::{MergeError, Tally};

/// What to run, already validated.
#[derive(Debug, Clone)]
pub struct RunPlan {
    /// How many agents to wait for and use.
    pub agents: usize,
    /// How long to wait for them.
    pub agent_wait: Duration,
    /// The whole run's load (connections in total, the whole run's ramp rate), checked;
    /// each agent gets its share ([`RunPlan::share`]).
    pub load: Load,
    /// Minimum lead between Start and the start instant.
    pub lead: Duration,
    /// The target's control service (`http://HOST:PORT`).
    pub target_control: Option<String>,
    /// What the run presents to the target's control service (its token, TLS).
    pub target_auth: TargetAuth,
    /// Backlog to configure on the target before the run.
    pub backlog: Option<i32>,
    /// Accept rate to configure on the target before the run (`f64::INFINITY`: as fast as
    /// possible, 0: never).
    pub accept_rate: Option<f64>,
    /// The scenario as the user gave it, echoed into the report.
    pub scenario: serde_json::Value,
}

impl RunPlan {
    /// Connections for agent `i` of `n`: an even split, the remainder to the first ones.
    pub fn share(&self, i: usize, n: usize) -> u64 {
        let (n, i, total) = (n as u64, i as u64, self.load.connections);
        total / n + u64::from(i < total % n)
    }

    /// The load of an agent that opens `connections` of the run's: a ramp's rate is the
    /// whole run's, so each agent ramps at its share of it.
    pub fn agent_load(&self, connections: u64) -> Load {
        let share = connections as f64 / self.load.connections.max(1) as f64;
        Load {
            connections,
            pattern: self.load.pattern.share(share),
            ..self.load
        }
    }
}

/// Why a run could not happen or finish.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Not enough agents attached in time.
    #[error("waited {} for {want} {}, {} attached{}{}", stampede_proto::duration::format_duration(*waited), if *want == 1 { "agent" } else { "agents" }, have.len(), if have.is_empty() { String::new() } else { format!(" ({})", have.join(", ")) }, duplicates_note(refused_duplicates))]
    NotEnoughAgents {
        /// Wanted.
        want: usize,
        /// Attached.
        have: Vec<String>,
        /// How long we waited.
        waited: Duration,
        /// Ids refused meanwhile because an agent with the same id was attached.
        refused_duplicates: Vec<String>,
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
    /// The target cannot do what the flags ask of it (a sweep of an observed listener, or
    /// of accept rates on a real server): bad configuration, found once the target answered.
    #[error(transparent)]
    TargetUnfit(TargetError),
    /// An agent's data could not be merged.
    #[error(transparent)]
    Merge(#[from] MergeError),
    /// Aborted before the start.
    #[error("aborted before the start")]
    Aborted,
}

/// The part of [`RunError::NotEnoughAgents`] that names refused duplicate ids.
fn duplicates_note(ids: &[String]) -> String {
    if ids.is_empty() {
        return String::new();
    }
    format!(
        "; refused agents with duplicate ids ({}): an agent with that id was already \
         attached, give each agent a unique --id",
        ids.join(", ")
    )
}

/// A finished (or partial) run: the report, each agent's counts and histograms as merged
/// into it (for checking the merge), and its `report.hlog`, written while it ran.
#[derive(Debug)]
pub struct Finished {
    /// The report.
    pub report: Report,
    /// All agents' tallies merged exactly ([`Finished::merged`]).
    merged: Tally,
    /// Per agent whose data was usable and that sent its final result: that result as it
    /// arrived. Kept encoded: a decoded tally is ~0.5 MB, a fleet's would be half a gigabyte
    /// ([`Finished::tally`] decodes one on demand).
    results: BTreeMap<String, pb::FinalResult>,
    /// Per agent lost before its final result: the sum of the intervals it delivered, as
    /// encoded interval results that add up to it (it counts with those).
    delivered: BTreeMap<String, Vec<pb::IntervalResult>>,
    /// The agreed start instant, coordinator time.
    pub start_at_unix_nanos: i64,
    /// The interval log, already written (see [`execute_logged`]).
    hlog: LogFile,
}

impl Finished {
    /// All agents' tallies merged: the histograms behind the report's percentiles.
    pub fn merged(&self) -> &Tally {
        &self.merged
    }

    /// One agent's tally as merged into the report: its final result, or the intervals it
    /// delivered before it was lost (empty for an agent whose data was unusable).
    pub fn tally(&self, agent: &str) -> Tally {
        let mut tally = Tally::default();
        let added = match (self.results.get(agent), self.delivered.get(agent)) {
            (Some(r), _) => tally.add_wire(r),
            (None, Some(sum)) => sum.iter().try_for_each(|r| tally.add_wire(r)),
            (None, None) => Ok(()),
        };
        // Usable when the report was built, so usable now.
        added.expect("the report merged this agent's data");
        tally
    }

    /// Writes `report.json`, `report.csv`, `report.html` and `report.hlog` into `dir`
    /// (`report.hlog` was written during the run: copied unless it is there already; none
    /// for a run executed with [`HlogTo::Off`]).
    pub fn write(&self, dir: &std::path::Path) -> std::io::Result<()> {
        let out = crate::report::OutDir::create(dir)?;
        out.json("report.json", &self.report)?;
        out.file("report.csv", crate::report::csv::render(&self.report))?;
        out.file(
            "report.html",
            crate::report::html::render(&self.report, self.merged()),
        )?;
        self.hlog.save_to(out.path())
    }
}

/// Runs `plan` with the registry's agents. `progress` receives one-line status updates.
/// `report.hlog` goes to a temporary file that [`Finished::write`] copies
/// ([`execute_logged`] chooses).
pub async fn execute(
    registry: &Registry,
    plan: &RunPlan,
    cancel: &CancellationToken,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Finished, RunError> {
    execute_logged(registry, plan, HlogTo::Spool, cancel, progress).await
}

/// [`execute`], writing `report.hlog` to `hlog` second by second as the interval results
/// arrive (none are kept for the run's length).
///
/// The steps are those of `machine::Run`: prepare (agents armed), start (one instant for all), collect
/// (until every agent has delivered or is lost) and finish (the report).
pub async fn execute_logged(
    registry: &Registry,
    plan: &RunPlan,
    hlog: HlogTo,
    cancel: &CancellationToken,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Finished, RunError> {
    let mut run = Run::prepare(registry, plan, hlog, cancel, progress).await?;
    run.start().await?;
    run.collect().await;
    run.finish().await
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A plan with every field set to something neutral, for unit tests.
    pub(crate) fn plan_for_tests() -> RunPlan {
        RunPlan {
            agents: 3,
            agent_wait: Duration::ZERO,
            load: Load::burst("127.0.0.1:9".parse().unwrap(), 10),
            lead: Duration::ZERO,
            target_control: None,
            target_auth: TargetAuth::default(),
            backlog: None,
            accept_rate: None,
            scenario: serde_json::Value::Null,
        }
    }

    #[test]
    fn share_splits_evenly_with_remainder_first() {
        let plan = RunPlan {
            agents: 3,
            ..plan_for_tests()
        };
        let shares: Vec<u64> = (0..3).map(|i| plan.share(i, 3)).collect();
        assert_eq!(shares, vec![4, 3, 3]);
        assert_eq!(shares.iter().sum::<u64>(), 10);
        let ramp = RunPlan {
            load: Load {
                pattern: "ramp:100:1s".parse().unwrap(),
                ..plan.load
            },
            ..plan
        };
        assert_eq!(
            ramp.agent_load(4).pattern,
            "ramp:40:1s"
                .parse::<stampede_proto::pattern::Pattern>()
                .unwrap()
        );
    }
}
