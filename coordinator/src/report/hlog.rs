//! `report.hlog`: the run second by second in the HdrHistogram interval log format, for the
//! existing HDR tooling (HistogramLogProcessor, HdrHistogram's plotters, `hdrhistogram`'s
//! `IntervalLogIterator`).
//!
//! Interval `seq` of every agent covers `[seq, seq + 1)` seconds after the agreed start
//! instant (its last interval also holds what completed later), so the log's BaseTime and
//! StartTime are that instant and each line starts at `seq` seconds and lasts one. Per second:
//! `Tag=agent.<id>` and `Tag=agent.<id>.ttfb` for each agent, then an untagged line with
//! every agent's connect latencies merged exactly (`Histogram::add`), `Tag=ttfb` with the
//! merged first-byte latencies and `Tag=issue_lag` with the merged issue lag (connect() call
//! minus intended time) of the attempts issued in that second (the writer is
//! [`stampede_proto::hlog`]; the merged lines come last so that no second's decoded
//! histograms are held at once, whatever the fleet). Values are microseconds. Lost agents contribute the intervals
//! they delivered, as in the report.

use std::collections::{BTreeMap, BTreeSet};

use stampede_proto::histogram::{self, HistogramError};
use stampede_proto::{hlog, pb};

/// Why the log could not be written; the message names the agent and the interval.
#[derive(Debug, thiserror::Error)]
#[error("interval log: {0}")]
pub struct HlogError(String);

/// The log's text. `start_at_unix_nanos` is the agreed start instant in coordinator time.
pub fn render(
    run_id: &str,
    start_at_unix_nanos: i64,
    intervals: &BTreeMap<String, Vec<pb::IntervalResult>>,
) -> Result<Vec<u8>, HlogError> {
    let seqs: BTreeSet<u32> = intervals.values().flatten().map(|r| r.seq).collect();
    let any_ttfb = intervals
        .values()
        .flatten()
        .any(|r| !r.ttfb_hist.is_empty());
    let any_lag = intervals
        .values()
        .flatten()
        .any(|r| !r.issue_lag_hist.is_empty());
    let comments = [
        format!("stampede run {run_id}"),
        "values: microseconds; untagged: connect latency of all agents; ttfb: time to first \
         byte; issue_lag: connect() call minus intended time; agent.<id>[.ttfb]: one agent"
            .to_owned(),
    ];
    // One second at a time, so only that second's histograms are decoded at once.
    hlog::render(&comments, start_at_unix_nanos, |lines| {
        for seq in seqs {
            let mut connect = histogram::new_latency();
            let mut ttfb = histogram::new_latency();
            let mut lag = histogram::new_latency();
            // Each agent's lines go out as soon as its second is decoded, and the merged
            // lines after them: a fleet's decoded histograms (~0.2 MB each) are never held
            // at once.
            for (id, results) in intervals {
                // An agent sends each seq once; several would simply add.
                for r in results.iter().filter(|r| r.seq == seq) {
                    let decode = |bytes: &[u8], what: &str| {
                        histogram::decode(bytes).map_err(|e| {
                            HistogramError::Encode(format!("agent {id}, second {seq}, {what}: {e}"))
                        })
                    };
                    let c = decode(&r.connect_latency_hist, "connect latency")?;
                    let t = decode(&r.ttfb_hist, "time to first byte")?;
                    histogram::merge(&mut connect, &c)?;
                    histogram::merge(&mut ttfb, &t)?;
                    histogram::merge(&mut lag, &decode(&r.issue_lag_hist, "issue lag")?)?;
                    lines.line(seq, Some(&format!("agent.{id}")), &c)?;
                    if any_ttfb {
                        lines.line(seq, Some(&format!("agent.{id}.ttfb")), &t)?;
                    }
                }
            }
            lines.line(seq, None, &connect)?;
            if any_ttfb {
                lines.line(seq, Some("ttfb"), &ttfb)?;
            }
            if any_lag {
                lines.line(seq, Some("issue_lag"), &lag)?;
            }
        }
        Ok(())
    })
    .map_err(|e| HlogError(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interval(seq: u32, samples: &[u64]) -> pb::IntervalResult {
        let mut h = histogram::new_latency();
        for s in samples {
            h.record(*s).unwrap();
        }
        pb::IntervalResult {
            seq,
            connect_latency_hist: histogram::encode(&h).unwrap(),
            ..Default::default()
        }
    }

    /// Two agents over two seconds: one tagged line per agent and second, then one untagged
    /// line per second holding both agents' samples; timestamps relative to the start.
    #[test]
    fn lines_per_second_merge_agents_and_tag_each() {
        let mut intervals = BTreeMap::new();
        intervals.insert(
            "a 1".to_owned(),
            vec![interval(0, &[10, 20, 30]), interval(1, &[1_030_000])],
        );
        intervals.insert("b".to_owned(), vec![interval(0, &[40])]);
        let start = 1_764_000_000_123_000_000;
        let text = render("r1", start, &intervals).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(text.contains("#[StartTime: 1764000000.123"), "{text}");
        assert!(text.contains("#[BaseTime: 1764000000.123"), "{text}");
        let lines: Vec<(Option<String>, u32, u64, u64)> = hlog::parse(text.as_bytes())
            .unwrap()
            .into_iter()
            .map(|l| (l.tag, l.seq, l.histogram.len(), l.histogram.max()))
            .collect();
        // Small values are exact; 1.03 s is within the histogram's 0.1 %.
        let mut big = histogram::new_latency();
        big.record(1_030_000).unwrap();
        assert_eq!(
            lines,
            vec![
                (Some("agent.a_1".to_owned()), 0, 3, 30),
                (Some("agent.b".to_owned()), 0, 1, 40),
                (None, 0, 4, 40),
                (Some("agent.a_1".to_owned()), 1, 1, big.max()),
                (None, 1, 1, big.max()),
            ]
        );
    }

    /// Issue lag gets a merged `Tag=issue_lag` line per second holding every agent's
    /// samples of that second.
    #[test]
    fn issue_lag_is_merged_per_second_under_its_tag() {
        let with_lag = |seq: u32, lags: &[u64]| {
            let mut h = histogram::new_latency();
            for l in lags {
                h.record(*l).unwrap();
            }
            pb::IntervalResult {
                issue_lag_hist: histogram::encode(&h).unwrap(),
                ..interval(seq, &[100])
            }
        };
        let mut intervals = BTreeMap::new();
        intervals.insert(
            "a".to_owned(),
            vec![with_lag(0, &[5, 7]), with_lag(1, &[900])],
        );
        intervals.insert("b".to_owned(), vec![with_lag(0, &[2_000])]);
        let text = render("r2", 1_764_000_000_000_000_000, &intervals).unwrap();
        let lag: Vec<(u32, u64, u64, u64)> = hlog::parse(&text)
            .unwrap()
            .into_iter()
            .filter(|l| l.tag.as_deref() == Some("issue_lag"))
            .map(|l| {
                (
                    l.seq,
                    l.histogram.len(),
                    l.histogram.min(),
                    l.histogram.max(),
                )
            })
            .collect();
        let mut two_ms = histogram::new_latency();
        two_ms.record(2_000).unwrap();
        assert_eq!(lag, vec![(0, 3, 5, two_ms.max()), (1, 1, 900, 900)]);
        let text = String::from_utf8(text).unwrap();
        assert!(text.contains("issue_lag: connect() call minus"), "{text}");
    }
}
