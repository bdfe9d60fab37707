//! Lost agents in the report: each counts with the sum the spool handed back (several
//! results that add up to it), or is dropped with the cause the spool gave, costing no other.

use std::collections::BTreeMap;

use stampede_proto::outcome::Outcome;
use stampede_proto::pb;
use stampede_proto::tally::{CarriesTally as _, MAX_COMPLETION_ENTRIES, Tally, WireTally};

use super::build_report;
use crate::run::agents::AgentState;
use crate::run::tests::plan_for_tests;

/// A lost agent's tally with more completion-time entries than one result carries, and the
/// results the spool would hand back for it: everything but the entries past the limit in
/// the first, those in the second.
fn lost_sum() -> (Tally, Vec<pb::IntervalResult>) {
    let mut t = Tally::default();
    for k in 0..(MAX_COMPLETION_ENTRIES as u32 + 10) {
        let o = Outcome::SynRetransmitted { k };
        t.record(o);
        t.record_completion(o, u64::from(k) * 10 + 1);
        t.connect_latency.record(u64::from(k) + 1).unwrap();
    }
    let mut wire = t.to_wire().unwrap();
    let rest = wire.completion_times.split_off(MAX_COMPLETION_ENTRIES);
    let (mut first, mut second) = Default::default();
    pb::IntervalResult::set_wire_tally(&mut first, wire);
    pb::IntervalResult::set_wire_tally(
        &mut second,
        WireTally {
            completion_times: rest,
            ..WireTally::default()
        },
    );
    (t, vec![first, second])
}

#[test]
fn lost_agents_count_with_their_sum_or_are_dropped_with_its_cause() {
    let finished = pb::FinalResult {
        outcomes: Some(pb::Outcomes {
            established: 5,
            ..Default::default()
        }),
        connections: 5,
        ..Default::default()
    };
    let (want, parts) = lost_sum();
    let states = BTreeMap::from([
        (
            "a".to_owned(),
            AgentState {
                connections: 5,
                result: Some(finished),
                ..Default::default()
            },
        ),
        (
            "b".to_owned(),
            AgentState {
                connections: 100,
                intervals: Some(Ok(parts)),
                ..Default::default()
            },
        ),
        (
            "c".to_owned(),
            AgentState {
                connections: 100,
                intervals: Some(Err("the sum of its intervals cannot be encoded".into())),
                ..Default::default()
            },
        ),
    ]);
    let lost = BTreeMap::from([
        ("b".to_owned(), "silent".to_owned()),
        ("c".to_owned(), "silent".to_owned()),
    ]);
    let done = build_report("r".into(), 0, &plan_for_tests(), states, lost, false, None).unwrap();
    let r = &done.report;
    assert_eq!(r.lost_agents, ["b", "c"]);
    assert_eq!(r.lost_reasons["b"], "silent");
    // Why it was lost stays, with why its intervals do not count.
    let c = &r.lost_reasons["c"];
    assert!(
        c.starts_with("silent; ")
            && c.contains("could not be merged: the sum of its intervals cannot be encoded"),
        "{c}"
    );
    assert_eq!(r.outcomes.established, 5);
    assert_eq!(r.outcomes.syn_retransmitted, want.outcomes.total());
    assert_eq!(done.tally("b"), want, "every entry of the sum");
    assert_eq!(done.tally("c"), Tally::default());
}
