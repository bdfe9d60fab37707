//! The run page's charts, as [`crate::chart::Chart`] values built from the report and the
//! merged histograms behind it: completions over time stacked by outcome class (with the
//! kernel's SYN-retransmit schedule, docs/kernel.md §2), the percentile curves of connect and
//! first-byte time, and the target's accept queue over time against its backlog.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use stampede_proto::duration::human_us;
use stampede_proto::outcome::OutcomeClass;
use stampede_proto::tally::Tally;
use stampede_proto::target::TargetStats;

use crate::chart::{Axis, Chart, Kind, RefLine, Series, Style, number};
use crate::report::Report;
use crate::report::story::syn_retransmit_at_secs;

/// Bars in the completions chart, about.
const BINS: u64 = 120;

/// A class's colour in the stacked chart: admitted ones in green and blues (by k), the rest
/// in warm or dark colours, so a ghost never reads as a success.
fn class_color(class: OutcomeClass, k: u32) -> &'static str {
    const BY_K: [&str; 4] = ["#0072b2", "#56b4e9", "#6a3d9a", "#9e9ac8"];
    match class {
        OutcomeClass::Established => "#009e73",
        OutcomeClass::SynRetransmitted => BY_K[(k.max(1) as usize - 1) % BY_K.len()],
        OutcomeClass::Ghost => "#d55e00",
        OutcomeClass::Refused => "#8c564b",
        OutcomeClass::Reset => "#e69f00",
        OutcomeClass::Timeout => "#7f7f7f",
        OutcomeClass::Pending => "#cc79a7",
        OutcomeClass::Error => "#000000",
    }
}

/// A class's name in the legend.
fn class_name(class: OutcomeClass, k: u32) -> String {
    match class {
        OutcomeClass::Established => "established, k=0".into(),
        OutcomeClass::SynRetransmitted => format!("established after SYN retransmits, k={k}"),
        OutcomeClass::Ghost => "ghost (connected, never accepted)".into(),
        other => other.name().into(),
    }
}

/// Stack order: established at the bottom, then by k, ghosts, then the failures.
fn stack_rank(class: OutcomeClass) -> u8 {
    match class {
        OutcomeClass::Established => 0,
        OutcomeClass::SynRetransmitted => 1,
        OutcomeClass::Ghost => 2,
        OutcomeClass::Refused => 3,
        OutcomeClass::Reset => 4,
        OutcomeClass::Timeout => 5,
        OutcomeClass::Pending => 6,
        OutcomeClass::Error => 7,
    }
}

/// Seconds or milliseconds for a span of `us`: the unit's name and µs per unit.
fn time_unit(span_us: u64) -> (&'static str, f64) {
    if span_us >= 2_000_000 {
        ("s", 1e6)
    } else {
        ("ms", 1e3)
    }
}

/// The 1-2-5 bin width (µs, at least 1) that cuts `span_us` into about [`BINS`] bars.
pub(crate) fn bin_width_us(span_us: u64) -> u64 {
    let raw = (span_us / BINS).max(1);
    let p = 10u64.pow(raw.ilog10());
    [1, 2, 5, 10]
        .into_iter()
        .map(|m| m * p)
        .find(|w| *w >= raw)
        .unwrap_or(10 * p)
}

/// Counts per bin of `width` µs, by bin start: the counts add up to the histogram's.
pub(crate) fn bins(h: &Histogram<u64>, width: u64) -> BTreeMap<u64, u64> {
    let mut out = BTreeMap::new();
    for v in h.iter_recorded() {
        // The bucket's highest equivalent value: the same bin for every sample in it.
        *out.entry(v.value_iterated_to() / width * width)
            .or_default() += v.count_at_value();
    }
    out
}

/// Completions over time, stacked by class, with the SYN-retransmit schedule marked.
pub(crate) fn completions(r: &Report, tally: &Tally) -> Chart {
    let mut classes: Vec<((OutcomeClass, u32), &Histogram<u64>)> = tally
        .completion_times
        .iter()
        .filter(|(_, h)| !h.is_empty())
        .map(|(key, h)| (*key, h))
        .collect();
    // Agents too old to send completion times: their connect latency, class unknown.
    let unclassified = classes.is_empty() && !tally.connect_latency.is_empty();
    let span = classes
        .iter()
        .map(|(_, h)| h.max())
        .chain(unclassified.then(|| tally.connect_latency.max()))
        .max()
        .unwrap_or(0);
    let width = bin_width_us(span);
    let (unit, per) = time_unit(span);
    classes.sort_by_key(|((class, k), _)| (stack_rank(*class), *k));
    let to_points = |h: &Histogram<u64>| {
        bins(h, width)
            .into_iter()
            .map(|(start, n)| (start as f64 / per, n as f64))
            .collect::<Vec<_>>()
    };
    let kind = Kind::Bars {
        width: width as f64 / per,
    };
    let mut series: Vec<Series> = classes
        .iter()
        .map(|((class, k), h)| Series {
            name: class_name(*class, *k),
            style: Style::fill(class_color(*class, *k)),
            kind,
            points: to_points(h),
        })
        .collect();
    if unclassified {
        series.push(Series {
            name: "completed (the agents did not report classes)".into(),
            style: Style::fill("#0072b2"),
            kind,
            points: to_points(&tally.connect_latency),
        });
    }
    // The kernel's retransmit times that fall on the chart (at most tcp_syn_retries).
    let retries = r.kernel.tcp_syn_retries.unwrap_or(6).min(16) as u32;
    let refs = (1..=retries)
        .map(|k| (k, syn_retransmit_at_secs(&r.kernel, k)))
        .filter(|(_, s)| s.saturating_mul(1_000_000) <= span.max(1))
        .map(|(k, s)| RefLine::x(s as f64 * 1e6 / per, format!("SYN #{k} ({s} s)")))
        .collect();
    Chart {
        id: "completions",
        title: "Completions over time, by outcome".into(),
        x: Axis::linear(format!("time since the start instant ({unit})")),
        y: Axis::linear(format!("completions per {}", human_us(width))),
        series,
        refs,
    }
}

/// The schedule in words: `1, 2, 3, 4, 5, 7 s (tcp_syn_linear_timeouts=4, tcp_syn_retries=6)`.
pub(crate) fn schedule_text(r: &Report) -> String {
    let k = &r.kernel;
    let retries = k.tcp_syn_retries.unwrap_or(6).min(16) as u32;
    let times: Vec<String> = (1..=retries)
        .map(|i| syn_retransmit_at_secs(k, i).to_string())
        .collect();
    let setting = |v: Option<u64>| v.map_or_else(|| "unknown".to_owned(), |v| v.to_string());
    format!(
        "SYN retransmits go out {} s after the first SYN (tcp_syn_linear_timeouts={}, \
         tcp_syn_retries={}, docs/kernel.md §2)",
        times.join(", "),
        setting(k.tcp_syn_linear_timeouts),
        setting(k.tcp_syn_retries)
    )
}

/// A percentile on the "nines" axis: x = 1 / (1 − q), labelled as the percentile.
fn percentile_label(x: f64) -> String {
    format!("{}%", number(100.0 * (1.0 - 1.0 / x.max(1.0))))
}

/// Latency at percentiles 0 … 99.99 (plus the maximum as the curve's last point).
fn percentile_points(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    if h.is_empty() {
        return Vec::new();
    }
    (0..=200)
        .map(|i| {
            let nines = 4.0 * f64::from(i) / 200.0;
            let q = 1.0 - 10f64.powf(-nines);
            (10f64.powf(nines), h.value_at_quantile(q) as f64 / 1e3)
        })
        .collect()
}

/// Connect and first-byte time by percentile, on log axes.
pub(crate) fn percentiles(tally: &Tally) -> Chart {
    let series = [
        (
            "connect (intended send → connect() done)",
            &tally.connect_latency,
            0,
        ),
        (
            "first byte (intended send → server's first byte)",
            &tally.ttfb,
            1,
        ),
    ]
    .into_iter()
    .map(|(name, h, i)| Series {
        name: name.into(),
        style: Style::nth(i),
        kind: Kind::Curve,
        points: percentile_points(h),
    })
    .collect();
    Chart {
        id: "percentiles",
        title: "Latency by percentile".into(),
        x: Axis::log("percentile (log scale of 1/(1 − q))").labelled(percentile_label),
        y: Axis::log("latency (ms, log scale)"),
        series,
        refs: Vec::new(),
    }
}

/// The accept queue over time with the line where it is full, when the target sent its
/// timeline: on the completions chart's axis (time since the start instant) when the report
/// says when the target's counters were reset (`reset_before_start_us`), else from that reset.
pub(crate) fn queue(t: &TargetStats, reset_before_start_us: Option<i64>) -> Option<Chart> {
    let tl = t.timeline.as_ref().filter(|tl| !tl.points.is_empty())?;
    let shift = reset_before_start_us.unwrap_or(0);
    let span = tl.points.last().map_or(0, |p| {
        (p.t_us + tl.bucket_us).saturating_sub(shift.max(0) as u64)
    });
    let (unit, per) = time_unit(span);
    let full = u64::from(t.backlog_effective) + 1;
    let since = if reset_before_start_us.is_some() {
        "time since the start instant"
    } else {
        "time since the target's counters were reset"
    };
    Some(Chart {
        id: "queue",
        title: "Accept queue over time".into(),
        x: Axis::linear(format!("{since} ({unit})")),
        y: Axis::linear(format!(
            "connections in the accept queue (peak per {})",
            human_us(tl.bucket_us)
        )),
        series: vec![Series {
            name: "accept queue, peak".into(),
            style: Style::nth(0),
            // A marker per bucket while they can be told apart.
            kind: if tl.points.len() <= 60 {
                Kind::Line
            } else {
                Kind::Curve
            },
            points: tl
                .points
                .iter()
                .map(|p| ((p.t_us as i64 - shift) as f64 / per, f64::from(p.queue_max)))
                .collect(),
        }],
        refs: vec![RefLine::y(
            full as f64,
            format!("full: {full} (backlog {})", t.backlog_effective),
        )],
    })
}
