//! The sweep's terminal form: one row per step (outcomes, overflows, connect and accept-wait
//! percentiles, the measured queue peak beside the queue model, clean or why not), then one
//! line per accept rate with the recommendation, then the `--fail-if` verdict per step.

use std::fmt::Write as _;

use stampede_proto::duration::human_us;

use super::{Phase, Step, SweepReport, rate_name};
use crate::report::{Latency, Report};

/// A latency's percentile, or `-` when nothing was measured.
fn pct(l: &Latency, p: impl Fn(&Latency) -> u64) -> String {
    if l.count == 0 {
        "-".to_owned()
    } else {
        human_us(p(l))
    }
}

impl SweepReport {
    /// The terminal table and the recommendations.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:>8} {:>9} {:>10} {:>8} {:>7} {:>7} {:>7} {:>9} {:>9} {:>9} {:>9} {:>10} {:>6} {:>6}  clean",
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
            "max",
            "wait p99",
            "qmax",
            "model",
        );
        for st in &self.steps {
            let o = &st.outcomes;
            let _ = writeln!(
                s,
                "{:>8} {:>9} {:>10} {:>8} {:>7} {:>7} {:>7} {:>9} {:>9} {:>9} {:>9} {:>10} {:>6} {:>6}  {}{}",
                st.backlog,
                st.backlog_effective,
                rate_name(st.accept_rate),
                o.established,
                o.syn_retransmitted,
                o.ghost,
                o.total() - o.established - o.syn_retransmitted - o.ghost,
                st.listen_overflows,
                pct(&st.connect_latency_us, |l| l.p50),
                pct(&st.connect_latency_us, |l| l.p99),
                pct(&st.connect_latency_us, |l| l.max),
                pct(&st.ttfb_us, |l| l.p99),
                st.accept_queue_max,
                st.model_backlog,
                clean_cell(st),
                match st.phase {
                    Phase::Coarse => String::new(),
                    Phase::Refine => "  (refine)".to_owned(),
                    Phase::Confirm => "  (confirm)".to_owned(),
                } + if st.partial { "  (partial)" } else { "" }
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
                "accept rate {}: {}{} (queue model: backlog >= {}, a = {} {}{})",
                rate_name(r.accept_rate),
                r.backlog.map_or_else(
                    || "no recommendation: ".to_owned(),
                    |b| format!("backlog {b}: ")
                ),
                r.reason,
                r.model_backlog,
                r.model_accepted_during_burst
                    .map_or_else(|| "0".to_owned(), |a| a.to_string()),
                r.model_source,
                r.measured_queue_peak
                    .map_or_else(String::new, |q| format!("; measured queue peak {q}"))
            );
        }
        self.threshold_lines(&mut s);
        let _ = writeln!(
            s,
            "\n{}",
            crate::report::wrap(&super::story::verdict(self), 100)
        );
        s
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
}

/// `yes`, or `no` with the first reason (the row's other columns show the rest).
pub(super) fn clean_cell(st: &Step) -> String {
    match (&st.unclean, st.runs) {
        (None, 1) => "yes".to_owned(),
        (None, n) => format!("yes ({}/{n} runs)", st.clean_runs),
        (Some(why), n) => {
            let first = why.split("; ").next().unwrap_or(why);
            if n > 1 {
                format!("no: {first} ({}/{n} runs clean)", st.clean_runs)
            } else {
                format!("no: {first}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::SweepReport;
    use super::super::recommend::tests::step;
    use crate::report::{Latency, Report};
    use crate::threshold::Threshold;

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
            ..SweepReport::empty_for_tests()
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
            s.contains("backlog 8 at accept rate 100/s: FAIL connect.p99>50ms (1.00s), established<100% (60.00% (60 of 100))"),
            "{s}"
        );
        assert!(s.contains("backlog 64 at accept rate 100/s: pass"), "{s}");
        let v = serde_json::to_value(&sweep).unwrap();
        assert_eq!(v["steps"][0]["thresholds_passed"], false);
        assert_eq!(v["reports"][1]["thresholds"][0]["passed"], true);
    }
}
