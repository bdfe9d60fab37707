//! Why a sweep recommends no backlog at one accept rate: the condition of [`super::clean`]
//! that actually failed, and the advice that fits that condition. An overflow means the
//! queue was too small (larger backlogs, or a somaxconn that capped them); a step that
//! did not overflow had queue enough, so what failed there (ghosts, SYNs dropped before the
//! accept queue, a slow handshake, a long accept wait) is not cured by a larger backlog.

use stampede_proto::duration::human_us;

use super::{AcceptRate, Step, SweepPlan, rate_name};

/// Why no backlog is recommended at `rate`: `at` are the rate's searched steps, smallest
/// backlog first; `m` the connects per step; `model_backlog` the recommendation's model
/// figure (named here, never a second one).
pub(super) fn no_clean_reason(
    at: &[&Step],
    m: u64,
    rate: Option<AcceptRate>,
    plan: &SweepPlan,
    model_backlog: u64,
) -> String {
    let whole: Vec<&Step> = at.iter().copied().filter(|s| !s.partial).collect();
    let Some(largest) = whole.last() else {
        return match at.last() {
            None => "no step ran at this accept rate".to_owned(),
            Some(s) => format!(
                "every step here was partial ({}): nothing to judge a backlog by; rerun",
                s.unclean.as_deref().unwrap_or("partial run")
            ),
        };
    };
    // The largest backlog that did not overflow is the best the queue could do: what
    // failed there is not the backlog's fault.
    match whole.iter().rev().find(|s| s.listen_overflows == 0) {
        Some(s) => no_overflow(s, m, rate, plan),
        None => overflowed(largest, model_backlog),
    }
}

/// Every whole step overflowed: the queue was too small, up to `largest`.
fn overflowed(largest: &Step, model_backlog: u64) -> String {
    let b = largest.backlog;
    let head = format!(
        "every backlog tried overflowed (the largest, {b}: {} overflows)",
        largest.listen_overflows
    );
    if (largest.backlog_effective as i64) < i64::from(b) {
        return format!(
            "{head}; somaxconn {} capped it to {}: raise net.core.somaxconn in the server's \
             namespace to at least {}, then sweep again",
            largest.somaxconn,
            largest.backlog_effective,
            model_backlog.max(b.max(0) as u64)
        );
    }
    if (b.max(0) as u64) < model_backlog {
        format!("{head}; the queue model asks for at least {model_backlog}: try larger backlogs")
    } else {
        format!(
            "{head}, above the queue model's {model_backlog} (the server accepted fewer \
             during the burst than the model assumed): try backlogs larger than {b}"
        )
    }
}

/// Step `s` had no overflow but was not clean: name what failed and what helps.
fn no_overflow(s: &Step, m: u64, rate: Option<AcceptRate>, plan: &SweepPlan) -> String {
    let o = &s.outcomes;
    let mut advice = Vec::new();
    if o.ghost > 0 {
        advice.push(format!(
            "{} of {m} connected but got no greeting by the deadline (ghosts): the server's \
             accept rate ({}), not the backlog, is the limit",
            o.ghost,
            rate_name(rate)
        ));
    }
    let dropped = o.total() - o.established - o.ghost;
    if dropped > 0 {
        advice.push(format!(
            "{dropped} of {m} were not established at once though the accept queue never \
             overflowed: SYNs were dropped before it (look at the SYN queue, \
             net.ipv4.tcp_max_syn_backlog, {} syncookies sent, and the path to the server)",
            s.syncookies_sent
        ));
    }
    let p99_max = plan.p99_max.as_micros() as u64;
    if s.connect_latency_us.p99 >= p99_max && dropped == 0 {
        advice.push(format!(
            "the handshakes themselves were slow (connect p99 {} >= --p99-max {}): look at \
             the path and the agents' load, or raise --p99-max",
            human_us(s.connect_latency_us.p99),
            human_us(p99_max)
        ));
    }
    let wait_max = plan.accept_wait_max.as_micros() as u64;
    if s.ttfb_us.count > 0 && s.ttfb_us.p99 >= wait_max && o.ghost == 0 {
        advice.push(format!(
            "the queue held every connection, but the server accepted them too slowly \
             (accept wait p99 {} >= --accept-wait-max {}, accept rate {}): a larger backlog \
             only holds them longer; make the server accept faster, or raise \
             --accept-wait-max if a wait that long is acceptable",
            human_us(s.ttfb_us.p99),
            human_us(wait_max),
            rate_name(rate)
        ));
    }
    let what = s.unclean.as_deref().unwrap_or("not clean");
    if advice.is_empty() {
        // Nothing the outcomes show (the target's stats unread, say): the step's own words.
        return format!(
            "backlog {} had no overflow but was not clean ({what})",
            s.backlog
        );
    }
    format!(
        "backlog {} had no overflow but was not clean ({what}): {}",
        s.backlog,
        advice.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Latency;
    use crate::sweep::recommend::tests::{plan, step};

    fn reason(steps: &[Step]) -> String {
        let at: Vec<&Step> = steps.iter().collect();
        no_clean_reason(&at, 100, Some(AcceptRate(100.0)), &plan(), 79)
    }

    /// The audit's case: no overflow anywhere, every attempt established at once, only the
    /// accept wait over its bound. The reason names that, and does not ask for larger
    /// backlogs than the one that had no overflow.
    #[test]
    fn a_long_accept_wait_blames_the_accept_rate_not_the_backlog() {
        let mut s = step(4096, 0, 2_000, 100);
        s.ttfb_us = Latency {
            count: 100,
            p99: 134_900,
            ..Latency::default()
        };
        s.unclean = Some("accept wait p99 134.9ms >= 100.0ms".into());
        let r = reason(&[s]);
        assert_eq!(
            r,
            "backlog 4096 had no overflow but was not clean (accept wait p99 134.9ms >= \
             100.0ms): the queue held every connection, but the server accepted them too \
             slowly (accept wait p99 134.9ms >= --accept-wait-max 100.0ms, accept rate \
             100/s): a larger backlog only holds them longer; make the server accept faster, \
             or raise --accept-wait-max if a wait that long is acceptable"
        );
        assert!(!r.contains("larger backlogs"), "{r}");
        assert!(!r.contains("0 of 100"), "{r}");
    }

    #[test]
    fn ghosts_without_overflow_blame_the_accept_rate() {
        let mut s = step(512, 0, 5_000, 71);
        s.outcomes.syn_retransmitted = 0;
        s.outcomes.ghost = 29;
        s.unclean = Some("29 of 100 not established at k=0".into());
        let r = reason(&[step(8, 50, 1_020_000, 60), s]);
        assert!(
            r.starts_with("backlog 512 had no overflow but was not clean (29 of 100 ")
                && r.contains("29 of 100 connected but got no greeting by the deadline")
                && r.contains("accept rate (100/s), not the backlog, is the limit"),
            "{r}"
        );
        assert!(!r.contains("SYNs were dropped"), "{r}");
    }

    #[test]
    fn syn_drops_without_overflow_point_at_the_syn_queue() {
        let mut s = step(512, 0, 1_020_000, 90);
        s.syncookies_sent = 10;
        let r = reason(&[s]);
        assert!(
            r.contains("10 of 100 were not established at once")
                && r.contains("10 syncookies sent"),
            "{r}"
        );
        // The slow p99 is the retransmits' doing, not advice of its own.
        assert!(!r.contains("handshakes themselves"), "{r}");
    }

    #[test]
    fn a_slow_handshake_alone_is_named() {
        let r = reason(&[step(64, 0, 150_000, 100)]);
        assert!(
            r.contains("connect p99 150.0ms >= --p99-max 100.0ms") && r.contains("--p99-max"),
            "{r}"
        );
        assert!(!r.contains("larger backlog"), "{r}");
    }

    /// Overflow at every backlog: larger backlogs, with the model's figure only where it is
    /// above what was tried, and somaxconn named when it capped the backlog.
    #[test]
    fn overflow_everywhere_asks_for_larger_backlogs() {
        let r = reason(&[step(8, 50, 1_020_000, 60), step(64, 1, 900, 99)]);
        assert_eq!(
            r,
            "every backlog tried overflowed (the largest, 64: 1 overflows); the queue model \
             asks for at least 79: try larger backlogs"
        );
        let r = reason(&[step(128, 3, 900, 97)]);
        assert!(
            r.contains("above the queue model's 79") && r.contains("larger than 128"),
            "{r}"
        );
        let mut capped = step(128, 3, 900, 97);
        capped.backlog_effective = 64;
        capped.somaxconn = 64;
        let r = reason(&[capped]);
        assert!(
            r.contains("somaxconn 64 capped it to 64: raise net.core.somaxconn"),
            "{r}"
        );
    }

    #[test]
    fn partial_steps_only_say_so() {
        let mut s = step(64, 0, 900, 100);
        s.partial = true;
        s.unclean = Some("partial run".into());
        assert_eq!(
            reason(&[s]),
            "every step here was partial (partial run): nothing to judge a backlog by; rerun"
        );
    }
}
