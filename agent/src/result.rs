//! What a run records: per-worker [`Tally`]s (outcome counts, counts per k, errno counts,
//! connect and first-byte histograms) merged exactly into [`Interval`]s (about 1 s each) and
//! the whole-run [`RunResult`], plus their report, wire and terminal forms.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use hdrhistogram::Histogram;
use stampede_proto::duration::human_us;
use stampede_proto::histogram::HistogramError;
use stampede_proto::outcome::OutcomeClass;
use stampede_proto::pb;
use stampede_proto::report::{Admission, FireReport, Kernel, Latency, k_counts};
use stampede_proto::tally::CarriesTally as _;

pub use stampede_proto::tally::Tally;

/// What all workers recorded during one interval (attempts classified in it).
#[derive(Debug, Clone, PartialEq)]
pub struct Interval {
    /// 0, 1, 2 …: interval `seq` covers `[seq, seq + 1)` seconds after the start instant (the
    /// last one also holds whatever completed after its end).
    pub seq: u32,
    /// The counts.
    pub tally: Tally,
}

impl Interval {
    /// The wire form for the coordinator.
    pub fn to_pb(&self, run_id: &str) -> Result<pb::IntervalResult, HistogramError> {
        let mut msg = pb::IntervalResult {
            run_id: run_id.to_owned(),
            seq: self.seq,
            ..Default::default()
        };
        msg.set_wire_tally(self.tally.to_wire()?);
        Ok(msg)
    }
}

/// A whole run's result.
#[derive(Debug, Clone, PartialEq)]
pub struct RunResult {
    /// Connections in the plan.
    pub connections: u64,
    /// Everything classified, and how late each connect() left its intended time
    /// (`tally.issue_lag`, µs).
    pub tally: Tally,
    /// From the first to the last connect() call.
    pub issue_duration: Duration,
    /// Wall-clock time of the first connect() call.
    pub first_connect: Option<SystemTime>,
    /// First connect() call minus the start instant.
    pub first_connect_offset: Option<Duration>,
    /// Last connect completion (success or failure) after the start instant: for a burst,
    /// the time until every connect finished.
    pub last_completion: Option<Duration>,
    /// Attempts never classified because the run was cancelled.
    pub unfinished: u64,
    /// Attempts cancelled unissued because they fell due while the agent was stalled
    /// (never fired late in a catch-up burst; [`crate::engine::LATE_BOUND`]).
    pub skipped_overdue: u64,
    /// Attempts whose connect() went out more than the late bound past their time.
    pub issued_late: u64,
    /// Why the run was cut short or is partial (a stall, lost coordinator, shutdown, Abort).
    pub cut_reason: Option<String>,
    /// True if the run was cancelled.
    pub cancelled: bool,
    /// Start instant to the end of the run.
    pub elapsed: Duration,
    /// Kernel settings and counters over the run.
    pub kernel: Kernel,
    /// How connected attempts were checked for admission.
    pub admission: Admission,
}

fn rfc3339(t: SystemTime) -> String {
    let nanos = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64);
    stampede_proto::clock::rfc3339(nanos)
}

impl RunResult {
    /// True if the run is not the whole plan as planned: cancelled, or stalled.
    pub fn partial(&self) -> bool {
        self.cancelled || self.skipped_overdue > 0 || self.issued_late > 0
    }

    /// Records why the run was cut short, ahead of what the engine found (a stall).
    pub fn cut_short(&mut self, why: &str) {
        self.cut_reason = Some(match self.cut_reason.take() {
            Some(stall) => format!("{why}; {stall}"),
            None => why.to_owned(),
        });
    }

    /// The single-host report (`--json`).
    pub fn report(&self, target: &str, pattern: &str) -> FireReport {
        FireReport {
            target: target.to_owned(),
            connections: self.connections,
            pattern: pattern.to_owned(),
            started_at: self.first_connect.map(rfc3339),
            partial: self.partial(),
            skipped_overdue: self.skipped_overdue,
            issued_late: self.issued_late,
            unfinished: self.unfinished,
            cut_reason: self.cut_reason.clone(),
            admission: self.admission,
            outcomes: self.tally.outcomes,
            syn_retransmits: self.tally.syn_retransmits.clone(),
            ghost_syn_retransmits: self.tally.ghost_syn_retransmits.clone(),
            pending_syn_retransmits: self.tally.pending_syn_retransmits.clone(),
            errors: self.tally.errors_by_name(),
            connect_latency_us: Latency::from(&self.tally.connect_latency),
            ttfb_us: Latency::from(&self.tally.ttfb),
            issue_lag_us: Latency::from(&self.tally.issue_lag),
            issue_duration_us: self.issue_duration.as_micros() as u64,
            kernel: self.kernel.clone(),
        }
    }

    /// The wire form for the coordinator.
    pub fn to_pb(&self, run_id: &str) -> Result<pb::FinalResult, HistogramError> {
        let mut msg = pb::FinalResult {
            run_id: run_id.to_owned(),
            first_connect_unix_nanos: self
                .first_connect
                .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos() as i64),
            issue_duration_us: self.issue_duration.as_micros() as u64,
            issue_lag_max_us: max_of(&self.tally.issue_lag),
            kernel: Some((&self.kernel).into()),
            connections: self.connections,
            cancelled: self.cancelled,
            unfinished: self.unfinished,
            skipped_overdue: self.skipped_overdue,
            issued_late: self.issued_late,
            cut_reason: self.cut_reason.clone().unwrap_or_default(),
            ..Default::default()
        };
        msg.set_wire_tally(self.tally.to_wire()?);
        Ok(msg)
    }

    /// The terminal summary: outcomes, k breakdown, percentiles, issue duration.
    pub fn summary(&self, target: &str, pattern: &str) -> String {
        let mut s = String::new();
        let o = &self.tally.outcomes;
        let _ = writeln!(
            s,
            "{} connections to {target}, pattern {pattern}{}",
            self.connections,
            if self.cancelled {
                format!(" (cancelled: {} unfinished)", self.unfinished)
            } else {
                String::new()
            }
        );
        let _ = writeln!(s, "outcomes:");
        for c in OutcomeClass::ALL {
            let n = o.get(c);
            if n == 0 && !matches!(c, OutcomeClass::Established) {
                continue;
            }
            let detail = match c {
                OutcomeClass::SynRetransmitted => by_k(&self.tally.syn_retransmits),
                OutcomeClass::Ghost => by_k(&self.tally.ghost_syn_retransmits),
                OutcomeClass::Pending => by_k(&self.tally.pending_syn_retransmits),
                OutcomeClass::Error => {
                    let parts: Vec<String> = self
                        .tally
                        .errors_by_name()
                        .iter()
                        .map(|(e, n)| format!("{e} {n}"))
                        .collect();
                    format!("  ({})", parts.join(", "))
                }
                _ => String::new(),
            };
            let _ = writeln!(s, "  {:<18} {n:>8}{detail}", c.name());
        }
        if let Some(caveat) = self.admission.caveat(o.connected()) {
            let _ = writeln!(s, "{caveat}");
        }
        if let Some(why) = &self.cut_reason {
            let _ = writeln!(s, "PARTIAL: {why}");
        }
        for (name, h) in [
            ("connect", &self.tally.connect_latency),
            ("first byte", &self.tally.ttfb),
        ] {
            if h.is_empty() {
                continue;
            }
            let l = Latency::from(h);
            let _ = writeln!(
                s,
                "{name:<11} n={} p50={} p90={} p99={} p99.9={} max={}",
                l.count,
                human_us(l.p50),
                human_us(l.p90),
                human_us(l.p99),
                human_us(l.p999),
                human_us(l.max)
            );
        }
        let lag_max = max_of(&self.tally.issue_lag);
        let _ = writeln!(
            s,
            "issue duration {} (max issue lag {}); agent TCPRetransFail {}",
            human_us(self.issue_duration.as_micros() as u64),
            human_us(lag_max),
            self.kernel.retrans_fail
        );
        s
    }
}

/// A histogram's largest value, 0 when it is empty.
fn max_of(h: &Histogram<u64>) -> u64 {
    if h.is_empty() { 0 } else { h.max() }
}

/// `  (k=1: n, k=3: m)` after an outcome's count, or nothing when there is no breakdown.
fn by_k(map: &BTreeMap<u32, u64>) -> String {
    if map.is_empty() {
        return String::new();
    }
    format!("  ({})", k_counts(map))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_rfc3339() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_micros(1_764_036_000_123_456);
        assert_eq!(rfc3339(t), "2025-11-25T02:00:00.123456Z");
        assert_eq!(
            rfc3339(SystemTime::UNIX_EPOCH),
            "1970-01-01T00:00:00.000000Z"
        );
    }

    /// The summary speaks the one unit style (`stampede_proto::duration::human_us`) and the
    /// one per-k form, as the coordinator's summary does.
    #[test]
    fn summary_shows_human_units_and_k_counts() {
        let mut tally = Tally::default();
        tally.outcomes.established = 2;
        tally.outcomes.syn_retransmitted = 3;
        tally.syn_retransmits = BTreeMap::from([(1, 2), (3, 1)]);
        for us in [850, 12_000, 1_014_783] {
            tally.connect_latency.record(us).unwrap();
        }
        let result = RunResult {
            connections: 5,
            tally,
            issue_duration: Duration::from_micros(3_070_000),
            first_connect: None,
            first_connect_offset: None,
            last_completion: None,
            unfinished: 0,
            skipped_overdue: 0,
            issued_late: 0,
            cut_reason: None,
            cancelled: false,
            elapsed: Duration::from_secs(4),
            kernel: Kernel::default(),
            admission: Admission::Greeting,
        };
        let s = result.summary("127.0.0.1:9000", "burst");
        assert!(s.contains("(k=1: 2, k=3: 1)"), "{s}");
        assert!(s.contains("p50=12.0ms"), "{s}");
        assert!(s.contains("max=1.01s"), "{s}");
        assert!(
            s.contains("issue duration 3.07s (max issue lag 0µs)"),
            "{s}"
        );
    }
}
