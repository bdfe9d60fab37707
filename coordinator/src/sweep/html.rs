//! `sweep.html`: the page for a sweep, self-contained like `report.html` (whose page frame it
//! reuses from [`crate::report::html::page`]): the recommendation per accept rate beside the
//! queue model, charts against the backlog ([`charts`]: connect and first-byte latency with
//! the p99 limit, outcomes and overflows, the accept queue's peak against its capacity), and
//! the step table. The tables are driven by the column lists [`STEP_COLUMNS`] and
//! [`RECOMMENDATION_COLUMNS`]: a new field of `Step` or `Recommendation` is one line there.
//! It lives under `sweep` because it renders sweep types; the run's page knows nothing of
//! sweeps, so the modules point one way: sweep -> report.

mod charts;

use maud::{Markup, html};
use stampede_proto::duration::human_us;

use super::{Recommendation, Step, SweepReport, rate_name};
use crate::chart;
use crate::report::html::page::{self, alert};

/// A table column: its header and the cell of one row.
type Column<T> = (&'static str, fn(&T) -> String);

/// The step table, left to right.
const STEP_COLUMNS: &[Column<Step>] = &[
    ("backlog", |s| {
        format!("{}{}", s.backlog, if s.partial { " (partial)" } else { "" })
    }),
    ("phase", |s| phase_name(s.phase).into()),
    ("effective", |s| s.backlog_effective.to_string()),
    ("somaxconn", |s| s.somaxconn.to_string()),
    ("accept rate", |s| rate_name(s.accept_rate)),
    ("established", |s| s.outcomes.established.to_string()),
    ("k ≥ 1", |s| s.outcomes.syn_retransmitted.to_string()),
    ("ghost", |s| s.outcomes.ghost.to_string()),
    ("failed", |s| {
        let o = &s.outcomes;
        o.total().saturating_sub(o.connected()).to_string()
    }),
    ("ListenOverflows", |s| s.listen_overflows.to_string()),
    ("SYN cookies", |s| s.syncookies_sent.to_string()),
    ("queue peak", |s| s.accept_queue_max.to_string()),
    ("queue model: backlog ≥", |s| s.model_backlog.to_string()),
    ("accepted", |s| s.accepted.to_string()),
    ("connect p50", |s| human_us(s.connect_latency_us.p50)),
    ("connect p99", |s| human_us(s.connect_latency_us.p99)),
    ("connect max", |s| human_us(s.connect_latency_us.max)),
    ("first byte p99", |s| {
        measured(s.ttfb_us.count, s.ttfb_us.p99)
    }),
    ("first byte max", |s| {
        measured(s.ttfb_us.count, s.ttfb_us.max)
    }),
    ("issue time", |s| {
        s.issue_duration_us.map_or_else(|| "–".into(), human_us)
    }),
    ("clean", super::summary::clean_cell),
    ("thresholds", |s| match s.thresholds_passed {
        None => "–".into(),
        Some(true) => "pass".into(),
        Some(false) => "FAIL".into(),
    }),
];

/// The recommendation table, left to right.
const RECOMMENDATION_COLUMNS: &[Column<Recommendation>] = &[
    ("accept rate", |r| rate_name(r.accept_rate)),
    ("backlog", |r| {
        r.backlog
            .map_or_else(|| "none passed".into(), |b| b.to_string())
    }),
    ("somaxconn ≥", |r| {
        r.somaxconn.map_or_else(|| "–".into(), |s| s.to_string())
    }),
    ("queue model: backlog ≥", |r| r.model_backlog.to_string()),
    ("accepts during the burst", |r| {
        r.model_accepted_during_burst
            .map_or_else(|| "– (worst case 0)".into(), |a| a.to_string())
    }),
    ("measured queue peak", |r| {
        r.measured_queue_peak
            .map_or_else(|| "–".into(), |q| q.to_string())
    }),
    ("bracket", |r| {
        r.bracket
            .map_or_else(|| "–".into(), |[lo, hi]| format!("{lo} … {hi}"))
    }),
    ("confirmations clean", |r| {
        if r.confirmations == 0 {
            "–".into()
        } else {
            format!("{} of {}", r.confirmations_clean, r.confirmations)
        }
    }),
    ("why", |r| r.reason.clone()),
];

/// The pass that ran a step, as sweep.json names it.
fn phase_name(p: super::Phase) -> &'static str {
    match p {
        super::Phase::Coarse => "coarse",
        super::Phase::Refine => "refine",
        super::Phase::Confirm => "confirm",
    }
}

/// A latency, or a dash when nothing measured it.
fn measured(count: u64, us: u64) -> String {
    if count == 0 {
        "–".into()
    } else {
        human_us(us)
    }
}

/// A table from a column list.
fn table<T>(columns: &[Column<T>], rows: &[T]) -> Markup {
    // Many columns: the table scrolls on its own rather than widening the page.
    html! {
        div.wide { table {
            tr { @for (name, _) in columns { th { (name) } } }
            @for row in rows {
                tr { @for (_, cell) in columns { td { (cell(row)) } } }
            }
        } }
    }
}

/// The page for a sweep (`sweep.html`).
pub fn render(r: &SweepReport) -> String {
    let body = html! {
        (page::verdict(&super::story::verdict(r)))
        p {
            (r.connections) " connections per step. A recommended backlog is the smallest clean \
             one: no ListenOverflows, every attempt established at once, p99 connect latency \
             under " (human_us(r.p99_max_us))
            @if let Some(c) = r.recommendations.first().map(|rec| &rec.criteria) {
                " and, where the first byte was measured, accept wait p99 under "
                (human_us(c.accept_wait_max_us))
            }
            "."
        }
        @if let Some(why) = &r.stopped {
            (alert(&format!("stopped after {} steps", r.steps.len()),
                   &format!("{why}; the recommendations cover those")))
        }
        h2 { "Recommendation" }
        (table(RECOMMENDATION_COLUMNS, &r.recommendations))
        h2 { "Against the backlog" }
        @for c in charts::all(r) { (chart::render(&c)) }
        h2 { "Steps" }
        (table(STEP_COLUMNS, &r.steps))
    };
    page::page("stampede sweep", body)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::scenario::AcceptRate;
    use crate::sweep::recommend::recommend;
    use crate::sweep::recommend::tests::{plan, step};

    pub(crate) fn report() -> SweepReport {
        let mut steps = vec![
            step(8, 50, 1_020_000, 60),
            step(64, 0, 900, 100),
            step(128, 0, 800, 100),
        ];
        for (s, peak) in steps.iter_mut().zip([9, 40, 41]) {
            s.accept_queue_max = peak;
            s.connect_latency_us.max = s.connect_latency_us.p99 * 3;
            s.ttfb_us.count = 100;
            s.ttfb_us.p99 = s.connect_latency_us.p99 + 500;
        }
        SweepReport {
            connections: 100,
            p99_max_us: 100_000,
            recommendations: vec![recommend(&plan(), Some(AcceptRate(100.0)), &steps)],
            steps,
            reports: Vec::new(),
            stopped: None,
        }
    }

    /// The page shows the recommendation, the charts with a point per step, and a row per
    /// step with a cell per column.
    #[test]
    fn sweep_page_has_the_recommendation_charts_and_steps() {
        let page = render(&report());
        assert_eq!(page.matches("<figure class=\"chart\"").count(), 3);
        assert!(page.contains("<td>64</td>"), "{page}");
        // Header rows plus 3 step rows and 1 recommendation row.
        assert_eq!(page.matches("<tr>").count(), 2 + 3 + 1);
        assert_eq!(
            page.matches("<td>").count(),
            3 * STEP_COLUMNS.len() + RECOMMENDATION_COLUMNS.len()
        );
        // No cell breaks a value from its unit.
        assert!(page.contains("<td>1.02s</td>") && page.contains("<td>900µs</td>"));
    }
}
