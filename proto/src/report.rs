//! Report types shared by `stampede-agent fire --json` and the coordinator's `report.json`
//! (the contract in docs/design.md "Reports": keys are added freely, never renamed).
//!
//! - [`Outcomes`]: attempts by outcome class (`outcomes{}`), convertible to and from the wire.
//! - [`Latency`]: percentiles of a µs histogram (`connect_latency_us{}`, `ttfb_us{}`).
//! - [`Kernel`]: the settings and counters that shape an outcome (`kernel{}`).
//! - [`FireReport`]: the whole single-host report of `stampede-agent fire`.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::outcome::{Outcome, OutcomeClass};
use crate::pb;

/// Percentiles of a latency histogram, µs; all zero when it is empty.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Latency {
    /// Samples.
    pub count: u64,
    /// Smallest.
    pub min: u64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest.
    pub max: u64,
}

impl From<&Histogram<u64>> for Latency {
    fn from(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            count: h.len(),
            min: h.min(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

/// How a connected attempt was checked for admission (docs/kernel.md §3: a successful connect()
/// is not acceptance).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Admission {
    /// Not checked: `established` and `syn_retransmitted` may include phantoms.
    #[default]
    Unchecked,
    /// The server greets first; no greeting by the deadline makes a ghost.
    Greeting,
    /// The client sends a byte; one never acknowledged makes a ghost.
    Probe,
}

impl Admission {
    /// The check a plan asks for (the two are exclusive; the greeting wins).
    pub fn of(expect_greeting: bool, probe_admission: bool) -> Admission {
        match (expect_greeting, probe_admission) {
            (true, _) => Admission::Greeting,
            (false, true) => Admission::Probe,
            (false, false) => Admission::Unchecked,
        }
    }

    /// The warning a summary prints when connected attempts went unchecked.
    pub fn caveat(self, connected: u64) -> Option<String> {
        (self == Admission::Unchecked && connected > 0).then(|| {
            format!(
                "admission unchecked: {connected} connected, but a successful connect() is not \
                 acceptance (phantoms, docs/kernel.md §3); --expect-greeting (the server speaks \
                 first) or --probe-admission (the client does) counts them as ghosts"
            )
        })
    }
}

/// Attempts by outcome class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcomes {
    /// Connected (and admitted, when checked), no SYN retransmit.
    pub established: u64,
    /// Connected (and admitted, when checked) after k ≥ 1 SYN retransmits.
    pub syn_retransmitted: u64,
    /// ECONNREFUSED.
    pub refused: u64,
    /// ECONNRESET before service.
    pub reset: u64,
    /// Kernel ETIMEDOUT.
    pub timeout: u64,
    /// Own deadline hit in SYN_SENT.
    pub pending: u64,
    /// Another errno.
    pub error: u64,
    /// Connected but never admitted.
    pub ghost: u64,
}

impl Outcomes {
    /// The counter of a class.
    pub fn get(&self, class: OutcomeClass) -> u64 {
        match class {
            OutcomeClass::Established => self.established,
            OutcomeClass::SynRetransmitted => self.syn_retransmitted,
            OutcomeClass::Refused => self.refused,
            OutcomeClass::Reset => self.reset,
            OutcomeClass::Timeout => self.timeout,
            OutcomeClass::Pending => self.pending,
            OutcomeClass::Error => self.error,
            OutcomeClass::Ghost => self.ghost,
        }
    }

    fn slot(&mut self, class: OutcomeClass) -> &mut u64 {
        match class {
            OutcomeClass::Established => &mut self.established,
            OutcomeClass::SynRetransmitted => &mut self.syn_retransmitted,
            OutcomeClass::Refused => &mut self.refused,
            OutcomeClass::Reset => &mut self.reset,
            OutcomeClass::Timeout => &mut self.timeout,
            OutcomeClass::Pending => &mut self.pending,
            OutcomeClass::Error => &mut self.error,
            OutcomeClass::Ghost => &mut self.ghost,
        }
    }

    /// Counts one attempt.
    pub fn count(&mut self, outcome: Outcome) {
        *self.slot(outcome.class()) += 1;
    }

    /// Adds another set of counts. Counts come from peers, so they saturate at `u64::MAX`
    /// instead of wrapping (or panicking) on absurd values.
    pub fn add(&mut self, other: &Outcomes) {
        for c in OutcomeClass::ALL {
            let slot = self.slot(c);
            *slot = slot.saturating_add(other.get(c));
        }
    }

    /// All attempts counted (saturating, like [`Outcomes::add`]).
    pub fn total(&self) -> u64 {
        OutcomeClass::ALL
            .iter()
            .fold(0, |sum, c| sum.saturating_add(self.get(*c)))
    }

    /// Attempts whose connect() succeeded (admitted or not).
    pub fn connected(&self) -> u64 {
        self.admitted().saturating_add(self.ghost)
    }

    /// Attempts the server admitted: connected minus ghosts.
    pub fn admitted(&self) -> u64 {
        self.established.saturating_add(self.syn_retransmitted)
    }
}

impl From<&pb::Outcomes> for Outcomes {
    fn from(o: &pb::Outcomes) -> Self {
        Outcomes {
            established: o.established,
            syn_retransmitted: o.syn_retransmitted,
            refused: o.refused,
            reset: o.reset,
            timeout: o.timeout,
            pending: o.pending,
            error: o.error,
            ghost: o.ghost,
        }
    }
}

impl From<&Outcomes> for pb::Outcomes {
    fn from(o: &Outcomes) -> Self {
        pb::Outcomes {
            established: o.established,
            syn_retransmitted: o.syn_retransmitted,
            refused: o.refused,
            reset: o.reset,
            timeout: o.timeout,
            pending: o.pending,
            error: o.error,
            ghost: o.ghost,
        }
    }
}

/// Kernel settings of the agent's namespace and its counters over the run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kernel {
    /// `net.ipv4.tcp_syn_retries`.
    pub tcp_syn_retries: Option<u64>,
    /// `net.ipv4.tcp_syn_linear_timeouts` (absent before Linux 6.5).
    pub tcp_syn_linear_timeouts: Option<u64>,
    /// `net.ipv4.ip_local_port_range`, as "low high".
    pub ip_local_port_range: Option<String>,
    /// RLIMIT_NOFILE soft limit the agent ran with.
    pub fd_limit: u64,
    /// `TcpExt.TCPRetransFail` over the run: retransmits the agent's own stack failed to send
    /// (its queues were full; they retry after 0.5 s, docs/kernel.md §2).
    pub retrans_fail: u64,
    /// `TcpExt.TCPSynRetrans` over the run, in the agent's namespace (on one host this also
    /// counts the server's SYN-ACK retransmits).
    pub syn_retrans: u64,
}

/// The report of one `stampede-agent fire` run (the single-host subset of `report.json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FireReport {
    /// `HOST:PORT` as resolved.
    pub target: String,
    /// Connections planned.
    pub connections: u64,
    /// The pattern, as `burst`, `ramp:RATE:DUR`, `waves:K:PERIOD`.
    pub pattern: String,
    /// When the first connect() was issued, RFC 3339 UTC (absent if none was).
    pub started_at: Option<String>,
    /// True when the run was interrupted or stalled; attempts not yet issued are then not
    /// counted.
    pub partial: bool,
    /// Attempts cancelled unissued because they fell due while the agent was stalled (never
    /// fired late in a catch-up burst).
    #[serde(default)]
    pub skipped_overdue: u64,
    /// Attempts issued more than the late bound past their intended time.
    #[serde(default)]
    pub issued_late: u64,
    /// Attempts never classified because the run was cut short: outcomes, `skipped_overdue`
    /// and this add up to `connections`.
    #[serde(default)]
    pub unfinished: u64,
    /// Why the run was cut short or is partial, when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cut_reason: Option<String>,
    /// How connected attempts were checked for admission.
    pub admission: Admission,
    /// Attempts by outcome class.
    pub outcomes: Outcomes,
    /// `syn_retransmitted` broken down by k: `{"1": n, "3": n}`.
    pub syn_retransmits: BTreeMap<u32, u64>,
    /// Ghosts by the k their connect() took.
    pub ghost_syn_retransmits: BTreeMap<u32, u64>,
    /// Pending attempts by the SYN retransmits they had made when the deadline hit.
    pub pending_syn_retransmits: BTreeMap<u32, u64>,
    /// `error` broken down by errno name: `{"EADDRNOTAVAIL": n}`.
    pub errors: BTreeMap<String, u64>,
    /// From each attempt's intended time to connect() success or failure, µs.
    pub connect_latency_us: Latency,
    /// From each attempt's intended time to the server's first byte, µs.
    pub ttfb_us: Latency,
    /// From each attempt's intended time to its connect() call, µs (the agent's own lag).
    pub issue_lag_us: Latency,
    /// From the first to the last connect() call, µs.
    pub issue_duration_us: u64,
    /// Kernel settings and counters.
    pub kernel: Kernel,
}

impl From<&Kernel> for pb::KernelInfo {
    fn from(k: &Kernel) -> Self {
        pb::KernelInfo {
            tcp_syn_retries: k.tcp_syn_retries,
            tcp_syn_linear_timeouts: k.tcp_syn_linear_timeouts,
            ip_local_port_range: k.ip_local_port_range.clone().unwrap_or_default(),
            fd_limit: k.fd_limit,
            retrans_fail: k.retrans_fail,
            syn_retrans: k.syn_retrans,
        }
    }
}

impl From<&pb::KernelInfo> for Kernel {
    fn from(k: &pb::KernelInfo) -> Self {
        Kernel {
            tcp_syn_retries: k.tcp_syn_retries,
            tcp_syn_linear_timeouts: k.tcp_syn_linear_timeouts,
            ip_local_port_range: (!k.ip_local_port_range.is_empty())
                .then(|| k.ip_local_port_range.clone()),
            fd_limit: k.fd_limit,
            retrans_fail: k.retrans_fail,
            syn_retrans: k.syn_retrans,
        }
    }
}

/// Counts by SYN-retransmit count k as people read them: `k=1: 12, k=3: 4` (empty when there
/// are none). The one form of every summary's per-k breakdown.
pub fn k_counts(by_k: &BTreeMap<u32, u64>) -> String {
    let parts: Vec<String> = by_k.iter().map(|(k, n)| format!("k={k}: {n}")).collect();
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_count_add_and_travel() {
        let mut o = Outcomes::default();
        for out in [
            Outcome::Established,
            Outcome::Established,
            Outcome::SynRetransmitted { k: 3 },
            Outcome::Ghost { k: 3 },
            Outcome::Error { errno: 99 },
        ] {
            o.count(out);
        }
        assert_eq!(o.established, 2);
        assert_eq!(o.connected(), 4);
        assert_eq!(o.admitted(), 3);
        assert_eq!(o.total(), 5);
        let mut twice = o;
        twice.add(&o);
        assert_eq!(twice.total(), 10);
        assert_eq!(Outcomes::from(&pb::Outcomes::from(&o)), o);
    }

    #[test]
    fn latency_of_empty_and_full() {
        let mut h = crate::histogram::new_latency();
        assert_eq!(Latency::from(&h), Latency::default());
        for v in 1..=1000 {
            h.record(v).unwrap();
        }
        let l = Latency::from(&h);
        assert_eq!((l.count, l.min, l.max), (1000, 1, 1000));
        assert!(l.p50 >= 500 && l.p50 <= 501, "{l:?}");
    }

    #[test]
    fn k_counts_read_in_numeric_order() {
        let by_k = BTreeMap::from([(10, 1), (1, 12), (3, 4)]);
        assert_eq!(k_counts(&by_k), "k=1: 12, k=3: 4, k=10: 1");
        assert_eq!(k_counts(&BTreeMap::new()), "");
    }
}
