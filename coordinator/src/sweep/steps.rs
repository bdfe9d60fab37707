//! One sweep step from the same state every time: the target gets the step's backlog and
//! the accept policy it had before the sweep (with the step's rate, if one is swept), the run
//! resets its counters and measures, then the accept queue is drained and the policy put
//! back exactly. With `--repeat N` a step is N such runs and its figures are the median
//! run's ([`clean::median`]).
//!
//! A real server (`stampede-target supervise`) has no accept policy to set: its backlog is set
//! by restarting it (which also empties its queue), and draining waits for it to accept.

use std::time::Duration;

use stampede_proto::target::{AcceptPolicy, TargetKind, TargetStats};
use tokio_util::sync::CancellationToken;

use super::clean::{self, Bounds};
use super::{AcceptRate, Phase, Step, SweepPlan, model, rate_name};
use crate::report::Report;
use crate::run::{self, RunError};
use crate::service::Registry;
use crate::target::{TargetControl, TargetError};

/// How long draining the accept queue between steps may take.
const DRAIN_WITHIN: Duration = Duration::from_secs(10);

/// The sweep must stop here (the reason is in the stepper's `stopped`).
#[derive(Debug)]
pub(super) struct Stop;

/// What the steps made.
pub(super) struct Done {
    pub(super) steps: Vec<Step>,
    pub(super) reports: Vec<Report>,
    pub(super) stopped: Option<String>,
    pub(super) kind: Option<TargetKind>,
    /// Why the first step failed, when no step was done: the sweep's error.
    pub(super) failure: Option<RunError>,
}

/// Runs steps against one target and keeps what they made.
pub(super) struct Stepper<'a> {
    registry: &'a Registry,
    plan: &'a SweepPlan,
    target: TargetControl,
    cancel: &'a CancellationToken,
    progress: &'a (dyn Fn(&str) + Sync),
    /// The target's accept policy before the sweep: what every step starts from and every
    /// drain puts back (`None`: a real server, whose policy is its own).
    original: Option<AcceptPolicy>,
    done: Done,
}

impl<'a> Stepper<'a> {
    /// Reads what the target is and its accept policy; refuses up front what it cannot do.
    pub(super) async fn new(
        registry: &'a Registry,
        plan: &'a SweepPlan,
        mut target: TargetControl,
        cancel: &'a CancellationToken,
        progress: &'a (dyn Fn(&str) + Sync),
    ) -> Result<Stepper<'a>, RunError> {
        let stats = TargetStats::from(&target.stats().await?);
        let url = plan.run.target_control.clone().unwrap_or_default();
        let refuse = |reason: String| RunError::TargetUnfit(TargetError { url, reason });
        let original = match stats.kind {
            Some(k) if !k.backlog_settable() => {
                return Err(refuse(
                    "this is stampede-target observe: it watches another process's listener and \
                     cannot set its backlog; run the server under stampede-target supervise to \
                     sweep it"
                        .into(),
                ));
            }
            Some(k) if !k.accept_policy_settable() && !plan.accept_rates.is_empty() => {
                return Err(refuse(format!(
                    "--accept-rates cannot be swept here: this target is a real server run by \
                     stampede-target {} and accepts at its own pace (its accept policy cannot be \
                     set); drop --accept-rates",
                    k.name()
                )));
            }
            Some(k) if !k.accept_policy_settable() => None,
            // A target older than `accept_policy` in its stats: "as fast as possible" is
            // what draining always left it with.
            _ => Some(stats.accept_policy.unwrap_or_default()),
        };
        Ok(Stepper {
            registry,
            plan,
            target,
            cancel,
            progress,
            original,
            done: Done {
                steps: Vec::new(),
                reports: Vec::new(),
                stopped: None,
                kind: stats.kind,
                failure: None,
            },
        })
    }

    /// The sweep's plan.
    pub(super) fn plan(&self) -> &'a SweepPlan {
        self.plan
    }

    /// The steps so far.
    pub(super) fn steps(&self) -> &[Step] {
        &self.done.steps
    }

    /// The policy a step at `rate` runs under: the target's own, its rate replaced when one
    /// is swept (and unpaused: a paused step would measure nothing).
    fn policy(&self, rate: Option<AcceptRate>) -> Option<AcceptPolicy> {
        match rate {
            None => self.original,
            Some(AcceptRate(r)) => Some(AcceptPolicy {
                rate_per_sec: r.is_finite().then_some(r),
                paused: false,
                ..self.original.unwrap_or_default()
            }),
        }
    }

    fn stop(&mut self, why: String, error: Option<RunError>) -> Stop {
        if self.done.steps.is_empty() && self.done.failure.is_none() {
            self.done.failure = error;
        }
        self.done.stopped.get_or_insert(why);
        Stop
    }

    /// Runs one step (`--repeat` runs) and records it.
    pub(super) async fn step(
        &mut self,
        backlog: i32,
        rate: Option<AcceptRate>,
        phase: Phase,
        label: &str,
    ) -> Result<&Step, Stop> {
        let repeat = self.plan.repeat.max(1);
        let mut runs = Vec::with_capacity(repeat as usize);
        for i in 1..=repeat {
            if self.cancel.is_cancelled() {
                break;
            }
            let of = if repeat > 1 {
                format!(" (run {i}/{repeat})")
            } else {
                String::new()
            };
            (self.progress)(&format!(
                "{label}: backlog {backlog}, accept rate {}{of}",
                rate_name(rate)
            ));
            runs.push(self.run(backlog, rate).await?);
        }
        if runs.is_empty() {
            return Err(self.stop("interrupted".into(), None));
        }
        let (step, report) = step_of(self.plan, backlog, rate, phase, runs, self.bounds());
        self.done.steps.push(step);
        self.done.reports.push(report);
        if self.cancel.is_cancelled() {
            return Err(self.stop("interrupted".into(), None));
        }
        Ok(self.done.steps.last().expect("just pushed"))
    }

    /// One run of a step: configure, run, drain and restore.
    async fn run(&mut self, backlog: i32, rate: Option<AcceptRate>) -> Result<Report, Stop> {
        let policy = self.policy(rate);
        if let Err(e) = self
            .target
            .configure_policy(Some(backlog), policy.as_ref())
            .await
        {
            let why = format!("step backlog {backlog}: {e}");
            return Err(self.stop(why, Some(e.into())));
        }
        let mut run_plan = self.plan.run.clone();
        // Configured above; the run only resets the counters.
        run_plan.backlog = None;
        run_plan.accept_rate = None;
        let report = match run::execute(self.registry, &run_plan, self.cancel, self.progress).await
        {
            Ok(done) => done.report,
            Err(_) if self.cancel.is_cancelled() => {
                self.restore_policy().await;
                return Err(self.stop("interrupted".into(), None));
            }
            Err(e) => {
                self.restore_policy().await;
                return Err(self.stop(format!("step backlog {backlog}: {e}"), Some(e)));
            }
        };
        if self.cancel.is_cancelled() {
            // Kept as it is (`step` records it and stops), the target as it was before.
            self.restore_policy().await;
            return Ok(report);
        }
        // Connections the step left in the queue would fill the next step's queue.
        match self
            .target
            .drain(DRAIN_WITHIN, self.original.as_ref())
            .await
        {
            Ok(0) => {}
            Ok(left) => tracing::warn!(left, "the target's accept queue did not drain"),
            Err(e) => {
                let why = format!("draining the target after backlog {backlog}: {e}");
                return Err(self.stop(why, None));
            }
        }
        Ok(report)
    }

    /// Puts the target's accept policy back as it was before the sweep, on a way out that
    /// skips the drain (a failed or interrupted step); a failure here is only logged, the
    /// step's own error is the news.
    async fn restore_policy(&mut self) {
        let Some(original) = self.original else {
            return;
        };
        if let Err(e) = self.target.configure_policy(None, Some(&original)).await {
            tracing::warn!(cause = %e, "the target's accept policy could not be put back");
        }
    }

    fn bounds(&self) -> Bounds {
        Bounds {
            p99_max: self.plan.p99_max,
            accept_wait_max: self.plan.accept_wait_max,
        }
    }

    /// What the steps made.
    pub(super) fn finish(self) -> Done {
        self.done
    }
}

/// A step from its runs (in the order run, at least one): the median run's figures
/// ([`clean::median`]), how many runs were made and were clean, every run's id; the others'
/// reports go in `repeat_reports`, the median's is returned beside the step.
pub(super) fn step_of(
    plan: &SweepPlan,
    backlog: i32,
    rate: Option<AcceptRate>,
    phase: Phase,
    mut runs: Vec<Report>,
    bounds: Bounds,
) -> (Step, Report) {
    let ran = runs.len() as u32;
    let clean_runs = runs
        .iter()
        .filter(|r| clean::judge(r, bounds).is_ok())
        .count() as u32;
    let run_ids = runs.iter().map(|r| r.run_id.clone()).collect();
    let r = runs.swap_remove(clean::median(&runs, bounds));
    let t = r.target.clone().unwrap_or_default();
    let verdict = clean::judge(&r, bounds);
    let m = model::model(plan.run.load.connections, rate.map(|r| r.0), &r);
    let step = Step {
        backlog,
        accept_rate: rate,
        backlog_effective: t.backlog_effective,
        somaxconn: t.somaxconn,
        outcomes: r.outcomes,
        connect_latency_us: r.connect_latency_us,
        ttfb_us: r.ttfb_us,
        listen_overflows: t.counters.listen_overflows,
        syncookies_sent: t.counters.syncookies_sent,
        accept_queue_max: t.accept_queue_max,
        accepted: t.accepted.unwrap_or(0),
        // Without the target's stats the step's overflows and queue are unknown, not
        // zero: it cannot be called clean.
        partial: r.partial || r.target.is_none(),
        issue_duration_us: r.issue_duration_us,
        thresholds_passed: None,
        phase,
        clean: verdict.is_ok(),
        unclean: verdict.err(),
        runs: ran,
        clean_runs,
        run_ids,
        accepted_during_burst: m.accepted_during_burst,
        model_backlog: m.backlog,
        model_source: m.source.to_owned(),
        server_pid: t.server_pid,
        repeat_reports: runs,
    };
    (step, r)
}

#[cfg(test)]
mod tests {
    use stampede_proto::target::{CounterDeltas, TargetStats};

    use super::*;
    use crate::report::{Latency, Outcomes};

    fn run(id: &str, overflows: u64, p99: u64) -> Report {
        Report {
            run_id: id.into(),
            outcomes: Outcomes {
                established: 100,
                ..Outcomes::default()
            },
            connect_latency_us: Latency {
                count: 100,
                p99,
                ..Latency::default()
            },
            target: Some(TargetStats {
                counters: CounterDeltas {
                    listen_overflows: overflows,
                    ..CounterDeltas::default()
                },
                ..TargetStats::default()
            }),
            ..Report::default()
        }
    }

    /// Three runs of a step: the median's figures, every run counted and named in the order
    /// run, the other two kept as repeat reports.
    #[test]
    fn a_step_is_its_median_run_and_counts_every_run() {
        let plan = crate::sweep::recommend::tests::plan();
        let bounds = Bounds {
            p99_max: Duration::from_millis(100),
            accept_wait_max: Duration::from_millis(100),
        };
        let runs = vec![run("a", 5, 1_000), run("b", 0, 3_000), run("c", 0, 1_000)];
        let (step, median) = step_of(&plan, 64, None, Phase::Coarse, runs, bounds);
        assert_eq!(median.run_id, "b", "the median by badness");
        assert_eq!(step.connect_latency_us.p99, 3_000);
        assert_eq!((step.runs, step.clean_runs), (3, 2));
        assert_eq!(step.run_ids, ["a", "b", "c"]);
        assert!(step.clean);
        let mut others: Vec<_> = step.repeat_reports.iter().map(|r| &r.run_id).collect();
        others.sort();
        assert_eq!(others, ["a", "c"]);
        let (one, _) = step_of(&plan, 64, None, Phase::Coarse, vec![run("x", 1, 1)], bounds);
        assert_eq!((one.runs, one.clean_runs, one.clean), (1, 0, false));
        assert_eq!(one.run_ids, ["x"]);
        assert!(one.repeat_reports.is_empty());
    }
}
