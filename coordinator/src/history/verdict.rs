//! Regression verdicts (docs/design.md "History"): a new run's figures against its
//! baseline's, under [`Thresholds`] (defaults below, overridable per schedule entry).
//!
//! - connect or first-byte p99 worse by more than `latency_percent` *and* more than
//!   `latency_ms` (both: a 30 % rise of 100 µs is noise, a 6 ms rise of 2 s is too);
//! - ghosts, overflows, refused, reset, timeouts (kernel and own deadline), errors or
//!   SYN-retransmitted attempts where the baseline had none, or more than `count_percent` of
//!   attempts more;
//! - a sweep's recommended backlog grew (or none is found any more).
//!
//! With repeats, each figure is the median over the batch's complete runs (machines are
//! noisy: one slow run is not a regression), and the reasons say so. Runs of different
//! scenario hashes are never compared.

use serde::{Deserialize, Serialize};
use stampede_proto::duration::human_us;

use super::record::{Figures, Record};
use crate::report::{Latency, Outcomes};

/// When a difference is a regression; each key is optional in `[entry.thresholds]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Thresholds {
    /// A p99 must be worse by more than this many percent ...
    pub latency_percent: f64,
    /// ... and by more than this many milliseconds.
    pub latency_ms: f64,
    /// A bad outcome class (or overflows) that the baseline had, grown by more than this
    /// percentage of attempts.
    pub count_percent: f64,
    /// A sweep whose recommended backlog grew is a regression.
    pub backlog_grew: bool,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            latency_percent: 20.0,
            latency_ms: 5.0,
            count_percent: 1.0,
            backlog_grew: true,
        }
    }
}

/// The verdict's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum VerdictKind {
    /// Compared, nothing got worse.
    Pass,
    /// Compared, something got worse.
    Regression,
    /// Nothing of the same scenario to compare with: this run becomes the baseline.
    NoBaseline,
    /// Not complete: never judged, never a baseline.
    NotJudged,
}

impl VerdictKind {
    /// As stored and printed.
    pub fn name(self) -> &'static str {
        match self {
            VerdictKind::Pass => "pass",
            VerdictKind::Regression => "regression",
            VerdictKind::NoBaseline => "no-baseline",
            VerdictKind::NotJudged => "not-judged",
        }
    }
}

/// A verdict with its reasons.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    /// What it is.
    pub kind: VerdictKind,
    /// Why, a sentence each (for a regression: each figure that got worse).
    pub reasons: Vec<String>,
    /// The baseline's run id.
    pub baseline: Option<String>,
}

impl Verdict {
    /// A verdict without a comparison.
    pub fn plain(kind: VerdictKind, reason: impl Into<String>) -> Verdict {
        Verdict {
            kind,
            reasons: vec![reason.into()],
            baseline: None,
        }
    }
}

/// The median of each figure over `runs` (the complete runs of one batch): for an even
/// count the mean of the two middle runs, so the worse of two is never taken for both. A
/// figure some run lacks (no target stats) is unknown for the batch.
pub fn median(runs: &[&Figures]) -> Figures {
    let med = |f: &dyn Fn(&Figures) -> u64| -> u64 {
        middle(runs.iter().map(|r| f(r)).collect()).unwrap_or(0)
    };
    let med_opt = |f: &dyn Fn(&Figures) -> Option<u64>| -> Option<u64> {
        middle(runs.iter().map(|r| f(r)).collect::<Option<Vec<u64>>>()?)
    };
    let lat = |f: &dyn Fn(&Figures) -> &Latency| Latency {
        count: med(&|r| f(r).count),
        min: med(&|r| f(r).min),
        p50: med(&|r| f(r).p50),
        p90: med(&|r| f(r).p90),
        p99: med(&|r| f(r).p99),
        p999: med(&|r| f(r).p999),
        max: med(&|r| f(r).max),
    };
    // A run that found no clean backlog counts as the worst: with repeats, "none absorbs the
    // burst any more" is a median too. A setting is one of the runs' values, not a mean.
    let mut rec: Vec<Option<i64>> = runs.iter().map(|r| r.recommended_backlog).collect();
    rec.sort_unstable_by_key(|b| b.unwrap_or(i64::MAX));
    Figures {
        outcomes: Outcomes {
            established: med(&|r| r.outcomes.established),
            syn_retransmitted: med(&|r| r.outcomes.syn_retransmitted),
            refused: med(&|r| r.outcomes.refused),
            reset: med(&|r| r.outcomes.reset),
            timeout: med(&|r| r.outcomes.timeout),
            pending: med(&|r| r.outcomes.pending),
            error: med(&|r| r.outcomes.error),
            ghost: med(&|r| r.outcomes.ghost),
        },
        connect_us: lat(&|r| &r.connect_us),
        ttfb_us: lat(&|r| &r.ttfb_us),
        listen_overflows: med_opt(&|r| r.listen_overflows),
        listen_drops: med_opt(&|r| r.listen_drops),
        syncookies_sent: med_opt(&|r| r.syncookies_sent),
        accept_queue_max: med_opt(&|r| r.accept_queue_max),
        accepted: med_opt(&|r| r.accepted),
        backlog_effective: med_opt(&|r| r.backlog_effective),
        start_spread_us: med_opt(&|r| r.start_spread_us),
        recommended_backlog: rec.get(rec.len().saturating_sub(1) / 2).copied().flatten(),
    }
}

/// The median of `v`: the middle value, or the mean of the two middle ones.
fn middle(mut v: Vec<u64>) -> Option<u64> {
    v.sort_unstable();
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some(v[n / 2 - 1] / 2 + v[n / 2] / 2 + (v[n / 2 - 1] % 2 + v[n / 2] % 2) / 2),
    }
}

/// The counted figures a verdict watches: name, value (none when the run could not tell:
/// overflows without the target's stats).
fn counts(f: &Figures) -> [(&'static str, Option<u64>); 8] {
    let o = &f.outcomes;
    [
        ("ghosts", Some(o.ghost)),
        ("overflows", f.listen_overflows),
        ("refused", Some(o.refused)),
        ("reset", Some(o.reset)),
        ("timeouts", Some(o.timeout)),
        ("pending (own deadline)", Some(o.pending)),
        ("errors", Some(o.error)),
        ("syn_retransmitted", Some(o.syn_retransmitted)),
    ]
}

/// Compares `new` with `old` (both already medians when repeated; `repeats` > 1 says so in
/// the reasons). `baseline` is the baseline's run id.
pub fn judge(
    old: &Figures,
    new: &Figures,
    t: &Thresholds,
    repeats: usize,
    baseline: &Record,
) -> Verdict {
    let mut reasons = Vec::new();
    let prefix = if repeats > 1 {
        format!("median of {repeats} runs: ")
    } else {
        String::new()
    };
    for (name, o, n) in [
        ("connect p99", &old.connect_us, &new.connect_us),
        ("first-byte p99", &old.ttfb_us, &new.ttfb_us),
    ] {
        if o.count == 0 || n.count == 0 {
            continue;
        }
        let (a, b) = (o.p99 as f64, n.p99 as f64);
        let grew_us = b - a;
        if grew_us > t.latency_ms * 1000.0 && grew_us > a * t.latency_percent / 100.0 {
            let pct = if a > 0.0 {
                grew_us / a * 100.0
            } else {
                f64::INFINITY
            };
            reasons.push(format!(
                "{prefix}{name} worse: {} vs {} (+{}, +{pct:.0}%)",
                human_us(n.p99),
                human_us(o.p99),
                human_us(grew_us as u64)
            ));
        }
    }
    let attempts = new.outcomes.total().max(1) as f64;
    for ((name, a), (_, b)) in counts(old).into_iter().zip(counts(new)) {
        // A figure one side could not tell (no target stats) is not compared.
        let (Some(a), Some(b)) = (a, b) else {
            continue;
        };
        if a == 0 && b > 0 {
            reasons.push(format!("{prefix}new {name}: {b} (the baseline had none)"));
        } else if b > a && (b - a) as f64 > attempts * t.count_percent / 100.0 {
            reasons.push(format!(
                "{prefix}more {name}: {b} vs {a} (+{:.1}% of attempts)",
                (b - a) as f64 / attempts * 100.0
            ));
        }
    }
    if t.backlog_grew {
        match (old.recommended_backlog, new.recommended_backlog) {
            (Some(a), Some(b)) if b > a => {
                reasons.push(format!("{prefix}the recommended backlog grew: {b} vs {a}"))
            }
            (Some(a), None) => reasons.push(format!(
                "{prefix}no backlog tried absorbs the burst any more (the baseline recommended {a})"
            )),
            _ => {}
        }
    }
    let kind = if reasons.is_empty() {
        reasons.push(format!(
            "{prefix}no figure worse than baseline {} beyond the thresholds",
            baseline.run_id
        ));
        VerdictKind::Pass
    } else {
        VerdictKind::Regression
    };
    Verdict {
        kind,
        reasons,
        baseline: Some(baseline.run_id.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::record::{Kind, Status};

    fn figures(p99_us: u64, ghost: u64, overflows: u64) -> Figures {
        Figures {
            outcomes: Outcomes {
                established: 1000 - ghost,
                ghost,
                ..Outcomes::default()
            },
            connect_us: Latency {
                count: 1000,
                p99: p99_us,
                ..Latency::default()
            },
            listen_overflows: Some(overflows),
            ..Figures::default()
        }
    }

    fn base() -> Record {
        Record {
            run_id: "r-base".into(),
            batch: "r-base".into(),
            entry: "e".into(),
            kind: Kind::Run,
            scenario_name: "s".into(),
            scenario_hash: "h".into(),
            scenario_canonical: "{}".into(),
            started_at: String::new(),
            finished_at: String::new(),
            status: Status::Complete,
            reason: None,
            figures: Figures::default(),
            verdict: "pass".into(),
            reasons: vec![],
            baseline_run_id: None,
            report_json: None,
        }
    }

    #[test]
    fn latency_needs_both_the_percentage_and_the_milliseconds() {
        let t = Thresholds::default();
        // +50 % but only +1 ms: noise.
        let v = judge(&figures(2000, 0, 0), &figures(3000, 0, 0), &t, 1, &base());
        assert_eq!(v.kind, VerdictKind::Pass, "{v:?}");
        // +10 ms but only +1 %: noise.
        let v = judge(
            &figures(1_000_000, 0, 0),
            &figures(1_010_000, 0, 0),
            &t,
            1,
            &base(),
        );
        assert_eq!(v.kind, VerdictKind::Pass, "{v:?}");
        // Both: a regression, named.
        let v = judge(&figures(2000, 0, 0), &figures(9000, 0, 0), &t, 1, &base());
        assert_eq!(v.kind, VerdictKind::Regression);
        assert!(v.reasons[0].starts_with("connect p99 worse"), "{v:?}");
    }

    #[test]
    fn new_bad_outcomes_and_growth_beyond_one_percent_regress() {
        let t = Thresholds::default();
        let v = judge(&figures(2000, 0, 0), &figures(2000, 1, 3), &t, 1, &base());
        assert_eq!(v.kind, VerdictKind::Regression);
        assert!(
            v.reasons.iter().any(|r| r.starts_with("new ghosts: 1")),
            "{v:?}"
        );
        assert!(
            v.reasons.iter().any(|r| r.starts_with("new overflows: 3")),
            "{v:?}"
        );
        // 10 → 15 of 1000 is 0.5 %: within the threshold; 10 → 25 is 1.5 %: not.
        let v = judge(&figures(2000, 10, 0), &figures(2000, 15, 0), &t, 1, &base());
        assert_eq!(v.kind, VerdictKind::Pass, "{v:?}");
        let v = judge(&figures(2000, 10, 0), &figures(2000, 25, 0), &t, 3, &base());
        assert_eq!(
            v.reasons,
            ["median of 3 runs: more ghosts: 25 vs 10 (+1.5% of attempts)"]
        );
        // Per-entry override.
        let loose = Thresholds {
            count_percent: 5.0,
            ..t
        };
        assert_eq!(
            judge(
                &figures(2000, 10, 0),
                &figures(2000, 25, 0),
                &loose,
                1,
                &base()
            )
            .kind,
            VerdictKind::Pass
        );
    }

    #[test]
    fn the_median_ignores_one_noisy_run() {
        let (a, b, c) = (
            figures(2000, 0, 0),
            figures(90_000, 50, 9),
            figures(2100, 0, 0),
        );
        let m = median(&[&a, &b, &c]);
        assert_eq!(m.connect_us.p99, 2100);
        assert_eq!(m.outcomes.ghost, 0);
        assert_eq!(m.listen_overflows, Some(0));
    }

    /// Two runs: the median is their mean, not the worse one; a figure one run lacks is
    /// unknown; a run that found no backlog counts as the worst.
    #[test]
    fn an_even_median_takes_both_middle_runs() {
        let (a, b) = (figures(2000, 0, 0), figures(3001, 0, 0));
        assert_eq!(median(&[&a, &b]).connect_us.p99, 2500);
        let blind = Figures {
            listen_overflows: None,
            ..figures(2000, 0, 0)
        };
        assert_eq!(median(&[&a, &blind]).listen_overflows, None);
        let found = Figures {
            recommended_backlog: Some(64),
            ..figures(2000, 0, 0)
        };
        let none = figures(2000, 0, 0);
        assert_eq!(median(&[&found, &none, &none]).recommended_backlog, None);
        assert_eq!(
            median(&[&found, &found, &none]).recommended_backlog,
            Some(64)
        );
    }

    /// A baseline without target stats has no overflow count: the new run's overflows are
    /// not "new" against it.
    #[test]
    fn unknown_overflows_are_not_compared() {
        let t = Thresholds::default();
        let old = Figures {
            listen_overflows: None,
            ..figures(2000, 0, 0)
        };
        let v = judge(&old, &figures(2000, 0, 30), &t, 1, &base());
        assert_eq!(v.kind, VerdictKind::Pass, "{:?}", v.reasons);
    }

    #[test]
    fn a_sweep_whose_backlog_grew_regresses() {
        let t = Thresholds::default();
        let old = Figures {
            recommended_backlog: Some(64),
            ..figures(2000, 0, 0)
        };
        let grew = Figures {
            recommended_backlog: Some(512),
            ..old.clone()
        };
        let v = judge(&old, &grew, &t, 1, &base());
        assert_eq!(v.reasons, ["the recommended backlog grew: 512 vs 64"]);
    }
}
