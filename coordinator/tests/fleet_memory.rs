//! The coordinator's memory does not grow with the run's length: a 90 s ramp from 40 real
//! agent processes (40 interval results a second reach the coordinator) under `stampede run
//! --out`, its resident memory sampled from `/proc` every 10 ms. Interval results are written
//! to report.hlog as their second completes, not kept for the run, so between a window early
//! in the ramp and one at its end RSS grows by less than half of what keeping them would cost
//! (~0.75 KiB each, encoded). Keeping them (the coordinator before report.hlog was streamed)
//! fails this test. Kernel test: it needs root. The 10-minute, 100-agent figures are
//! `cargo bench -p stampede --bench fleet`.

use std::time::Duration;

use stampede_lab::{Netns, kernel_tests_enabled};

#[path = "support/fleet.rs"]
mod fleet;

use fleet::{Fleet, bin, clean, out_dir};

/// What the coordinator kept per interval result before they were streamed: its encoded
/// histograms and counts, measured (tests/fleet.rs and BENCHMARKS.md "Fleet").
const KEPT_BYTES_PER_INTERVAL: u64 = 768;

#[test]
fn coordinator_memory_stays_flat_over_a_long_run() {
    if !kernel_tests_enabled("coordinator_memory_stays_flat_over_a_long_run") {
        return;
    }
    const AGENTS: usize = 40;
    const RAMP_SECS: u64 = 90;
    let ns = Netns::new("fleetflat").unwrap();
    // 40 agents x 450 connections over 90 s: 200 connects a second, every agent busy in
    // every second, so each sends one interval result a second.
    let f = Fleet {
        agents: AGENTS,
        per_agent: 450,
        pattern: format!("ramp:200:{RAMP_SECS}s"),
        stampede: std::path::PathBuf::from(env!("CARGO_BIN_EXE_stampede")),
        agent: bin("stampede-agent"),
        out: out_dir("fleetflat"),
        limit: Duration::from_secs(RAMP_SECS + 150),
    };
    let m = fleet::run(&ns, &f);
    let hlog = std::fs::read(f.out.join("report.hlog"));
    clean(&f.out);
    let r = m.report.as_ref().unwrap_or_else(|| {
        panic!(
            "no report.json; the coordinator said:\n{}",
            m.log_tail.join("\n")
        )
    });
    // What is measured is the coordinator's memory; an agent starved on this loaded host
    // (it stalls, or stops hearing the coordinator) still sent its intervals until then. A
    // fleet that mostly fell apart would measure nothing, though.
    let lost = r["lost_agents"].as_array().map_or(0, Vec::len);
    assert!(lost <= AGENTS / 10, "{lost} agents lost: {}", r["verdict"]);
    // The log holds every second's results although the coordinator did not keep them. Its
    // untagged lines are the connect latency, recorded for every connect() that completed,
    // failed or not: every attempt but those still pending at their deadline. (Comparing
    // with `established` alone failed on a loaded host where one SYN was retransmitted.)
    let lines = stampede_proto::hlog::parse(&hlog.expect("report.hlog")).unwrap();
    let untagged: u64 = lines
        .iter()
        .filter(|l| l.tag.is_none())
        .map(|l| l.histogram.len())
        .sum();
    let o = r["outcomes"].as_object().expect("outcomes");
    let completed: u64 = (o.iter())
        .filter(|(class, _)| *class != "pending")
        .map(|(_, n)| n.as_u64().unwrap())
        .sum();
    assert_eq!(untagged, completed, "outcomes: {o:?}");

    // RSS windows: seconds 25-30 (warm: every agent has sent ~25 intervals, the allocator
    // has its working set) and 85-90 (the ramp's end), counted from the start line.
    let window = |from: u64, to: u64| -> u64 {
        let in_window: Vec<u64> = m
            .rss
            .iter()
            .filter(|(t, _)| (from..to).contains(&t.as_secs()))
            .map(|(_, kib)| *kib)
            .collect();
        assert!(in_window.len() > 100, "{} samples", in_window.len());
        *in_window.iter().max().unwrap()
    };
    let early = window(25, 30);
    let late = window(RAMP_SECS - 5, RAMP_SECS);
    let intervals = AGENTS as u64 * (RAMP_SECS - 30);
    let kept_kib = intervals * KEPT_BYTES_PER_INTERVAL / 1024;
    let bound_kib = kept_kib / 2;
    eprintln!(
        "coordinator RSS: {early} KiB at 25-30 s, {late} KiB at {}-{RAMP_SECS} s (+{} KiB; \
         keeping {intervals} interval results would add ~{kept_kib} KiB), peak {} KiB",
        RAMP_SECS - 5,
        late.saturating_sub(early),
        m.peak_rss_kib
    );
    assert!(
        late < early + bound_kib,
        "RSS grew from {early} KiB to {late} KiB over {intervals} interval results: more than \
         {bound_kib} KiB, half of what keeping them would cost"
    );
}
