//! The Start step carried out: an armed run's threads, already waiting, are given the
//! instant; its intervals go out on the stream as they come, and its final result (or the
//! [`Rejection`] saying why there is none) after the last of them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use stampede_proto::pb::{self, agent_message::Msg as Out};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::prepare::ArmedRun;
use super::rejection::Rejection;
use crate::engine::StartGate;
use crate::{FireError, Interval, RunResult};

/// A run being fired; its token is cancelled to abort it, and by the run itself when it
/// is over (so a cancelled token means "not busy").
pub(super) struct Firing {
    /// The coordinator's name for the run.
    pub(super) run_id: String,
    /// Aborts the run; cancelled by the run itself when it is over.
    pub(super) cancel: CancellationToken,
    /// Attempts classified so far (for the heartbeat).
    completed: Arc<AtomicU64>,
    /// Why the run was cut short, set once before `cancel` by [`Firing::abort`].
    cut_reason: Arc<OnceLock<String>>,
    /// Sends the final message once the run is over.
    last_word: tokio::task::JoinHandle<()>,
    /// The run's gate, closed on an abort before the instant.
    gate: StartGate,
}

impl Firing {
    /// Lets the armed run's waiting threads go at `deadline` (or refuses, when it passed
    /// more than the engine's tolerance ago); intervals and the final result go out on
    /// `out` as they come.
    pub(super) fn start(
        run: ArmedRun,
        deadline: std::time::Instant,
        out: mpsc::Sender<pb::AgentMessage>,
    ) -> Result<Firing, Rejection> {
        let ArmedRun {
            run_id,
            gate,
            cancel,
            fired,
            intervals,
            ..
        } = run;
        gate.open(deadline).map_err(Rejection::from)?;
        let completed = Arc::new(AtomicU64::new(0));
        let forwarder = tokio::spawn(forward_intervals(
            intervals,
            run_id.clone(),
            completed.clone(),
            out.clone(),
        ));
        let cut_reason: Arc<OnceLock<String>> = Arc::new(OnceLock::new());
        let last_word = {
            let run_id = run_id.clone();
            let finished = cancel.clone();
            let cut_reason = cut_reason.clone();
            tokio::spawn(async move {
                let mut result = fired.await;
                if let (Ok(Ok(r)), Some(why)) = (&mut result, cut_reason.get()) {
                    r.cut_short(why);
                }
                // The engine dropped its interval sender when it returned: the forwarder ends
                // after the last interval, so the final result always comes after them.
                let _ = forwarder.await;
                // The run is over: the agent is free for the next Prepare before the
                // coordinator can even see this result.
                finished.cancel();
                let _ = out.send(final_message(run_id, result)).await;
            })
        };
        Ok(Firing {
            run_id,
            cancel,
            completed,
            cut_reason,
            last_word,
            gate,
        })
    }

    /// Cuts the run short for `why` (its final result says so), if it still fires.
    pub(super) fn abort(&self, why: &str) {
        if self.is_busy() {
            let _ = self.cut_reason.set(why.to_owned());
            self.cancel.cancel();
            // Threads still waiting for the instant wake and fire nothing.
            self.gate.close();
        }
    }

    /// Waits up to `grace` until the final message is queued on the stream; false if it
    /// was not.
    pub(super) async fn last_word(&mut self, grace: Duration) -> bool {
        if self.last_word.is_finished() {
            return true;
        }
        tokio::time::timeout(grace, &mut self.last_word)
            .await
            .is_ok()
    }

    /// True until the run is over or aborted.
    pub(super) fn is_busy(&self) -> bool {
        !self.cancel.is_cancelled()
    }

    /// Completes once the run is over (at once if it is); pending for ever when there is
    /// no run, so it can sit in a `select!`.
    pub(super) async fn over(firing: Option<&Firing>) {
        match firing {
            Some(f) => f.cancel.cancelled().await,
            None => std::future::pending().await,
        }
    }

    /// The heartbeat while this run fires: its id and the attempts classified so far.
    pub(super) fn heartbeat(&self) -> pb::Heartbeat {
        pb::Heartbeat {
            run_id: self.run_id.clone(),
            completed: self.completed.load(Ordering::Relaxed),
            ..Default::default()
        }
    }
}

/// Sends each interval as it comes, counting the attempts it classified.
async fn forward_intervals(
    mut intervals: mpsc::UnboundedReceiver<Interval>,
    run_id: String,
    completed: Arc<AtomicU64>,
    out: mpsc::Sender<pb::AgentMessage>,
) {
    while let Some(interval) = intervals.recv().await {
        completed.fetch_add(interval.tally.outcomes.total(), Ordering::Relaxed);
        match interval.to_pb(&run_id) {
            Ok(msg) => {
                // A failed send means the stream is gone; the session aborts the run.
                let _ = out
                    .send(pb::AgentMessage {
                        msg: Some(Out::Interval(msg)),
                    })
                    .await;
            }
            Err(e) => tracing::error!(cause = %e, "encoding an interval failed"),
        }
    }
}

/// The run's last word: its result, or the rejection saying why it has none.
fn final_message(
    run_id: String,
    result: Result<Result<RunResult, FireError>, tokio::task::JoinError>,
) -> pb::AgentMessage {
    let rejection = match result {
        Ok(Ok(r)) => match r.to_pb(&run_id) {
            Ok(fin) => {
                return pb::AgentMessage {
                    msg: Some(Out::Result(fin)),
                };
            }
            Err(e) => Rejection::EncodeResult(e),
        },
        Ok(Err(e)) => Rejection::from(e),
        Err(e) => Rejection::FirePanicked(e),
    };
    pb::AgentMessage {
        msg: Some(rejection.to_msg(run_id)),
    }
}
