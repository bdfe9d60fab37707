//! Exact merging of agent results: counts add, histograms add bucket by bucket
//! (`Histogram::add`), so the merged percentiles are those of the union of every agent's
//! samples. Percentiles are never averaged.

use std::collections::{BTreeMap, HashMap};

use hdrhistogram::Histogram;
use stampede_proto::histogram;
use stampede_proto::pb;
use stampede_proto::report::Outcomes;

/// Counts and histograms of any number of intervals or agents.
#[derive(Debug, Clone)]
pub struct Tally {
    /// Attempts by outcome class.
    pub outcomes: Outcomes,
    /// Attempts by SYN-retransmit count k ≥ 1.
    pub syn_retransmits: BTreeMap<u32, u64>,
    /// Ghosts by the k their connect() took.
    pub ghost_syn_retransmits: BTreeMap<u32, u64>,
    /// Pending attempts by the SYN retransmits made when the deadline hit.
    pub pending_syn_retransmits: BTreeMap<u32, u64>,
    /// `error` attempts by errno name.
    pub errors: BTreeMap<String, u64>,
    /// Connect latency, µs.
    pub connect_us: Histogram<u64>,
    /// Time to first byte, µs.
    pub ttfb_us: Histogram<u64>,
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            outcomes: Outcomes::default(),
            syn_retransmits: BTreeMap::new(),
            ghost_syn_retransmits: BTreeMap::new(),
            pending_syn_retransmits: BTreeMap::new(),
            errors: BTreeMap::new(),
            // Auto-resizing, 3 significant digits: holds whatever range agents send.
            connect_us: Histogram::new(3).expect("3 significant digits is valid"),
            ttfb_us: Histogram::new(3).expect("3 significant digits is valid"),
        }
    }
}

/// A histogram that could not be decoded or merged.
#[derive(Debug, thiserror::Error)]
#[error("agent sent an unusable {what} histogram: {reason}")]
pub struct MergeError {
    what: &'static str,
    reason: String,
}

fn add_hist(into: &mut Histogram<u64>, bytes: &[u8], what: &'static str) -> Result<(), MergeError> {
    if bytes.is_empty() {
        return Ok(());
    }
    let err = |e: histogram::HistogramError| MergeError {
        what,
        reason: e.to_string(),
    };
    let h = histogram::decode(bytes).map_err(err)?;
    histogram::merge(into, &h).map_err(err)
}

/// The counts of an interval or a final result, borrowed from the message.
#[derive(Debug, Clone, Copy)]
pub struct Parts<'a> {
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
    pub connect: &'a [u8],
    /// First byte, V2 (+ DEFLATE).
    pub ttfb: &'a [u8],
}

fn add_counts<K: Ord + Clone>(
    into: &mut BTreeMap<K, u64>,
    from: impl IntoIterator<Item = (K, u64)>,
) {
    for (k, n) in from {
        *into.entry(k).or_default() += n;
    }
}

/// The [`Parts`] of an `IntervalResult` or a `FinalResult`: the two messages name their
/// counts and histograms alike.
macro_rules! parts {
    ($r:expr) => {
        Parts {
            outcomes: $r.outcomes.as_ref(),
            syn_retransmits: &$r.syn_retransmits,
            ghost_syn_retransmits: &$r.ghost_syn_retransmits,
            pending_syn_retransmits: &$r.pending_syn_retransmits,
            errors: &$r.errors,
            connect: &$r.connect_latency_hist,
            ttfb: &$r.ttfb_hist,
        }
    };
}

impl Tally {
    /// Adds counts and encoded histograms.
    pub fn add_parts(&mut self, p: Parts<'_>) -> Result<(), MergeError> {
        add_hist(&mut self.connect_us, p.connect, "connect latency")?;
        add_hist(&mut self.ttfb_us, p.ttfb, "time to first byte")?;
        if let Some(o) = p.outcomes {
            self.outcomes.add(&o.into());
        }
        add_counts(
            &mut self.syn_retransmits,
            p.syn_retransmits.iter().map(|(k, n)| (*k, *n)),
        );
        add_counts(
            &mut self.ghost_syn_retransmits,
            p.ghost_syn_retransmits.iter().map(|(k, n)| (*k, *n)),
        );
        add_counts(
            &mut self.pending_syn_retransmits,
            p.pending_syn_retransmits.iter().map(|(k, n)| (*k, *n)),
        );
        add_counts(
            &mut self.errors,
            p.errors.iter().map(|(k, n)| (k.clone(), *n)),
        );
        Ok(())
    }

    /// Adds one interval's deltas.
    pub fn add_interval(&mut self, r: &pb::IntervalResult) -> Result<(), MergeError> {
        self.add_parts(parts!(r))
    }

    /// Adds an agent's whole result.
    pub fn add_final(&mut self, r: &pb::FinalResult) -> Result<(), MergeError> {
        self.add_parts(parts!(r))
    }

    /// Adds another tally.
    pub fn merge(&mut self, other: &Tally) {
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
        // Both are auto-resizing, so add cannot fail for range reasons.
        self.connect_us
            .add(&other.connect_us)
            .expect("auto-resizing histograms always add");
        self.ttfb_us
            .add(&other.ttfb_us)
            .expect("auto-resizing histograms always add");
    }

    /// Attempts counted.
    pub fn attempts(&self) -> u64 {
        self.outcomes.total()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(h: &Histogram<u64>) -> Vec<u8> {
        histogram::encode(h).unwrap()
    }

    /// Three agents with different latency distributions: the merge of their V2+DEFLATE
    /// histograms equals the histogram of all samples together, percentile by percentile.
    #[test]
    fn merged_percentiles_equal_those_of_the_union() {
        let mut union = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).unwrap();
        let mut merged = Tally::default();
        let mut expected = Outcomes::default();
        for agent in 0..3u64 {
            let mut h = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).unwrap();
            // Deterministic, distinct shapes: fast loopback connects, a 1 s SYN-retransmit
            // step, a 3 s step, scaled per agent.
            for i in 0..10_000u64 {
                let v = match i % 10 {
                    0..=6 => 5 + (i * 7 + agent * 13) % 200,
                    7 | 8 => 1_024_000 + (i * 31) % 5_000 + agent * 1_000,
                    _ => 3_074_000 + (i * 17) % 9_000,
                };
                h.record(v).unwrap();
                union.record(v).unwrap();
            }
            let outcomes = pb::Outcomes {
                established: 7_000,
                syn_retransmitted: 3_000,
                ..Default::default()
            };
            expected.established += outcomes.established;
            expected.syn_retransmitted += outcomes.syn_retransmitted;
            let mut k = std::collections::HashMap::new();
            k.insert(1, 2_000);
            k.insert(3, 1_000);
            let mut agent_tally = Tally::default();
            let none = HashMap::new();
            let hist = encode(&h);
            agent_tally
                .add_parts(Parts {
                    outcomes: Some(&outcomes),
                    syn_retransmits: &k,
                    ghost_syn_retransmits: &none,
                    pending_syn_retransmits: &none,
                    errors: &HashMap::new(),
                    connect: &hist,
                    ttfb: &[],
                })
                .unwrap();
            merged.merge(&agent_tally);
        }
        assert_eq!(merged.outcomes, expected);
        assert_eq!(merged.attempts(), 30_000);
        assert_eq!(merged.syn_retransmits.get(&1), Some(&6_000));
        assert_eq!(merged.syn_retransmits.get(&3), Some(&3_000));
        assert_eq!(merged.connect_us.len(), union.len());
        for q in [0.0, 0.5, 0.7, 0.9, 0.95, 0.99, 0.999, 1.0] {
            assert_eq!(
                merged.connect_us.value_at_quantile(q),
                union.value_at_quantile(q),
                "quantile {q}"
            );
        }
        assert!(merged.ttfb_us.is_empty());
    }

    #[test]
    fn garbage_bytes_are_an_error_naming_the_histogram() {
        let err = Tally::default()
            .add_interval(&pb::IntervalResult {
                connect_latency_hist: b"not a histogram".to_vec(),
                ..Default::default()
            })
            .unwrap_err();
        assert!(err.to_string().contains("connect latency"), "{err}");
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
        a.add_interval(&interval(0, "EADDRNOTAVAIL")).unwrap();
        a.add_interval(&interval(3, "EADDRNOTAVAIL")).unwrap();
        let mut b = Tally::default();
        b.add_final(&pb::FinalResult {
            ghost_syn_retransmits: [(3, 5)].into(),
            errors: [("ENETUNREACH".to_owned(), 1)].into(),
            ..Default::default()
        })
        .unwrap();
        a.merge(&b);
        assert_eq!(a.ghost_syn_retransmits, [(0, 2), (3, 7)].into());
        assert_eq!(a.pending_syn_retransmits, [(3, 2)].into());
        assert_eq!(
            a.errors,
            [
                ("EADDRNOTAVAIL".to_owned(), 8),
                ("ENETUNREACH".to_owned(), 1)
            ]
            .into()
        );
    }
}
