//! `capacity.html` (`stampede history report --entry NAME --out DIR`): one entry's runs over
//! time in one self-contained page (inline SVG, no scripts, no external files): connect and
//! first-byte p50/p99, outcome classes, overflows and, for sweeps, the recommended backlog,
//! regressions marked in every chart and listed with their reasons, then a table of every
//! run (number, id, time, status, verdict) that the charts' x axis refers to.

use maud::{Markup, PreEscaped, html};

use super::record::{Kind, Record, Status};
use crate::chart::{self, Axis, Chart, RefLine, Series, Style};
use crate::report::html::page;

/// The page for `entry`'s `runs` (oldest first).
pub fn render(entry: &str, runs: &[Record]) -> String {
    // Skipped ticks have no figures: listed, not charted.
    let charted: Vec<(f64, &Record)> = runs
        .iter()
        .filter(|r| r.status != Status::Skipped && r.status != Status::Failed)
        .enumerate()
        .map(|(i, r)| (i as f64 + 1.0, r))
        .collect();
    let regressions: Vec<RefLine> = charted
        .iter()
        .filter(|(_, r)| r.verdict == "regression")
        .map(|(x, _)| RefLine::x(*x, format!("run {x:.0} regressed")))
        .collect();
    let ms = |v: u64| v as f64 / 1000.0;
    let line = |i: usize, name: &str, f: &dyn Fn(&Record) -> Option<f64>| Series {
        name: name.to_owned(),
        style: Style::nth(i),
        kind: chart::Kind::Line,
        points: charted
            .iter()
            .filter_map(|(x, r)| f(r).map(|v| (*x, v)))
            .collect(),
    };
    // Latencies span decades (a 300 µs p50 beside a 1 s p99): log axes for them.
    let chart = |id, title: &str, y: Axis, series| {
        chart::render(&Chart {
            id,
            title: title.to_owned(),
            x: Axis::linear("run number (oldest first, see the table)").labelled(whole),
            y,
            series,
            refs: regressions.clone(),
        })
    };
    let latency = |r: &Record, ttfb: bool, p99: bool| {
        let l = if ttfb {
            &r.figures.ttfb_us
        } else {
            &r.figures.connect_us
        };
        (l.count > 0).then(|| ms(if p99 { l.p99 } else { l.p50 }))
    };
    let mut charts = vec![
        chart(
            "connect",
            "Connect latency",
            Axis::log("connect latency (ms), log scale"),
            vec![
                line(0, "connect p50", &|r| latency(r, false, false)),
                line(1, "connect p99", &|r| latency(r, false, true)),
            ],
        ),
        chart(
            "first-byte",
            "Time to first byte",
            Axis::log("first-byte latency (ms), log scale"),
            vec![
                line(0, "first-byte p50", &|r| latency(r, true, false)),
                line(1, "first-byte p99", &|r| latency(r, true, true)),
            ],
        ),
        chart(
            "outcomes",
            "Outcomes",
            Axis::linear("attempts (count)"),
            vec![
                line(0, "established", &|r| {
                    Some(r.figures.outcomes.established as f64)
                }),
                line(1, "syn_retransmitted", &|r| {
                    Some(r.figures.outcomes.syn_retransmitted as f64)
                }),
                line(2, "ghost", &|r| Some(r.figures.outcomes.ghost as f64)),
                line(3, "refused + reset", &|r| {
                    Some((r.figures.outcomes.refused + r.figures.outcomes.reset) as f64)
                }),
                line(4, "timeout + pending", &|r| {
                    Some((r.figures.outcomes.timeout + r.figures.outcomes.pending) as f64)
                }),
                line(5, "error", &|r| Some(r.figures.outcomes.error as f64)),
            ],
        ),
        chart(
            "overflows",
            "Target accept queue overflows",
            Axis::linear("ListenOverflows (count)"),
            vec![line(0, "listen overflows", &|r| {
                r.figures.listen_overflows.map(|v| v as f64)
            })],
        ),
    ];
    if runs.iter().any(|r| r.kind == Kind::Sweep) {
        charts.push(chart(
            "backlog",
            "Recommended backlog (sweeps)",
            Axis::linear("backlog (connections)"),
            vec![line(0, "recommended backlog", &|r| {
                r.figures.recommended_backlog.map(|v| v as f64)
            })],
        ));
    }
    page::page(
        &format!("Capacity trend: {entry}"),
        body(runs, &charted, &charts),
    )
}

/// Run numbers are whole: the ticks between them stay unlabelled.
fn whole(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        String::new()
    }
}

fn body(runs: &[Record], charted: &[(f64, &Record)], charts: &[Markup]) -> Markup {
    let number = |r: &Record| {
        charted
            .iter()
            .find(|(_, c)| c.run_id == r.run_id)
            .map_or_else(|| "-".to_owned(), |(x, _)| format!("{x:.0}"))
    };
    let regressed: Vec<&Record> = runs.iter().filter(|r| r.verdict == "regression").collect();
    html! {
        style { (PreEscaped(STYLE)) }
        p { (runs.len()) " runs, " (regressed.len()) " flagged as regressions. "
            "Latest: " (runs.last().map_or("-", |r| r.started_at.as_str())) "." }
        @if !regressed.is_empty() {
            h2 { "Regressions" }
            ul class="regressions" {
                @for r in &regressed {
                    li { "run " (number(r)) " " code { (r.run_id) } " (" (r.started_at) "): "
                        (r.reasons.join("; ")) }
                }
            }
        }
        @for c in charts { (c) }
        h2 { "Runs" }
        table {
            tr { th { "#" } th { "run_id" } th { "started_at" } th { "kind" } th { "status" } th { "verdict" } th { "why" } }
            @for r in runs {
                tr class=(if r.verdict == "regression" { "regression" } else { "" }) {
                    td { (number(r)) }
                    td { code { (r.run_id) } }
                    td { (r.started_at) }
                    td { (r.kind.name()) }
                    td { (r.status.name()) }
                    td { (r.verdict) }
                    td { (r.reason.clone().unwrap_or_else(|| r.reasons.join("; "))) }
                }
            }
        }
    }
}

/// What capacity.html adds to the shared page style.
const STYLE: &str = "tr.regression td{background:#fde2e2}ul.regressions li{color:#a00}";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::record::Figures;
    use crate::report::Latency;

    fn run(id: &str, p99: u64, verdict: &str) -> Record {
        Record {
            run_id: id.into(),
            batch: id.into(),
            entry: "web <burst>".into(),
            kind: Kind::Run,
            scenario_name: "s".into(),
            scenario_hash: "h".into(),
            scenario_canonical: "{}".into(),
            started_at: "2026-11-27T03:00:00Z".into(),
            finished_at: "2026-11-27T03:00:05Z".into(),
            status: Status::Complete,
            reason: None,
            figures: Figures {
                connect_us: Latency {
                    count: 10,
                    p99,
                    ..Latency::default()
                },
                ..Figures::default()
            },
            verdict: verdict.into(),
            reasons: vec!["new ghosts: 5 (the baseline had none)".into()],
            baseline_run_id: None,
            report_json: None,
        }
    }

    #[test]
    fn the_page_is_self_contained_escaped_and_marks_regressions() {
        let page = render(
            "web <burst>",
            &[
                run("r1", 900, "no-baseline"),
                run("r2", 900_000, "regression"),
            ],
        );
        assert!(page.contains("Capacity trend: web &lt;burst&gt;"));
        assert!(!page.contains("<script") && !page.contains("src=") && !page.contains("href="));
        assert_eq!(
            page.matches("<figure class=\"chart\"").count(),
            4,
            "four charts for runs"
        );
        assert!(
            page.contains("run 2 regressed"),
            "the regression is marked on the charts"
        );
        assert!(page.contains("<tr class=\"regression\">"));
        assert!(page.contains("new ghosts: 5"));
    }
}
