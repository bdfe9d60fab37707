//! The sweep's queue model (docs/kernel.md §6): a burst of M connects, of which `a` are
//! accepted while the burst is still arriving, needs an accept queue of M − a, so a backlog A
//! with A + 1 ≥ M − a: A ≥ M − a − 1.
//!
//! `a` is measured where the target counts its accepts: its timeline (`target.timeline` of
//! the step's report, 1 ms buckets at first) holds the cumulative accepted count, so `a` is
//! the accepts from the first bucket where the queue or the count moved (the burst's first
//! arrivals) to the end of the burst's issue time. Without that count (a real server), `a` is
//! the accept rate × the issue time when the rate is known and finite, else 0: the worst case.

use stampede_proto::timeline::Timeline;

use crate::report::Report;

/// The model's figures for one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Model {
    /// Accepts completing during the burst, when known (measured or from the rate).
    pub accepted_during_burst: Option<u64>,
    /// Where it came from: `measured`, `rate` or `worst case`.
    pub source: &'static str,
    /// M − a − 1 (M − 1 when `a` is unknown).
    pub backlog: u64,
}

/// The model for one run of M = `connections` at `rate` (the step's accept rate, `None` when
/// the target's own).
pub fn model(connections: u64, rate: Option<f64>, report: &Report) -> Model {
    let issue = report.issue_duration_us;
    let target = report.target.as_ref();
    // The timeline counts accepts only where the target does (its `accepted` is known).
    let measured = match (target, issue) {
        (Some(t), Some(issue)) if t.accepted.is_some() => t
            .timeline
            .as_ref()
            .and_then(|tl| accepted_during(tl, issue)),
        _ => None,
    };
    let (a, source) = match (measured, rate, issue) {
        (Some(a), _, _) => (Some(a), "measured"),
        (None, Some(r), Some(us)) if r.is_finite() => {
            (Some((r * us as f64 / 1e6).floor() as u64), "rate")
        }
        _ => (None, "worst case"),
    };
    Model {
        accepted_during_burst: a,
        source,
        backlog: connections.saturating_sub(a.unwrap_or(0)).saturating_sub(1),
    }
}

/// Accepts from the burst's first sign in `timeline` to `issue_us` later (`None` when the
/// timeline never moved: no burst seen).
pub fn accepted_during(timeline: &Timeline, issue_us: u64) -> Option<u64> {
    let points = &timeline.points;
    let first = points
        .iter()
        .position(|p| p.queue_max > 0 || p.accepted > points[0].accepted)?;
    // Accepted before the burst: as of the bucket before its first one.
    let before = if first == 0 {
        0
    } else {
        points[first - 1].accepted
    };
    // Buckets the timeline widened past the burst (it doubles them as it fills) would count
    // accepts from well after it: then it cannot tell, and the caller falls back. Its first
    // width, 1 ms, is the sampler's own resolution and always counts.
    if timeline.bucket_us > issue_us.max(1_000) {
        return None;
    }
    let end = points[first].t_us + issue_us.max(1);
    // The last bucket that starts before the burst's end: the count at its last sample.
    let last = points[first..]
        .iter()
        .take_while(|p| p.t_us < end)
        .last()
        .expect("the first bucket starts before the end");
    Some(last.accepted.saturating_sub(before))
}

#[cfg(test)]
mod tests {
    use super::*;
    use stampede_proto::target::TargetStats;

    fn timeline(points: &[(u64, u32, u64)]) -> Timeline {
        let mut t = Timeline::new(1_000, 64);
        for &(t_us, q, a) in points {
            t.record(t_us, q, a);
        }
        t
    }

    fn report(timeline: Option<Timeline>, accepted: Option<u64>) -> Report {
        Report {
            issue_duration_us: Some(3_000),
            target: Some(TargetStats {
                accepted,
                timeline,
                ..TargetStats::default()
            }),
            ..Report::default()
        }
    }

    /// Buckets wider than the burst (a long run widened them) cannot say what was accepted
    /// during it: no figure rather than one that counts accepts from after the burst.
    #[test]
    fn buckets_wider_than_the_burst_tell_nothing() {
        let mut tl = Timeline::new(4_000, 64);
        tl.record(0, 0, 0);
        tl.record(10_000, 30, 10);
        tl.record(14_000, 5, 80);
        assert_eq!(accepted_during(&tl, 3_000), None);
        assert_eq!(accepted_during(&tl, 4_000), Some(10));
    }

    /// The queue rises at 10 ms; 3 ms of burst; 40 accepted by then, 90 later.
    #[test]
    fn accepts_during_the_burst_come_from_the_timeline() {
        let tl = timeline(&[
            (0, 0, 0),
            (5_000, 0, 0),
            (10_000, 30, 10),
            (11_000, 50, 25),
            (12_000, 60, 40),
            (13_000, 55, 60),
            (40_000, 0, 90),
        ]);
        assert_eq!(accepted_during(&tl, 3_000), Some(40));
        let m = model(100, Some(f64::INFINITY), &report(Some(tl), Some(90)));
        assert_eq!(
            m,
            Model {
                accepted_during_burst: Some(40),
                source: "measured",
                backlog: 59,
            }
        );
        // A timeline that never moved saw no burst.
        assert_eq!(
            accepted_during(&timeline(&[(0, 0, 0), (1_000, 0, 0)]), 10),
            None
        );
    }

    /// A real server counts no accepts: the rate, else the worst case.
    #[test]
    fn without_counted_accepts_the_rate_or_the_worst_case() {
        let tl = timeline(&[(0, 5, 0), (1_000, 9, 0)]);
        let m = model(100, Some(1_000.0), &report(Some(tl.clone()), None));
        assert_eq!(
            (m.accepted_during_burst, m.source, m.backlog),
            (Some(3), "rate", 96)
        );
        let m = model(100, None, &report(Some(tl), None));
        assert_eq!(
            (m.accepted_during_burst, m.source, m.backlog),
            (None, "worst case", 99)
        );
    }
}
