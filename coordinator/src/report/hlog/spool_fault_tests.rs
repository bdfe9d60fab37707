//! The interval spool when one agent's data is unusable or a file fails: what one agent
//! sends costs that agent alone, never every lost agent's intervals.

use std::collections::BTreeSet;

use stampede_proto::outcome::Outcome;
use stampede_proto::pb;
use stampede_proto::tally::{CarriesTally as _, MAX_COMPLETION_ENTRIES, Tally};

use super::spool::Spool;
use super::spool_tests::{added, dir, expected, interval};
use super::tests::closed;
use super::{HlogTo, IntervalLog};

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

/// Interval `i` of an agent whose intervals each complete attempts under other retransmit
/// counts: two completion-time entries each, `i` and `i + 1000`.
fn retransmitting(i: u32) -> pb::IntervalResult {
    let mut t = Tally::default();
    for k in [i, i + 1000] {
        let o = Outcome::SynRetransmitted { k };
        t.record(o);
        t.record_completion(o, u64::from(1 + i) * 1000);
        t.connect_latency.record(u64::from(5 + k)).unwrap();
    }
    let mut r = pb::IntervalResult::default();
    r.set_wire_tally(t.to_wire().unwrap());
    r
}

/// A sum may hold more completion-time entries than one result may carry (each interval
/// within the limit, their union past it): it comes back as results that each decode and
/// add up to every interval added, whether compacted mid-run or summed when read.
#[test]
fn a_sum_past_the_completion_entry_limit_still_counts() {
    let d = dir("entries");
    let intervals = 3 * MAX_COMPLETION_ENTRIES as u32 / 2;
    let mut want = Tally::default();
    for i in 0..intervals {
        want.add_wire(&retransmitting(i)).unwrap();
    }
    assert!(want.completion_times.len() > 2 * MAX_COMPLETION_ENTRIES);
    for threshold in [1 << 30, 2 << 10] {
        let mut spool = Spool::create(d.join(format!("intervals-{threshold}")), threshold);
        for i in 0..intervals {
            spool.append("a", &retransmitting(i));
        }
        if threshold < 1 << 20 {
            assert!(spool.size().1 > 1, "compacted more than once");
        }
        let back = spool.read(&BTreeSet::from(["a".to_owned()])).unwrap();
        let sum = back["a"].as_ref().expect("the sum is usable");
        assert!(sum.len() >= 3, "{} results", sum.len());
        assert_eq!(added(sum).unwrap(), want, "every entry, count and bucket");
    }
    std::fs::remove_dir_all(&d).unwrap();
}

/// A run killed with its files on disk (here: its log forgotten, as SIGKILL leaves it) is
/// not in the way of a later run with the same `--out` in a process of the same pid (a
/// container's PID 1): the later run still counts its lost agents.
#[test]
fn a_killed_runs_spool_is_not_in_a_later_runs_way() {
    let d = dir("killed");
    let out = d.join("report.hlog");
    let mut killed = IntervalLog::new(HlogTo::File(out.clone()));
    killed.begin("run-1", 0, ["a".to_owned()]);
    killed.add("a", interval(0, 0));
    killed.written();
    let left = std::fs::read_dir(&d).unwrap().count();
    assert!(
        left >= 2,
        "the killed run's spool and log are on disk: {left}"
    );
    // Its thread waits forever on a channel nobody closes; the files stay.
    std::mem::forget(killed);
    let mut later = IntervalLog::new(HlogTo::File(out));
    later.begin("run-2", 0, ["a".to_owned(), "b".to_owned()]);
    for seq in 0..3 {
        later.add("a", interval(0, seq));
    }
    let delivered = closed(later, &["a"]).delivered.expect("its own spool");
    assert_eq!(
        added(delivered["a"].as_ref().unwrap()).unwrap(),
        expected(0, 0..3)
    );
    std::fs::remove_dir_all(&d).unwrap();
}

/// An idle agent's seconds (no count, no sample, histograms encoded empty) are not spooled:
/// an idle fleet never fills the spool, and its sum is the same. One that only looks idle
/// (a histogram that cannot be decoded) still is, and still costs its agent.
#[test]
fn idle_seconds_are_not_spooled() {
    let d = dir("idle");
    let mut idle = pb::IntervalResult::default();
    idle.set_wire_tally(Tally::default().to_wire().unwrap());
    assert!(
        !idle.connect_latency_hist.is_empty(),
        "encoded, not left out"
    );
    let mut spool = Spool::create(d.join("intervals"), 1 << 30);
    for seq in 0..100 {
        spool.append("idle", &idle);
        spool.append("busy", &interval(0, seq));
        if seq % 10 == 0 {
            spool.append("busy", &idle);
        }
    }
    let before = spool.size().0;
    for _ in 0..1_000 {
        spool.append("idle", &idle);
    }
    assert_eq!(spool.size().0, before, "nothing appended for idle seconds");
    let bad = pb::IntervalResult {
        connect_latency_hist: vec![7; 40],
        ..Default::default()
    };
    spool.append("idle", &bad);
    let all = BTreeSet::from(["idle".to_owned(), "busy".to_owned()]);
    let back = spool.read(&all).unwrap();
    assert_eq!(
        added(back["busy"].as_ref().unwrap()).unwrap(),
        expected(0, 0..100)
    );
    let e = back["idle"].as_ref().unwrap_err();
    assert!(e.contains("connect latency"), "{e}");
    std::fs::remove_dir_all(&d).unwrap();
}
