//! `report.csv`: one row per agent and a `total` row, for spreadsheets and quick diffs.
//! Columns are only ever appended (`skipped_overdue`, `issued_late` came last).

use std::fmt::Write as _;

use stampede_proto::outcome::OutcomeClass;

use super::{Latency, Outcomes, Report};

/// The CSV text (header line first).
pub fn render(r: &Report) -> String {
    let mut s = String::from("agent,host,connections,attempts");
    for class in OutcomeClass::ALL {
        let _ = write!(s, ",{}", class.name());
    }
    s.push_str(
        ",connect_p50_us,connect_p90_us,connect_p99_us,connect_p999_us,connect_max_us,\
         clock_offset_us,clock_uncertainty_us,start_error_us,complete,skipped_overdue,\
         issued_late\n",
    );
    let row = |s: &mut String, id: &str, host: &str, conns: u64, o: &Outcomes, l: &Latency| {
        let _ = write!(s, "{},{},{conns},{}", field(id), field(host), o.total());
        for class in OutcomeClass::ALL {
            let _ = write!(s, ",{}", o.get(class));
        }
        let _ = write!(s, ",{},{},{},{},{}", l.p50, l.p90, l.p99, l.p999, l.max);
    };
    for a in &r.agents {
        row(
            &mut s,
            &a.id,
            &a.host,
            a.connections,
            &a.outcomes,
            &a.connect_latency_us,
        );
        let _ = writeln!(
            s,
            ",{},{},{},{},{},{}",
            a.clock_offset_us,
            a.clock_uncertainty_us,
            a.start_error_us.map_or_else(String::new, |e| e.to_string()),
            a.complete,
            a.skipped_overdue,
            a.issued_late
        );
    }
    let conns = r.agents.iter().map(|a| a.connections).sum();
    row(
        &mut s,
        "total",
        "",
        conns,
        &r.outcomes,
        &r.connect_latency_us,
    );
    let _ = writeln!(
        s,
        ",,,{},{},{},{}",
        r.start_spread_us
            .map_or_else(String::new, |e| e.to_string()),
        !r.partial,
        r.skipped_overdue,
        r.issued_late
    );
    s
}

/// A CSV field, quoted when it holds a separator, quote or line break.
fn field(v: &str) -> String {
    if v.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", v.replace('"', "\"\""))
    } else {
        v.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::AgentReport;

    #[test]
    fn one_row_per_agent_and_a_total_with_equal_columns() {
        let a = |id: &str, est: u64| AgentReport {
            id: id.into(),
            host: "h,1".into(),
            connections: 10,
            outcomes: Outcomes {
                established: est,
                ghost: 10 - est,
                ..Default::default()
            },
            complete: true,
            ..Default::default()
        };
        let r = Report {
            agents: vec![a("a1", 7), a("a2", 9)],
            outcomes: Outcomes {
                established: 16,
                ghost: 4,
                ..Default::default()
            },
            ..Default::default()
        };
        let text = render(&r);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4);
        // Quoted fields aside, every row has the header's column count.
        let cols = |l: &str| l.replace("\"h,1\"", "h").split(',').count();
        assert!(lines.iter().all(|l| cols(l) == cols(lines[0])), "{text}");
        assert!(lines[1].starts_with("a1,\"h,1\",10,10,7,"), "{}", lines[1]);
        assert!(lines[3].starts_with("total,,20,20,16,"), "{}", lines[3]);
    }
}
