//! The interval spool when one agent's data is unusable or a file fails: what one agent
//! sends costs that agent alone, never every lost agent's intervals.

use std::collections::BTreeSet;

use stampede_proto::pb;
use stampede_proto::tally::{CarriesTally as _, Tally};

use super::spool::Spool;
use super::spool_tests::{added, dir, expected, interval};

/// A valid interval whose connect latency bucket at 100 µs holds `i64::MAX` samples: it
/// encodes, but two of them sum (`Histogram::add` saturates in u64) past what the
/// histogram format can hold.
fn huge() -> pb::IntervalResult {
    let mut t = Tally::default();
    t.connect_latency.record_n(100, i64::MAX as u64).unwrap();
    let mut r = pb::IntervalResult::default();
    r.set_wire_tally(t.to_wire().expect("one such interval encodes"));
    r
}

/// An agent whose sum cannot be encoded is unusable, with that cause, whether its sum is
/// made by a compaction mid-run or when the spool is read; every other agent still comes
/// back exact, and the spool goes on.
#[test]
fn a_sum_that_cannot_be_encoded_costs_its_agent_alone() {
    let r = huge();
    assert!(Tally::from_wire(&r).is_ok(), "each interval is valid");
    let d = dir("huge");
    // 1 << 30: never compacted, the sums are made by `read`; 4 KiB: made by compactions.
    for threshold in [1 << 30, 4 << 10] {
        let path = d.join(format!("intervals-{threshold}"));
        let mut spool = Spool::create(path, threshold);
        spool.append("big", &r);
        spool.append("big", &r);
        for seq in 0..150 {
            spool.append("good", &interval(0, seq));
            spool.append("big", &interval(1, seq));
        }
        if threshold < 1 << 20 {
            assert!(spool.size().1 > 0, "compacted");
        }
        let all = BTreeSet::from(["big".to_owned(), "good".to_owned()]);
        let back = spool
            .read(&all)
            .expect("one agent's data never fails the spool");
        let good = back["good"].as_ref().expect("another agent is unaffected");
        assert_eq!(added(good).unwrap(), expected(0, 0..150));
        let e = back["big"].as_ref().unwrap_err();
        assert!(e.contains("cannot be encoded"), "{e}");
    }
    std::fs::remove_dir_all(&d).unwrap();
}
