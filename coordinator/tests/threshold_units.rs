//! Threshold lines print durations in the one unit style of every other figure
//! (`stampede_proto::duration::human_us`: `900µs`, `12.3ms`, `1.01s`), not with six decimals.

use stampede::report::{Latency, Report};
use stampede::threshold::Threshold;

#[test]
fn duration_details_use_the_summary_units() {
    let report = Report {
        connect_latency_us: Latency {
            count: 50,
            p99: 1_012_735,
            max: 1_012_735,
            ..Latency::default()
        },
        ttfb_us: Latency {
            count: 50,
            p99: 900,
            ..Latency::default()
        },
        ..Report::default()
    };
    for (expr, detail, passed) in [
        ("connect.p99<10s", "1.01s", false),
        ("connect.p99>50ms", "1.01s", false),
        ("ttfb.p99>1ms", "900µs", true),
    ] {
        let t: Threshold = expr.parse().unwrap();
        let r = t.evaluate(&report);
        assert_eq!((r.detail.as_str(), r.passed), (detail, passed), "{expr}");
        // The JSON value stays exact, in µs.
        assert_eq!(
            r.value,
            Some(if expr.starts_with("ttfb") {
                900.0
            } else {
                1_012_735.0
            })
        );
    }
}
