//! The summary and verdict of a run aborted (Ctrl-C) while its attempts were still
//! undecided: the audit's case, 50 connects to a target that never accepts, waiting for a
//! greeting when the coordinator was interrupted. What was delivered is counted (50
//! connected, 50 unfinished), nothing claims the agents could not reach the target, the
//! verdict does not point "below" (it is the last paragraph), and the reason is said once.

use stampede::report::{Admission, AgentReport, Latency, Report};

fn aborted_run() -> Report {
    let connect = Latency {
        count: 50,
        p50: 470,
        p99: 637,
        max: 637,
        ..Latency::default()
    };
    Report {
        run_id: "18ec035ea23f88b6".into(),
        aborted: true,
        partial: true,
        admission: Admission::Greeting,
        scenario: serde_json::json!({"pattern": "burst", "timeout": "10s"}),
        agents: vec![AgentReport {
            id: "load-1".into(),
            connections: 50,
            connect_latency_us: connect,
            unfinished: 50,
            ..AgentReport::default()
        }],
        cut_reasons: [(
            "load-1".to_owned(),
            "aborted by the coordinator: interrupted".to_owned(),
        )]
        .into(),
        connect_latency_us: connect,
        ..Report::default()
    }
}

#[test]
fn an_aborted_run_counts_what_was_delivered() {
    let r = aborted_run();
    let summary = r.summary();
    assert!(
        summary.contains(
            "attempts 50: 0 decided, 50 unfinished (cut short before their outcome was known):"
        ),
        "{summary}"
    );
    assert!(!summary.contains("attempts 0:"), "{summary}");
    let v = stampede::report::story::verdict(&r);
    assert!(
        v.starts_with(
            "The run was aborted before it finished: 50 attempts were still undecided then, \
             all 50 of them connected; they are counted as unfinished, not as any outcome."
        ),
        "{v}"
    );
    assert!(v.contains("No attempt was decided before the abort"), "{v}");
    for wrong in ["below", "could reach the target", "No attempt completed"] {
        assert!(!v.contains(wrong), "{wrong:?} in {v}");
    }
}

#[test]
fn an_aborted_run_with_nothing_undecided_says_so_once() {
    let mut r = aborted_run();
    r.agents[0].unfinished = 0;
    r.outcomes.established = 50;
    let v = stampede::report::story::verdict(&r);
    assert!(
        v.starts_with(
            "The run was aborted before it finished; every attempt issued by then was decided."
        ),
        "{v}"
    );
    assert!(r.summary().contains("attempts 50:\n"), "{}", r.summary());
}
