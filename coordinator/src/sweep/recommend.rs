//! The recommendation of a sweep: at one accept rate, the smallest backlog that absorbed
//! the burst cleanly (no ListenOverflows, every attempt established at once, p99 under the
//! threshold) and the somaxconn it needs, set beside the queue model: a burst of M connects
//! with `a` accepts completing during it needs a backlog of at least M − a − 1 (docs/kernel.md §6).

use stampede_proto::duration::human_us;

use super::{Recommendation, Step, SweepPlan, rate_name};

/// The smallest clean backlog at one accept rate, beside the queue model.
pub(super) fn recommend(plan: &SweepPlan, rate: Option<f64>, steps: &[Step]) -> Recommendation {
    let p99_max = plan.p99_max.as_micros() as u64;
    let at_rate: Vec<&Step> = steps.iter().filter(|s| s.accept_rate == rate).collect();
    let m = plan.run.load.connections;
    // Accepts completing during the burst: rate × issue time (median over steps).
    let mut issue: Vec<u64> = at_rate.iter().filter_map(|s| s.issue_duration_us).collect();
    issue.sort_unstable();
    let a = match (rate, issue.get(issue.len() / 2)) {
        (Some(r), Some(us)) if r.is_finite() => (r * *us as f64 / 1e6).floor() as u64,
        _ => 0,
    };
    let model_backlog = m.saturating_sub(a).saturating_sub(1);
    let clean = at_rate.iter().find(|s| {
        !s.partial
            && s.listen_overflows == 0
            && s.connect_latency_us.p99 <= p99_max
            && s.outcomes.established == s.outcomes.total()
    });
    match clean {
        Some(s) => {
            let capped = (s.backlog_effective as i64) < i64::from(s.backlog);
            Recommendation {
                accept_rate: rate,
                backlog: Some(s.backlog),
                somaxconn: Some(s.backlog),
                model_backlog,
                reason: format!(
                    "backlog {} absorbed {m} connects with no overflow, every attempt established \
                     at once and p99 {}; set net.core.somaxconn >= {} in the server's namespace \
                     before it calls listen(){}",
                    s.backlog,
                    human_us(s.connect_latency_us.p99),
                    s.backlog,
                    if capped {
                        format!(
                            " (here somaxconn {} capped it to {}: raise it)",
                            s.somaxconn, s.backlog_effective
                        )
                    } else {
                        String::new()
                    }
                ),
            }
        }
        None => {
            // A step with no overflow had a big enough queue: what went wrong there (ghosts
            // by the greeting deadline, a slow p99) is the server's accept rate, and a larger
            // backlog would not help.
            let reason = match at_rate
                .iter()
                .find(|s| !s.partial && s.listen_overflows == 0)
            {
                Some(s) => format!(
                    "backlog {} had no overflow, yet {} of {m} were not served cleanly \
                     ({} ghost: no greeting by the deadline, p99 {}): the queue held them; \
                     the server's accept rate ({}), not the backlog, is the limit",
                    s.backlog,
                    s.outcomes.total() - s.outcomes.established,
                    s.outcomes.ghost,
                    human_us(s.connect_latency_us.p99),
                    rate_name(rate),
                ),
                None => format!(
                    "no backlog tried absorbed {m} connects cleanly (no overflow, all established \
                     at once, p99 <= {}); the queue model asks for a backlog of at \
                     least {model_backlog}: try larger backlogs",
                    human_us(p99_max)
                ),
            };
            Recommendation {
                accept_rate: rate,
                backlog: None,
                somaxconn: None,
                model_backlog,
                reason,
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::report::{Latency, Outcomes};
    use std::time::Duration;

    /// A step at 100/s with the given figures (100 connections).
    pub(crate) fn step(backlog: i32, overflows: u64, p99: u64, established: u64) -> Step {
        Step {
            backlog,
            accept_rate: Some(100.0),
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
            backlogs: vec![8, 64, 128],
            accept_rates: vec![100.0],
            p99_max: Duration::from_millis(100),
        }
    }

    #[test]
    fn smallest_clean_backlog_wins_and_the_model_counts_accepts() {
        let steps = [
            step(8, 50, 1_020_000, 60),
            step(64, 0, 900, 100),
            step(128, 0, 800, 100),
        ];
        let r = recommend(&plan(), Some(100.0), &steps);
        assert_eq!(r.backlog, Some(64));
        assert_eq!(r.somaxconn, Some(64));
        // 100 connects, 100/s × 0.2 s = 20 accepted during the burst: 100 − 20 − 1.
        assert_eq!(r.model_backlog, 79);
        assert!(r.reason.contains("somaxconn >= 64"), "{}", r.reason);
    }

    #[test]
    fn no_clean_step_means_no_recommendation() {
        let steps = [step(8, 50, 1_020_000, 60), step(64, 1, 900, 99)];
        let r = recommend(&plan(), Some(100.0), &steps);
        assert_eq!(r.backlog, None);
        assert!(r.reason.contains("try larger backlogs"), "{}", r.reason);
        // A slow p99 disqualifies even without overflow, and then the backlog is not to blame.
        let r = recommend(&plan(), Some(100.0), &[step(64, 0, 150_000, 100)]);
        assert_eq!(r.backlog, None);
        assert!(r.reason.contains("not the backlog"), "{}", r.reason);
    }

    /// No overflow but connections not greeted by the deadline: the accept rate is the limit.
    #[test]
    fn ghosts_without_overflow_blame_the_accept_rate() {
        let mut slow = step(512, 0, 5_000, 100);
        slow.outcomes.established = 71;
        slow.outcomes.syn_retransmitted = 0;
        slow.outcomes.ghost = 29;
        let r = recommend(&plan(), Some(100.0), &[step(8, 50, 1_020_000, 60), slow]);
        assert_eq!(r.backlog, None);
        assert!(
            r.reason
                .contains("backlog 512 had no overflow, yet 29 of 100")
                && r.reason.contains("accept rate (100/s), not the backlog"),
            "{}",
            r.reason
        );
    }
}
