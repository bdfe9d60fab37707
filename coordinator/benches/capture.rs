//! Start spread where each agent has its own core, checked against a packet capture
//! (`tests/support/capture.rs`): 2 agents on 2 lab hosts, each pinned to its own CPU, one
//! firing thread each, a burst at a target on a third host; a capture on each agent's bridge
//! port stamps its SYNs. Per run it prints the report's `start_spread_us`, the wire's spread
//! (latest minus earliest first SYN, one per agent by source address) and their difference,
//! and per agent its start error as the report and as the wire see it, the wire minus the
//! report, and its clock offset (here, where every clock is the machine's, that offset is
//! the error of the agent's clock sync). Issue 15's goal: a spread of at most 50 µs.
//! Asserts nothing. Needs root.
//!
//! Run: `cargo bench -p stampede --bench capture` (`STAMPEDE_CAPTURE_RUNS=N`, default 20;
//! `STAMPEDE_CAPTURE_PER_AGENT=N` connections per agent, default 500;
//! `STAMPEDE_CAPTURE_PIN=0` leaves the agents unpinned, for comparison;
//! `STAMPEDE_CAPTURE_STALL_SECS=N` the machine's stall probe before the runs, default 2, 0: none;
//! `STAMPEDE_CAPTURE_RT=1` also runs the agents' threads as `SCHED_FIFO`, so that a machine
//! busy with other work cannot take an agent's core from it).

#[path = "../tests/support/capture.rs"]
mod capture;
mod support;

use capture::{Options, RunFigures};
use support::{env, load};

const GOAL_US: f64 = 50.0;

fn fmt(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"))
}

fn print_run(n: usize, r: &RunFigures) {
    let report = r.report.start_spread_us.map(|s| s as f64);
    let wire = r.capture_spread_us();
    let diff = report.zip(wire).map(|(a, b)| a - b);
    println!(
        "run {n:2}: spread report {} µs, wire {} µs, report - wire {} µs | load {} | {} attempts{}{}",
        fmt(report),
        fmt(wire),
        fmt(diff),
        load(),
        r.report.outcomes.total(),
        if r.report.partial { ", PARTIAL" } else { "" },
        if r.captured.dropped > 0 || r.captured.truncated {
            format!(
                ", capture dropped {} truncated {}",
                r.captured.dropped, r.captured.truncated
            )
        } else {
            String::new()
        }
    );
    for a in &r.agents {
        let offset = r
            .report
            .agents
            .iter()
            .find(|x| x.id == a.id)
            .map_or(0, |x| x.clock_offset_us);
        println!(
            "        {} cpu {:?}: start error report {} µs, wire {} µs; wire - report {} µs; \
             clock offset {offset} µs (±{} µs)",
            a.id,
            a.cpus,
            fmt(a.start_error_us.map(|e| e as f64)),
            fmt(a.wire_start_error_us(r.start_ns)),
            fmt(a.wire_minus_report_us()),
            a.clock_uncertainty_us,
        );
    }
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    (n > 0).then(|| {
        if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        }
    })
}

fn summary(what: &str, v: Vec<f64>) {
    let n = v.len();
    let within = v.iter().filter(|&&x| x <= GOAL_US).count();
    let max = v.iter().copied().fold(f64::NAN, f64::max);
    println!(
        "{what}: median {} µs, max {max:.1} µs, within {GOAL_US} µs in {within} of {n} runs",
        fmt(median(v))
    );
}

fn main() {
    if !stampede_lab::is_root() {
        eprintln!("capture bench: needs root (network namespaces, a packet capture); skipped");
        return;
    }
    let options = Options {
        runs: env("STAMPEDE_CAPTURE_RUNS", 20) as usize,
        per_agent: env("STAMPEDE_CAPTURE_PER_AGENT", 500),
        pin: env("STAMPEDE_CAPTURE_PIN", 1) != 0,
        realtime: env("STAMPEDE_CAPTURE_RT", 0) != 0,
    };
    println!(
        "capture bench: {} runs, 2 agents × {} connections, pinned: {}, SCHED_FIFO: {}, CPUs {:?}, load {}",
        options.runs,
        options.per_agent,
        options.pin,
        options.realtime,
        stampede_lab::cpu::cpus().unwrap_or_default(),
        load()
    );
    // The machine's own stalls first: what it takes from each CPU, and how often both CPUs
    // stop at the same instant (BENCHMARKS.md "What the machine takes away").
    stampede_lab::stalls::print_probe(
        "the machine",
        std::time::Duration::from_secs(env("STAMPEDE_CAPTURE_STALL_SECS", 2)),
    );
    let runs = match capture::run(options, print_run) {
        Ok(runs) => runs,
        Err(e) => {
            // A failed run is no figure: the bench says so and fails.
            eprintln!("capture bench: {e}");
            std::process::exit(1);
        }
    };
    let report: Vec<f64> = runs
        .iter()
        .filter_map(|r| r.report.start_spread_us.map(|s| s as f64))
        .collect();
    let wire: Vec<f64> = runs
        .iter()
        .filter_map(RunFigures::capture_spread_us)
        .collect();
    let diff: Vec<f64> = runs
        .iter()
        .filter_map(|r| Some((r.report.start_spread_us? as f64 - r.capture_spread_us()?).abs()))
        .collect();
    summary("start spread, report", report);
    summary("start spread, wire", wire);
    let max = diff.iter().copied().fold(f64::NAN, f64::max);
    println!(
        "|report - wire|: median {} µs, max {max:.1} µs",
        fmt(median(diff))
    );
    let per_agent: Vec<f64> = runs
        .iter()
        .flat_map(|r| {
            r.agents
                .iter()
                .filter_map(move |a| a.wire_start_error_us(r.start_ns))
        })
        .collect();
    let abs: Vec<f64> = per_agent.iter().map(|e| e.abs()).collect();
    println!(
        "per-agent start error on the wire: median |e| {} µs, max |e| {:.1} µs",
        fmt(median(abs.clone())),
        abs.iter().copied().fold(f64::NAN, f64::max)
    );
    println!("load at the end: {}", load());
}
