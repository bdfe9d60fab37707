//! The outcome tally: counts and latency histograms of a set of attempts, the one type that
//! an agent's workers record into, that travels in `IntervalResult` and `FinalResult`, and
//! that the coordinator merges across intervals and agents.
//!
//! Merging is exact: counts add, histograms add bucket by bucket (`Histogram::add`; every
//! latency histogram shares the layout of [`histogram::new_latency`]), so the merged
//! percentiles are those of the union of every sample. Percentiles are never averaged.

use std::collections::{BTreeMap, HashMap};

use hdrhistogram::Histogram;

use crate::histogram::{self, HistogramError};
use crate::outcome::{Errno, Outcome, OutcomeClass, UnknownErrno};
use crate::pb;
use crate::report::Outcomes;

/// Counts and histograms of a set of attempts; merging two is exact.
#[derive(Debug, Clone, PartialEq)]
pub struct Tally {
    /// Attempts by class.
    pub outcomes: Outcomes,
    /// `syn_retransmitted` attempts by k (SYN retransmits, `tcpi_total_retrans`).
    pub syn_retransmits: BTreeMap<u32, u64>,
    /// Ghosts by the k their connect() took.
    pub ghost_syn_retransmits: BTreeMap<u32, u64>,
    /// Pending attempts by the SYN retransmits made when the deadline hit.
    pub pending_syn_retransmits: BTreeMap<u32, u64>,
    /// `error` attempts by errno.
    pub errors: BTreeMap<Errno, u64>,
    /// Intended send time → connect() success or failure, µs.
    pub connect_latency: Histogram<u64>,
    /// Intended send time → server's first byte, µs.
    pub ttfb: Histogram<u64>,
    /// When attempts completed, µs after the start instant, by class and (for
    /// `syn_retransmitted` only, else 0) k: the completions-over-time chart.
    pub completion_times: BTreeMap<(OutcomeClass, u32), Histogram<u64>>,
    /// Intended send time → connect() call, µs, of the attempts *issued* (not completed) in
    /// the tally's span: how late the agent kept its schedule (docs/design.md "Reports").
    pub issue_lag: Histogram<u64>,
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            outcomes: Outcomes::default(),
            syn_retransmits: BTreeMap::new(),
            ghost_syn_retransmits: BTreeMap::new(),
            pending_syn_retransmits: BTreeMap::new(),
            errors: BTreeMap::new(),
            connect_latency: histogram::new_latency(),
            ttfb: histogram::new_latency(),
            completion_times: BTreeMap::new(),
            issue_lag: histogram::new_latency(),
        }
    }
}

/// A result message whose tally cannot be added.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    /// A histogram that could not be decoded or merged.
    #[error("agent sent an unusable {what} histogram: {source}")]
    Histogram {
        /// Which histogram.
        what: &'static str,
        /// Why.
        source: HistogramError,
    },
    /// An error count under a name that is no errno.
    #[error("agent sent an unusable error count: {0}")]
    Errno(#[from] UnknownErrno),
    /// Completion times under a class that does not exist, or too many entries.
    #[error("agent sent unusable completion times: {0}")]
    CompletionTimes(String),
}

/// A tally's counts and histograms as both result messages carry them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WireTally {
    /// Outcome counts.
    pub outcomes: pb::Outcomes,
    /// `syn_retransmitted` by k.
    pub syn_retransmits: HashMap<u32, u64>,
    /// Ghosts by k.
    pub ghost_syn_retransmits: HashMap<u32, u64>,
    /// Pending by k.
    pub pending_syn_retransmits: HashMap<u32, u64>,
    /// Errors by errno name.
    pub errors: HashMap<String, u64>,
    /// Connect latency, V2 + DEFLATE.
    pub connect_latency_hist: Vec<u8>,
    /// First byte, V2 + DEFLATE.
    pub ttfb_hist: Vec<u8>,
    /// Completion times by class and k.
    pub completion_times: Vec<pb::CompletionTimes>,
    /// Issue lag, V2 + DEFLATE.
    pub issue_lag_hist: Vec<u8>,
}

/// A result message that carries a tally: `IntervalResult` and `FinalResult` name their
/// counts and histograms alike.
pub trait CarriesTally {
    /// The tally's fields, borrowed from the message.
    fn wire_tally(&self) -> WireTallyRef<'_>;
    /// Sets the tally's fields.
    fn set_wire_tally(&mut self, w: WireTally);
}

/// A [`WireTally`] borrowed from a message.
#[derive(Debug, Clone, Copy)]
pub struct WireTallyRef<'a> {
    /// Outcome counts.
    pub outcomes: Option<&'a pb::Outcomes>,
    /// `syn_retransmitted` by k.
    pub syn_retransmits: &'a HashMap<u32, u64>,
    /// Ghosts by k.
    pub ghost_syn_retransmits: &'a HashMap<u32, u64>,
    /// Pending by k.
    pub pending_syn_retransmits: &'a HashMap<u32, u64>,
    /// Errors by errno name.
    pub errors: &'a HashMap<String, u64>,
    /// Connect latency, V2 (+ DEFLATE).
    pub connect_latency_hist: &'a [u8],
    /// First byte, V2 (+ DEFLATE).
    pub ttfb_hist: &'a [u8],
    /// Completion times by class and k.
    pub completion_times: &'a [pb::CompletionTimes],
    /// Issue lag, V2 (+ DEFLATE).
    pub issue_lag_hist: &'a [u8],
}

macro_rules! carries_tally {
    ($($t:ty),*) => {$(
        impl CarriesTally for $t {
            fn wire_tally(&self) -> WireTallyRef<'_> {
                WireTallyRef {
                    outcomes: self.outcomes.as_ref(),
                    syn_retransmits: &self.syn_retransmits,
                    ghost_syn_retransmits: &self.ghost_syn_retransmits,
                    pending_syn_retransmits: &self.pending_syn_retransmits,
                    errors: &self.errors,
                    connect_latency_hist: &self.connect_latency_hist,
                    ttfb_hist: &self.ttfb_hist,
                    completion_times: &self.completion_times,
                    issue_lag_hist: &self.issue_lag_hist,
                }
            }

            fn set_wire_tally(&mut self, w: WireTally) {
                self.outcomes = Some(w.outcomes);
                self.syn_retransmits = w.syn_retransmits;
                self.ghost_syn_retransmits = w.ghost_syn_retransmits;
                self.pending_syn_retransmits = w.pending_syn_retransmits;
                self.errors = w.errors;
                self.connect_latency_hist = w.connect_latency_hist;
                self.ttfb_hist = w.ttfb_hist;
                self.completion_times = w.completion_times;
                self.issue_lag_hist = w.issue_lag_hist;
            }
        }
    )*};
}

carries_tally!(pb::IntervalResult, pb::FinalResult);

/// Adds counts by key, saturating at `u64::MAX`: counts come from peers, and absurd ones
/// must not wrap (or panic) when added twice.
fn add_counts<K: Ord + Copy>(
    into: &mut BTreeMap<K, u64>,
    from: impl IntoIterator<Item = (K, u64)>,
) {
    for (k, n) in from {
        let count = into.entry(k).or_default();
        *count = count.saturating_add(n);
    }
}

fn add_hist(into: &mut Histogram<u64>, bytes: &[u8], what: &'static str) -> Result<(), MergeError> {
    if bytes.is_empty() {
        return Ok(());
    }
    let err = |source| MergeError::Histogram { what, source };
    let h = histogram::decode(bytes).map_err(err)?;
    histogram::merge(into, &h).map_err(err)
}

impl Tally {
    /// Counts one classified attempt (its latencies are recorded by the caller).
    pub fn record(&mut self, outcome: Outcome) {
        self.outcomes.count(outcome);
        match outcome {
            Outcome::SynRetransmitted { k } => *self.syn_retransmits.entry(k).or_default() += 1,
            Outcome::Ghost { k } => *self.ghost_syn_retransmits.entry(k).or_default() += 1,
            Outcome::Pending { k } => *self.pending_syn_retransmits.entry(k).or_default() += 1,
            Outcome::Error { errno } => *self.errors.entry(Errno(errno)).or_default() += 1,
            _ => {}
        }
    }

    /// Adds another tally (histograms with `Histogram::add`: exact).
    pub fn merge(&mut self, other: &Tally) -> Result<(), HistogramError> {
        histogram::merge(&mut self.connect_latency, &other.connect_latency)?;
        histogram::merge(&mut self.ttfb, &other.ttfb)?;
        add_completion_times(&mut self.completion_times, &other.completion_times)?;
        histogram::merge(&mut self.issue_lag, &other.issue_lag)?;
        self.outcomes.add(&other.outcomes);
        add_counts(&mut self.syn_retransmits, other.syn_retransmits.clone());
        add_counts(
            &mut self.ghost_syn_retransmits,
            other.ghost_syn_retransmits.clone(),
        );
        add_counts(
            &mut self.pending_syn_retransmits,
            other.pending_syn_retransmits.clone(),
        );
        add_counts(&mut self.errors, other.errors.clone());
        Ok(())
    }

    /// Attempts counted.
    pub fn attempts(&self) -> u64 {
        self.outcomes.total()
    }

    /// Errors keyed by errno name, as reports show them.
    pub fn errors_by_name(&self) -> BTreeMap<String, u64> {
        self.errors
            .iter()
            .map(|(e, n)| (e.to_string(), *n))
            .collect()
    }

    /// The wire form of the counts and histograms.
    pub fn to_wire(&self) -> Result<WireTally, HistogramError> {
        let map = |m: &BTreeMap<u32, u64>| m.iter().map(|(k, n)| (*k, *n)).collect();
        Ok(WireTally {
            outcomes: (&self.outcomes).into(),
            syn_retransmits: map(&self.syn_retransmits),
            ghost_syn_retransmits: map(&self.ghost_syn_retransmits),
            pending_syn_retransmits: map(&self.pending_syn_retransmits),
            errors: self
                .errors
                .iter()
                .map(|(e, n)| (e.to_string(), *n))
                .collect(),
            connect_latency_hist: histogram::encode(&self.connect_latency)?,
            ttfb_hist: histogram::encode(&self.ttfb)?,
            completion_times: self
                .completion_times
                .iter()
                .map(|((class, k), h)| {
                    Ok(pb::CompletionTimes {
                        class: class.name().to_owned(),
                        k: *k,
                        hist: histogram::encode(h)?,
                    })
                })
                .collect::<Result<_, HistogramError>>()?,
            issue_lag_hist: histogram::encode(&self.issue_lag)?,
        })
    }

    /// Adds the tally a result message carries: an interval's deltas or a whole result.
    /// Nothing is added when any part of it is unusable.
    pub fn add_wire(&mut self, msg: &impl CarriesTally) -> Result<(), MergeError> {
        // Decoded whole before counting anything, so a failure adds nothing.
        let t = Tally::from_wire(msg)?;
        self.merge(&t).map_err(|source| MergeError::Histogram {
            what: "tally",
            source,
        })
    }

    /// The tally a result message carries, decoded: the one place the wire form is read
    /// ([`Tally::add_wire`] adds it; `report.hlog` writes its histograms as they are). Every
    /// histogram comes out with the layout of [`histogram::new_latency`], so any two tallies
    /// merge.
    pub fn from_wire(msg: &impl CarriesTally) -> Result<Tally, MergeError> {
        let w = msg.wire_tally();
        let connect_latency = decode_hist(w.connect_latency_hist, "connect latency")?;
        let ttfb = decode_hist(w.ttfb_hist, "time to first byte")?;
        let completion_times = decode_completion_times(w.completion_times)?;
        let issue_lag = decode_hist(w.issue_lag_hist, "issue lag")?;
        // Two names may be one errno (`EPERM` and `errno 1`): added, saturating.
        let mut errors = BTreeMap::new();
        for (name, n) in w.errors {
            let errno: Errno = name.parse()?;
            add_counts(&mut errors, [(errno, *n)]);
        }
        let copy = |m: &HashMap<u32, u64>| {
            let mut out = BTreeMap::new();
            add_counts(&mut out, m.iter().map(|(k, n)| (*k, *n)));
            out
        };
        Ok(Tally {
            outcomes: w.outcomes.map(Into::into).unwrap_or_default(),
            syn_retransmits: copy(w.syn_retransmits),
            ghost_syn_retransmits: copy(w.ghost_syn_retransmits),
            pending_syn_retransmits: copy(w.pending_syn_retransmits),
            errors,
            connect_latency,
            ttfb,
            completion_times,
            issue_lag,
        })
    }
}

/// A histogram as sent (empty bytes: an empty one), in the layout of
/// [`histogram::new_latency`]: one in another layout is added into that layout (exact when
/// it fits, an error when it does not).
fn decode_hist(bytes: &[u8], what: &'static str) -> Result<Histogram<u64>, MergeError> {
    let err = |source| MergeError::Histogram { what, source };
    if bytes.is_empty() {
        return Ok(histogram::new_latency());
    }
    let h = histogram::decode(bytes).map_err(err)?;
    if (h.low(), h.high(), h.sigfig())
        == (1, histogram::MAX_LATENCY_US, histogram::SIGNIFICANT_DIGITS)
    {
        return Ok(h);
    }
    let mut ours = histogram::new_latency();
    histogram::merge(&mut ours, &h).map_err(err)?;
    Ok(ours)
}

mod completion;

pub use self::completion::MAX_COMPLETION_ENTRIES;
use self::completion::{add_completion_times, decode_completion_times};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tallies_merge_exactly() {
        let mut a = Tally::default();
        let mut b = Tally::default();
        a.record(Outcome::Established);
        a.record(Outcome::SynRetransmitted { k: 3 });
        b.record(Outcome::SynRetransmitted { k: 3 });
        b.record(Outcome::Ghost { k: 3 });
        b.record(Outcome::Error {
            errno: libc::EADDRNOTAVAIL,
        });
        a.connect_latency.record(10).unwrap();
        b.connect_latency.record(3_070_000).unwrap();
        let mut all = Tally::default();
        all.merge(&a).unwrap();
        all.merge(&b).unwrap();
        assert_eq!(all.outcomes.total(), 5);
        assert_eq!(all.syn_retransmits, BTreeMap::from([(3, 2)]));
        assert_eq!(all.ghost_syn_retransmits, BTreeMap::from([(3, 1)]));
        assert_eq!(
            all.errors_by_name(),
            BTreeMap::from([("EADDRNOTAVAIL".to_owned(), 1)])
        );
        assert_eq!(all.connect_latency.len(), 2);
        assert!(
            all.connect_latency
                .equivalent(all.connect_latency.max(), 3_070_000)
        );
    }

    /// Three agents with different latency distributions: the merge of their V2+DEFLATE
    /// histograms equals the histogram of all samples together, percentile by percentile.
    #[test]
    fn merged_percentiles_equal_those_of_the_union() {
        let mut union = histogram::new_latency();
        let mut merged = Tally::default();
        let mut expected = Outcomes::default();
        for agent in 0..3u64 {
            let mut agent_tally = Tally::default();
            // Deterministic, distinct shapes: fast loopback connects, a 1 s SYN-retransmit
            // step, a 3 s step, scaled per agent.
            for i in 0..10_000u64 {
                let v = match i % 10 {
                    0..=6 => 5 + (i * 7 + agent * 13) % 200,
                    7 | 8 => 1_024_000 + (i * 31) % 5_000 + agent * 1_000,
                    _ => 3_074_000 + (i * 17) % 9_000,
                };
                agent_tally.connect_latency.record(v).unwrap();
                union.record(v).unwrap();
                agent_tally.record(match i % 10 {
                    0..=6 => Outcome::Established,
                    7 | 8 => Outcome::SynRetransmitted { k: 1 },
                    _ => Outcome::SynRetransmitted { k: 3 },
                });
            }
            expected.add(&agent_tally.outcomes);
            // Each agent's tally travels as a result message, as over gRPC.
            let mut msg = pb::FinalResult::default();
            msg.set_wire_tally(agent_tally.to_wire().unwrap());
            let mut back = Tally::default();
            back.add_wire(&msg).unwrap();
            assert_eq!(back, agent_tally);
            merged.merge(&back).unwrap();
        }
        assert_eq!(merged.outcomes, expected);
        assert_eq!(merged.attempts(), 30_000);
        assert_eq!(merged.syn_retransmits.get(&1), Some(&6_000));
        assert_eq!(merged.syn_retransmits.get(&3), Some(&3_000));
        assert_eq!(merged.connect_latency.len(), union.len());
        for q in [0.0, 0.5, 0.7, 0.9, 0.95, 0.99, 0.999, 1.0] {
            assert_eq!(
                merged.connect_latency.value_at_quantile(q),
                union.value_at_quantile(q),
                "quantile {q}"
            );
        }
        assert!(merged.ttfb.is_empty());
    }

    /// Issue lag travels in both result messages and adds exactly, like the latencies; an
    /// agent that predates it (no bytes) adds nothing, and garbage is named.
    #[test]
    fn issue_lag_travels_and_merges_exactly() {
        let mut union = histogram::new_latency();
        let mut merged = Tally::default();
        for agent in 0..3u64 {
            let mut t = Tally::default();
            for i in 0..1_000u64 {
                let lag = (i * 37 + agent * 1_001) % 20_000;
                t.issue_lag.record(lag).unwrap();
                union.record(lag).unwrap();
            }
            let mut msg = pb::IntervalResult::default();
            msg.set_wire_tally(t.to_wire().unwrap());
            assert!(!msg.issue_lag_hist.is_empty());
            merged.add_wire(&msg).unwrap();
        }
        merged.add_wire(&pb::FinalResult::default()).unwrap();
        assert_eq!(merged.issue_lag.len(), 3_000);
        for q in [0.5, 0.9, 0.99, 0.999, 1.0] {
            assert_eq!(
                merged.issue_lag.value_at_quantile(q),
                union.value_at_quantile(q),
                "quantile {q}"
            );
        }
        let err = Tally::default()
            .add_wire(&pb::FinalResult {
                issue_lag_hist: b"garbage".to_vec(),
                ..Default::default()
            })
            .unwrap_err();
        assert!(err.to_string().contains("issue lag"), "{err}");
    }

    #[test]
    fn garbage_is_an_error_naming_the_part_and_adds_nothing() {
        let mut t = Tally::default();
        let err = t
            .add_wire(&pb::IntervalResult {
                outcomes: Some(pb::Outcomes {
                    established: 3,
                    ..Default::default()
                }),
                connect_latency_hist: b"not a histogram".to_vec(),
                ..Default::default()
            })
            .unwrap_err();
        assert!(err.to_string().contains("connect latency"), "{err}");
        assert_eq!(t, Tally::default());
        let err = t
            .add_wire(&pb::IntervalResult {
                errors: [("EWHAT".to_owned(), 1)].into(),
                ..Default::default()
            })
            .unwrap_err();
        assert!(err.to_string().contains("EWHAT"), "{err}");
    }

    /// Found by proto/tests/decoders.rs: counts near `u64::MAX` from two messages (or two
    /// names of one errno in one message) overflowed `+=` and `sum()`, a panic in debug
    /// builds and a wrap in release ones; they saturate now.
    #[test]
    fn absurd_counts_saturate() {
        let huge = pb::IntervalResult {
            outcomes: Some(pb::Outcomes {
                established: u64::MAX,
                ghost: u64::MAX,
                ..Default::default()
            }),
            syn_retransmits: [(1, u64::MAX)].into(),
            errors: [("EPERM".to_owned(), u64::MAX), ("errno 1".to_owned(), 1)].into(),
            ..Default::default()
        };
        let mut t = Tally::default();
        t.add_wire(&huge).unwrap();
        t.add_wire(&huge).unwrap();
        assert_eq!(t.outcomes.established, u64::MAX);
        assert_eq!(t.attempts(), u64::MAX);
        assert_eq!(t.outcomes.connected(), u64::MAX);
        assert_eq!(t.syn_retransmits, [(1, u64::MAX)].into());
        assert_eq!(t.errors, [(Errno(libc::EPERM), u64::MAX)].into());
        let mut merged = t.clone();
        merged.merge(&t).unwrap();
        assert_eq!(merged.outcomes.established, u64::MAX);
    }

    /// Ghost and pending counts by k and errors by name add up across intervals and agents,
    /// like the outcome counts they break down.
    #[test]
    fn breakdowns_by_k_and_errno_add_up() {
        let interval = |ghost_k: u32, errno: &str| pb::IntervalResult {
            ghost_syn_retransmits: [(ghost_k, 2)].into(),
            pending_syn_retransmits: [(3, 1)].into(),
            errors: [(errno.to_owned(), 4)].into(),
            ..Default::default()
        };
        let mut a = Tally::default();
        a.add_wire(&interval(0, "EADDRNOTAVAIL")).unwrap();
        a.add_wire(&interval(3, "EADDRNOTAVAIL")).unwrap();
        let mut b = Tally::default();
        b.add_wire(&pb::FinalResult {
            ghost_syn_retransmits: [(3, 5)].into(),
            errors: [("ENETUNREACH".to_owned(), 1)].into(),
            ..Default::default()
        })
        .unwrap();
        a.merge(&b).unwrap();
        assert_eq!(a.ghost_syn_retransmits, [(0, 2), (3, 7)].into());
        assert_eq!(a.pending_syn_retransmits, [(3, 2)].into());
        assert_eq!(
            a.errors_by_name(),
            [
                ("EADDRNOTAVAIL".to_owned(), 8),
                ("ENETUNREACH".to_owned(), 1)
            ]
            .into()
        );
    }
}
