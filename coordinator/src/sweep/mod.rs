//! `stampede sweep`: sizing `listen()` backlog and `net.core.somaxconn` (docs/design.md "Sweep").
//! For each accept rate and each backlog: configure the target, run the same burst, collect;
//! then drain the target's accept queue so the next step starts empty. The recommendation is
//! the smallest backlog with no overflow and p99 connect latency under the threshold, with
//! the somaxconn it needs, set beside a simple queue model: a burst of M connects with `a`
//! accepts completing during it needs A + 1 ≥ M − a (docs/kernel.md §6).
//!
//! This module runs the steps (each one a [`crate::run::execute`]) and holds the sweep's
//! types; `recommend` turns the steps into recommendations, [`html`] draws `sweep.html` and
//! [`csv`] writes `sweep.csv` (one row per step).

use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use stampede_proto::duration::human_us;
use tokio_util::sync::CancellationToken;

use crate::report::{Latency, Outcomes, Report};
use crate::run::{self, RunError, RunPlan};
use crate::service::Registry;
use crate::target::TargetControl;
use crate::threshold::{self, Threshold};

pub mod csv;
pub mod html;
mod recommend;
pub mod story;

use self::recommend::recommend;

/// A sweep: one run plan, repeated over backlogs × accept rates.
#[derive(Debug, Clone)]
pub struct SweepPlan {
    /// The run repeated at each step (its backlog and accept rate are overridden).
    pub run: RunPlan,
    /// Backlogs to try (run smallest first, duplicates once).
    pub backlogs: Vec<i32>,
    /// Accept rates to try (`f64::INFINITY`: as fast as possible); empty: leave the target's.
    pub accept_rates: Vec<f64>,
    /// The p99 connect latency a recommended backlog must stay under.
    pub p99_max: Duration,
}

/// One step's figures.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Step {
    /// Backlog requested.
    pub backlog: i32,
    /// Accept rate (None: as the target was; null in JSON also for "as fast as possible").
    pub accept_rate: Option<f64>,
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
    /// Largest accept queue seen.
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
}

/// What to set, per accept rate.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Recommendation {
    /// The accept rate it holds for.
    pub accept_rate: Option<f64>,
    /// Smallest backlog tried with no overflow and p99 under the threshold (None: none did).
    pub backlog: Option<i32>,
    /// somaxconn it needs in the server's namespace (≥ backlog), set before listen().
    pub somaxconn: Option<i32>,
    /// The queue model's estimate: M − a − 1, a = accepts completing during the burst
    /// (accept rate × issue time; 0 when the rate is unknown or unlimited: the worst case).
    pub model_backlog: u64,
    /// A sentence saying why.
    pub reason: String,
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
    /// The full report of every step.
    pub reports: Vec<Report>,
    /// Why the sweep ended early (interrupted, a step failed); absent when it ran through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
}

/// Runs every step; fails without a target control URL (a sweep must configure the target).
pub async fn execute(
    registry: &Registry,
    plan: &SweepPlan,
    cancel: &CancellationToken,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<SweepReport, RunError> {
    let url = plan.run.target_control.clone().ok_or_else(|| {
        RunError::TargetControl(crate::target::TargetError {
            url: String::new(),
            reason: "a sweep needs --target-control to set the backlog at each step".into(),
        })
    })?;
    let mut target = TargetControl::connect(&url, &plan.run.target_auth).await?;
    let rates: Vec<Option<f64>> = if plan.accept_rates.is_empty() {
        vec![None]
    } else {
        plan.accept_rates.iter().copied().map(Some).collect()
    };
    // Smallest first: the recommendation is the first clean step, whatever order was given.
    let mut backlogs = plan.backlogs.clone();
    backlogs.sort_unstable();
    backlogs.dedup();
    let total = rates.len() * backlogs.len();
    let mut steps = Vec::with_capacity(total);
    let mut reports = Vec::with_capacity(total);
    // Why the sweep ended before its last step; the steps done so far are kept.
    let mut stopped = None;
    'steps: for rate in &rates {
        for &backlog in &backlogs {
            if cancel.is_cancelled() {
                stopped = Some("interrupted".to_owned());
                break 'steps;
            }
            progress(&format!(
                "step {}/{total}: backlog {backlog}, accept rate {}",
                steps.len() + 1,
                rate_name(*rate)
            ));
            let mut step_plan = plan.run.clone();
            step_plan.backlog = Some(backlog);
            step_plan.accept_rate = *rate;
            let done = match run::execute(registry, &step_plan, cancel, progress).await {
                Ok(done) => done,
                Err(e) if steps.is_empty() => return Err(e),
                Err(_) if cancel.is_cancelled() => {
                    stopped = Some("interrupted".to_owned());
                    break 'steps;
                }
                Err(e) => {
                    stopped = Some(format!("step backlog {backlog}: {e}"));
                    break 'steps;
                }
            };
            let r = done.report;
            let t = r.target.clone().unwrap_or_default();
            steps.push(Step {
                backlog,
                accept_rate: *rate,
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
            });
            reports.push(r);
            if cancel.is_cancelled() {
                stopped = Some("interrupted".to_owned());
                break 'steps;
            }
            // Connections the step left in the queue would fill the next step's queue.
            match target.drain(Duration::from_secs(10)).await {
                Ok(0) => {}
                Ok(left) => tracing::warn!(left, "the target's accept queue did not drain"),
                Err(e) => {
                    stopped = Some(format!("draining the target after backlog {backlog}: {e}"));
                    break 'steps;
                }
            }
        }
    }
    let recommendations = rates
        .iter()
        .map(|rate| recommend(plan, *rate, &steps))
        .collect();
    Ok(SweepReport {
        connections: plan.run.load.connections,
        p99_max_us: plan.p99_max.as_micros() as u64,
        steps,
        recommendations,
        reports,
        stopped,
    })
}

pub(crate) fn rate_name(rate: Option<f64>) -> String {
    match rate {
        None => "as configured".into(),
        Some(r) if r.is_infinite() => "max".into(),
        Some(r) => format!("{r}/s"),
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

    /// Which steps passed the thresholds, and what failed in the others.
    fn threshold_lines(&self, s: &mut String) {
        let judged: Vec<(&Step, &Report)> = self
            .steps
            .iter()
            .zip(&self.reports)
            .filter(|(st, _)| st.thresholds_passed.is_some())
            .collect();
        if judged.is_empty() {
            return;
        }
        let passing = judged
            .iter()
            .filter(|(st, _)| st.thresholds_passed == Some(true))
            .count();
        let _ = writeln!(s, "thresholds: {passing} of {} steps pass", judged.len());
        for (st, r) in judged {
            let failed: Vec<String> = r
                .thresholds
                .iter()
                .filter(|t| !t.passed)
                .map(|t| format!("{} ({})", t.expr, t.detail))
                .collect();
            let _ = writeln!(
                s,
                "  backlog {} at accept rate {}: {}",
                st.backlog,
                rate_name(st.accept_rate),
                if failed.is_empty() {
                    "pass".to_owned()
                } else {
                    format!("FAIL {}", failed.join(", "))
                }
            );
        }
    }

    /// Writes `sweep.json`, `sweep.csv` and `sweep.html` into `dir`.
    pub fn write(&self, dir: &std::path::Path) -> std::io::Result<()> {
        let out = crate::report::OutDir::create(dir)?;
        out.json("sweep.json", self)?;
        out.file("sweep.csv", csv::render(self))?;
        out.file("sweep.html", html::render(self))
    }

    /// The terminal table and the recommendations.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:>8} {:>9} {:>10} {:>8} {:>7} {:>7} {:>7} {:>9} {:>10} {:>10} {:>10}",
            "backlog",
            "effective",
            "rate",
            "estab",
            "k>=1",
            "ghost",
            "other",
            "overflows",
            "p50",
            "p99",
            "max"
        );
        for st in &self.steps {
            let o = &st.outcomes;
            let _ = writeln!(
                s,
                "{:>8} {:>9} {:>10} {:>8} {:>7} {:>7} {:>7} {:>9} {:>10} {:>10} {:>10}{}",
                st.backlog,
                st.backlog_effective,
                rate_name(st.accept_rate),
                o.established,
                o.syn_retransmitted,
                o.ghost,
                o.total() - o.established - o.syn_retransmitted - o.ghost,
                st.listen_overflows,
                human_us(st.connect_latency_us.p50),
                human_us(st.connect_latency_us.p99),
                human_us(st.connect_latency_us.max),
                if st.partial { "  (partial)" } else { "" }
            );
        }
        if let Some(why) = &self.stopped {
            let _ = writeln!(
                s,
                "sweep stopped after {} steps: {why}; the recommendations cover those",
                self.steps.len()
            );
        }
        for r in &self.recommendations {
            let _ = writeln!(
                s,
                "accept rate {}: {}{} (queue model: backlog >= {})",
                rate_name(r.accept_rate),
                r.backlog.map_or_else(
                    || "no recommendation: ".to_owned(),
                    |b| format!("backlog {b}: ")
                ),
                r.reason,
                r.model_backlog
            );
        }
        self.threshold_lines(&mut s);
        let _ = writeln!(s, "\n{}", crate::report::wrap(&story::verdict(self), 100));
        s
    }
}

#[cfg(test)]
mod threshold_tests {
    use super::recommend::tests::step;
    use super::*;

    /// Each step is judged on its own report: the summary says which steps pass and what
    /// failed in the others; without thresholds nothing is added.
    #[test]
    fn each_step_gets_its_verdict() {
        let steps = vec![step(8, 40, 1_000_000, 60), step(64, 0, 2_000, 100)];
        let reports = steps
            .iter()
            .map(|st| Report {
                admission: crate::report::Admission::Greeting,
                outcomes: st.outcomes,
                connect_latency_us: Latency {
                    count: 100,
                    ..st.connect_latency_us
                },
                ..Report::default()
            })
            .collect();
        let mut sweep = SweepReport {
            connections: 100,
            p99_max_us: 100_000,
            steps,
            recommendations: Vec::new(),
            reports,
            stopped: None,
        };
        let unjudged = sweep.summary();
        sweep.judge(&[]);
        assert_eq!(sweep.summary(), unjudged);
        assert!(sweep.steps.iter().all(|st| st.thresholds_passed.is_none()));

        let fail_if: Vec<Threshold> = ["connect.p99>50ms", "established<100%"]
            .iter()
            .map(|e| e.parse().unwrap())
            .collect();
        sweep.judge(&fail_if);
        assert_eq!(sweep.steps[0].thresholds_passed, Some(false));
        assert_eq!(sweep.steps[1].thresholds_passed, Some(true));
        assert_eq!(sweep.reports[0].thresholds.len(), 2);
        let s = sweep.summary();
        assert!(s.contains("thresholds: 1 of 2 steps pass"), "{s}");
        assert!(
            s.contains("backlog 8 at accept rate 100/s: FAIL connect.p99>50ms (1s), established<100% (60.00% (60 of 100))"),
            "{s}"
        );
        assert!(s.contains("backlog 64 at accept rate 100/s: pass"), "{s}");
        let v = serde_json::to_value(&sweep).unwrap();
        assert_eq!(v["steps"][0]["thresholds_passed"], false);
        assert_eq!(v["reports"][1]["thresholds"][0]["passed"], true);
    }
}
