//! The report's start figures against an independent observer: two agents on two lab hosts
//! (each pinned to a core of its own when there are two), a burst at a third, and a packet
//! capture on the agents' bridge ports (`tests/support/capture.rs`). Each agent's first
//! connect() as report.json states it (`started_at` + `start_error_us`, coordinator time)
//! must match its first SYN on the wire, and so the report's `start_spread_us` the wire's:
//! the report must neither invent a spread nor hide one, beyond what a connect() call and a
//! clock sync may honestly put between them. A kernel test (root, namespaces).

use stampede_lab::kernel_tests_enabled;

#[path = "support/capture.rs"]
mod capture;

/// What may separate an agent's first SYN from its first connect() as reported, beyond its
/// clock uncertainty: ~5 µs of connect() before the SYN reaches its port, and on a loaded
/// 2-core CI machine a preemption inside that window or inside the agent's reading of its
/// two clocks. A wrong clock conversion (a lead, an offset counted twice, a monotonic time
/// taken for a wall-clock one) is off by far more.
const SLACK_US: f64 = 10_000.0;

#[test]
fn the_reports_first_connects_are_the_first_syns_on_the_wire() {
    if !kernel_tests_enabled("the_reports_first_connects_are_the_first_syns_on_the_wire") {
        return;
    }
    let options = capture::Options {
        runs: 2,
        per_agent: 100,
        pin: true,
        realtime: false,
    };
    let runs = capture::run(options, |_, _| {}).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(runs.len(), 2);
    for (n, run) in runs.iter().enumerate() {
        let r = &run.report;
        assert!(
            !r.partial,
            "run {n} partial: {:?} {:?}",
            r.lost_reasons, r.cut_reasons
        );
        assert_eq!(r.outcomes.total(), 200, "run {n}");
        assert_eq!(
            (run.captured.dropped, run.captured.truncated),
            (0, false),
            "run {n}"
        );
        // Every attempt's SYN went out (a SYN retransmit may add more).
        assert!(
            run.captured.syns.len() >= 200,
            "run {n}: {} SYNs",
            run.captured.syns.len()
        );
        let mut bound = 0.0;
        for a in &run.agents {
            let diff = a
                .wire_minus_report_us()
                .unwrap_or_else(|| panic!("run {n}: {} has no first connect or SYN: {a:?}", a.id));
            let limit = a.clock_uncertainty_us as f64 + SLACK_US;
            eprintln!(
                "run {n} {}: first SYN {diff:+.1} µs from the report's first connect (±{limit:.0}), \
                 start error {:?} µs, CPUs {:?}",
                a.id, a.start_error_us, a.cpus
            );
            assert!(
                diff.abs() <= limit,
                "run {n} {}: first SYN {diff:+.1} µs from the report's first connect, beyond \
                 ±{limit:.0} µs: {a:?}",
                a.id
            );
            bound += limit;
        }
        let report = r.start_spread_us.expect("both agents connected") as f64;
        let wire = run.capture_spread_us().expect("both agents' first SYNs");
        eprintln!("run {n}: start spread {report} µs in the report, {wire:.1} µs on the wire");
        assert!(
            (report - wire).abs() <= bound + 1.0,
            "run {n}: the report's start spread {report} µs is not the wire's {wire:.1} µs"
        );
    }
}
