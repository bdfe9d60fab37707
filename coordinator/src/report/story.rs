//! The verdict: a finished run's numbers told in plain words, as a short paragraph under the
//! summary's table, at the top of `report.html` and as `verdict` in `report.json`. Each
//! sentence says what happened, its likely cause and the next step, and is derived from the
//! report alone (outcomes, counts by k, the target's queue and counters, the agents' kernel
//! settings, the scenario as run), following docs/kernel.md: a full accept queue drops SYNs
//! silently (§2), so it shows as SYN retransmits and ghosts, never as refusals; a refusal
//! means no listener.
//!
//! The run's integrity comes first (aborted, agents lost, agents stalled), because it
//! qualifies every count after it; then what the attempts ended as; then the admission
//! caveat.

use std::collections::BTreeMap;

use stampede_proto::duration::human_us;
use stampede_proto::report::{Admission, Kernel};
use stampede_proto::target::TargetStats;

use super::Report;

/// The plain-words verdict of a run: one paragraph of sentences.
pub fn verdict(r: &Report) -> String {
    let sentences = [
        aborted(r),
        lost(r),
        stalled(r),
        nothing(r),
        all_established(r),
        some_established(r),
        ghosts(r),
        retransmitted(r),
        pending(r),
        refused(r),
        resets(r),
        timeouts(r),
        errors(r),
        target_missing(r),
        unchecked(r),
    ];
    let sentences: Vec<String> = sentences.into_iter().flatten().collect();
    sentences.join(" ")
}

/// When the retransmit number `k` of a SYN goes out, after the first SYN, by the agents'
/// sysctls (docs/kernel.md §2): the first L+1 timeouts are 1 s each, L being
/// `tcp_syn_linear_timeouts` (0 before Linux 6.5), then each doubles. `S(k)` in seconds.
pub fn syn_retransmit_at_secs(kernel: &Kernel, k: u32) -> u64 {
    let linear = kernel
        .tcp_syn_linear_timeouts
        .unwrap_or(0)
        .saturating_add(1);
    let k = u64::from(k);
    if k <= linear {
        return k;
    }
    // Then timeouts of 2, 4 … 2^d s: together 2^(d+1) − 2.
    let doubled = k - linear;
    let sum = u32::try_from(doubled + 1)
        .ok()
        .and_then(|e| 1u64.checked_shl(e))
        .map_or(u64::MAX, |p| p - 2);
    linear.saturating_add(sum)
}

/// `k=1: 12 at ~1s, k=3: 4 at ~3s`: counts by k with the kernel's time for each.
fn k_with_times(kernel: &Kernel, by_k: &BTreeMap<u32, u64>) -> String {
    let parts: Vec<String> = by_k
        .iter()
        .map(|(k, n)| format!("k={k}: {n} at ~{}s", syn_retransmit_at_secs(kernel, *k)))
        .collect();
    parts.join(", ")
}

/// A scenario value as text: a string as is, a number as written.
fn scenario_text(r: &Report, key: &str) -> Option<String> {
    match r.scenario.get(key)? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// How the attempts arrived, from the scenario's pattern.
fn arrival(r: &Report) -> String {
    let pattern = scenario_text(r, "pattern").unwrap_or_else(|| "burst".to_owned());
    let mut parts = pattern.split(':');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("ramp"), Some(rate), Some(over)) => format!("they arrived at {rate}/s over {over}"),
        (Some("waves"), Some(k), Some(period)) => {
            format!("they arrived in {k} waves every {period}")
        }
        _ => "the burst arrived at once".to_owned(),
    }
}

/// `the accept queue (backlog 8, peak 9)`, the backlog capped by somaxconn said so.
fn queue(t: &TargetStats) -> String {
    let backlog = match t.backlog_requested {
        Some(b) if i64::from(b) > i64::from(t.backlog_effective) => format!(
            "backlog {b}, capped to {} by somaxconn",
            t.backlog_effective
        ),
        Some(b) => format!("backlog {b}"),
        None => format!("backlog {}", t.backlog_effective),
    };
    format!("the accept queue ({backlog}, peak {})", t.accept_queue_max)
}

/// The next step for a queue that could not keep up.
const RAISE: &str = "raise the accept rate or the backlog (see `stampede sweep`)";

fn plural(n: u64, one: &str, many: &str) -> String {
    if n == 1 {
        format!("{n} {one}")
    } else {
        format!("{n} {many}")
    }
}

/// Attempts connected but not yet classified when the run was cut short: connects counted
/// by the latency histogram beyond those of the classified outcomes.
fn connected_undecided(r: &Report) -> u64 {
    r.connect_latency_us
        .count
        .saturating_sub(r.outcomes.connected())
        .min(r.unfinished())
}

fn aborted(r: &Report) -> Option<String> {
    if !r.aborted {
        return None;
    }
    let unfinished = r.unfinished();
    if unfinished == 0 {
        return Some(
            "The run was aborted before it finished; every attempt issued by then was decided."
                .to_owned(),
        );
    }
    let connected = match connected_undecided(r) {
        0 => String::new(),
        c if c == unfinished => format!(", all {c} of them connected"),
        c => format!(", {c} of them connected"),
    };
    Some(format!(
        "The run was aborted before it finished: {} still undecided then{connected}; they \
         are counted as unfinished, not as any outcome.",
        plural(unfinished, "attempt was", "attempts were")
    ))
}

fn lost(r: &Report) -> Option<String> {
    if r.lost_agents.is_empty() {
        return None;
    }
    let named: Vec<String> = r
        .lost_agents
        .iter()
        .map(|a| match r.lost_reasons.get(a) {
            Some(why) => format!("{a}: {why}"),
            None => a.clone(),
        })
        .collect();
    Some(format!(
        "{} lost during the run ({}): only the intervals {} delivered are counted; check {} host and rerun.",
        plural(r.lost_agents.len() as u64, "agent was", "agents were"),
        named.join("; "),
        if r.lost_agents.len() == 1 {
            "it"
        } else {
            "they"
        },
        if r.lost_agents.len() == 1 {
            "its"
        } else {
            "their"
        },
    ))
}

fn stalled(r: &Report) -> Option<String> {
    if r.skipped_overdue == 0 && r.issued_late == 0 {
        return None;
    }
    let which: Vec<&str> = r
        .agents
        .iter()
        .filter(|a| a.skipped_overdue > 0 || a.issued_late > 0)
        .map(|a| a.id.as_str())
        .collect();
    let what = match (r.skipped_overdue, r.issued_late) {
        (0, late) => format!(
            "{} issued late",
            plural(late, "attempt was", "attempts were")
        ),
        (skipped, 0) => format!(
            "{} skipped (never fired late)",
            plural(skipped, "attempt was", "attempts were")
        ),
        (skipped, late) => format!(
            "{} skipped (never fired late) and {late} issued late",
            plural(skipped, "attempt was", "attempts were")
        ),
    };
    Some(format!(
        "{what} because {} stalled: the load host was overloaded or paused, not the target; give it more CPU or spread the load over more agents, and rerun.",
        if which.is_empty() {
            "an agent".to_owned()
        } else {
            which.join(", ")
        }
    ))
}

fn nothing(r: &Report) -> Option<String> {
    if r.outcomes.total() > 0 {
        return None;
    }
    if r.aborted {
        // Cut short before any outcome: that says nothing about reaching the target.
        return Some(
            "No attempt was decided before the abort, so there is nothing to judge: rerun and \
             let the run finish."
                .to_owned(),
        );
    }
    Some("No attempt completed, so there is nothing to judge: check that the agents could reach the target and rerun.".to_owned())
}

fn all_established(r: &Report) -> Option<String> {
    let o = &r.outcomes;
    if o.total() == 0 || o.established != o.total() {
        return None;
    }
    let how = match scenario_text(r, "pattern").as_deref() {
        None | Some("burst") => " at once",
        Some(_) => " without a SYN retransmit",
    };
    let p99 = human_us(r.connect_latency_us.p99);
    let cause = match &r.target {
        Some(t) if t.counters.listen_overflows == 0 => {
            format!(": {} absorbed the load", queue(t))
        }
        _ => String::new(),
    };
    Some(format!(
        "All {} established{how} (p99 {p99}){cause}.",
        o.established
    ))
}

fn some_established(r: &Report) -> Option<String> {
    let o = &r.outcomes;
    (o.established > 0 && o.established < o.total())
        .then(|| format!("{} of {} established at once.", o.established, o.total()))
}

fn ghosts(r: &Report) -> Option<String> {
    let o = &r.outcomes;
    if o.ghost == 0 {
        return None;
    }
    let deadline = scenario_text(r, "timeout")
        .map(|t| format!(" within the {t} deadline"))
        .unwrap_or_default();
    let what = format!(
        "{} of {} connected but were never accepted{deadline} (ghosts)",
        o.ghost,
        o.connected()
    );
    let rate = scenario_text(r, "target_accept_rate_per_sec");
    let why = match (&r.target, rate) {
        (Some(t), _) if t.counters.listen_overflows == 0 => {
            // The queue never overflowed: it was big enough, the server too slow.
            return Some(format!(
                "{what}: {} never overflowed, so the server accepted too slowly; raise its accept rate (a larger backlog would not help).",
                queue(t)
            ));
        }
        (Some(t), Some(rate)) => format!(
            "the target accepted {rate}/s while {}, and {} overflowed (ListenOverflows {})",
            arrival(r),
            queue(t),
            t.counters.listen_overflows
        ),
        (None, Some(rate)) => format!("the target accepted {rate}/s while {}", arrival(r)),
        (Some(t), None) => format!(
            "{} overflowed (ListenOverflows {}) while {}",
            queue(t),
            t.counters.listen_overflows,
            arrival(r)
        ),
        (None, None) => format!(
            "the server did not accept them in time while {}",
            arrival(r)
        ),
    };
    Some(format!("{what}: {why}; {RAISE}."))
}

fn retransmitted(r: &Report) -> Option<String> {
    let n = r.outcomes.syn_retransmitted;
    if n == 0 {
        return None;
    }
    let what = format!(
        "{n} waited for a SYN retransmit ({})",
        k_with_times(&r.kernel, &r.syn_retransmits)
    );
    let retrans_fail: u64 = r.agents.iter().map(|a| a.kernel.retrans_fail).sum();
    let own = if retrans_fail > 0 {
        format!(
            " The agents' own stacks also failed to send {retrans_fail} retransmits (TCPRetransFail): their queues were full, which adds 0.5 s steps that are the load host's doing."
        )
    } else {
        String::new()
    };
    let why = match &r.target {
        // The ghosts' sentence named the full queue and the next step already.
        Some(t) if t.counters.listen_overflows > 0 && r.outcomes.ghost > 0 => {
            "the same full queue dropped their first SYNs silently".to_owned()
        }
        Some(t) if t.counters.listen_overflows > 0 => format!(
            "{} overflowed (ListenOverflows {}) and the kernel dropped their SYNs silently; {RAISE}",
            queue(t),
            t.counters.listen_overflows
        ),
        Some(t) if t.counters.req_qfull_drops > 0 => format!(
            "the SYN queue was full (TCPReqQFullDrop {}, syncookies off); raise the backlog or turn syncookies on",
            t.counters.req_qfull_drops
        ),
        Some(_) => "yet the target counted no drops: their SYNs or SYN-ACKs were lost on the way; check the network between agents and target".to_owned(),
        None => format!(
            "the listener most likely dropped their SYNs for a full accept queue (docs/kernel.md §2); give --target-control to see its queue, and {RAISE}"
        ),
    };
    Some(format!("{what}: {why}.{own}"))
}

fn pending(r: &Report) -> Option<String> {
    let n = r.outcomes.pending;
    if n == 0 {
        return None;
    }
    let deadline = scenario_text(r, "timeout")
        .map(|t| format!("the {t} deadline"))
        .unwrap_or_else(|| "the deadline".to_owned());
    let ks = if r.pending_syn_retransmits.is_empty() {
        String::new()
    } else {
        format!(
            " ({})",
            stampede_proto::report::k_counts(&r.pending_syn_retransmits)
        )
    };
    Some(format!(
        "{} still waiting for the handshake at {deadline}{ks}: the listener kept dropping their SYNs; a longer --timeout shows when they would connect, and to keep them from waiting {RAISE}.",
        plural(n, "was", "were"),
    ))
}

fn refused(r: &Report) -> Option<String> {
    let o = &r.outcomes;
    if o.refused == 0 {
        return None;
    }
    let at = scenario_text(r, "target")
        .map(|t| format!(" at {t}"))
        .unwrap_or_default();
    let what = if o.refused == o.total() {
        format!("All {} were refused", o.refused)
    } else {
        format!("{} of {} were refused", o.refused, o.total())
    };
    Some(format!(
        "{what} (ECONNREFUSED): no listener{at} (a full queue never refuses, docs/kernel.md §2); check that the target is running and listening on that address and port."
    ))
}

fn resets(r: &Report) -> Option<String> {
    let n = r.outcomes.reset;
    if n == 0 {
        return None;
    }
    let what = format!("{} reset before service", plural(n, "was", "were"));
    let why = match &r.target {
        Some(t) if t.counters.embryonic_rsts > 0 => format!(
            "the server answers a full accept queue with RST (tcp_abort_on_overflow=1, EmbryonicRsts {}); {RAISE}, or turn tcp_abort_on_overflow off so clients retry",
            t.counters.embryonic_rsts
        ),
        _ => "the server closed them before serving them (a listener closed with connections unaccepted, or tcp_abort_on_overflow); check the server".to_owned(),
    };
    Some(format!("{what}: {why}."))
}

fn timeouts(r: &Report) -> Option<String> {
    let n = r.outcomes.timeout;
    if n == 0 {
        return None;
    }
    let retries = r
        .kernel
        .tcp_syn_retries
        .map(|k| format!(" after tcp_syn_retries={k}"))
        .unwrap_or_default();
    Some(format!(
        "{n} timed out in the kernel (ETIMEDOUT{retries}): nothing answered their SYNs; check the address, a firewall, or a listener that drops every SYN."
    ))
}

fn errors(r: &Report) -> Option<String> {
    let n = r.outcomes.error;
    if n == 0 {
        return None;
    }
    let named: Vec<String> = r.errors.iter().map(|(e, c)| format!("{e}: {c}")).collect();
    let has = |name: &str| r.errors.keys().any(|e| e.to_string() == name);
    let next = if has("EADDRNOTAVAIL") {
        "the agents ran out of ephemeral ports: widen ip_local_port_range, or spread the load over more agents"
    } else if has("EMFILE") || has("ENFILE") {
        "the agents ran out of file descriptors: raise their ulimit -n"
    } else {
        "see the errors by name in report.json"
    };
    Some(format!(
        "{} failed on the agents ({}): {next}.",
        n,
        named.join(", ")
    ))
}

fn target_missing(r: &Report) -> Option<String> {
    r.target_error.as_ref().map(|e| {
        format!("The target's final stats are missing ({e}), so its queue and counters are not part of this verdict.")
    })
}

fn unchecked(r: &Report) -> Option<String> {
    let connected = r.outcomes.connected();
    (r.admission == Admission::Unchecked && connected > 0).then(|| {
        format!(
            "Admission was unchecked: {connected} connects succeeded, but a successful connect() is not acceptance; rerun with --expect-greeting or --probe-admission to count ghosts."
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{AgentReport, Errno, Outcomes};
    use stampede_proto::target::CounterDeltas;

    /// A target with backlog `backlog`, a queue that peaked at `peak` and `overflows`
    /// ListenOverflows.
    fn target(backlog: i32, peak: u32, overflows: u64) -> TargetStats {
        TargetStats {
            backlog_requested: Some(backlog),
            backlog_effective: backlog as u32,
            accept_queue_max: peak,
            counters: CounterDeltas {
                listen_overflows: overflows,
                listen_drops: overflows,
                ..CounterDeltas::default()
            },
            ..TargetStats::default()
        }
    }

    fn greeted(outcomes: Outcomes) -> Report {
        Report {
            outcomes,
            admission: Admission::Greeting,
            scenario: serde_json::json!({"pattern": "burst", "timeout": "4s"}),
            ..Report::default()
        }
    }

    /// The demo's story: a slow target and a small backlog leave ghosts, and the verdict
    /// names the rate, the burst, the queue and the next step.
    #[test]
    fn ghosts_name_the_accept_rate_the_queue_and_the_next_step() {
        let mut r = greeted(Outcomes {
            established: 20,
            ghost: 40,
            ..Outcomes::default()
        });
        r.scenario["target_accept_rate_per_sec"] = 50.into();
        r.target = Some(target(8, 9, 51));
        r.outcomes.syn_retransmitted = 18;
        r.syn_retransmits = BTreeMap::from([(1, 18)]);
        let v = verdict(&r);
        assert!(v.starts_with("20 of 78 established at once."), "{v}");
        assert!(
            v.contains(
                "40 of 78 connected but were never accepted within the 4s deadline (ghosts): \
                 the target accepted 50/s while the burst arrived at once, and the accept queue \
                 (backlog 8, peak 9) overflowed (ListenOverflows 51); raise the accept rate or \
                 the backlog (see `stampede sweep`)."
            ),
            "{v}"
        );
        // The SYN retransmits met the same queue: said once, the next step too.
        assert!(
            v.contains(
                "18 waited for a SYN retransmit (k=1: 18 at ~1s): the same full queue dropped \
                 their first SYNs silently."
            ),
            "{v}"
        );
        assert_eq!(v.matches("raise the accept rate").count(), 1, "{v}");
        assert!(!v.contains("unchecked"), "{v}");
    }

    /// Ghosts from a queue that never overflowed: the backlog was not the limit.
    #[test]
    fn ghosts_without_overflow_blame_the_accept_rate_alone() {
        let mut r = greeted(Outcomes {
            ghost: 5,
            established: 5,
            ..Outcomes::default()
        });
        r.target = Some(target(64, 10, 0));
        let v = verdict(&r);
        assert!(v.contains("(backlog 64, peak 10) never overflowed"), "{v}");
        assert!(v.contains("a larger backlog would not help"), "{v}");
    }

    #[test]
    fn a_clean_burst_was_absorbed_by_the_backlog() {
        let mut r = greeted(Outcomes {
            established: 300,
            ..Outcomes::default()
        });
        r.connect_latency_us.p99 = 1_200;
        r.target = Some(target(512, 300, 0));
        assert_eq!(
            verdict(&r),
            "All 300 established at once (p99 1.2ms): the accept queue (backlog 512, peak 300) \
             absorbed the load."
        );
        // A ramp is not "at once", and without a target nothing is said of its queue.
        r.scenario["pattern"] = "ramp:100:3s".into();
        r.target = None;
        assert_eq!(
            verdict(&r),
            "All 300 established without a SYN retransmit (p99 1.2ms)."
        );
    }

    #[test]
    fn syn_retransmits_are_timed_by_the_kernel_and_blamed_on_overflow() {
        let mut r = greeted(Outcomes {
            established: 9,
            syn_retransmitted: 12,
            ..Outcomes::default()
        });
        r.syn_retransmits = BTreeMap::from([(1, 10), (3, 2)]);
        r.kernel.tcp_syn_linear_timeouts = Some(4);
        r.target = Some(target(8, 9, 51));
        let v = verdict(&r);
        assert!(
            v.contains(
                "12 waited for a SYN retransmit (k=1: 10 at ~1s, k=3: 2 at ~3s): the accept \
                 queue (backlog 8, peak 9) overflowed (ListenOverflows 51)"
            ),
            "{v}"
        );
        // Before Linux 6.5 (no linear timeouts), the third retransmit goes out at 7 s.
        r.kernel.tcp_syn_linear_timeouts = None;
        assert!(verdict(&r).contains("k=3: 2 at ~7s"), "{}", verdict(&r));
        // No target control: the likely cause, and how to see it.
        r.target = None;
        assert!(verdict(&r).contains("give --target-control"));
        // The agents' own transmit failures are theirs, and said so.
        r.agents = vec![AgentReport {
            kernel: Kernel {
                retrans_fail: 7,
                ..Kernel::default()
            },
            ..AgentReport::default()
        }];
        assert!(verdict(&r).contains("failed to send 7 retransmits (TCPRetransFail)"));
    }

    /// docs/kernel.md §2: retransmits at 1, 2, 3, 4, 5, 7, 11, 19, 35, 67 s with
    /// tcp_syn_linear_timeouts=4; at 1, 3, 7, 15, 31 s without it.
    #[test]
    fn the_retransmit_schedule_follows_the_sysctl() {
        let linear = Kernel {
            tcp_syn_linear_timeouts: Some(4),
            ..Kernel::default()
        };
        let at: Vec<u64> = (1..=10)
            .map(|k| syn_retransmit_at_secs(&linear, k))
            .collect();
        assert_eq!(at, [1, 2, 3, 4, 5, 7, 11, 19, 35, 67]);
        let doubling = Kernel::default();
        let at: Vec<u64> = (1..=5)
            .map(|k| syn_retransmit_at_secs(&doubling, k))
            .collect();
        assert_eq!(at, [1, 3, 7, 15, 31]);
        assert_eq!(syn_retransmit_at_secs(&doubling, u32::MAX), u64::MAX);
    }

    #[test]
    fn refusals_mean_no_listener() {
        let mut r = greeted(Outcomes {
            refused: 60,
            ..Outcomes::default()
        });
        r.scenario["target"] = "127.0.0.1:9".into();
        assert_eq!(
            verdict(&r),
            "All 60 were refused (ECONNREFUSED): no listener at 127.0.0.1:9 (a full queue never \
             refuses, docs/kernel.md §2); check that the target is running and listening on \
             that address and port."
        );
    }

    #[test]
    fn lost_agents_come_first_with_their_reasons() {
        let mut r = greeted(Outcomes {
            established: 10,
            ..Outcomes::default()
        });
        r.lost_agents = vec!["a2".into()];
        r.lost_reasons = BTreeMap::from([("a2".into(), "agent killed, crashed or cut off".into())]);
        let v = verdict(&r);
        assert!(
            v.starts_with(
                "1 agent was lost during the run (a2: agent killed, crashed or cut off): only \
                 the intervals it delivered are counted"
            ),
            "{v}"
        );
        assert!(v.contains("All 10 established"), "{v}");
    }

    #[test]
    fn a_stalled_agent_is_the_load_hosts_doing() {
        let mut r = greeted(Outcomes {
            established: 10,
            ..Outcomes::default()
        });
        r.skipped_overdue = 90;
        r.agents = vec![
            AgentReport {
                id: "a1".into(),
                skipped_overdue: 90,
                ..AgentReport::default()
            },
            AgentReport {
                id: "a2".into(),
                ..AgentReport::default()
            },
        ];
        let v = verdict(&r);
        assert!(
            v.starts_with(
                "90 attempts were skipped (never fired late) because a1 stalled: the load host \
                 was overloaded or paused, not the target"
            ),
            "{v}"
        );
    }

    #[test]
    fn unchecked_admission_is_a_caveat_only_when_something_connected() {
        let mut r = greeted(Outcomes {
            established: 5,
            ..Outcomes::default()
        });
        r.admission = Admission::Unchecked;
        assert!(verdict(&r).ends_with(
            "Admission was unchecked: 5 connects succeeded, but a successful connect() is not \
             acceptance; rerun with --expect-greeting or --probe-admission to count ghosts."
        ));
        r.outcomes = Outcomes {
            refused: 5,
            ..Outcomes::default()
        };
        assert!(!verdict(&r).contains("unchecked"), "{}", verdict(&r));
    }

    #[test]
    fn resets_pending_timeouts_and_errors_each_say_why() {
        let mut r = greeted(Outcomes {
            reset: 3,
            pending: 4,
            timeout: 1,
            error: 2,
            ..Outcomes::default()
        });
        r.target = Some(TargetStats {
            counters: CounterDeltas {
                embryonic_rsts: 3,
                ..CounterDeltas::default()
            },
            ..target(8, 9, 0)
        });
        r.pending_syn_retransmits = BTreeMap::from([(2, 4)]);
        r.kernel.tcp_syn_retries = Some(6);
        r.errors = BTreeMap::from([(Errno(libc_eaddrnotavail()), 2)]);
        let v = verdict(&r);
        for part in [
            "3 were reset before service: the server answers a full accept queue with RST \
             (tcp_abort_on_overflow=1, EmbryonicRsts 3)",
            "4 were still waiting for the handshake at the 4s deadline (k=2: 4)",
            "1 timed out in the kernel (ETIMEDOUT after tcp_syn_retries=6)",
            "2 failed on the agents (EADDRNOTAVAIL: 2): the agents ran out of ephemeral ports",
        ] {
            assert!(v.contains(part), "{part} in {v}");
        }
    }

    #[test]
    fn an_empty_or_aborted_run_says_so() {
        let mut r = greeted(Outcomes::default());
        assert!(
            verdict(&r).starts_with("No attempt completed"),
            "{}",
            verdict(&r)
        );
        r.aborted = true;
        r.target_error = Some("deadline exceeded".into());
        let v = verdict(&r);
        assert!(
            v.starts_with("The run was aborted before it finished"),
            "{v}"
        );
        assert!(
            v.contains("final stats are missing (deadline exceeded)"),
            "{v}"
        );
    }

    fn libc_eaddrnotavail() -> i32 {
        "EADDRNOTAVAIL"
            .parse::<Errno>()
            .expect("a known errno name")
            .0
    }
}
