//! `report.csv`: one row per agent and one total row, for spreadsheets and scripts
//! (docs/design.md "Reports").
//!
//! Every row carries the run's `run_id` and `started_at`, so files from many runs can be
//! concatenated. The `row` column says what a row is (`agent` or `total`) and the agent's id
//! has its own column, so an agent named "total" is still an agent row. Each column means
//! one thing; a column that does not apply to a row is empty (the spread is the total's,
//! the start error an agent's; first-byte time and the target's figures exist only for the
//! whole run, and a latency with no samples has no percentiles). Written through the `csv`
//! crate, which quotes what needs quoting.

use std::io;

use stampede_proto::outcome::OutcomeClass;

use super::{Latency, Outcomes, Report, TargetStats};

/// The CSV text: a header row, then one row per agent, then the total row.
pub fn render(r: &Report) -> String {
    let mut bytes = Vec::new();
    write(r, &mut bytes).expect(
        "writing into memory cannot fail, and every row has the header's columns \
         (both come from Row::cells)",
    );
    String::from_utf8(bytes).expect("every field written is a Rust string, so UTF-8")
}

/// Writes the CSV text of `r` into `out`.
pub fn write(r: &Report, out: impl io::Write) -> csv::Result<()> {
    let total = Row::total(r);
    let mut w = csv::Writer::from_writer(out);
    w.write_record(total.cells(r).iter().map(|(name, _)| name))?;
    for a in &r.agents {
        let row = Row {
            kind: "agent",
            agent_id: &a.id,
            host: &a.host,
            connections: a.connections,
            attempts: a.attempts,
            outcomes: &a.outcomes,
            connect: &a.connect_latency_us,
            ttfb: None,
            clock_offset_us: Some(a.clock_offset_us),
            clock_uncertainty_us: Some(a.clock_uncertainty_us),
            start_error_us: a.start_error_us,
            start_spread_us: None,
            complete: Some(a.complete),
            lost: Some(r.lost_agents.contains(&a.id)),
            partial: None,
            skipped_overdue: a.skipped_overdue,
            issued_late: a.issued_late,
            target: None,
        };
        w.write_record(row.cells(r).iter().map(|(_, value)| value))?;
    }
    w.write_record(total.cells(r).iter().map(|(_, value)| value))?;
    w.flush()?;
    Ok(())
}

/// What one row says; `None` is an empty field (the column does not apply to this row).
struct Row<'a> {
    /// `agent` or `total`.
    kind: &'static str,
    agent_id: &'a str,
    host: &'a str,
    connections: u64,
    attempts: u64,
    outcomes: &'a Outcomes,
    connect: &'a Latency,
    ttfb: Option<&'a Latency>,
    clock_offset_us: Option<i64>,
    clock_uncertainty_us: Option<u64>,
    start_error_us: Option<i64>,
    start_spread_us: Option<u64>,
    /// An agent's: its final result came.
    complete: Option<bool>,
    /// An agent's: it is in `lost_agents`.
    lost: Option<bool>,
    /// The total's: the run lost an agent, was aborted or cut short.
    partial: Option<bool>,
    skipped_overdue: u64,
    issued_late: u64,
    target: Option<&'a TargetStats>,
}

impl<'a> Row<'a> {
    /// The whole run's row.
    fn total(r: &'a Report) -> Row<'a> {
        Row {
            kind: "total",
            agent_id: "",
            host: "",
            connections: r.agents.iter().map(|a| a.connections).sum(),
            attempts: r.outcomes.total(),
            outcomes: &r.outcomes,
            connect: &r.connect_latency_us,
            ttfb: Some(&r.ttfb_us),
            clock_offset_us: None,
            clock_uncertainty_us: None,
            start_error_us: None,
            start_spread_us: r.start_spread_us,
            complete: None,
            lost: None,
            partial: Some(r.partial),
            skipped_overdue: r.skipped_overdue,
            issued_late: r.issued_late,
            target: r.target.as_ref(),
        }
    }

    /// Every column, named, in order: the header and the rows both come from here, so they
    /// cannot disagree.
    fn cells(&self, r: &Report) -> Vec<(&'static str, String)> {
        fn opt(v: Option<impl ToString>) -> String {
            v.map_or_else(String::new, |v| v.to_string())
        }
        // A latency with no samples has no percentiles: empty, never a misleading 0.
        fn measured(l: Option<&Latency>) -> Option<&Latency> {
            l.filter(|l| l.count > 0)
        }
        let connect = measured(Some(self.connect));
        let ttfb = measured(self.ttfb);
        let t = self.target;
        let mut cells = vec![
            ("run_id", r.run_id.clone()),
            ("started_at", r.started_at.clone()),
            ("row", self.kind.to_owned()),
            ("agent_id", self.agent_id.to_owned()),
            ("host", self.host.to_owned()),
            ("connections", self.connections.to_string()),
            ("attempts", self.attempts.to_string()),
        ];
        cells.extend(
            OutcomeClass::ALL.map(|class| (class.name(), self.outcomes.get(class).to_string())),
        );
        cells.extend([
            ("connect_p50_us", opt(connect.map(|l| l.p50))),
            ("connect_p90_us", opt(connect.map(|l| l.p90))),
            ("connect_p99_us", opt(connect.map(|l| l.p99))),
            ("connect_p999_us", opt(connect.map(|l| l.p999))),
            ("connect_max_us", opt(connect.map(|l| l.max))),
            ("ttfb_p50_us", opt(ttfb.map(|l| l.p50))),
            ("ttfb_p99_us", opt(ttfb.map(|l| l.p99))),
            ("ttfb_max_us", opt(ttfb.map(|l| l.max))),
            ("clock_offset_us", opt(self.clock_offset_us)),
            ("clock_uncertainty_us", opt(self.clock_uncertainty_us)),
            ("start_error_us", opt(self.start_error_us)),
            ("start_spread_us", opt(self.start_spread_us)),
            ("complete", opt(self.complete)),
            ("lost", opt(self.lost)),
            ("partial", opt(self.partial)),
            ("skipped_overdue", self.skipped_overdue.to_string()),
            ("issued_late", self.issued_late.to_string()),
            ("backlog_effective", opt(t.map(|t| t.backlog_effective))),
            ("accept_queue_max", opt(t.map(|t| t.accept_queue_max))),
            // Unknown when observing another process's listener.
            ("accepted", opt(t.and_then(|t| t.accepted))),
            (
                "listen_overflows",
                opt(t.map(|t| t.counters.listen_overflows)),
            ),
            (
                "syncookies_sent",
                opt(t.map(|t| t.counters.syncookies_sent)),
            ),
        ]);
        cells
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::report::AgentReport;
    use stampede_proto::target::CounterDeltas;

    fn latency(p50: u64, max: u64) -> Latency {
        Latency {
            count: 10,
            min: 1,
            p50,
            p90: p50 + 1,
            p99: p50 + 2,
            p999: p50 + 3,
            max,
        }
    }

    /// Two agents, one of them named "total" with a comma in its host, one lost.
    fn report() -> Report {
        let a = |id: &str, est: u64, start_error_us| AgentReport {
            id: id.into(),
            host: "h,1 \"x\"".into(),
            connections: 10,
            attempts: 10,
            outcomes: Outcomes {
                established: est,
                ghost: 10 - est,
                ..Default::default()
            },
            connect_latency_us: latency(100 + est, 900),
            clock_offset_us: -40,
            clock_uncertainty_us: 7,
            start_error_us,
            complete: est == 7,
            ..Default::default()
        };
        Report {
            run_id: "run-1".into(),
            started_at: "2026-11-27T13:00:00.000000Z".into(),
            partial: true,
            lost_agents: vec!["total".into()],
            agents: vec![a("a1", 7, Some(-3)), a("total", 9, None)],
            outcomes: Outcomes {
                established: 16,
                ghost: 4,
                ..Default::default()
            },
            connect_latency_us: latency(105, 950),
            ttfb_us: latency(2000, 5000),
            start_spread_us: Some(12),
            target: Some(TargetStats {
                backlog_effective: 9,
                accept_queue_max: 9,
                accepted: Some(16),
                counters: CounterDeltas {
                    listen_overflows: 4,
                    syncookies_sent: 1,
                    ..Default::default()
                },
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// The rows as the csv crate reads them back, each keyed by its header (also read by
    /// `sweep::csv`'s tests).
    pub(crate) fn parse(text: &str) -> Vec<HashMap<String, String>> {
        let mut rd = csv::Reader::from_reader(text.as_bytes());
        let header = rd.headers().unwrap().clone();
        rd.records()
            .map(|rec| {
                let rec = rec.unwrap();
                assert_eq!(rec.len(), header.len(), "{text}");
                header
                    .iter()
                    .zip(rec.iter())
                    .map(|(h, v)| (h.to_owned(), v.to_owned()))
                    .collect()
            })
            .collect()
    }

    /// Every value read back from the CSV is the report's own; an agent named "total" is
    /// still an agent row, and the total row is the one with `row` = `total`.
    #[test]
    fn rows_read_back_equal_the_report() {
        let r = report();
        let rows = parse(&render(&r));
        assert_eq!(rows.len(), 3);
        assert!(rows.iter().all(|row| row["run_id"] == "run-1"));
        assert!(rows.iter().all(|row| row["started_at"] == r.started_at));
        let kinds: Vec<&str> = rows.iter().map(|row| row["row"].as_str()).collect();
        assert_eq!(kinds, ["agent", "agent", "total"]);
        for (row, a) in rows.iter().zip(&r.agents) {
            assert_eq!(row["agent_id"], a.id);
            assert_eq!(row["host"], "h,1 \"x\"", "quoted and unquoted back");
            assert_eq!(row["attempts"], a.attempts.to_string());
            assert_eq!(row["established"], a.outcomes.established.to_string());
            assert_eq!(row["ghost"], a.outcomes.ghost.to_string());
            assert_eq!(row["connect_p50_us"], a.connect_latency_us.p50.to_string());
            assert_eq!(row["connect_max_us"], "900");
            assert_eq!(row["clock_offset_us"], "-40");
            assert_eq!(row["complete"], a.complete.to_string());
            // First-byte time and the target's figures exist only for the whole run.
            assert_eq!(row["ttfb_p99_us"], "");
            assert_eq!(row["listen_overflows"], "");
            assert_eq!(row["start_spread_us"], "");
            assert_eq!(row["partial"], "");
        }
        assert_eq!(rows[0]["start_error_us"], "-3");
        assert_eq!(rows[1]["start_error_us"], "", "no first connect: no error");
        assert_eq!(rows[0]["lost"], "false");
        assert_eq!(rows[1]["lost"], "true");
        let total = &rows[2];
        assert_eq!(total["agent_id"], "");
        assert_eq!(total["connections"], "20");
        assert_eq!(total["attempts"], "20");
        assert_eq!(total["established"], "16");
        assert_eq!(total["connect_p99_us"], "107");
        assert_eq!(total["ttfb_p50_us"], "2000");
        assert_eq!(total["ttfb_p99_us"], "2002");
        assert_eq!(total["ttfb_max_us"], "5000");
        // The spread has its own column; an agent's start error is not reused for it.
        assert_eq!(total["start_spread_us"], "12");
        assert_eq!(total["start_error_us"], "");
        assert_eq!(total["clock_offset_us"], "");
        assert_eq!(total["complete"], "");
        assert_eq!(total["partial"], "true");
        assert_eq!(total["backlog_effective"], "9");
        assert_eq!(total["accept_queue_max"], "9");
        assert_eq!(total["accepted"], "16");
        assert_eq!(total["listen_overflows"], "4");
        assert_eq!(total["syncookies_sent"], "1");
    }

    /// Each column holds the value report.json has under the matching key.
    #[test]
    fn columns_match_report_json() {
        let r = report();
        let json = serde_json::to_value(&r).unwrap();
        // A JSON scalar as the CSV writes it: null is an empty field.
        let text = |v: &serde_json::Value| match v {
            serde_json::Value::Null => String::new(),
            serde_json::Value::String(s) => s.clone(),
            v => v.to_string(),
        };
        let rows = parse(&render(&r));
        let mut columns: Vec<(&str, Vec<&str>)> = vec![
            ("connect_p50_us", vec!["connect_latency_us", "p50"]),
            ("connect_p90_us", vec!["connect_latency_us", "p90"]),
            ("connect_p99_us", vec!["connect_latency_us", "p99"]),
            ("connect_p999_us", vec!["connect_latency_us", "p999"]),
            ("connect_max_us", vec!["connect_latency_us", "max"]),
            ("skipped_overdue", vec!["skipped_overdue"]),
            ("issued_late", vec!["issued_late"]),
        ];
        for class in OutcomeClass::ALL {
            columns.push((class.name(), vec!["outcomes", class.name()]));
        }
        let at = |mut v: &serde_json::Value, path: &[&str]| {
            for key in path {
                v = &v[*key];
            }
            text(v)
        };
        for (i, row) in rows[..2].iter().enumerate() {
            let a = &json["agents"][i];
            for (column, path) in &columns {
                assert_eq!(row[*column], at(a, path), "agent {i} {column}");
            }
            for (column, key) in [
                ("agent_id", "id"),
                ("host", "host"),
                ("connections", "connections"),
                ("attempts", "attempts"),
                ("clock_offset_us", "clock_offset_us"),
                ("clock_uncertainty_us", "clock_uncertainty_us"),
                ("start_error_us", "start_error_us"),
                ("complete", "complete"),
            ] {
                assert_eq!(row[column], at(a, &[key]), "agent {i} {column}");
            }
        }
        let total = &rows[2];
        columns.extend([
            ("run_id", vec!["run_id"]),
            ("started_at", vec!["started_at"]),
            ("ttfb_p50_us", vec!["ttfb_us", "p50"]),
            ("ttfb_p99_us", vec!["ttfb_us", "p99"]),
            ("ttfb_max_us", vec!["ttfb_us", "max"]),
            ("start_spread_us", vec!["start_spread_us"]),
            ("partial", vec!["partial"]),
            ("backlog_effective", vec!["target", "backlog_effective"]),
            ("accept_queue_max", vec!["target", "accept_queue_max"]),
            ("accepted", vec!["target", "accepted"]),
            ("listen_overflows", vec!["target", "listen_overflows"]),
            ("syncookies_sent", vec!["target", "syncookies_sent"]),
        ]);
        for (column, path) in &columns {
            assert_eq!(total[*column], at(&json, path), "total {column}");
        }
    }

    /// No target, an unknown accepted count, no first bytes: empty fields, never a 0 that
    /// reads as a measurement.
    #[test]
    fn what_was_not_measured_is_empty() {
        let mut r = report();
        r.ttfb_us = Latency::default();
        r.target.as_mut().unwrap().accepted = None;
        let total = parse(&render(&r)).pop().unwrap();
        assert_eq!(total["ttfb_p50_us"], "");
        assert_eq!(total["accepted"], "");
        assert_eq!(total["backlog_effective"], "9");
        r.target = None;
        r.agents.clear();
        let rows = parse(&render(&r));
        assert_eq!(rows.len(), 1, "a run with no agents still has its total");
        assert_eq!(rows[0]["row"], "total");
        assert_eq!(rows[0]["listen_overflows"], "");
        assert_eq!(rows[0]["connections"], "0");
    }

    /// The header names every outcome class, once, and no column twice.
    #[test]
    fn header_has_each_column_once() {
        let text = render(&Report::default());
        let mut rd = csv::Reader::from_reader(text.as_bytes());
        let header: Vec<String> = rd.headers().unwrap().iter().map(str::to_owned).collect();
        for class in OutcomeClass::ALL {
            assert!(header.iter().any(|h| h == class.name()), "{header:?}");
        }
        let mut unique = header.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), header.len(), "{header:?}");
        assert_eq!(header[..3], ["run_id", "started_at", "row"]);
    }
}
