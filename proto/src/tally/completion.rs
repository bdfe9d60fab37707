//! Completion times by outcome class (and k for `syn_retransmitted`): when each attempt's
//! connect() completed, µs after the start instant, the data behind report.html's
//! completions-over-time chart. Recorded beside [`Tally::record`], carried as
//! `CompletionTimes` entries of `IntervalResult` and `FinalResult`, checked on the way in and
//! merged exactly like every histogram of a tally.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;

use super::{MergeError, Tally, add_hist};
use crate::histogram::{self, HistogramError};
use crate::outcome::{Outcome, OutcomeClass};
use crate::pb;

/// The most (class, k) entries one message may carry: 8 classes and retransmit counts far
/// beyond any kernel's `tcp_syn_retries` (at most 255, in practice under 10).
pub const MAX_COMPLETION_ENTRIES: usize = 64;

impl Tally {
    /// Records when an attempt with `outcome` completed, `t_us` after the start instant
    /// (call it beside [`Tally::record`]).
    pub fn record_completion(&mut self, outcome: Outcome, t_us: u64) {
        let k = match outcome {
            Outcome::SynRetransmitted { k } => k,
            _ => 0,
        };
        self.completion_times
            .entry((outcome.class(), k))
            .or_insert_with(histogram::new_latency)
            .saturating_record(t_us);
    }
}

/// Adds completion-time histograms by key (exact, like every histogram here).
pub(super) fn add_completion_times(
    into: &mut BTreeMap<(OutcomeClass, u32), Histogram<u64>>,
    from: &BTreeMap<(OutcomeClass, u32), Histogram<u64>>,
) -> Result<(), HistogramError> {
    for (key, h) in from {
        let slot = into.entry(*key).or_insert_with(histogram::new_latency);
        histogram::merge(slot, h)?;
    }
    Ok(())
}

/// The completion times a message carries, checked: known classes, k only for
/// `syn_retransmitted`, each (class, k) once, at most [`MAX_COMPLETION_ENTRIES`].
pub(super) fn decode_completion_times(
    entries: &[pb::CompletionTimes],
) -> Result<BTreeMap<(OutcomeClass, u32), Histogram<u64>>, MergeError> {
    let bad = |why: String| MergeError::CompletionTimes(why);
    if entries.len() > MAX_COMPLETION_ENTRIES {
        return Err(bad(format!(
            "{} entries, at most {MAX_COMPLETION_ENTRIES}",
            entries.len()
        )));
    }
    let mut out = BTreeMap::new();
    for e in entries {
        let class = OutcomeClass::ALL
            .into_iter()
            .find(|c| c.name() == e.class)
            .ok_or_else(|| bad(format!("unknown class {:?}", e.class)))?;
        if e.k != 0 && class != OutcomeClass::SynRetransmitted {
            return Err(bad(format!("k={} for {}", e.k, e.class)));
        }
        let mut h = histogram::new_latency();
        add_hist(&mut h, &e.hist, "completion time")?;
        if out.insert((class, e.k), h).is_some() {
            return Err(bad(format!("{} k={} twice", e.class, e.k)));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tally::CarriesTally;

    /// Completion times travel by class and k, merge exactly across messages, and a message
    /// with an unknown class, a k on a class without one or a repeated key adds nothing.
    #[test]
    fn completion_times_travel_and_merge_by_class_and_k() {
        let mut a = Tally::default();
        a.record_completion(Outcome::Established, 300);
        a.record_completion(Outcome::SynRetransmitted { k: 1 }, 1_030_000);
        a.record_completion(Outcome::Ghost { k: 1 }, 1_031_000);
        let mut msg = pb::IntervalResult::default();
        msg.set_wire_tally(a.to_wire().unwrap());
        assert_eq!(msg.completion_times.len(), 3);
        let mut t = Tally::default();
        t.add_wire(&msg).unwrap();
        t.add_wire(&msg).unwrap();
        assert_eq!(t.completion_times.len(), 3);
        let k1 = &t.completion_times[&(OutcomeClass::SynRetransmitted, 1)];
        assert_eq!(k1.len(), 2);
        assert!(k1.equivalent(k1.max(), 1_030_000));
        // Ghosts keep no k here: their class is what the chart shows.
        assert_eq!(t.completion_times[&(OutcomeClass::Ghost, 0)].len(), 2);
        let mut merged = Tally::default();
        merged.merge(&t).unwrap();
        merged.merge(&a).unwrap();
        assert_eq!(
            merged.completion_times[&(OutcomeClass::Established, 0)].len(),
            3
        );
        let entry = |class: &str, k| pb::CompletionTimes {
            class: class.to_owned(),
            k,
            hist: Vec::new(),
        };
        for bad in [
            vec![entry("winning", 0)],
            vec![entry("ghost", 2)],
            vec![entry("established", 0), entry("established", 0)],
            vec![entry("established", 0); MAX_COMPLETION_ENTRIES + 1],
        ] {
            let before = t.clone();
            let err = t
                .add_wire(&pb::FinalResult {
                    completion_times: bad,
                    ..Default::default()
                })
                .unwrap_err();
            assert!(err.to_string().contains("completion times"), "{err}");
            assert_eq!(t, before);
        }
    }
}
