//! The sweep page's charts, one point per step against the backlog: connect and first-byte
//! latency (p50, p99, max: max drawn last with its own marker, so p99 never hides it) with
//! the p99 limit; outcomes and ListenOverflows; the accept queue's peak against the queue's
//! capacity (effective backlog + 1). Each recommended backlog and the queue model's estimate
//! are labelled reference lines.

use crate::chart::{Axis, Chart, Kind, RefLine, Series, Style};
use crate::sweep::{AcceptRate, Step, SweepReport, rate_name};

/// A metric drawn against the backlog: legend name and value of a step.
type Metric = (&'static str, fn(&Step) -> Option<f64>);

const LATENCY: &[Metric] = &[
    ("connect p50", |s| Some(ms(s.connect_latency_us.p50))),
    ("connect p99", |s| Some(ms(s.connect_latency_us.p99))),
    ("first byte p99 (accept wait)", |s| {
        (s.ttfb_us.count > 0).then(|| ms(s.ttfb_us.p99))
    }),
    ("connect max", |s| Some(ms(s.connect_latency_us.max))),
];

const OUTCOMES: &[Metric] = &[
    ("established at once", |s| {
        Some(s.outcomes.established as f64)
    }),
    ("established after SYN retransmits", |s| {
        Some(s.outcomes.syn_retransmitted as f64)
    }),
    ("ghost", |s| Some(s.outcomes.ghost as f64)),
    ("failed", |s| {
        let o = &s.outcomes;
        Some(o.total().saturating_sub(o.connected()) as f64)
    }),
    ("SYNs dropped (ListenOverflows)", |s| {
        Some(s.listen_overflows as f64)
    }),
];

const QUEUE: &[Metric] = &[
    ("accept queue peak", |s| Some(f64::from(s.accept_queue_max))),
    ("queue capacity (effective backlog + 1)", |s| {
        Some(f64::from(s.backlog_effective) + 1.0)
    }),
];

fn ms(us: u64) -> f64 {
    us as f64 / 1e3
}

/// The accept rates in the order first run.
fn rates(r: &SweepReport) -> Vec<Option<AcceptRate>> {
    let mut rates = Vec::new();
    for s in &r.steps {
        if !rates.contains(&s.accept_rate) {
            rates.push(s.accept_rate);
        }
    }
    rates
}

/// One series per metric and accept rate, each with its own style.
fn series(r: &SweepReport, metrics: &[Metric]) -> Vec<Series> {
    let rates = rates(r);
    let mut out = Vec::new();
    for (m, (name, value)) in metrics.iter().enumerate() {
        for (i, rate) in rates.iter().enumerate() {
            let name = if rates.len() > 1 {
                format!("{name}, accept {}", rate_name(*rate))
            } else {
                (*name).to_owned()
            };
            out.push(Series {
                name,
                style: Style::nth(m * rates.len() + i),
                kind: Kind::Line,
                points: r
                    .steps
                    .iter()
                    .filter(|s| s.accept_rate == *rate)
                    .filter_map(|s| value(s).map(|v| (f64::from(s.backlog), v)))
                    .collect(),
            });
        }
    }
    out
}

/// The backlog axis: log when the backlogs span a decade or more and none is 0.
fn backlog_axis(r: &SweepReport) -> Axis {
    let lo = r.steps.iter().map(|s| s.backlog).min().unwrap_or(0);
    let hi = r.steps.iter().map(|s| s.backlog).max().unwrap_or(0);
    if lo > 0 && hi >= 10 * lo {
        Axis::log("listen() backlog (log scale)")
    } else {
        Axis::linear("listen() backlog")
    }
}

/// A vertical line at each recommended backlog.
fn recommended(r: &SweepReport) -> Vec<RefLine> {
    r.recommendations
        .iter()
        .filter_map(|rec| {
            rec.backlog.map(|b| {
                RefLine::x(
                    f64::from(b),
                    format!("recommended {b} ({})", rate_name(rec.accept_rate)),
                )
            })
        })
        .collect()
}

/// The three charts.
pub(super) fn all(r: &SweepReport) -> Vec<Chart> {
    let mut latency_refs = recommended(r);
    latency_refs.push(RefLine::y(
        ms(r.p99_max_us),
        format!(
            "p99 limit {}",
            stampede_proto::duration::human_us(r.p99_max_us)
        ),
    ));
    let mut queue_refs = recommended(r);
    // The model's estimate, where it falls on the chart (0: no queue needed).
    queue_refs.extend(
        r.recommendations
            .iter()
            .filter(|rec| rec.model_backlog > 0)
            .map(|rec| {
                RefLine::x(
                    rec.model_backlog as f64,
                    format!(
                        "model ≥ {} ({})",
                        rec.model_backlog,
                        rate_name(rec.accept_rate)
                    ),
                )
            }),
    );
    vec![
        Chart {
            id: "sweep-latency",
            title: "Connect and first-byte latency by backlog".into(),
            x: backlog_axis(r),
            y: Axis::log("latency (ms, log scale)"),
            series: series(r, LATENCY),
            refs: latency_refs,
        },
        Chart {
            id: "sweep-outcomes",
            title: "Outcomes and overflows by backlog".into(),
            x: backlog_axis(r),
            y: Axis::linear("attempts (count)"),
            series: series(r, OUTCOMES),
            refs: recommended(r),
        },
        Chart {
            id: "sweep-queue",
            title: "Accept queue peak against its capacity, measured and modelled".into(),
            x: backlog_axis(r),
            y: Axis::linear("connections in the accept queue"),
            series: series(r, QUEUE),
            refs: queue_refs,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every series has a point per step it measured; max and p99 differ in look; the p99
    /// limit and the recommendation are labelled lines.
    #[test]
    fn a_point_per_step_and_labelled_lines() {
        let r = crate::sweep::html::tests::report();
        let charts = all(&r);
        let latency = &charts[0];
        assert_eq!(latency.series.len(), 4);
        assert!(latency.series.iter().all(|s| s.points.len() == 3));
        let (p99, max) = (&latency.series[1], &latency.series[3]);
        assert_ne!(p99.style, max.style);
        assert!(p99.points.iter().zip(&max.points).all(|(a, b)| b.1 >= a.1));
        let labels: Vec<&str> = latency.refs.iter().map(|l| l.label.as_str()).collect();
        assert_eq!(labels, ["recommended 64 (100/s)", "p99 limit 100.0ms"]);
        // Backlogs 8 … 128 span a decade: a log axis.
        assert_eq!(latency.x.scale, crate::chart::Scale::Log);
        let queue = &charts[2];
        assert_eq!(
            queue.series[1].points,
            [(8.0, 9.0), (64.0, 65.0), (128.0, 129.0)]
        );
        assert!(queue.refs.iter().any(|l| l.label.starts_with("model ≥")));
    }
}
