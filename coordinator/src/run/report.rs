//! The run's report: every agent's final result (or, for a lost agent, the intervals it
//! delivered) merged exactly into one [`Report`], with per-agent rows, start spread and
//! issue duration, and the target's stats when they could be read. An agent that stalled
//! (attempts skipped overdue or issued late) or cut its run short says why, and makes the
//! run partial.

use std::collections::BTreeMap;

use stampede_proto::clock::rfc3339;
use stampede_proto::pb;

use super::agents::AgentState;
use super::{Finished, RunError, RunPlan};
use stampede_proto::tally::Tally;
use stampede_proto::target::TargetStats;

use crate::report::hlog::LogFile;
use crate::report::{AgentReport, Latency, Report};

/// Merges the agents' data into the report: a finished agent counts with its final result,
/// a lost one with the intervals it delivered; `lost` and `aborted` make it partial.
pub(super) fn build_report(
    run_id: String,
    start_at: i64,
    plan: &RunPlan,
    states: BTreeMap<String, AgentState>,
    mut lost: BTreeMap<String, String>,
    aborted: bool,
    target: Option<pb::TargetStats>,
) -> Result<Finished, RunError> {
    let mut merged = Tally::default();
    let mut agents = Vec::with_capacity(states.len());
    let mut results = BTreeMap::new();
    let mut delivered = BTreeMap::new();
    let mut first_connects = Vec::new();
    let mut issue_ends = Vec::new();
    let mut kernel = None;
    let mut cut_reasons = BTreeMap::new();
    let (mut skipped_overdue, mut issued_late) = (0, 0);
    for (id, st) in states {
        // A finished agent's final result is authoritative; a lost one counts with the
        // intervals it delivered (it loses at most the interval in flight).
        let mut tally = Tally::default();
        let added = match &st.result {
            Some(r) => tally.add_wire(r).map_err(|e| e.to_string()),
            None => match st.intervals.as_ref().unwrap_or(&Ok(Vec::new())) {
                Ok(sum) => (sum.iter())
                    .try_for_each(|r| tally.add_wire(r))
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.clone()),
            },
        };
        // One agent's unusable data (a bug, version skew) costs that agent, not the run.
        let (usable, tally) = match added {
            Ok(()) => (true, tally),
            Err(e) => {
                tracing::warn!(agent = %id, cause = %e, "agent data dropped");
                // Beside why it was lost, if it was: both are the reader's business.
                let why = format!("its results could not be merged: {e}");
                match lost.get_mut(&id) {
                    Some(was) => *was = format!("{was}; {why}"),
                    None => {
                        lost.insert(id.clone(), why);
                    }
                }
                (false, Tally::default())
            }
        };
        match st.result.as_ref().filter(|_| usable) {
            Some(r) => {
                results.insert(id.clone(), r.clone());
            }
            // A lost agent's sum, as the spool gave it (it was added above, so it adds).
            None if usable => {
                if let Some(Ok(sum)) = &st.intervals {
                    delivered.insert(id.clone(), sum.clone());
                }
            }
            None => {}
        }
        merged
            .merge(&tally)
            .expect("every tally has the layout of histogram::new_latency");
        let attempts = tally.attempts();
        let outcomes = tally.outcomes;
        let connect_latency_us = Latency::from(&tally.connect_latency);
        let errors = tally.errors.clone();
        // Dropped here: a fleet's decoded tallies would not fit the coordinator's memory.
        drop(tally);
        let mut a = AgentReport {
            id: id.clone(),
            host: st.host,
            connections: st.connections,
            attempts,
            clock_offset_us: st.clock_offset_ns / 1_000,
            clock_uncertainty_us: st.clock_rtt_ns / 2_000,
            outcomes,
            connect_latency_us,
            errors,
            complete: usable && st.result.as_ref().is_some_and(|r| !r.cancelled),
            ..Default::default()
        };
        if let Some(r) = &st.result {
            if r.first_connect_unix_nanos != 0 {
                let first = r.first_connect_unix_nanos + st.clock_offset_ns;
                a.start_error_us = Some((first - start_at) / 1_000);
                a.issue_duration_us = Some(r.issue_duration_us);
                first_connects.push(first);
                issue_ends.push(first + r.issue_duration_us as i64 * 1_000);
            }
            a.kernel = r.kernel.as_ref().map(Into::into).unwrap_or_default();
            a.unfinished = r.unfinished;
            a.skipped_overdue = r.skipped_overdue;
            a.issued_late = r.issued_late;
            if !r.cut_reason.is_empty() {
                a.cut_reason = Some(r.cut_reason.clone());
                cut_reasons.insert(id.clone(), r.cut_reason.clone());
            }
            skipped_overdue += r.skipped_overdue;
            issued_late += r.issued_late;
            kernel.get_or_insert_with(|| a.kernel.clone());
        }
        agents.push(a);
    }
    let spread = match (first_connects.iter().min(), first_connects.iter().max()) {
        (Some(lo), Some(hi)) => Some(((hi - lo) / 1_000) as u64),
        _ => None,
    };
    let issue = match (first_connects.iter().min(), issue_ends.iter().max()) {
        (Some(lo), Some(hi)) => Some(((hi - lo).max(0) / 1_000) as u64),
        _ => None,
    };
    let report = Report {
        run_id,
        started_at: rfc3339(start_at),
        scenario: plan.scenario.clone(),
        // A stall (attempts skipped or issued late) or a run cut short makes it partial.
        partial: aborted
            || !lost.is_empty()
            || !cut_reasons.is_empty()
            || skipped_overdue > 0
            || issued_late > 0,
        aborted,
        lost_agents: lost.keys().cloned().collect(),
        lost_reasons: lost,
        cut_reasons,
        skipped_overdue,
        issued_late,
        agents,
        admission: plan.load.admission(),
        outcomes: merged.outcomes,
        syn_retransmits: merged.syn_retransmits.clone(),
        ghost_syn_retransmits: merged.ghost_syn_retransmits.clone(),
        pending_syn_retransmits: merged.pending_syn_retransmits.clone(),
        errors: merged.errors.clone(),
        connect_latency_us: Latency::from(&merged.connect_latency),
        ttfb_us: Latency::from(&merged.ttfb),
        start_spread_us: spread,
        issue_duration_us: issue,
        kernel: kernel.unwrap_or_default(),
        target_error: None,
        target_reset_before_start_us: None,
        target: target.as_ref().map(TargetStats::from),
        // Judged by the command once the run is done (`crate::threshold`).
        thresholds: Vec::new(),
        // Told by `Run::finish`, once the target's error is known too.
        verdict: String::new(),
        issue_lag_us: Latency::from(&merged.issue_lag),
        // Stated by `Run::finish`, which knows what the run chose.
        pacing: None,
    };
    Ok(Finished {
        report,
        merged,
        results,
        delivered,
        start_at_unix_nanos: start_at,
        hlog: LogFile::None,
    })
}

#[cfg(test)]
mod lost_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::tests::plan_for_tests;

    /// The report of agents of 5 connections each that sent these final results.
    fn report_of<const N: usize>(results: [(&str, pb::FinalResult); N]) -> Finished {
        let states = results
            .into_iter()
            .map(|(id, r)| {
                let st = AgentState {
                    connections: 5,
                    result: Some(r),
                    ..Default::default()
                };
                (id.to_owned(), st)
            })
            .collect();
        build_report(
            "r".into(),
            0,
            &plan_for_tests(),
            states,
            BTreeMap::new(),
            false,
            None,
        )
        .unwrap()
    }

    /// An agent whose histogram cannot be decoded is named lost; the others still report.
    #[test]
    fn unusable_agent_data_costs_that_agent_only() {
        let good = pb::FinalResult {
            outcomes: Some(pb::Outcomes {
                established: 5,
                ..Default::default()
            }),
            connections: 5,
            ..Default::default()
        };
        let bad = pb::FinalResult {
            connect_latency_hist: b"garbage".to_vec(),
            ..good.clone()
        };
        let done = report_of([("a", good), ("b", bad)]);
        let r = &done.report;
        assert!(r.partial);
        assert_eq!(r.lost_agents, vec!["b".to_owned()]);
        assert!(r.lost_reasons["b"].contains("could not be merged"), "{r:?}");
        assert_eq!(r.outcomes.established, 5);
        assert!(r.agents.iter().find(|a| a.id == "a").unwrap().complete);
        assert!(!r.agents.iter().find(|a| a.id == "b").unwrap().complete);
    }

    /// An agent that stalled says so: its counts and reason per agent and in total, and
    /// the run is partial although nobody was lost.
    #[test]
    fn a_stalled_agent_makes_the_run_partial_and_says_why() {
        let on_time = pb::FinalResult {
            outcomes: Some(pb::Outcomes {
                established: 5,
                ..Default::default()
            }),
            connections: 5,
            ..Default::default()
        };
        let stalled = pb::FinalResult {
            outcomes: Some(pb::Outcomes {
                established: 2,
                ..Default::default()
            }),
            skipped_overdue: 3,
            issued_late: 1,
            cut_reason: "the agent stalled".into(),
            ..on_time.clone()
        };
        let done = report_of([("a", on_time), ("b", stalled)]);
        let r = &done.report;
        assert!(r.partial, "{r:?}");
        assert!(r.lost_agents.is_empty());
        assert_eq!((r.skipped_overdue, r.issued_late), (3, 1));
        assert_eq!(r.cut_reasons["b"], "the agent stalled");
        assert!(!r.cut_reasons.contains_key("a"));
        let b = r.agents.iter().find(|a| a.id == "b").unwrap();
        assert_eq!((b.skipped_overdue, b.issued_late), (3, 1));
        assert_eq!(b.cut_reason.as_deref(), Some("the agent stalled"));
        let json = serde_json::to_value(r).unwrap();
        assert_eq!(json["skipped_overdue"], 3);
        assert_eq!(json["cut_reasons"]["b"], "the agent stalled");
        assert!(
            r.summary().contains("3 attempts skipped overdue"),
            "{}",
            r.summary()
        );
    }
}
