//! The run page: self-contained, escaped, opening on the verdict, and showing each part of
//! the story (completions by class with the SYN schedule, percentiles, queue, agents, kernel).

use super::charts::{bin_width_us, bins};
use super::*;
use crate::report::{AgentReport, Kernel, Outcomes};
use stampede_proto::outcome::Outcome;
use stampede_proto::target::TargetStats;
use stampede_proto::timeline::Timeline;

/// 900 established at once, 60 after one SYN retransmit (1 s), 40 ghosts at 1 s.
pub(crate) fn tally() -> Tally {
    let mut t = Tally::default();
    for i in 0..1000u64 {
        let (outcome, at) = match i {
            0..900 => (Outcome::Established, 20 + i % 50),
            900..960 => (Outcome::SynRetransmitted { k: 1 }, 1_024_000 + i),
            _ => (Outcome::Ghost { k: 1 }, 1_025_000 + i),
        };
        t.record(outcome);
        t.record_completion(outcome, at);
        t.connect_latency.record(at).unwrap();
        if i < 900 {
            t.ttfb.record(at + 100).unwrap();
        }
    }
    t
}

/// A report to go with [`tally`], with a target that sent its queue timeline.
pub(crate) fn report() -> Report {
    let kernel = Kernel {
        tcp_syn_retries: Some(6),
        tcp_syn_linear_timeouts: Some(4),
        ..Default::default()
    };
    let mut timeline = Timeline::new(1_000, 100);
    for ms in 0..40u64 {
        timeline.record(ms * 1_000, (ms as u32 * 3).min(9), ms * 20);
    }
    Report {
        run_id: "r1".into(),
        started_at: "2026-11-27T15:00:00Z".into(),
        outcomes: Outcomes {
            established: 900,
            syn_retransmitted: 60,
            ghost: 40,
            ..Default::default()
        },
        syn_retransmits: [(1, 60)].into(),
        ghost_syn_retransmits: [(1, 40)].into(),
        agents: vec![AgentReport {
            id: "<agent&1>".into(),
            kernel: kernel.clone(),
            start_error_us: Some(-120),
            ..Default::default()
        }],
        kernel,
        target: Some(TargetStats {
            listen_addr: "198.18.0.1:7000".into(),
            backlog_requested: Some(8),
            backlog_effective: 8,
            somaxconn: 4096,
            accept_queue_max: 9,
            timeline: Some(timeline),
            ..Default::default()
        }),
        scenario: serde_json::json!({"target": "198.18.0.1:7000", "connections": 1000, "token_file": null}),
        ..Default::default()
    }
}

/// The `<figure>` of chart `id`.
fn figure<'a>(page: &'a str, id: &str) -> &'a str {
    let start = page
        .find(&format!("data-chart=\"{id}\""))
        .unwrap_or_else(|| panic!("no chart {id}"));
    &page[start..start + page[start..].find("</figure>").unwrap()]
}

#[test]
fn page_is_self_contained_and_escapes_names() {
    let page = render(&report(), &tally());
    assert_eq!(page.matches("<figure class=\"chart\"").count(), 3);
    assert!(page.contains("&lt;agent&amp;1&gt;"));
    assert!(!page.contains("<agent&1>"));
    assert!(!page.contains("<script") && !page.contains("<link"));
    // The scenario's settings, nulls left out; the policy in words.
    assert!(page.contains("<th>connections</th>") && !page.contains("token_file"));
    assert!(page.contains("effective 8 (the queue holds 9)"), "{page}");
    assert!(page.contains("SYNs dropped on a full accept queue (ListenOverflows)"));
    assert!(page.contains("-120µs"), "start error in human units");
}

/// Ghosts have their own colour and legend entry, apart from the established ones and from
/// k=1; the SYN-retransmit schedule of tcp_syn_linear_timeouts=4 is marked at 1 s.
#[test]
fn completions_are_stacked_by_class_with_the_syn_schedule() {
    let page = render(&report(), &tally());
    let fig = figure(&page, "completions");
    for name in [
        "established, k=0",
        "established after SYN retransmits, k=1",
        "ghost (connected, never accepted)",
        "SYN #1 (1 s)",
    ] {
        assert!(fig.contains(name), "{name}: {fig}");
    }
    // The chart covers 1.03 s: the second retransmit (2 s) is off it.
    assert!(!fig.contains("SYN #2"), "{fig}");
    assert!(fig.contains("time since the start instant (ms)"));
    assert!(page.contains("SYN retransmits go out 1, 2, 3, 4, 5, 7 s after the first SYN"));
    // Each class's bars in its colour.
    for color in ["#009E73", "#0072B2", "#D55E00"] {
        assert!(fig.contains(&format!("fill=\"{color}\"")), "{color}");
    }
}

#[test]
fn percentiles_and_queue_have_their_axes() {
    let page = render(&report(), &tally());
    let p = figure(&page, "percentiles");
    assert!(
        p.contains("latency (ms, log scale)") && p.contains("99.9%"),
        "{p}"
    );
    assert!(p.contains("first byte"));
    let q = figure(&page, "queue");
    assert!(q.contains("full: 9 (backlog 8)"), "{q}");
    // Without a timeline the page says so instead of drawing an empty chart.
    let mut r = report();
    r.target.as_mut().unwrap().timeline = None;
    let page = render(&r, &tally());
    assert!(!page.contains("data-chart=\"queue\""));
    assert!(page.contains("No accept-queue timeline"));
}

/// Agents that send no completion times (older versions): one series of connect latency,
/// named for what it is.
#[test]
fn completions_without_classes_say_so() {
    let mut t = tally();
    t.completion_times.clear();
    let page = render(&report(), &t);
    assert!(figure(&page, "completions").contains("the agents did not report classes"));
}

/// The verdict opens the page, escaped, before any chart.
#[test]
fn page_opens_on_the_verdict() {
    let r = Report {
        outcomes: Outcomes {
            refused: 3,
            ..Default::default()
        },
        scenario: serde_json::json!({"target": "<host>:9"}),
        ..Default::default()
    };
    let page = render(&r, &Tally::default());
    let verdict = page.find("<p class=\"verdict\"><strong>Verdict: </strong>All 3 were refused");
    let first_chart = page.find("<svg");
    assert!(verdict.is_some() && verdict < first_chart, "{page}");
    assert!(page.contains("no listener at &lt;host&gt;:9"), "{page}");
}

#[test]
fn bins_keep_every_completion() {
    let t = tally();
    let width = bin_width_us(t.connect_latency.max());
    assert_eq!(width, 10_000);
    let b = bins(&t.connect_latency, width);
    assert_eq!(b.values().sum::<u64>(), 1000);
    assert_eq!(b[&0], 900);
    assert_eq!(b[&1_020_000], 100);
}

/// The agents' own lateness stands beside connect latency, and the fleet's pacing is stated;
/// a report without them says "not measured" and leaves the pacing out.
#[test]
fn issue_lag_and_pacing_are_on_the_page() {
    let mut r = report();
    let without = render(&r, &tally());
    assert!(
        without.contains("issue lag: the agents' own lateness"),
        "{without}"
    );
    assert!(!without.contains("Paced for"), "{without}");
    r.issue_lag_us = crate::report::Latency {
        count: 1000,
        p50: 40,
        p90: 80,
        p99: 1_300,
        p999: 2_000,
        max: 3_100,
        ..Default::default()
    };
    r.pacing = Some(crate::report::Pacing {
        prepare_timeout_ms: 30_030,
        liveness_ms: 4_002,
        agent_liveness_ms: 2_002,
        start_lead_ms: 500,
        start_lead_basis: "the plan's lead".into(),
    });
    let page = render(&r, &tally());
    let row = page
        .split("<tr>")
        .find(|row| row.contains("issue lag"))
        .expect("an issue-lag row");
    assert!(row.contains("1.3ms") && row.contains("3.1ms"), "{row}");
    assert!(
        page.contains("Paced for 1 agent: start lead 500.0ms (the plan"),
        "{page}"
    );
    assert!(
        page.contains("is lost (each stops firing on its own after 2.00s"),
        "{page}"
    );
}

/// The queue is drawn on the completions' axis when the report says when the target's
/// counters were reset: a sample 10 ms after the reset of a run that started 25 ms after it
/// lies at -15 ms; without the offset the axis says it counts from the reset.
#[test]
fn queue_shares_the_start_instant_axis() {
    let r = report();
    let t = r.target.as_ref().unwrap();
    let from_reset = super::charts::queue(t, None).unwrap();
    assert!(
        from_reset.x.title.contains("counters were reset"),
        "{}",
        from_reset.x.title
    );
    assert_eq!(from_reset.series[0].points[10].0, 10.0);
    let aligned = super::charts::queue(t, Some(25_000)).unwrap();
    assert!(
        aligned.x.title.contains("since the start instant"),
        "{}",
        aligned.x.title
    );
    assert_eq!(aligned.series[0].points[10].0, -15.0);
    let mut r = r;
    r.target_reset_before_start_us = Some(25_000);
    assert!(render(&r, &tally()).contains("time since the start instant (ms)"));
}
