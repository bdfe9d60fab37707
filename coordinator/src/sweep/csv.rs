//! `sweep.csv`: one row per step, in the order run, beside `sweep.json` and `sweep.html`
//! (docs/design.md "Sweep").
//!
//! Each row is one step's figures as `sweep.json`'s `steps[]` has them, plus its run's
//! `run_id` and `started_at`; `ttfb_p99_us` is the accept wait (first byte) p99, and
//! `model_backlog` (the queue model) stands beside `accept_queue_max` (the measured peak). Every column
//! means one thing; empty: not known (`accept_rate_per_s` when the target's rate was left as
//! configured or unlimited, first-byte time when none was measured). Every column a number
//! reads as one (or is empty), so a numeric reader (pandas, awk) takes `accept_rate_per_s`
//! whole: an unlimited accept rate (`max` in `sweep.json` and on the command line) is an empty
//! cell there and `true` in `accept_unthrottled`, which tells it apart from "as configured".

use std::io;

use stampede_proto::outcome::OutcomeClass;

use super::{Step, SweepReport};
use crate::report::{Latency, Report};

/// The CSV text: a header row, then one row per step.
pub fn render(sweep: &SweepReport) -> String {
    let mut bytes = Vec::new();
    write(sweep, &mut bytes).expect(
        "writing into memory cannot fail, and every row has the header's columns \
         (both come from columns)",
    );
    String::from_utf8(bytes).expect("every field written is a Rust string, so UTF-8")
}

/// Writes the CSV text of `sweep` into `out`.
pub fn write(sweep: &SweepReport, out: impl io::Write) -> csv::Result<()> {
    let columns = columns();
    let mut w = csv::Writer::from_writer(out);
    w.write_record(columns.iter().map(|(name, _)| name))?;
    // `execute` pushes a step and its report together: the two lists are in step.
    for (i, step) in sweep.steps.iter().enumerate() {
        let line = Line {
            n: i + 1,
            step,
            report: sweep.reports.get(i),
        };
        w.write_record(columns.iter().map(|(_, value)| value(&line)))?;
    }
    w.flush()?;
    Ok(())
}

/// One step and what the CSV adds to it.
struct Line<'a> {
    /// Its number, from 1, in the order run.
    n: usize,
    step: &'a Step,
    /// Its run's report (absent only if `reports` were cut shorter than `steps`).
    report: Option<&'a Report>,
}

/// A column: its name and how a row's field is made.
type Column = (&'static str, Box<dyn Fn(&Line<'_>) -> String>);

/// Every column, in order: the header and the rows both come from here, so they cannot
/// disagree.
fn columns() -> Vec<Column> {
    fn opt(v: Option<impl ToString>) -> String {
        v.map_or_else(String::new, |v| v.to_string())
    }
    // A latency with no samples has no percentiles: empty, never a misleading 0.
    fn measured(l: &Latency) -> Option<&Latency> {
        (l.count > 0).then_some(l)
    }
    fn connect<'a>(l: &Line<'a>) -> Option<&'a Latency> {
        measured(&l.step.connect_latency_us)
    }
    let mut columns: Vec<Column> = vec![
        ("step", Box::new(|l| l.n.to_string())),
        ("run_id", Box::new(|l| opt(l.report.map(|r| &r.run_id)))),
        (
            "started_at",
            Box::new(|l| opt(l.report.map(|r| &r.started_at))),
        ),
        ("backlog", Box::new(|l| l.step.backlog.to_string())),
        (
            "backlog_effective",
            Box::new(|l| l.step.backlog_effective.to_string()),
        ),
        ("somaxconn", Box::new(|l| l.step.somaxconn.to_string())),
        // A finite rate as a number; unlimited (`accept_unthrottled`) and as configured empty.
        (
            "accept_rate_per_s",
            Box::new(|l| opt(l.step.accept_rate.filter(|r| r.0.is_finite()))),
        ),
        (
            "attempts",
            Box::new(|l| l.step.outcomes.total().to_string()),
        ),
    ];
    for class in OutcomeClass::ALL {
        columns.push((
            class.name(),
            Box::new(move |l| l.step.outcomes.get(class).to_string()),
        ));
    }
    columns.extend([
        (
            "connect_p50_us",
            Box::new(|l: &Line<'_>| opt(connect(l).map(|c| c.p50)))
                as Box<dyn Fn(&Line<'_>) -> String>,
        ),
        (
            "connect_p99_us",
            Box::new(|l| opt(connect(l).map(|c| c.p99))),
        ),
        (
            "connect_max_us",
            Box::new(|l| opt(connect(l).map(|c| c.max))),
        ),
        (
            "ttfb_p99_us",
            Box::new(|l| opt(measured(&l.step.ttfb_us).map(|t| t.p99))),
        ),
        (
            "listen_overflows",
            Box::new(|l| l.step.listen_overflows.to_string()),
        ),
        (
            "syncookies_sent",
            Box::new(|l| l.step.syncookies_sent.to_string()),
        ),
        (
            "accept_queue_max",
            Box::new(|l| l.step.accept_queue_max.to_string()),
        ),
        ("accepted", Box::new(|l| l.step.accepted.to_string())),
        ("partial", Box::new(|l| l.step.partial.to_string())),
        (
            "issue_duration_us",
            Box::new(|l| opt(l.step.issue_duration_us)),
        ),
        // Empty when no --fail-if was given.
        (
            "thresholds_passed",
            Box::new(|l| opt(l.step.thresholds_passed)),
        ),
        (
            "phase",
            Box::new(|l| {
                serde_json::to_value(l.step.phase)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            }),
        ),
        ("clean", Box::new(|l| l.step.clean.to_string())),
        ("unclean", Box::new(|l| opt(l.step.unclean.as_ref()))),
        ("runs", Box::new(|l| l.step.runs.to_string())),
        ("clean_runs", Box::new(|l| l.step.clean_runs.to_string())),
        (
            "model_backlog",
            Box::new(|l| l.step.model_backlog.to_string()),
        ),
        (
            "accepted_during_burst",
            Box::new(|l| opt(l.step.accepted_during_burst)),
        ),
        ("model_source", Box::new(|l| l.step.model_source.clone())),
        ("server_pid", Box::new(|l| opt(l.step.server_pid))),
        // Added last, so a reader by position keeps every earlier column where it was.
        (
            "accept_unthrottled",
            Box::new(|l| {
                l.step
                    .accept_rate
                    .is_some_and(|r| r.0.is_infinite())
                    .to_string()
            }),
        ),
    ]);
    columns
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Outcomes;
    use crate::report::csv::tests::parse;
    use crate::scenario::AcceptRate;

    fn step(backlog: i32, accept_rate: Option<AcceptRate>) -> Step {
        Step {
            backlog,
            accept_rate,
            backlog_effective: backlog as u32 + 1,
            somaxconn: 4096,
            outcomes: Outcomes {
                established: 40 + backlog as u64,
                ghost: 20 - backlog as u64,
                syn_retransmitted: 3,
                ..Outcomes::default()
            },
            connect_latency_us: Latency {
                count: 63,
                min: 10,
                p50: 100 + backlog as u64,
                p90: 500,
                p99: 1_000_000,
                p999: 1_000_100,
                max: 1_000_200,
            },
            ttfb_us: Latency::default(),
            listen_overflows: 20 - backlog as u64,
            syncookies_sent: 1,
            accept_queue_max: backlog as u32 + 1,
            accepted: 43,
            partial: backlog == 16,
            issue_duration_us: Some(1234),
            thresholds_passed: (backlog == 8).then_some(true),
            phase: if backlog == 16 {
                super::super::Phase::Refine
            } else {
                super::super::Phase::Coarse
            },
            clean: false,
            unclean: Some(format!("{} overflows", 20 - backlog)),
            runs: 1,
            clean_runs: 0,
            run_ids: vec!["r1".into()],
            accepted_during_burst: (backlog == 8).then_some(5),
            model_backlog: 57,
            model_source: "measured".into(),
            server_pid: None,
            repeat_reports: Vec::new(),
        }
    }

    fn step_with_wait(backlog: i32, accept_rate: Option<AcceptRate>, p99: u64) -> Step {
        Step {
            ttfb_us: Latency {
                count: 5,
                p99,
                ..Latency::default()
            },
            ..step(backlog, accept_rate)
        }
    }

    fn report(run_id: &str, ttfb_p99: u64) -> Report {
        Report {
            run_id: run_id.into(),
            started_at: format!("2026-11-27T13:00:0{}Z", run_id.len()),
            ttfb_us: Latency {
                count: if ttfb_p99 > 0 { 5 } else { 0 },
                p99: ttfb_p99,
                ..Latency::default()
            },
            ..Report::default()
        }
    }

    fn sweep() -> SweepReport {
        SweepReport {
            connections: 63,
            p99_max_us: 50_000,
            steps: vec![
                step_with_wait(8, Some(AcceptRate(50.0)), 2500),
                step(16, Some(AcceptRate(50.0))),
                step_with_wait(8, None, 7),
            ],
            recommendations: vec![],
            reports: vec![report("r1", 2500), report("r22", 0), report("r333", 7)],
            ..SweepReport::empty_for_tests()
        }
    }

    /// One row per step, in order, each column holding what sweep.json has for that step.
    #[test]
    fn rows_match_sweep_json() {
        let s = sweep();
        let json = serde_json::to_value(&s).unwrap();
        let text = |v: &serde_json::Value| match v {
            serde_json::Value::Null => String::new(),
            serde_json::Value::String(s) => s.clone(),
            v => v.to_string(),
        };
        let rows = parse(&render(&s));
        assert_eq!(rows.len(), 3);
        let mut columns: Vec<(&str, Vec<&str>)> = vec![
            ("backlog", vec!["backlog"]),
            ("backlog_effective", vec!["backlog_effective"]),
            ("somaxconn", vec!["somaxconn"]),
            ("connect_p50_us", vec!["connect_latency_us", "p50"]),
            ("connect_p99_us", vec!["connect_latency_us", "p99"]),
            ("connect_max_us", vec!["connect_latency_us", "max"]),
            ("listen_overflows", vec!["listen_overflows"]),
            ("syncookies_sent", vec!["syncookies_sent"]),
            ("accept_queue_max", vec!["accept_queue_max"]),
            ("accepted", vec!["accepted"]),
            ("partial", vec!["partial"]),
            ("issue_duration_us", vec!["issue_duration_us"]),
            ("phase", vec!["phase"]),
            ("clean", vec!["clean"]),
            ("unclean", vec!["unclean"]),
            ("runs", vec!["runs"]),
            ("clean_runs", vec!["clean_runs"]),
            ("model_backlog", vec!["model_backlog"]),
            ("accepted_during_burst", vec!["accepted_during_burst"]),
            ("model_source", vec!["model_source"]),
            ("server_pid", vec!["server_pid"]),
        ];
        for class in OutcomeClass::ALL {
            columns.push((class.name(), vec!["outcomes", class.name()]));
        }
        for (i, row) in rows.iter().enumerate() {
            for (column, path) in &columns {
                let mut v = &json["steps"][i];
                for key in path {
                    v = &v[*key];
                }
                assert_eq!(row[*column], text(v), "step {i} {column}");
            }
            let r = &json["reports"][i];
            assert_eq!(row["step"], (i + 1).to_string());
            assert_eq!(row["run_id"], text(&r["run_id"]));
            assert_eq!(row["started_at"], text(&r["started_at"]));
            assert_eq!(row["attempts"], s.steps[i].outcomes.total().to_string());
        }
        assert_eq!(rows[0]["accept_rate_per_s"], "50");
        assert_eq!(rows[2]["accept_rate_per_s"], "", "left as configured");
        assert_eq!(rows[0]["ttfb_p99_us"], "2500");
        assert_eq!(rows[1]["ttfb_p99_us"], "", "no first byte measured");
        assert_eq!(rows[2]["ttfb_p99_us"], "7");
        assert_eq!(rows[1]["partial"], "true");
        assert_eq!(rows[1]["phase"], "refine");
        assert_eq!(rows[0]["accepted_during_burst"], "5");
        assert_eq!(rows[1]["accepted_during_burst"], "", "unknown");
    }

    /// "As fast as possible" is `max` in sweep.json (it was `null` there, which read back as
    /// "as configured"), and reads back as such; in the CSV it is an empty rate with
    /// `accept_unthrottled` true, so the rate column stays numeric; a finite rate stays a
    /// number in JSON; an empty sweep is a header alone.
    #[test]
    fn unlimited_rate_is_max_in_json_and_unthrottled_in_csv() {
        let mut s = sweep();
        s.steps[0].accept_rate = Some(AcceptRate(f64::INFINITY));
        s.recommendations = vec![super::super::Recommendation {
            accept_rate: Some(AcceptRate(f64::INFINITY)),
            ..Default::default()
        }];
        let rows = parse(&render(&s));
        assert_eq!(rows[0]["accept_rate_per_s"], "");
        assert_eq!(rows[0]["accept_unthrottled"], "true");
        assert_eq!(rows[1]["accept_rate_per_s"], "50");
        assert_eq!(rows[1]["accept_unthrottled"], "false");
        assert_eq!(rows[2]["accept_rate_per_s"], "", "as configured");
        assert_eq!(rows[2]["accept_unthrottled"], "false", "as configured");
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["steps"][0]["accept_rate"], "max");
        assert_eq!(json["recommendations"][0]["accept_rate"], "max");
        assert_eq!(json["steps"][1]["accept_rate"], serde_json::json!(50.0));
        assert!(json["steps"][2]["accept_rate"].is_null(), "as configured");
        let back: SweepReport = serde_json::from_value(json).unwrap();
        assert_eq!(back.steps[0].accept_rate, Some(AcceptRate(f64::INFINITY)));
        assert_eq!(
            back.recommendations[0].accept_rate,
            Some(AcceptRate(f64::INFINITY))
        );
        assert_eq!(back.steps[1].accept_rate, Some(AcceptRate(50.0)));
        assert_eq!(back.steps[2].accept_rate, None);
        assert_eq!(super::super::rate_name(back.steps[0].accept_rate), "max");
        s.steps.clear();
        s.reports.clear();
        let text = render(&s);
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(
            text.starts_with("step,run_id,started_at,backlog,"),
            "{text}"
        );
    }

    /// A numeric reader takes every numeric column whole: with the csv crate, each cell of
    /// `accept_rate_per_s` (unlimited, finite, as configured) is empty or an f64, and
    /// `accept_unthrottled` a bool; the new column comes last, after every older one.
    #[test]
    fn rate_column_is_numeric_or_empty() {
        let mut s = sweep();
        s.steps[0].accept_rate = Some(AcceptRate(f64::INFINITY));
        let text = render(&s);
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let header = reader.headers().unwrap().clone();
        assert_eq!(header.iter().next_back(), Some("accept_unthrottled"));
        let at = |name: &str| header.iter().position(|h| h == name).unwrap();
        let (rate, unthrottled) = (at("accept_rate_per_s"), at("accept_unthrottled"));
        assert_eq!(
            at("server_pid") + 1,
            unthrottled,
            "appended, never inserted"
        );
        let mut seen = Vec::new();
        for record in reader.records() {
            let record = record.unwrap();
            let cell = &record[rate];
            let value = (!cell.is_empty())
                .then(|| cell.parse::<f64>())
                .transpose()
                .unwrap_or_else(|e| panic!("accept_rate_per_s {cell:?} is not a number: {e}"));
            let flag: bool = record[unthrottled].parse().unwrap();
            seen.push((value, flag));
        }
        assert_eq!(
            seen,
            vec![(None, true), (Some(50.0), false), (None, false)],
            "{text}"
        );
    }
}
