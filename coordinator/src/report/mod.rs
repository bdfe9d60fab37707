//! The run report: `report.json` (the contract in docs/design.md "Reports": keys are added
//! freely, never renamed), the terminal summary, and its other forms: [`csv`] (one row per
//! agent and a total), [`html`] (a self-contained page with SVG plots) and [`hlog`] (the
//! HdrHistogram interval log, second by second).

pub mod csv;
pub mod hlog;
pub mod html;
pub mod story;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use stampede_proto::duration::{human_signed_us, human_us};
pub use stampede_proto::outcome::Errno;
use stampede_proto::outcome::OutcomeClass;
use stampede_proto::report::k_counts;
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
    /// How long before the start instant the target's counters were reset, µs: the zero of
    /// `target.timeline` on the run's time axis (timeline time minus this = time since the
    /// start instant). Measured by the coordinator around the ResetCounters call, so good to
    /// half that call's round trip; absent without target stats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_reset_before_start_us: Option<i64>,
    /// Each `--fail-if` threshold judged against this run, in the order given (empty when
    /// none was given).
    #[serde(default)]
    pub thresholds: Vec<ThresholdResult>,
    /// The run in plain words: what happened, its likely cause and the next step
    /// ([`story::verdict`], set once the report is complete).
    #[serde(default)]
    pub verdict: String,
    /// Merged issue lag (connect() call minus intended send time) of every agent, µs: how
    /// late the fleet kept its schedule.
    #[serde(default)]
    pub issue_lag_us: Latency,
    /// How the run was paced for its fleet: the timeouts it gave agents and the start lead
    /// it chose (`crate::run`; `None` in reports from before they were stated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pacing: Option<Pacing>,
}

/// The timeouts and lead a run chose for its fleet (they grow with the number of agents).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pacing {
    /// How long agents had to answer Prepare (validate, sync clocks, arm), ms.
    pub prepare_timeout_ms: u64,
    /// Silence after which an agent was declared lost during the run, ms.
    pub liveness_ms: u64,
    /// Silence after which an agent stopped firing on its own (`Prepare.liveness_ms`), ms.
    pub agent_liveness_ms: u64,
    /// From sending Start to the start instant, ms.
    pub start_lead_ms: u64,
    /// What the start lead was chosen from: the measured round of Start delivery, clock
    /// uncertainty and the plan's lead.
    pub start_lead_basis: String,
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
                "{:<12} {:>6} {:>9} {:>10} {:>12} {:>12}{}",
                a.id,
                a.connections,
                a.attempts,
                human_signed_us(a.clock_offset_us),
                human_us(a.clock_uncertainty_us),
                a.start_error_us
                    .map_or_else(|| "-".to_owned(), human_signed_us),
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
        match self.unfinished() {
            0 => {
                let _ = writeln!(s, "attempts {total}:");
            }
            // Cut short: the classes below hold only the attempts decided by then.
            u => {
                let _ = writeln!(
                    s,
                    "attempts {}: {total} decided, {u} unfinished (cut short before their outcome was known):",
                    total.saturating_add(u)
                );
            }
        }
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
                let _ = writeln!(s, "  {label:<18} {}", k_counts(counts));
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
            ("issue lag", &self.issue_lag_us),
        ] {
            if l.count > 0 {
                let _ = writeln!(
                    s,
                    "{name:<10} p50 {} p90 {} p99 {} p99.9 {} max {} (n={})",
                    human_us(l.p50),
                    human_us(l.p90),
                    human_us(l.p99),
                    human_us(l.p999),
                    human_us(l.max),
                    l.count
                );
            }
        }
        if let Some(spread) = self.start_spread_us {
            let _ = writeln!(s, "start spread {} across agents", human_us(spread));
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
        // Told from the numbers above, so it is never stale even if `verdict` is unset.
        let _ = writeln!(s, "\n{}", wrap(&story::verdict(self), 100));
        s
    }

    /// Attempts never classified because the run was cut short, over every agent.
    pub fn unfinished(&self) -> u64 {
        self.agents
            .iter()
            .fold(0, |sum, a| sum.saturating_add(a.unfinished))
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

/// Breaks a paragraph into lines of at most `width` characters, at spaces (the run's and the
/// sweep's verdicts under their tables).
pub(crate) fn wrap(text: &str, width: usize) -> String {
    let mut out = String::new();
    let mut line = 0;
    for word in text.split(' ') {
        let len = word.chars().count();
        if line > 0 && line + 1 + len > width {
            out.push('\n');
            line = 0;
        } else if line > 0 {
            out.push(' ');
            line += 1;
        }
        out.push_str(word);
        line += len;
    }
    out
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

    /// Durations in the summary carry units, in the style of `stampede-agent fire`; the
    /// counts by k read the same way; the verdict closes it.
    #[test]
    fn summary_speaks_human_units_and_ends_on_the_verdict() {
        let r = Report {
            outcomes: Outcomes {
                established: 20,
                syn_retransmitted: 40,
                ..Outcomes::default()
            },
            syn_retransmits: BTreeMap::from([(1, 30), (3, 10)]),
            admission: Admission::Greeting,
            agents: vec![AgentReport {
                id: "a1".into(),
                clock_offset_us: -1_234,
                clock_uncertainty_us: 85,
                start_error_us: Some(2_500),
                ..AgentReport::default()
            }],
            connect_latency_us: Latency {
                count: 60,
                p50: 1_014_783,
                p90: 3_070_000,
                p99: 3_070_000,
                p999: 3_070_000,
                max: 3_071_000,
                min: 90,
            },
            start_spread_us: Some(850),
            ..Report::default()
        };
        let s = r.summary();
        let row = s.lines().find(|l| l.starts_with("a1")).unwrap();
        for part in ["-1.2ms", "85µs", "2.5ms"] {
            assert!(row.contains(part), "{part} in {row}");
        }
        assert!(
            s.contains("connect    p50 1.01s p90 3.07s p99 3.07s p99.9 3.07s max 3.07s (n=60)"),
            "{s}"
        );
        assert!(s.contains("SYN retransmits    k=1: 30, k=3: 10"), "{s}");
        assert!(s.contains("start spread 850µs across agents"), "{s}");
        assert!(!s.contains("us "), "no bare microseconds: {s}");
        let verdict = story::verdict(&r);
        assert!(
            verdict.starts_with("20 of 60 established at once."),
            "{verdict}"
        );
        assert_eq!(
            s.trim_end().rsplit("\n\n").next(),
            Some(wrap(&verdict, 100).as_str())
        );
    }

    /// report.json gains `verdict` (a new key; docs/design.md "Reports"), and a report
    /// written before it existed still reads.
    #[test]
    fn verdict_is_a_report_key() {
        let r = Report {
            verdict: "All 3 established at once (p99 1.0ms).".into(),
            ..Report::default()
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["verdict"], "All 3 established at once (p99 1.0ms).");
        let mut old = v.clone();
        old.as_object_mut().unwrap().remove("verdict");
        let back: Report = serde_json::from_value(old).unwrap();
        assert_eq!(back.verdict, "");
    }

    #[test]
    fn wrap_breaks_at_spaces_within_the_width() {
        let text = "one two three four five six";
        assert_eq!(wrap(text, 9), "one two\nthree\nfour five\nsix");
        assert_eq!(wrap(text, 100), text);
        // A word longer than the width stands alone, unbroken.
        assert_eq!(wrap("a abcdefghij b", 4), "a\nabcdefghij\nb");
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
