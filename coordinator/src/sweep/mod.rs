//! `stampede sweep`: sizing `listen()` backlog and `net.core.somaxconn` (docs/design.md "Sweep").
//! For each accept rate: every backlog of the list, smallest first (the coarse pass), then
//! with `--refine` a bisection between the last unclean and the first clean backlog down to a
//! stated tolerance, then with `--confirm N` the recommended backlog N more times. Each step
//! starts from the same state: the target configured with the step's backlog and the accept
//! policy it had before the sweep (or that policy at the step's rate), its counters reset by
//! the run, and after the run its accept queue drained and its policy put back exactly.
//!
//! A step is clean ([`clean`]) when nothing overflowed, every attempt was established at
//! once (k=0), connect p99 stayed under `--p99-max` and, when the first byte was measured,
//! the accept wait's p99 under `--accept-wait-max`. The recommendation is the smallest clean
//! backlog, beside a queue model ([`model`]): a burst of M connects with `a` accepts
//! completing during it needs A + 1 ≥ M − a (docs/kernel.md §6), `a` measured from the
//! target's timeline where it counts accepts.
//!
//! Here: the types and [`execute`]; `search` runs the passes, `steps` one step (with
//! `--repeat`), `recommend` the verdict per rate, `summary` the terminal table, [`html`]
//! draws `sweep.html` and [`csv`] writes `sweep.csv` (one row per step).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use stampede_proto::target::TargetKind;
use tokio_util::sync::CancellationToken;

use crate::report::{Latency, Outcomes, Report};
use crate::run::{RunError, RunPlan};
use crate::scenario::AcceptRate;
use crate::service::Registry;
use crate::target::{TargetControl, TargetError};
use crate::threshold::{self, Threshold};

pub mod clean;
pub mod csv;
mod diagnosis;
pub mod html;
pub mod model;
mod recommend;
mod search;
mod steps;
pub mod story;
mod summary;

pub use self::search::Tolerance;

/// A sweep: one run plan, repeated over backlogs × accept rates.
#[derive(Debug, Clone)]
pub struct SweepPlan {
    /// The run repeated at each step (its backlog and accept rate are overridden).
    pub run: RunPlan,
    /// Backlogs to try (run smallest first, duplicates once).
    pub backlogs: Vec<i32>,
    /// Accept rates to try (`f64::INFINITY`: as fast as possible); empty: leave the target's.
    pub accept_rates: Vec<f64>,
    /// The p99 connect latency a clean step stays under.
    pub p99_max: Duration,
    /// The p99 accept wait (first byte) a clean step stays under, when it was measured.
    pub accept_wait_max: Duration,
    /// Bisect between the last unclean and the first clean backlog down to this gap.
    pub refine: Option<Tolerance>,
    /// Rerun the recommended backlog this many times; it stands only if every rerun is clean.
    pub confirm: u32,
    /// Runs per step (at least 1); the step's figures are its median run's.
    pub repeat: u32,
}

impl SweepPlan {
    /// A sweep of `run` over `backlogs` with the defaults of the flags (p99 and accept wait
    /// under 100 ms, no refine, no confirmation, one run per step, the target's own rate).
    pub fn new(run: RunPlan, backlogs: Vec<i32>) -> SweepPlan {
        SweepPlan {
            run,
            backlogs,
            accept_rates: Vec::new(),
            p99_max: Duration::from_millis(100),
            accept_wait_max: Duration::from_millis(100),
            refine: None,
            confirm: 0,
            repeat: 1,
        }
    }
}

/// Which pass of the sweep ran a step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// The list of backlogs given.
    #[default]
    Coarse,
    /// A backlog `--refine` chose between the last unclean and the first clean one.
    Refine,
    /// A rerun of the recommended backlog (`--confirm`).
    Confirm,
}

/// One step's figures (with `--repeat`, those of its median run).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Step {
    /// Backlog requested.
    pub backlog: i32,
    /// Accept rate (None, null in JSON: as the target was; `"max"`: as fast as possible).
    #[serde(default, with = "rate_json")]
    pub accept_rate: Option<AcceptRate>,
    /// Effective backlog the target's kernel applied.
    pub backlog_effective: u32,
    /// somaxconn of the target's namespace.
    pub somaxconn: u32,
    /// Attempts by outcome.
    pub outcomes: Outcomes,
    /// Connect latency, µs.
    pub connect_latency_us: Latency,
    /// First-byte latency, µs: the accept wait when the target greets or the client probes
    /// (count 0 when neither measured it).
    #[serde(default)]
    pub ttfb_us: Latency,
    /// ListenOverflows on the target during the step.
    pub listen_overflows: u64,
    /// Cookies sent: potential phantoms.
    pub syncookies_sent: u64,
    /// Largest accept queue seen (the measurement the queue model stands beside).
    pub accept_queue_max: u32,
    /// Accepted by the target.
    pub accepted: u64,
    /// The step lost an agent or was aborted.
    pub partial: bool,
    /// Burst issue duration, µs.
    pub issue_duration_us: Option<u64>,
    /// Whether the step passed every `--fail-if` threshold (each one is in the step's
    /// report); absent when none was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thresholds_passed: Option<bool>,
    /// Which pass ran it.
    #[serde(default)]
    pub phase: Phase,
    /// Clean: no overflow, every attempt established at k=0, connect p99 under
    /// `p99_max_us`, accept wait p99 under `accept_wait_max_us` when measured ([`clean`]).
    #[serde(default)]
    pub clean: bool,
    /// Why the step is not clean (every failed condition, `; `-separated); absent when clean.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unclean: Option<String>,
    /// Runs made for this step (`--repeat`).
    #[serde(default = "one")]
    pub runs: u32,
    /// How many of those runs were clean on their own.
    #[serde(default)]
    pub clean_runs: u32,
    /// The run id of each run, in the order run; the figures are those of the median one
    /// (whose report is in `reports[]`).
    #[serde(default)]
    pub run_ids: Vec<String>,
    /// Accepts completing during the burst `a`, as the model uses it (see `model_source`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted_during_burst: Option<u64>,
    /// The queue model's backlog for this step: M − a − 1 (M − 1 when `a` is unknown), to
    /// read beside `accept_queue_max`, the queue that was measured.
    #[serde(default)]
    pub model_backlog: u64,
    /// Where `a` came from: `measured` (the target's timeline of accepts), `rate` (accept
    /// rate × issue time) or `worst case` (unknown: taken as 0).
    #[serde(default)]
    pub model_source: String,
    /// The supervised server's process id during the step (`stampede-target supervise`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_pid: Option<u32>,
    /// The reports of the step's other runs (`--repeat` > 1; the median's is in `reports[]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repeat_reports: Vec<Report>,
}

fn one() -> u32 {
    1
}

/// What to set, per accept rate.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Recommendation {
    /// The accept rate it holds for (None, null in JSON: as the target was; `"max"`: as
    /// fast as possible).
    #[serde(default, with = "rate_json")]
    pub accept_rate: Option<AcceptRate>,
    /// Smallest clean backlog tried (and, with `--confirm`, clean at every confirmation);
    /// None: none was.
    pub backlog: Option<i32>,
    /// somaxconn it needs in the server's namespace (≥ backlog), set before listen().
    pub somaxconn: Option<i32>,
    /// The queue model's estimate: M − a − 1, with `a` as in the recommended step (or, with
    /// no clean step, the median over the rate's steps); M − 1 when `a` is unknown.
    pub model_backlog: u64,
    /// A sentence saying why.
    pub reason: String,
    /// Where the model's `a` came from (`measured`, `rate`, `worst case`).
    #[serde(default)]
    pub model_source: String,
    /// The model's `a`: accepts completing during the burst.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_accepted_during_burst: Option<u64>,
    /// The measurement beside the model: the accept queue's peak in the recommended step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measured_queue_peak: Option<u32>,
    /// Connect p99 of the recommended step, µs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_p99_us: Option<u64>,
    /// Accept wait (first byte) p99 of the recommended step, µs; absent when not measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accept_wait_p99_us: Option<u64>,
    /// The last unclean and the first clean backlog the search ended between.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bracket: Option<[i32; 2]>,
    /// Confirmation runs of the recommended backlog made (`--confirm`).
    #[serde(default)]
    pub confirmations: u32,
    /// How many of them were clean (the recommendation stands only if all were).
    #[serde(default)]
    pub confirmations_clean: u32,
    /// What it was judged by: the sweep's bounds and passes.
    #[serde(default)]
    pub criteria: Criteria,
    /// What served the listener (`target`, `supervise`); absent from older targets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_kind: Option<TargetKind>,
}

/// The bounds and passes a recommendation was made under (the sweep's flags).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Criteria {
    /// Connect p99 bound, µs (`--p99-max`).
    pub p99_max_us: u64,
    /// Accept wait (first byte) p99 bound, µs (`--accept-wait-max`), when it was measured.
    pub accept_wait_max_us: u64,
    /// `--refine`'s tolerance as given (`16`, `5%`); absent without `--refine`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refine_tolerance: Option<String>,
    /// `--confirm`: reruns of the recommended backlog.
    pub confirm: u32,
    /// `--repeat`: runs per step.
    pub repeat: u32,
}

impl Criteria {
    /// The criteria of `plan`.
    pub fn of(plan: &SweepPlan) -> Criteria {
        Criteria {
            p99_max_us: plan.p99_max.as_micros() as u64,
            accept_wait_max_us: plan.accept_wait_max.as_micros() as u64,
            refine_tolerance: plan.refine.map(|t| t.to_string()),
            confirm: plan.confirm,
            repeat: plan.repeat.max(1),
        }
    }
}

/// The sweep's result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SweepReport {
    /// Connections per step.
    pub connections: u64,
    /// p99 threshold, µs.
    pub p99_max_us: u64,
    /// Steps in the order run.
    pub steps: Vec<Step>,
    /// One per accept rate.
    pub recommendations: Vec<Recommendation>,
    /// The full report of every step (with `--repeat`, its median run's), one per step.
    pub reports: Vec<Report>,
    /// Why the sweep ended early (interrupted, a step failed); absent when it ran through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
}

/// Runs every step; fails without a target control URL (a sweep must configure the target),
/// or up front when the target cannot do what the sweep asks (an observed listener; accept
/// rates for a real server).
pub async fn execute(
    registry: &Registry,
    plan: &SweepPlan,
    cancel: &CancellationToken,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<SweepReport, RunError> {
    let url = plan.run.target_control.clone().ok_or_else(|| {
        RunError::TargetControl(TargetError {
            url: String::new(),
            reason: "a sweep needs --target-control to set the backlog at each step".into(),
        })
    })?;
    let target = TargetControl::connect(&url, &plan.run.target_auth).await?;
    let mut stepper = steps::Stepper::new(registry, plan, target, cancel, progress).await?;
    let rates: Vec<Option<AcceptRate>> = if plan.accept_rates.is_empty() {
        vec![None]
    } else {
        plan.accept_rates
            .iter()
            .map(|r| Some(AcceptRate(*r)))
            .collect()
    };
    let mut recommendations = Vec::with_capacity(rates.len());
    for (i, rate) in rates.iter().enumerate() {
        match search::at_rate(&mut stepper, *rate, i, rates.len()).await {
            Ok(rec) => recommendations.push(rec),
            Err(search::Stop) => break,
        }
    }
    let steps::Done {
        steps,
        reports,
        stopped,
        kind,
        failure,
    } = stepper.finish();
    // A sweep whose first step failed has nothing to report: its error is the sweep's.
    if let (true, Some(e)) = (steps.is_empty(), failure) {
        return Err(e);
    }
    // The rates the sweep stopped before still get their line: what the steps say.
    for rate in rates.iter().skip(recommendations.len()) {
        recommendations.push(recommend::recommend(plan, *rate, &steps));
    }
    for r in &mut recommendations {
        r.target_kind = kind;
    }
    Ok(SweepReport {
        connections: plan.run.load.connections,
        p99_max_us: plan.p99_max.as_micros() as u64,
        steps,
        recommendations,
        reports,
        stopped,
    })
}

/// A step's accept rate in words: `as configured`, `max`, or `500/s`.
pub(crate) fn rate_name(rate: Option<AcceptRate>) -> String {
    match rate {
        None => "as configured".into(),
        Some(r) if r.0.is_finite() => format!("{r}/s"),
        Some(r) => r.to_string(),
    }
}

/// `accept_rate` in `sweep.json`: a finite rate is a number (as it always was), "as fast as
/// possible" is `"max"` (it was `null`, which read back as "as configured"), the target's
/// own rate `null`. Reading takes a number or a string ([`AcceptRate`]'s own parsing).
mod rate_json {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::AcceptRate;

    pub(super) fn serialize<S: Serializer>(
        rate: &Option<AcceptRate>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match rate {
            None => s.serialize_none(),
            Some(r) if r.0.is_finite() => s.serialize_f64(r.0),
            Some(r) => s.collect_str(r),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<AcceptRate>, D::Error> {
        Option::<AcceptRate>::deserialize(d)
    }
}

impl SweepReport {
    /// Judges every step against the `--fail-if` thresholds: each step's report gets its
    /// `thresholds[]`, each step whether it passed them all (nothing when none were given).
    pub fn judge(&mut self, fail_if: &[Threshold]) {
        if fail_if.is_empty() {
            return;
        }
        // Steps and reports are pushed together, one each per step run.
        for (step, report) in self.steps.iter_mut().zip(&mut self.reports) {
            report.thresholds = threshold::evaluate(fail_if, report);
            step.thresholds_passed = Some(report.thresholds_passed());
        }
    }

    /// An empty report with the flags' defaults, for tests to fill in.
    #[cfg(test)]
    pub(crate) fn empty_for_tests() -> SweepReport {
        SweepReport {
            connections: 0,
            p99_max_us: 100_000,
            steps: Vec::new(),
            recommendations: Vec::new(),
            reports: Vec::new(),
            stopped: None,
        }
    }

    /// Writes `sweep.json`, `sweep.csv` and `sweep.html` into `dir`.
    pub fn write(&self, dir: &std::path::Path) -> std::io::Result<()> {
        let out = crate::report::OutDir::create(dir)?;
        out.json("sweep.json", self)?;
        out.file("sweep.csv", csv::render(self))?;
        out.file("sweep.html", html::render(self))
    }
}
