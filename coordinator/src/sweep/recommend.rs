//! The recommendation of a sweep: at one accept rate, the smallest clean backlog (no
//! ListenOverflows, every attempt established at once, connect p99 and accept wait p99 under
//! their bounds: [`super::clean`]) and the somaxconn it needs, standing only if every
//! `--confirm` rerun of it was clean too; set beside the queue model ([`super::model`]): a
//! burst of M connects with `a` accepts completing during it needs a backlog of at least
//! M − a − 1 (docs/kernel.md §6).

use stampede_proto::duration::human_us;

use super::{AcceptRate, Criteria, Phase, Recommendation, Step, SweepPlan};

/// Steps at `rate` of the search (coarse and refine), smallest backlog first.
fn searched(steps: &[Step], rate: Option<AcceptRate>) -> Vec<&Step> {
    let mut at: Vec<&Step> = steps
        .iter()
        .filter(|s| s.accept_rate == rate && s.phase != Phase::Confirm)
        .collect();
    at.sort_by_key(|s| s.backlog);
    at
}

/// The last unclean backlog below the first clean one, and that clean one, at `rate`.
pub(super) fn bracket(steps: &[Step], rate: Option<AcceptRate>) -> Option<[i32; 2]> {
    let at = searched(steps, rate);
    let clean = at.iter().find(|s| s.clean)?;
    let below = at
        .iter()
        .filter(|s| !s.clean && s.backlog < clean.backlog)
        .map(|s| s.backlog)
        .max()?;
    Some([below, clean.backlog])
}

/// The smallest clean backlog at one accept rate, beside the queue model.
pub(super) fn recommend(
    plan: &SweepPlan,
    rate: Option<AcceptRate>,
    steps: &[Step],
) -> Recommendation {
    let at = searched(steps, rate);
    let m = plan.run.load.connections;
    let clean = at.iter().find(|s| s.clean).copied();
    // The model as in the recommended step, else the median over the rate's steps.
    let model_step = clean.or_else(|| {
        let mut by_model = at.clone();
        by_model.sort_by_key(|s| s.model_backlog);
        by_model.get(by_model.len() / 2).copied()
    });
    let mut rec = Recommendation {
        accept_rate: rate,
        backlog: None,
        somaxconn: None,
        model_backlog: model_step.map_or(m.saturating_sub(1), |s| s.model_backlog),
        reason: String::new(),
        model_source: model_step.map_or_else(|| "worst case".into(), |s| s.model_source.clone()),
        model_accepted_during_burst: model_step.and_then(|s| s.accepted_during_burst),
        measured_queue_peak: None,
        connect_p99_us: None,
        accept_wait_p99_us: None,
        bracket: bracket(steps, rate),
        confirmations: 0,
        confirmations_clean: 0,
        criteria: Criteria::of(plan),
        target_kind: None,
    };
    let Some(s) = clean else {
        rec.reason = super::diagnosis::no_clean_reason(&at, m, rate, plan, rec.model_backlog);
        return rec;
    };
    let confirms: Vec<&Step> = steps
        .iter()
        .filter(|c| c.accept_rate == rate && c.phase == Phase::Confirm && c.backlog == s.backlog)
        .collect();
    // Every confirmation run counts, not only each confirmation step's median (--repeat).
    rec.confirmations = confirms.iter().map(|c| c.runs.max(1)).sum();
    rec.confirmations_clean = confirms
        .iter()
        .map(|c| {
            if c.runs == 0 {
                u32::from(c.clean)
            } else {
                c.clean_runs
            }
        })
        .sum();
    rec.measured_queue_peak = Some(s.accept_queue_max);
    rec.connect_p99_us = Some(s.connect_latency_us.p99);
    rec.accept_wait_p99_us = (s.ttfb_us.count > 0).then_some(s.ttfb_us.p99);
    if rec.confirmations_clean < rec.confirmations {
        let why = confirms
            .iter()
            .find_map(|c| c.unclean.clone())
            .unwrap_or_default();
        rec.reason = format!(
            "backlog {} was clean once, but only {} of {} confirmation runs were ({why}): \
             the result is noisy here; try --repeat, or a larger backlog",
            s.backlog, rec.confirmations_clean, rec.confirmations
        );
        return rec;
    }
    let capped = (s.backlog_effective as i64) < i64::from(s.backlog);
    rec.backlog = Some(s.backlog);
    rec.somaxconn = Some(s.backlog);
    rec.reason = format!(
        "backlog {} absorbed {m} connects with no overflow, every attempt established at \
         once, connect p99 {}{}{}; set net.core.somaxconn >= {} in the server's namespace \
         before it calls listen(){}",
        s.backlog,
        human_us(s.connect_latency_us.p99),
        rec.accept_wait_p99_us.map_or_else(String::new, |w| format!(
            " and accept wait p99 {}",
            human_us(w)
        )),
        if rec.confirmations > 0 {
            format!(", clean in all {} confirmation runs", rec.confirmations)
        } else {
            String::new()
        },
        s.backlog,
        if capped {
            format!(
                " (here somaxconn {} capped it to {}: raise it)",
                s.somaxconn, s.backlog_effective
            )
        } else {
            String::new()
        }
    );
    rec
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::report::{Latency, Outcomes};

    /// A step at 100/s with the given figures (100 connections).
    pub(crate) fn step(backlog: i32, overflows: u64, p99: u64, established: u64) -> Step {
        Step {
            backlog,
            accept_rate: Some(AcceptRate(100.0)),
            backlog_effective: backlog as u32,
            somaxconn: 4096,
            outcomes: Outcomes {
                established,
                syn_retransmitted: 100 - established,
                ..Default::default()
            },
            connect_latency_us: Latency {
                p99,
                ..Default::default()
            },
            ttfb_us: Latency::default(),
            listen_overflows: overflows,
            syncookies_sent: 0,
            accept_queue_max: 0,
            accepted: 100,
            partial: false,
            issue_duration_us: Some(200_000),
            thresholds_passed: None,
            phase: Phase::Coarse,
            // As `clean::judge` would have it for these figures (its own tests check it).
            clean: overflows == 0 && established == 100 && p99 < 100_000,
            unclean: (overflows > 0 || established < 100 || p99 >= 100_000)
                .then(|| "unclean".to_owned()),
            runs: 1,
            clean_runs: u32::from(overflows == 0 && established == 100 && p99 < 100_000),
            run_ids: Vec::new(),
            // 100 connects, 100/s × 0.2 s = 20 accepted during the burst: 100 − 20 − 1.
            accepted_during_burst: Some(20),
            model_backlog: 79,
            model_source: "rate".into(),
            server_pid: None,
            repeat_reports: Vec::new(),
        }
    }

    /// A sweep of 100 connections per step, p99 threshold 100 ms.
    pub(crate) fn plan() -> SweepPlan {
        SweepPlan {
            run: {
                let mut run = crate::run::tests::plan_for_tests();
                run.load.connections = 100;
                run
            },
            accept_rates: vec![100.0],
            ..SweepPlan::new(crate::run::tests::plan_for_tests(), vec![8, 64, 128])
        }
    }

    #[test]
    fn smallest_clean_backlog_wins_and_the_model_counts_accepts() {
        let steps = [
            step(8, 50, 1_020_000, 60),
            step(64, 0, 900, 100),
            step(128, 0, 800, 100),
        ];
        let r = recommend(&plan(), Some(AcceptRate(100.0)), &steps);
        assert_eq!(r.backlog, Some(64));
        assert_eq!(r.somaxconn, Some(64));
        assert_eq!(r.model_backlog, 79);
        assert_eq!(r.measured_queue_peak, Some(0));
        assert_eq!(r.bracket, Some([8, 64]));
        assert!(r.reason.contains("somaxconn >= 64"), "{}", r.reason);
    }

    /// Refine steps count in the search wherever they were run; a confirmation that was not
    /// clean withdraws the recommendation.
    #[test]
    fn refined_steps_count_and_confirmations_must_all_be_clean() {
        let mut refined = step(40, 0, 900, 100);
        refined.phase = Phase::Refine;
        let mut steps = vec![step(8, 50, 1_020_000, 60), step(64, 0, 900, 100), refined];
        let r = recommend(&plan(), Some(AcceptRate(100.0)), &steps);
        assert_eq!((r.backlog, r.bracket), (Some(40), Some([8, 40])));
        let mut confirm = step(40, 0, 900, 100);
        confirm.phase = Phase::Confirm;
        steps.push(confirm.clone());
        let r = recommend(&plan(), Some(AcceptRate(100.0)), &steps);
        assert_eq!(
            (r.backlog, r.confirmations, r.confirmations_clean),
            (Some(40), 1, 1)
        );
        assert!(
            r.reason.contains("clean in all 1 confirmation runs"),
            "{}",
            r.reason
        );
        let mut bad = step(40, 3, 900, 97);
        bad.phase = Phase::Confirm;
        bad.unclean = Some("3 overflows".into());
        steps.push(bad);
        let r = recommend(&plan(), Some(AcceptRate(100.0)), &steps);
        assert_eq!(r.backlog, None);
        assert_eq!((r.confirmations, r.confirmations_clean), (2, 1));
        assert!(
            r.reason
                .contains("only 1 of 2 confirmation runs were (3 overflows)"),
            "{}",
            r.reason
        );
        // With --repeat, every confirmation run counts, not its step's median: a step whose
        // median run was clean but one of three was not withdraws the recommendation too.
        steps.pop();
        let mut mostly = step(40, 0, 900, 100);
        mostly.phase = Phase::Confirm;
        (mostly.runs, mostly.clean_runs) = (3, 2);
        steps.push(mostly);
        let r = recommend(&plan(), Some(AcceptRate(100.0)), &steps);
        assert_eq!(r.backlog, None);
        assert_eq!((r.confirmations, r.confirmations_clean), (4, 3));
    }

    #[test]
    fn no_clean_step_means_no_recommendation() {
        let steps = [step(8, 50, 1_020_000, 60), step(64, 1, 900, 99)];
        let r = recommend(&plan(), Some(AcceptRate(100.0)), &steps);
        assert_eq!(r.backlog, None);
        // The wording per cause: diagnosis.rs's tests.
        assert!(r.reason.contains("try larger backlogs"), "{}", r.reason);
        assert!(
            r.reason.contains(&r.model_backlog.to_string()),
            "{}",
            r.reason
        );
    }
}
