//! What a clean sweep step is, in one place: the run's listener absorbed the burst and
//! served it in time. Every condition is checked and every one that fails is named, so the
//! table, `sweep.json` and the recommendation's reason say why a step was not clean.
//!
//! Clean means: the run is whole (no agent lost, the target's stats read), no ListenOverflows,
//! every attempt established at k=0 (no SYN retransmitted, nothing left pending or refused),
//! connect p99 under `--p99-max`, and, when the first byte was measured (`--expect-greeting`:
//! the server speaks first, so the wait for it is the accept wait), its p99 under
//! `--accept-wait-max`. A queue that held
//! every connection for seconds is not clean: the user waited.

use std::time::Duration;

use stampede_proto::duration::human_us;

use crate::report::Report;

/// The two latency bounds a clean step stays under.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Connect p99 must be under this.
    pub p99_max: Duration,
    /// Accept wait (first byte) p99 must be under this, when measured.
    pub accept_wait_max: Duration,
}

/// `Ok` when the run of `report` is clean; else every reason, `; `-separated.
pub fn judge(report: &Report, bounds: Bounds) -> Result<(), String> {
    let mut why = Vec::new();
    let o = &report.outcomes;
    if report.partial {
        why.push("partial run".to_owned());
    }
    match &report.target {
        // A supervised server that died mid-run says so here (its status, its last lines).
        None => why.push(match &report.target_error {
            Some(e) => format!("target stats unknown ({e})"),
            None => "target stats unknown".to_owned(),
        }),
        Some(t) if t.counters.listen_overflows > 0 => {
            why.push(format!("{} overflows", t.counters.listen_overflows));
        }
        Some(_) => {}
    }
    if o.established != o.total() {
        why.push(format!(
            "{} of {} not established at k=0",
            o.total() - o.established,
            o.total()
        ));
    }
    let p99_max = bounds.p99_max.as_micros() as u64;
    let c = &report.connect_latency_us;
    if c.count > 0 && c.p99 >= p99_max {
        why.push(format!(
            "connect p99 {} >= {}",
            human_us(c.p99),
            human_us(p99_max)
        ));
    }
    let wait_max = bounds.accept_wait_max.as_micros() as u64;
    let w = &report.ttfb_us;
    if w.count > 0 && w.p99 >= wait_max {
        why.push(format!(
            "accept wait p99 {} >= {}",
            human_us(w.p99),
            human_us(wait_max)
        ));
    }
    if why.is_empty() {
        Ok(())
    } else {
        Err(why.join("; "))
    }
}

/// The index of the median of a step's runs (`--repeat`), ordered by [`badness`]; for an
/// even count the worse of the two middle ones. `runs` is not empty.
pub(super) fn median(runs: &[Report], bounds: Bounds) -> usize {
    let mut order: Vec<usize> = (0..runs.len()).collect();
    order.sort_by_key(|&i| badness(&runs[i], bounds));
    order[runs.len() / 2]
}

/// How bad a run was, for picking the median of a step's runs: whether it was clean, then
/// overflows, attempts not established at once, connect p99, accept wait p99.
fn badness(report: &Report, bounds: Bounds) -> (bool, u64, u64, u64, u64) {
    let o = &report.outcomes;
    (
        judge(report, bounds).is_err(),
        report
            .target
            .as_ref()
            .map_or(u64::MAX, |t| t.counters.listen_overflows),
        o.total() - o.established,
        report.connect_latency_us.p99,
        report.ttfb_us.p99,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Latency, Outcomes};
    use stampede_proto::target::{CounterDeltas, TargetStats};

    fn bounds() -> Bounds {
        Bounds {
            p99_max: Duration::from_millis(100),
            accept_wait_max: Duration::from_millis(100),
        }
    }

    fn report(overflows: u64, established: u64, connect_p99: u64, wait: Option<u64>) -> Report {
        Report {
            outcomes: Outcomes {
                established,
                syn_retransmitted: 100 - established,
                ..Outcomes::default()
            },
            connect_latency_us: Latency {
                count: 100,
                p99: connect_p99,
                ..Latency::default()
            },
            ttfb_us: Latency {
                count: wait.map_or(0, |_| 100),
                p99: wait.unwrap_or(0),
                ..Latency::default()
            },
            target: Some(TargetStats {
                counters: CounterDeltas {
                    listen_overflows: overflows,
                    ..CounterDeltas::default()
                },
                ..TargetStats::default()
            }),
            ..Report::default()
        }
    }

    /// The median run by badness: unclean runs rank after clean ones, then by overflows and
    /// latency; an even count takes the worse middle one.
    #[test]
    fn the_median_run_is_picked_by_badness() {
        let runs = [
            report(9, 91, 1_000_000, None),
            report(0, 100, 3_000, None),
            report(0, 100, 1_000, None),
        ];
        assert_eq!(median(&runs, bounds()), 1);
        let four = [
            report(0, 100, 1_000, None),
            report(2, 98, 900, None),
            report(0, 100, 5_000, None),
            report(0, 100, 2_000, None),
        ];
        assert_eq!(median(&four, bounds()), 2, "the worse of 2 ms and 5 ms");
        assert_eq!(median(&runs[..1], bounds()), 0);
    }

    #[test]
    fn a_clean_run_passes_every_condition() {
        assert_eq!(judge(&report(0, 100, 2_000, Some(5_000)), bounds()), Ok(()));
        // No first byte measured: the accept wait is not judged.
        assert_eq!(judge(&report(0, 100, 2_000, None), bounds()), Ok(()));
    }

    /// The case: connect p99 16 ms, first byte 3.3 s: the queue held every
    /// connection for seconds, which is not clean.
    #[test]
    fn a_long_accept_wait_is_not_clean() {
        let why = judge(&report(0, 100, 16_000, Some(3_300_000)), bounds()).unwrap_err();
        assert_eq!(why, "accept wait p99 3.30s >= 100.0ms");
    }

    #[test]
    fn every_failed_condition_is_named() {
        let mut r = report(7, 90, 1_020_000, None);
        r.partial = true;
        let why = judge(&r, bounds()).unwrap_err();
        assert_eq!(
            why,
            "partial run; 7 overflows; 10 of 100 not established at k=0; connect p99 1.02s >= 100.0ms"
        );
        r.target = None;
        assert!(
            judge(&r, bounds())
                .unwrap_err()
                .contains("target stats unknown")
        );
        // At the bound is not under it.
        assert!(judge(&report(0, 100, 100_000, None), bounds()).is_err());
    }
}
