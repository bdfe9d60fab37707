//! The run report: `report.json` (the contract in docs/design.md "Reports": keys are added
//! freely, never renamed), the terminal summary, and its other forms: [`csv`] (one row per
//! agent and a total), [`html`] (a self-contained page with SVG plots) and [`hlog`] (the
//! HdrHistogram interval log, second by second).

pub mod csv;
pub mod hlog;
pub mod html;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
pub use stampede_proto::outcome::Errno;
use stampede_proto::outcome::OutcomeClass;
pub use stampede_proto::report::{Admission, Kernel, Latency, Outcomes};
pub use stampede_proto::target::TargetStats;

pub use stampede_proto::output::OutDir;

/// One agent's part of the run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AgentReport {
    /// Agent id.
    pub id: String,
    /// Its host name.
    pub host: String,
    /// Connections planned for it.
    pub connections: u64,
    /// Attempts it reported.
    pub attempts: u64,
    /// Coordinator clock minus agent clock, µs.
    pub clock_offset_us: i64,
    /// Error bound of that offset (RTT/2), µs.
    pub clock_uncertainty_us: u64,
    /// Its first connect() minus the agreed start, in coordinator time, µs.
    pub start_error_us: Option<i64>,
    /// From its first to its last connect() call, µs.
    pub issue_duration_us: Option<u64>,
    /// Its outcomes.
    pub outcomes: Outcomes,
    /// Its connect latency, µs.
    pub connect_latency_us: Latency,
    /// False if it was lost before its final result (its intervals are still counted).
    pub complete: bool,
    /// Its kernel settings and counters (TCPRetransFail: its own congestion).
    pub kernel: Kernel,
    /// Errors by errno (named in JSON).
    pub errors: BTreeMap<Errno, u64>,
    /// Attempts it never classified because its run was cut short (Abort, shutdown).
    #[serde(default)]
    pub unfinished: u64,
    /// Attempts it cancelled unissued because they fell due while it was stalled (never
    /// fired late in a catch-up burst).
    #[serde(default)]
    pub skipped_overdue: u64,
    /// Attempts it issued more than its late bound past their intended time.
    #[serde(default)]
    pub issued_late: u64,
    /// Why it cut its run short or calls it partial (a stall, lost coordinator, shutdown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cut_reason: Option<String>,
}

/// The whole report.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    /// Unique run id.
    pub run_id: String,
    /// The agreed start instant, RFC 3339 UTC.
    pub started_at: String,
    /// The scenario as run.
    pub scenario: serde_json::Value,
    /// True if any agent was lost or the run was aborted.
    pub partial: bool,
    /// True if the run was aborted (Ctrl-C).
    pub aborted: bool,
    /// Agents lost during the run.
    pub lost_agents: Vec<String>,
    /// Why each lost agent was lost.
    pub lost_reasons: BTreeMap<String, String>,
    /// Agents whose run was cut short or stalled, and why (each makes the run partial).
    #[serde(default)]
    pub cut_reasons: BTreeMap<String, String>,
    /// Attempts cancelled unissued across agents because they fell due during a stall.
    #[serde(default)]
    pub skipped_overdue: u64,
    /// Attempts issued more than the late bound past their time, across agents.
    #[serde(default)]
    pub issued_late: u64,
    /// Per agent.
    pub agents: Vec<AgentReport>,
    /// How connected attempts were checked for admission.
    pub admission: Admission,
    /// Merged outcomes.
    pub outcomes: Outcomes,
    /// Merged counts by SYN-retransmit count k (`{"1": n}` in JSON, in numeric order).
    pub syn_retransmits: BTreeMap<u32, u64>,
    /// Merged ghosts by the k their connect() took.
    pub ghost_syn_retransmits: BTreeMap<u32, u64>,
    /// Merged pending attempts by the SYN retransmits made when the deadline hit.
    pub pending_syn_retransmits: BTreeMap<u32, u64>,
    /// Merged `error` attempts by errno (named in JSON).
    pub errors: BTreeMap<Errno, u64>,
    /// Merged connect latency, µs.
    pub connect_latency_us: Latency,
    /// Merged time to first byte, µs.
    pub ttfb_us: Latency,
    /// Latest minus earliest first connect() across agents, coordinator time, µs.
    pub start_spread_us: Option<u64>,
    /// From the earliest first connect() to the latest last one, µs.
    pub issue_duration_us: Option<u64>,
    /// Kernel settings of the first agent (each agent's are in `agents[]`).
    pub kernel: Kernel,
    /// The target's view, if a target control address was given.
    pub target: Option<TargetStats>,
    /// Why the target's final stats are missing, if they are (it died or stalled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_error: Option<String>,
    /// Each `--fail-if` threshold judged against this run, in the order given (empty when
    /// none was given).
    #[serde(default)]
    pub thresholds: Vec<ThresholdResult>,
}

/// One `--fail-if` threshold judged against a run (`crate::threshold` evaluates it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThresholdResult {
    /// The expression as given.
    pub expr: String,
    /// The metric's value in this run, in `unit` (a whole number for counts and µs); null
    /// when the run cannot tell.
    #[serde(serialize_with = "whole_if_exact")]
    pub value: Option<f64>,
    /// `count`, `us` or `percent` (of attempts); null when the value is.
    pub unit: Option<String>,
    /// False when the expression held, or its metric is unknown in this run.
    pub passed: bool,
    /// The value for a person (`1.2ms`, `39`, `99.50% (995 of 1000)`) or why it is unknown.
    pub detail: String,
}

/// A whole value as a JSON integer (`39`, not `39.0`: counts and µs are whole); a fraction stays.
fn whole_if_exact<S: serde::Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        // Exact below 2^53: every count and duration a run produces.
        Some(x) if x.fract() == 0.0 && (0.0..9.0e15).contains(x) => s.serialize_u64(*x as u64),
        Some(x) => s.serialize_f64(*x),
        None => s.serialize_none(),
    }
}

impl Report {
    /// The terminal summary.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let o = &self.outcomes;
        let total = o.total();
        let _ = writeln!(
            s,
            "run {} at {}{}",
            self.run_id,
            self.started_at,
            if self.aborted {
                " (ABORTED)"
            } else if self.partial {
                " (PARTIAL)"
            } else {
                ""
            }
        );
        if !self.lost_agents.is_empty() {
            let _ = writeln!(s, "lost agents: {}", self.lost_agents.join(", "));
        }
        if self.skipped_overdue > 0 || self.issued_late > 0 {
            let _ = writeln!(
                s,
                "stalled: {} attempts skipped overdue (never fired late), {} issued late",
                self.skipped_overdue, self.issued_late
            );
        }
        for (agent, why) in &self.cut_reasons {
            let _ = writeln!(s, "cut short: {agent}: {why}");
        }
        let _ = writeln!(
            s,
            "{:<12} {:>6} {:>9} {:>10} {:>12} {:>12}",
            "agent", "conns", "attempts", "offset", "uncertainty", "start err"
        );
        for a in &self.agents {
            let _ = writeln!(
                s,
                "{:<12} {:>6} {:>9} {:>8}us {:>10}us {:>10}{}",
                a.id,
                a.connections,
                a.attempts,
                a.clock_offset_us,
                a.clock_uncertainty_us,
                a.start_error_us
                    .map_or_else(|| "-".to_owned(), |e| format!("{e}us")),
                // Lost: nothing final came from it. Cut short: its final result came, but
                // the run was aborted (Ctrl-C) or it stopped early, and says why.
                if self.lost_agents.contains(&a.id) {
                    "  (lost)"
                } else if a.complete {
                    ""
                } else {
                    "  (cut short)"
                }
            );
        }
        let _ = writeln!(s, "attempts {total}:");
        for class in OutcomeClass::ALL {
            let (name, n) = (class.name(), o.get(class));
            if n > 0 {
                let _ = writeln!(s, "  {name:<18} {n:>8}");
            }
        }
        for (label, counts) in [
            ("SYN retransmits", &self.syn_retransmits),
            ("ghosts by k", &self.ghost_syn_retransmits),
            ("pending by k", &self.pending_syn_retransmits),
        ] {
            if !counts.is_empty() {
                let ks: Vec<String> = counts.iter().map(|(k, n)| format!("k={k}: {n}")).collect();
                let _ = writeln!(s, "  {label:<18} {}", ks.join(", "));
            }
        }
        if !self.errors.is_empty() {
            let es: Vec<String> = self
                .errors
                .iter()
                .map(|(e, n)| format!("{e}: {n}"))
                .collect();
            let _ = writeln!(s, "  {:<18} {}", "errors", es.join(", "));
        }
        if let Some(caveat) = self.admission.caveat(o.connected()) {
            let _ = writeln!(s, "{caveat}");
        }
        for (name, l) in [
            ("connect", &self.connect_latency_us),
            ("first byte", &self.ttfb_us),
        ] {
            if l.count > 0 {
                let _ = writeln!(
                    s,
                    "{name:<10} us  p50 {} p90 {} p99 {} p99.9 {} max {} (n={})",
                    l.p50, l.p90, l.p99, l.p999, l.max, l.count
                );
            }
        }
        if let Some(spread) = self.start_spread_us {
            let _ = writeln!(s, "start spread {spread}us across agents");
        }
        if let Some(e) = &self.target_error {
            let _ = writeln!(s, "target: no final stats ({e})");
        }
        if let Some(t) = &self.target {
            // "-": observing another process's listener, which alone knows it.
            let g = |v: Option<String>| v.unwrap_or_else(|| "-".to_owned());
            let _ = writeln!(
                s,
                "target: backlog {} (effective {}), queue max {}, accepted {}, overflows {}, cookies {}",
                g(t.backlog_requested.map(|b| b.to_string())),
                t.backlog_effective,
                t.accept_queue_max,
                g(t.accepted.map(|a| a.to_string())),
                t.counters.listen_overflows,
                t.counters.syncookies_sent
            );
        }
        self.threshold_lines(&mut s);
        s
    }

    /// True unless a `--fail-if` threshold failed.
    pub fn thresholds_passed(&self) -> bool {
        self.thresholds.iter().all(|t| t.passed)
    }

    /// The `--fail-if` thresholds, one line each with pass or FAIL (nothing when none).
    fn threshold_lines(&self, s: &mut String) {
        if self.thresholds.is_empty() {
            return;
        }
        let failed = self.thresholds.iter().filter(|t| !t.passed).count();
        let _ = writeln!(
            s,
            "thresholds: {} of {} failed",
            failed,
            self.thresholds.len()
        );
        for t in &self.thresholds {
            let verdict = if t.passed { "pass" } else { "FAIL" };
            let _ = writeln!(s, "  {verdict} {}: {}", t.expr, t.detail);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_keys_are_present() {
        let v = serde_json::to_value(Report::default()).unwrap();
        for key in [
            "run_id",
            "started_at",
            "scenario",
            "partial",
            "lost_agents",
            "agents",
            "outcomes",
            "syn_retransmits",
            "connect_latency_us",
            "ttfb_us",
            "start_spread_us",
            "issue_duration_us",
            "kernel",
            "target",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
        for key in OutcomeClass::ALL.map(OutcomeClass::name) {
            assert!(v["outcomes"].get(key).is_some(), "missing outcomes.{key}");
        }
        for key in ["count", "min", "p50", "p90", "p99", "p999", "max"] {
            assert!(v["connect_latency_us"].get(key).is_some(), "missing {key}");
        }
    }

    /// Connected attempts nobody checked for admission are flagged in the summary, and the
    /// report says how (or whether) admission was checked.
    #[test]
    fn unchecked_admission_is_called_out() {
        let mut r = Report::default();
        r.outcomes.established = 5;
        assert_eq!(serde_json::to_value(&r).unwrap()["admission"], "unchecked");
        assert!(
            r.summary().contains("admission unchecked: 5 connected"),
            "{}",
            r.summary()
        );
        r.admission = Admission::Greeting;
        assert_eq!(serde_json::to_value(&r).unwrap()["admission"], "greeting");
        assert!(!r.summary().contains("admission unchecked"));
        // Nothing connected: nothing to warn about.
        let refused = Report {
            outcomes: Outcomes {
                refused: 5,
                ..Outcomes::default()
            },
            ..Report::default()
        };
        assert!(!refused.summary().contains("admission"));
    }

    /// After Ctrl-C every agent's result is cut short, yet none is lost: the summary says
    /// which, as `lost_agents` does.
    #[test]
    fn cut_short_agents_are_not_called_lost() {
        let agent = |id: &str, complete| AgentReport {
            id: id.into(),
            complete,
            ..AgentReport::default()
        };
        let r = Report {
            aborted: true,
            partial: true,
            agents: vec![agent("a1", false), agent("a2", false), agent("a3", true)],
            lost_agents: vec!["a2".into()],
            ..Report::default()
        };
        let s = r.summary();
        let line = |id: &str| s.lines().find(|l| l.starts_with(id)).unwrap().to_owned();
        assert!(line("a1").ends_with("(cut short)"), "{s}");
        assert!(line("a2").ends_with("(lost)"), "{s}");
        assert!(!line("a3").contains('('), "{s}");
    }

    /// A target seen through `observe` knows no accepted count: a dash, never "null".
    #[test]
    fn unknown_target_values_show_as_a_dash() {
        let r = Report {
            target: Some(TargetStats {
                backlog_requested: None,
                accepted: None,
                backlog_effective: 5,
                accept_queue_max: 6,
                ..TargetStats::default()
            }),
            ..Report::default()
        };
        let s = r.summary();
        assert!(
            s.contains("backlog - (effective 5), queue max 6, accepted -"),
            "{s}"
        );
        assert!(!s.contains("null"));
    }
}

#[cfg(test)]
mod threshold_tests {
    use super::*;

    /// Each threshold is a line with pass or FAIL; none given, no lines and no JSON entries.
    #[test]
    fn thresholds_are_listed_with_their_verdict() {
        let mut r = Report::default();
        assert!(!r.summary().contains("thresholds"));
        assert_eq!(
            serde_json::to_value(&r).unwrap()["thresholds"],
            serde_json::json!([])
        );
        assert!(r.thresholds_passed());
        r.thresholds = vec![
            ThresholdResult {
                expr: "ghost>0".into(),
                value: Some(39.0),
                unit: Some("count".into()),
                passed: false,
                detail: "39".into(),
            },
            ThresholdResult {
                expr: "connect.p99>50ms".into(),
                value: Some(1200.0),
                unit: Some("us".into()),
                passed: true,
                detail: "1.2ms".into(),
            },
        ];
        let s = r.summary();
        assert!(s.contains("thresholds: 1 of 2 failed"), "{s}");
        assert!(s.contains("  FAIL ghost>0: 39\n"), "{s}");
        assert!(s.contains("  pass connect.p99>50ms: 1.2ms\n"), "{s}");
        assert!(!r.thresholds_passed());
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["thresholds"][0]["expr"], "ghost>0");
        assert_eq!(v["thresholds"][0]["passed"], false);
        assert_eq!(v["thresholds"][1]["value"].to_string(), "1200");
        r.thresholds[1].value = Some(99.5);
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["thresholds"][1]["value"].to_string(), "99.5");
        let back: Report = serde_json::from_value(v).unwrap();
        assert_eq!(back.thresholds, r.thresholds);
    }
}
