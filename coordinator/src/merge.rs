//! Exact merging of agent results: counts add, histograms add bucket by bucket
//! (`Histogram::add`), so the merged percentiles are those of the union of every agent's
//! samples. Percentiles are never averaged.

use std::collections::BTreeMap;

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

impl Tally {
    /// Adds counts and encoded histograms.
    pub fn add_parts(
        &mut self,
        outcomes: Option<&pb::Outcomes>,
        syn_retransmits: &std::collections::HashMap<u32, u64>,
        connect: &[u8],
        ttfb: &[u8],
    ) -> Result<(), MergeError> {
        add_hist(&mut self.connect_us, connect, "connect latency")?;
        add_hist(&mut self.ttfb_us, ttfb, "time to first byte")?;
        if let Some(o) = outcomes {
            self.outcomes.add(&o.into());
        }
        for (k, n) in syn_retransmits {
            *self.syn_retransmits.entry(*k).or_default() += n;
        }
        Ok(())
    }

    /// Adds one interval's deltas.
    pub fn add_interval(&mut self, r: &pb::IntervalResult) -> Result<(), MergeError> {
        self.add_parts(
            r.outcomes.as_ref(),
            &r.syn_retransmits,
            &r.connect_latency_hist,
            &r.ttfb_hist,
        )
    }

    /// Adds an agent's whole result.
    pub fn add_final(&mut self, r: &pb::FinalResult) -> Result<(), MergeError> {
        self.add_parts(
            r.outcomes.as_ref(),
            &r.syn_retransmits,
            &r.connect_latency_hist,
            &r.ttfb_hist,
        )
    }

    /// Adds another tally.
    pub fn merge(&mut self, other: &Tally) {
        self.outcomes.add(&other.outcomes);
        for (k, n) in &other.syn_retransmits {
            *self.syn_retransmits.entry(*k).or_default() += n;
        }
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
            agent_tally
                .add_parts(Some(&outcomes), &k, &encode(&h), &[])
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
            .add_parts(None, &Default::default(), b"not a histogram", &[])
            .unwrap_err();
        assert!(err.to_string().contains("connect latency"), "{err}");
    }
}
