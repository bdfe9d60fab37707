//! The Prepare step: a coordinator's plan checked against this agent's limits, the clock
//! synced, every socket armed, and the run's threads started, waiting for the instant. What
//! comes out is an [`ArmedRun`] waiting for its Start, or the [`Rejection`] to send back.
//!
//! The threads start here, not on Start, so that a Start only hands them an instant (a
//! fleet's agents sharing a host would otherwise pay for threads and allocations one after
//! another within the lead). Dropping the [`ArmedRun`] (an Abort, a new Prepare, the
//! session's end) closes its gate: its threads end, nothing fires, its sockets close.

use std::time::Duration;

use stampede_proto::clock::ClockEstimate;
use stampede_proto::pb;
use stampede_proto::plan::Load;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::SessionConfig;
use super::link::{Client, sync_clock};
use super::rejection::Rejection;
use crate::engine::StartGate;
use crate::plan::{FireConfig, Plan};
use crate::{Armed, FireError, Interval, RunResult, arm};

/// How long an armed run's threads wait for its Start before they give up (and a Start
/// after that is refused): far beyond what a coordinator takes between Ready and Start
/// (its prepare timeout is 30 s + 30 ms per agent), so only a forgotten run hits it.
const ARMED_MAX_WAIT: Duration = Duration::from_secs(600);

/// A plan armed for a run, its threads waiting for its Start.
pub(super) struct ArmedRun {
    /// The coordinator's name for the run.
    pub(super) run_id: String,
    /// Sockets armed.
    sockets: u64,
    /// The coordinator's clock as seen from here, to place the start instant.
    pub(super) clock: ClockEstimate,
    /// Lets the run's threads go at the instant; closed when this is dropped.
    pub(super) gate: StartGate,
    /// Aborts the run once it fires.
    pub(super) cancel: CancellationToken,
    /// The run's outcome, once it has fired (or never started).
    pub(super) fired: JoinHandle<Result<RunResult, FireError>>,
    /// Its intervals, as the engine completes them.
    pub(super) intervals: mpsc::UnboundedReceiver<Interval>,
}

impl ArmedRun {
    /// The `Ready` answer to the Prepare that armed this run.
    pub(super) fn ready(&self) -> pb::Ready {
        pb::Ready {
            run_id: self.run_id.clone(),
            armed: self.sockets,
            clock_offset_ns: self.clock.offset_ns,
            clock_rtt_ns: self.clock.rtt_ns,
        }
    }
}

/// Validates, syncs the clock and arms; the error is the Rejected reason.
pub(super) async fn prepare(
    config: &SessionConfig,
    client: &mut Client,
    p: pb::Prepare,
) -> Result<ArmedRun, Rejection> {
    let plan = Plan::new(fire_config(config, &p)?)?;
    let clock = sync_clock(client)
        .await
        .map_err(|s| Rejection::ClockSync(s.message().to_owned()))?;
    let armed = tokio::task::spawn_blocking(move || arm(&plan))
        .await
        .map_err(Rejection::ArmPanicked)??;
    let sockets = armed.sockets();
    let run = prestart(p.run_id, armed, clock).await?;
    tracing::info!(run_id = %run.run_id, sockets, offset_ns = clock.offset_ns, rtt_ns = clock.rtt_ns, "armed, waiting for the start");
    Ok(run)
}

/// Starts the run's threads and returns once every one waits at its gate.
async fn prestart(
    run_id: String,
    armed: Armed,
    clock: ClockEstimate,
) -> Result<ArmedRun, Rejection> {
    let sockets = armed.sockets();
    let gate = StartGate::new(ARMED_MAX_WAIT);
    let waiter = gate.waiter();
    let cancel = CancellationToken::new();
    let (itx, intervals) = mpsc::unbounded_channel();
    let (ready_tx, ready) = oneshot::channel();
    let fired = {
        let cancel = cancel.clone();
        tokio::task::spawn_blocking(move || {
            armed.fire_at(waiter, &cancel, Some(itx), move || {
                let _ = ready_tx.send(());
            })
        })
    };
    if ready.await.is_err() {
        // The threads ended before they all waited: starting one failed.
        return Err(match fired.await {
            Ok(Err(e)) => Rejection::Fire(e),
            Ok(Ok(_)) => Rejection::Fire(FireError::NeverStarted),
            Err(e) => Rejection::FirePanicked(e),
        });
    }
    Ok(ArmedRun {
        run_id,
        sockets,
        clock,
        gate,
        cancel,
        fired,
        intervals,
    })
}

/// The engine's configuration for a coordinator's plan; the agent's own limits (allow-list,
/// cap, source IPs) are applied here and checked by [`Plan::new`].
fn fire_config(config: &SessionConfig, p: &pb::Prepare) -> Result<FireConfig, Rejection> {
    Ok(FireConfig {
        load: Load::try_from(p)?,
        source_ips: config.source_ips.clone(),
        allow_targets: config.allow.clone(),
        max_connections: config.max_connections,
        workers: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> pb::Prepare {
        pb::Prepare {
            run_id: "r1".into(),
            targets: vec!["127.0.0.1:9000".into()],
            connections: 10,
            pattern: Some(stampede_proto::pattern::Pattern::Burst.into()),
            timeout_ms: 1000,
            ..Default::default()
        }
    }

    #[test]
    fn a_good_plan_takes_the_agents_limits() {
        let config = SessionConfig::loopback();
        let fire = fire_config(&config, &plan()).unwrap();
        assert_eq!(fire.load.target, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(fire.allow_targets, config.allow);
        assert_eq!(fire.max_connections, config.max_connections);
    }

    #[test]
    fn refusals_say_why_in_the_words_sent_to_the_coordinator() {
        let config = SessionConfig::loopback();
        let reason = |p: pb::Prepare| fire_config(&config, &p).unwrap_err().to_string();
        assert_eq!(
            reason(pb::Prepare {
                targets: vec![],
                ..plan()
            }),
            "the plan names no target"
        );
        assert_eq!(
            reason(pb::Prepare {
                targets: vec!["a:1".into(), "b:2".into()],
                ..plan()
            }),
            "the plan names 2 targets; an agent fires at one per run"
        );
        assert_eq!(
            reason(pb::Prepare {
                targets: vec!["nowhere".into()],
                ..plan()
            }),
            "invalid target \"nowhere\": expected IP:PORT"
        );
        assert_eq!(
            reason(pb::Prepare {
                pattern: None,
                ..plan()
            }),
            "the plan has no pattern"
        );
        assert_eq!(
            reason(pb::Prepare {
                timeout_ms: 0,
                ..plan()
            }),
            "invalid timeout 0: an attempt needs time to connect"
        );
        let late = Rejection::StartPassed { late_ms: 1.5 };
        assert_eq!(
            late.to_string(),
            "start time already past by 1.500 ms when Start arrived; not firing late"
        );
    }
}
