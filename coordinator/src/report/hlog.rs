//! `report.hlog`: the run second by second in the HdrHistogram interval log format, for the
//! existing HDR tooling (HistogramLogProcessor, HdrHistogram's plotters, `hdrhistogram`'s
//! `IntervalLogIterator`), written while the run goes ([`IntervalLog`], in `stream`) by a
//! thread of its own (`writer`), so the coordinator never keeps a run's interval results;
//! the same thread keeps a bounded spool of them (`spool`) for agents lost mid-run.
//!
//! Interval `seq` of every agent covers `[seq, seq + 1)` seconds after the agreed start
//! instant (its last interval also holds what completed later), so the log's BaseTime and
//! StartTime are that instant and each line starts at `seq` seconds and lasts one. Per second:
//! `Tag=agent.<id>` and `Tag=agent.<id>.ttfb` for each agent (by id), then an untagged line
//! with every agent's connect latencies merged exactly (`Histogram::add`), `Tag=ttfb` with the
//! merged first-byte latencies and `Tag=issue_lag` with the merged issue lag (connect() call
//! minus intended time) of the attempts issued in that second (the writer is
//! [`stampede_proto::hlog`]). Values are microseconds. Lost agents contribute the intervals
//! they delivered, as in the report.
//!
//! A second is written once every agent still running has sent it (or gone past it); the
//! `ttfb` and `issue_lag` lines appear once any agent has sent those histograms (every
//! agent does). Two cases leave that order, and say so by their shape (docs/design.md
//! "Reports"): an interval that arrives after its second was written (an agent more than
//! [`MAX_OPEN_SECONDS`] behind the rest, or one that still sends after it was declared lost)
//! is written when it arrives, as its own group: its agent lines and untagged, `ttfb` and
//! `issue_lag` lines holding only its samples, so every sample is in the log exactly once.
//! An interval that cannot be decoded is left out (and counted in the coordinator's log).

mod spool;
mod stream;
mod writer;

use std::collections::BTreeMap;

use stampede_proto::histogram::{self, HistogramError};
use stampede_proto::tally::Tally;
use stampede_proto::{hlog, pb};

pub use self::stream::{Closed, HlogTo, IntervalLog, LogFile};

/// Per lost agent that delivered any interval: their sum, as interval results whose tallies
/// add up to it exactly; or why that agent's intervals cannot be counted (a record that
/// cannot be added, a sum that cannot be encoded).
pub type Delivered = BTreeMap<String, Result<Vec<pb::IntervalResult>, String>>;

/// Most seconds held open waiting for a lagging agent; past it, the oldest is written and
/// that agent's interval for it comes later as its own group. Bounds the coordinator's
/// memory by this many seconds of the fleet's interval results (~0.75 KiB each).
pub const MAX_OPEN_SECONDS: usize = 10;

/// The log's comment lines.
fn comments(run_id: &str) -> [String; 2] {
    [
        format!("stampede run {run_id}"),
        "values: microseconds; untagged: connect latency of all agents; ttfb: time to first \
         byte; issue_lag: connect() call minus intended time; agent.<id>[.ttfb]: one agent"
            .to_owned(),
    ]
}

/// Which optional lines a second carries.
#[derive(Debug, Clone, Copy, Default)]
struct Series {
    ttfb: bool,
    issue_lag: bool,
}

impl Series {
    /// Notes what an interval carries.
    fn see(&mut self, r: &pb::IntervalResult) {
        self.ttfb |= !r.ttfb_hist.is_empty();
        self.issue_lag |= !r.issue_lag_hist.is_empty();
    }
}

/// The lines of second `seq`: each agent's (by id), then the merged ones. Each interval is
/// decoded once (`Tally::from_wire`, as the report decodes them) and its histograms dropped
/// once merged, so only one agent's and the merged histograms are decoded at a time. An
/// interval that cannot be decoded is left out and counted in `undecodable`.
fn second(
    seq: u32,
    by_agent: &BTreeMap<String, Vec<pb::IntervalResult>>,
    series: Series,
    undecodable: &mut u64,
) -> Result<Vec<u8>, HistogramError> {
    hlog::lines(|lines| {
        let mut connect = histogram::new_latency();
        let mut ttfb = histogram::new_latency();
        let mut lag = histogram::new_latency();
        for (id, results) in by_agent {
            // An agent sends each seq once; several would simply add.
            for r in results {
                let t = match Tally::from_wire(r) {
                    Ok(t) => t,
                    Err(e) => {
                        *undecodable += 1;
                        tracing::warn!(agent = %id, second = seq, cause = %e,
                            "interval left out of report.hlog");
                        continue;
                    }
                };
                histogram::merge(&mut connect, &t.connect_latency)?;
                histogram::merge(&mut ttfb, &t.ttfb)?;
                histogram::merge(&mut lag, &t.issue_lag)?;
                lines.line(seq, Some(&format!("agent.{id}")), &t.connect_latency)?;
                if series.ttfb {
                    lines.line(seq, Some(&format!("agent.{id}.ttfb")), &t.ttfb)?;
                }
            }
        }
        lines.line(seq, None, &connect)?;
        if series.ttfb {
            lines.line(seq, Some("ttfb"), &ttfb)?;
        }
        if series.issue_lag {
            lines.line(seq, Some("issue_lag"), &lag)?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod spool_tests;

#[cfg(test)]
mod spool_fault_tests;

#[cfg(test)]
mod writer_fault_tests;
