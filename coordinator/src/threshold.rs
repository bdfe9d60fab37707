//! Thresholds: `--fail-if EXPR` (repeatable; `fail_if = [...]` in a scenario file, on `run`,
//! `sweep` and `demo`). Each expression names a condition under which the run fails: when it
//! holds, or when its metric is unknown in this run, the threshold fails and `stampede` exits
//! 2 (docs/design.md "Reports"). A metric that this run cannot tell (target counters without
//! a target, first-byte time without greetings) is a failed threshold with the reason, never a
//! silent pass.
//!
//! The grammar, `METRIC OP VALUE` (spaces around OP allowed):
//!
//! - OP: `>`, `>=`, `<`, `<=`, `==`.
//! - VALUE: a count (`0`, `12`), a duration (`50ms`, `1.5s`, `250us`: the duration syntax of
//!   every flag), or a percentage of attempts (`99.5%`).
//! - METRIC, counts of attempts (a count or a percentage): the outcome classes
//!   (`established`, `syn_retransmitted`, `refused`, `reset`, `timeout`, `pending`, `error`,
//!   `ghost`), `connected`, `admitted`, `skipped_overdue`, `issued_late`; other counts:
//!   `attempts`, `lost_agents`, and the target's `overflows` (ListenOverflows), `drops`
//!   (ListenDrops), `cookies` (SYN cookies sent); durations: `connect.P` and `ttfb.P` with P
//!   one of `min`, `p50`, `p90`, `p99`, `p999`, `max`, and `spread` (`start_spread_us`).
//!
//! Parsed once ([`Threshold`]'s `FromStr`), for flags and scenario keys alike; evaluated
//! against a finished [`Report`] into the report's `thresholds[]` ([`ThresholdResult`]).

use std::fmt;
use std::str::FromStr;

use stampede_proto::duration::{human_us, parse_duration};
use stampede_proto::outcome::OutcomeClass;
use stampede_proto::usage::cut;

use crate::report::{Latency, Report, ThresholdResult};

/// Most `--fail-if` expressions a run takes (a bound on a list the user writes).
pub const MAX_THRESHOLDS: usize = 100;

/// One `--fail-if` expression, parsed: fails the run when `metric OP value` holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    /// The expression as given (trimmed), echoed in reports.
    expr: String,
    metric: Metric,
    op: Op,
    value: Value,
}

/// A bad `--fail-if` expression: the message names the expression and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid threshold \"{expr}\": {reason}")]
pub struct ThresholdError {
    expr: String,
    reason: String,
}

/// What a threshold measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Metric {
    /// Attempts of one outcome class.
    Class(OutcomeClass),
    /// Attempts whose connect() succeeded.
    Connected,
    /// Connected minus ghosts.
    Admitted,
    /// Every attempt.
    Attempts,
    /// Cancelled unissued during a stall.
    SkippedOverdue,
    /// Issued past the late bound.
    IssuedLate,
    /// Agents lost during the run.
    LostAgents,
    /// The target's ListenOverflows.
    Overflows,
    /// The target's ListenDrops.
    Drops,
    /// The target's SYN cookies sent.
    Cookies,
    /// A connect-latency statistic.
    Connect(Stat),
    /// A time-to-first-byte statistic.
    Ttfb(Stat),
    /// Latest minus earliest first connect() across agents.
    Spread,
}

/// A statistic of a latency histogram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stat {
    Min,
    P50,
    P90,
    P99,
    P999,
    Max,
}

/// The comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Gt,
    Ge,
    Lt,
    Le,
    Eq,
}

/// The right-hand side.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Value {
    /// A count.
    Count(u64),
    /// A duration, µs.
    Micros(u64),
    /// A percentage of attempts, 0 to 100.
    Percent(f64),
}

/// What kind of number a metric is, which decides the values it compares with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Attempts: a count or a percentage of all attempts.
    AttemptCount,
    /// Any other count.
    Count,
    /// A duration.
    Duration,
}

impl Stat {
    fn parse(s: &str) -> Option<Stat> {
        Some(match s {
            "min" => Stat::Min,
            "p50" => Stat::P50,
            "p90" => Stat::P90,
            "p99" => Stat::P99,
            "p999" => Stat::P999,
            "max" => Stat::Max,
            _ => return None,
        })
    }

    fn of(self, l: &Latency) -> u64 {
        match self {
            Stat::Min => l.min,
            Stat::P50 => l.p50,
            Stat::P90 => l.p90,
            Stat::P99 => l.p99,
            Stat::P999 => l.p999,
            Stat::Max => l.max,
        }
    }
}

impl Metric {
    fn parse(s: &str) -> Option<Metric> {
        if let Some(stat) = s.strip_prefix("connect.") {
            return Stat::parse(stat).map(Metric::Connect);
        }
        if let Some(stat) = s.strip_prefix("ttfb.") {
            return Stat::parse(stat).map(Metric::Ttfb);
        }
        if let Some(class) = OutcomeClass::ALL.into_iter().find(|c| c.name() == s) {
            return Some(Metric::Class(class));
        }
        Some(match s {
            "connected" => Metric::Connected,
            "admitted" => Metric::Admitted,
            "attempts" => Metric::Attempts,
            "skipped_overdue" => Metric::SkippedOverdue,
            "issued_late" => Metric::IssuedLate,
            "lost_agents" => Metric::LostAgents,
            "overflows" => Metric::Overflows,
            "drops" => Metric::Drops,
            "cookies" => Metric::Cookies,
            "spread" => Metric::Spread,
            _ => return None,
        })
    }

    fn kind(self) -> Kind {
        match self {
            Metric::Class(_)
            | Metric::Connected
            | Metric::Admitted
            | Metric::SkippedOverdue
            | Metric::IssuedLate => Kind::AttemptCount,
            Metric::Attempts
            | Metric::LostAgents
            | Metric::Overflows
            | Metric::Drops
            | Metric::Cookies => Kind::Count,
            Metric::Connect(_) | Metric::Ttfb(_) | Metric::Spread => Kind::Duration,
        }
    }

    /// The metric's raw number in this report (a count, or µs), or why it is unknown.
    fn measure(self, r: &Report) -> Result<u64, String> {
        let target = |f: fn(&crate::report::TargetStats) -> u64| match (&r.target, &r.target_error)
        {
            (Some(t), _) => Ok(f(t)),
            (None, Some(e)) => Err(format!("unknown: no target stats ({e})")),
            (None, None) => {
                Err("unknown: no target stats in this run (give --target-control)".into())
            }
        };
        let latency = |l: &Latency, stat: Stat, unknown: &str| {
            if l.count == 0 {
                Err(format!("unknown: {unknown}"))
            } else {
                Ok(stat.of(l))
            }
        };
        let o = &r.outcomes;
        // Without an admission check a phantom counts as established and no ghost is ever
        // seen: those figures are unknown, not zero.
        let admission = |n: u64| {
            if r.admission == crate::report::Admission::Unchecked && o.connected() > 0 {
                Err(
                    "unknown: admission unchecked in this run (give --expect-greeting or \
                     --probe-admission)"
                        .to_owned(),
                )
            } else {
                Ok(n)
            }
        };
        match self {
            Metric::Class(
                c @ (OutcomeClass::Ghost
                | OutcomeClass::Established
                | OutcomeClass::SynRetransmitted),
            ) => admission(o.get(c)),
            Metric::Class(c) => Ok(o.get(c)),
            Metric::Connected => Ok(o.connected()),
            Metric::Admitted => admission(o.admitted()),
            Metric::Attempts => Ok(o.total()),
            Metric::SkippedOverdue => Ok(r.skipped_overdue),
            Metric::IssuedLate => Ok(r.issued_late),
            Metric::LostAgents => Ok(r.lost_agents.len() as u64),
            Metric::Overflows => target(|t| t.counters.listen_overflows),
            Metric::Drops => target(|t| t.counters.listen_drops),
            Metric::Cookies => target(|t| t.counters.syncookies_sent),
            Metric::Connect(s) => {
                latency(&r.connect_latency_us, s, "no connect completed in this run")
            }
            Metric::Ttfb(s) => latency(
                &r.ttfb_us,
                s,
                "no first byte in this run (measured only with --expect-greeting)",
            ),
            Metric::Spread => r
                .start_spread_us
                .ok_or_else(|| "unknown: no connect was issued".to_owned()),
        }
    }
}

impl Op {
    /// The operators, longest first so `>=` is never read as `>`.
    const ALL: [(&'static str, Op); 5] = [
        (">=", Op::Ge),
        ("<=", Op::Le),
        ("==", Op::Eq),
        (">", Op::Gt),
        ("<", Op::Lt),
    ];

    fn holds(self, left: f64, right: f64) -> bool {
        match self {
            Op::Gt => left > right,
            Op::Ge => left >= right,
            Op::Lt => left < right,
            Op::Le => left <= right,
            Op::Eq => left == right,
        }
    }
}

impl FromStr for Threshold {
    type Err = ThresholdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let expr = s.trim();
        let bad = |reason: String| ThresholdError {
            expr: cut(expr).into_owned(),
            reason,
        };
        let at = expr
            .find(['<', '>', '='])
            .ok_or_else(|| bad("expected METRIC OP VALUE, OP one of > >= < <= ==".into()))?;
        let (name, rest) = expr.split_at(at);
        let (op_text, op) = Op::ALL
            .into_iter()
            .find(|(t, _)| rest.starts_with(t))
            .ok_or_else(|| bad("expected an operator: > >= < <= ==".into()))?;
        let name = name.trim();
        let value_text = rest[op_text.len()..].trim();
        let metric = Metric::parse(name).ok_or_else(|| {
            bad(format!(
                "unknown metric \"{}\" (expected an outcome class, connected, admitted, attempts, \
                 skipped_overdue, issued_late, lost_agents, overflows, drops, cookies, spread, \
                 connect.P or ttfb.P with P in min p50 p90 p99 p999 max)",
                cut(name)
            ))
        })?;
        let value = parse_value(metric.kind(), value_text).map_err(bad)?;
        Ok(Threshold {
            expr: expr.to_owned(),
            metric,
            op,
            value,
        })
    }
}

/// The value of a metric of `kind`: a count, a duration or a percentage, as the kind takes.
fn parse_value(kind: Kind, text: &str) -> Result<Value, String> {
    if text.is_empty() {
        return Err("no value after the operator".into());
    }
    if let Some(pct) = text.strip_suffix('%') {
        if kind != Kind::AttemptCount {
            return Err("a percentage is of attempts: only counts of attempts take one".into());
        }
        return match pct.trim().parse::<f64>() {
            Ok(p) if (0.0..=100.0).contains(&p) => Ok(Value::Percent(p)),
            _ => Err(format!(
                "invalid percentage \"{}\": expected 0% to 100%",
                cut(text)
            )),
        };
    }
    match kind {
        Kind::Duration => parse_duration(text)
            .map(|d| Value::Micros(u64::try_from(d.as_micros()).unwrap_or(u64::MAX)))
            .map_err(|e| format!("{e}")),
        Kind::Count | Kind::AttemptCount => text.parse::<u64>().map(Value::Count).map_err(|_| {
            format!(
                "invalid count \"{}\": expected a whole number{}",
                cut(text),
                if kind == Kind::AttemptCount {
                    " or a percentage of attempts (99.5%)"
                } else {
                    ""
                }
            )
        }),
    }
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.expr)
    }
}

impl serde::Serialize for Threshold {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Threshold {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl Threshold {
    /// This threshold against a finished run: passed unless its condition holds or its
    /// metric is unknown in this run.
    pub fn evaluate(&self, report: &Report) -> ThresholdResult {
        let failed = |value, detail: String| ThresholdResult {
            expr: self.expr.clone(),
            value,
            unit: None,
            passed: false,
            detail,
        };
        let raw = match self.metric.measure(report) {
            Ok(raw) => raw,
            Err(reason) => return failed(None, reason),
        };
        let (value, unit, detail) = match self.value {
            Value::Percent(_) => {
                // Skipped attempts were never issued, so they are not among the outcomes:
                // a percentage is of every attempt planned, issued or skipped.
                let attempts = report.outcomes.total() + report.skipped_overdue;
                if attempts == 0 {
                    return failed(None, "unknown: no attempts in this run".into());
                }
                let pct = raw as f64 * 100.0 / attempts as f64;
                (pct, "percent", format!("{pct:.2}% ({raw} of {attempts})"))
            }
            Value::Micros(_) => (raw as f64, "us", human_us(raw)),
            Value::Count(_) => (raw as f64, "count", raw.to_string()),
        };
        let limit = match self.value {
            Value::Count(n) | Value::Micros(n) => n as f64,
            Value::Percent(p) => p,
        };
        ThresholdResult {
            expr: self.expr.clone(),
            value: Some(value),
            unit: Some(unit.to_owned()),
            passed: !self.op.holds(value, limit),
            detail,
        }
    }
}

/// Every threshold against one report, in the order given.
pub fn evaluate(thresholds: &[Threshold], report: &Report) -> Vec<ThresholdResult> {
    thresholds.iter().map(|t| t.evaluate(report)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Outcomes, TargetStats};

    fn parse(s: &str) -> Threshold {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn report() -> Report {
        Report {
            admission: crate::report::Admission::Greeting,
            outcomes: Outcomes {
                established: 995,
                ghost: 5,
                ..Outcomes::default()
            },
            connect_latency_us: Latency {
                count: 1000,
                min: 100,
                p50: 200,
                p90: 400,
                p99: 60_000,
                p999: 70_000,
                max: 80_000,
            },
            start_spread_us: Some(150),
            ..Report::default()
        }
    }

    #[test]
    fn parses_the_documented_forms() {
        for (s, metric, op, value) in [
            (
                "connect.p99>50ms",
                Metric::Connect(Stat::P99),
                Op::Gt,
                Value::Micros(50_000),
            ),
            (
                "ttfb.p999 >= 1.5s",
                Metric::Ttfb(Stat::P999),
                Op::Ge,
                Value::Micros(1_500_000),
            ),
            (
                "ghost>0",
                Metric::Class(OutcomeClass::Ghost),
                Op::Gt,
                Value::Count(0),
            ),
            ("overflows > 0", Metric::Overflows, Op::Gt, Value::Count(0)),
            (
                "established<99.5%",
                Metric::Class(OutcomeClass::Established),
                Op::Lt,
                Value::Percent(99.5),
            ),
            ("spread<=250us", Metric::Spread, Op::Le, Value::Micros(250)),
            (
                "lost_agents==0",
                Metric::LostAgents,
                Op::Eq,
                Value::Count(0),
            ),
            (
                "connect.max > 0",
                Metric::Connect(Stat::Max),
                Op::Gt,
                Value::Micros(0),
            ),
        ] {
            let t = parse(s);
            assert_eq!((t.metric, t.op, t.value), (metric, op, value), "{s}");
            assert_eq!(t.to_string(), s.trim());
        }
    }

    #[test]
    fn bad_expressions_name_the_expression_and_the_fault() {
        for (s, needle) in [
            ("ghost", "expected METRIC OP VALUE"),
            ("ghost=1", "expected an operator"),
            ("ghosts>0", "unknown metric \"ghosts\""),
            ("connect.p95>1ms", "unknown metric"),
            ("connect.p99>50", "missing unit"),
            ("ghost>1ms", "invalid count"),
            ("overflows>5%", "only counts of attempts"),
            ("established<101%", "expected 0% to 100%"),
            ("ghost>", "no value"),
            ("ghost>-1", "invalid count"),
        ] {
            let e = s.parse::<Threshold>().unwrap_err().to_string();
            assert!(e.starts_with(&format!("invalid threshold \"{s}\"")), "{e}");
            assert!(e.contains(needle), "{s}: {e}");
            assert!(!e.contains('\n'));
        }
    }

    #[test]
    fn passes_unless_the_condition_holds() {
        let r = report();
        for (s, passed, value) in [
            ("connect.p99>50ms", false, 60_000.0),
            ("connect.p50>50ms", true, 200.0),
            ("ghost>0", false, 5.0),
            ("refused>0", true, 0.0),
            ("established<99.6%", false, 99.5),
            ("established<99.5%", true, 99.5),
            ("spread>1ms", true, 150.0),
            ("attempts==1000", false, 1000.0),
        ] {
            let v = parse(s).evaluate(&r);
            assert_eq!(v.passed, passed, "{s}: {v:?}");
            assert_eq!(v.value, Some(value), "{s}");
            assert_eq!(v.expr, s);
        }
    }

    /// Established at 99.5% is not below 99.5%: the boundary passes exactly.
    #[test]
    fn percentages_are_of_all_attempts() {
        let v = parse("established<99.5%").evaluate(&report());
        assert_eq!(v.unit.as_deref(), Some("percent"));
        assert!(v.detail.contains("995 of 1000"), "{}", v.detail);
        assert!(v.passed, "{v:?}");
    }

    #[test]
    fn an_unknown_metric_fails_with_its_reason() {
        let mut r = report();
        for (s, reason) in [
            ("overflows>0", "no target stats in this run"),
            ("ttfb.p99>100ms", "no first byte in this run"),
        ] {
            let v = parse(s).evaluate(&r);
            assert!(!v.passed, "{s}");
            assert_eq!(v.value, None);
            assert!(v.detail.contains(reason), "{s}: {}", v.detail);
        }
        r.target_error = Some("target died".into());
        assert!(
            parse("cookies>0")
                .evaluate(&r)
                .detail
                .contains("target died")
        );
        r.start_spread_us = None;
        assert!(!parse("spread>1s").evaluate(&r).passed);
        let empty = Report::default();
        assert!(!parse("ghost>50%").evaluate(&empty).passed);
        // With the target's stats the same threshold is judged on them.
        r.target = Some(TargetStats::default());
        r.target.as_mut().unwrap().counters.listen_overflows = 3;
        let v = parse("overflows>0").evaluate(&r);
        assert_eq!((v.passed, v.value), (false, Some(3.0)));
        assert!(parse("overflows>3").evaluate(&r).passed);
    }

    #[test]
    fn scenario_files_take_the_same_grammar() {
        let list: Vec<Threshold> =
            serde_json::from_str(r#"["ghost>0", "connect.p99 > 50ms"]"#).unwrap();
        assert_eq!(list[1].value, Value::Micros(50_000));
        assert_eq!(
            serde_json::to_string(&list).unwrap(),
            r#"["ghost>0","connect.p99 > 50ms"]"#
        );
        let e = serde_json::from_str::<Vec<Threshold>>(r#"["ghost>>0"]"#).unwrap_err();
        assert!(
            e.to_string().contains("invalid threshold \"ghost>>0\""),
            "{e}"
        );
    }

    /// Without an admission check, ghosts cannot be seen: a threshold on them is unknown and
    /// fails with the reason, never a silent pass on a ghost count of 0.
    #[test]
    fn unchecked_admission_makes_ghost_thresholds_unknown() {
        let r = Report {
            admission: crate::report::Admission::Unchecked,
            outcomes: Outcomes {
                established: 10,
                ..Outcomes::default()
            },
            ..Report::default()
        };
        for expr in ["ghost>0", "admitted<100%", "established<100%"] {
            let t: Threshold = expr.parse().unwrap();
            let res = evaluate(std::slice::from_ref(&t), &r).remove(0);
            assert!(!res.passed && res.value.is_none(), "{expr}: {res:?}");
            assert!(res.detail.contains("admission unchecked"), "{res:?}");
        }
        let t: Threshold = "refused>0".parse().unwrap();
        assert!(evaluate(&[t], &r)[0].passed);
    }

    /// Skipped attempts were never issued: a percentage counts them among all attempts.
    #[test]
    fn skipped_percentages_count_every_planned_attempt() {
        let r = Report {
            outcomes: Outcomes {
                established: 400,
                ..Outcomes::default()
            },
            skipped_overdue: 600,
            ..report()
        };
        let t: Threshold = "skipped_overdue>50%".parse().unwrap();
        let res = evaluate(&[t], &r).remove(0);
        assert_eq!(res.value, Some(60.0), "{res:?}");
        assert!(!res.passed);
    }
}
