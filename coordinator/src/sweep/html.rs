//! `sweep.html`: the page for a sweep, self-contained like `report.html` (whose head,
//! escaping and chart frame it reuses from [`crate::report::html`]): the recommendation, curves
//! against the backlog of connect latency (p50, p99, max), outcomes and ListenOverflows, and
//! the step table. It lives under `sweep` because it renders sweep types; the run's page
//! knows nothing of sweeps, so the modules point one way: sweep -> report.

use std::fmt::Write as _;

use super::{Step, SweepReport, rate_name};
use crate::report::html::{BOTTOM, H, LEFT, RIGHT, TOP, W, esc, frame, ms, page_head};

/// One line of a chart: a name for the legend, a colour and dash, and (x, y) points.
struct Series {
    name: String,
    color: &'static str,
    dash: &'static str,
    points: Vec<(f64, f64)>,
}

const COLORS: [&str; 6] = [
    "#1f6feb", "#cf222e", "#2da44e", "#bf8700", "#8250df", "#57606a",
];

/// Lines against the backlog. x is log2(backlog + 1) with a tick at every backlog tried; y is
/// log10 when `log_y` (latencies), else linear from 0. `marks` are vertical lines (e.g. the
/// recommended backlog), `limit` a horizontal one (e.g. the p99 threshold).
fn backlog_svg(
    title: &str,
    backlogs: &[i32],
    series: &[Series],
    log_y: bool,
    y_label: fn(f64) -> String,
    marks: &[(i32, String)],
    limit: Option<(f64, String)>,
) -> String {
    let mut svg = String::new();
    frame(&mut svg, title);
    let xs: Vec<f64> = backlogs
        .iter()
        .map(|b| f64::from(*b).max(0.0) + 1.0)
        .collect();
    let (x0, x1) = (
        xs.iter().copied().fold(f64::INFINITY, f64::min).log2(),
        xs.iter().copied().fold(1.0, f64::max).log2(),
    );
    let x1 = if x1 - x0 < 1e-9 { x0 + 1.0 } else { x1 };
    let ys = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .chain(limit.iter().map(|l| l.0));
    let (mut y0, mut y1) = (f64::INFINITY, 0f64);
    for y in ys {
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    let t = |y: f64| if log_y { y.max(1.0).log10() } else { y };
    let (ty0, ty1) = if log_y {
        let lo = t(y0.min(y1));
        (lo, t(y1).max(lo + 1.0))
    } else {
        (0.0, y1.max(1.0))
    };
    let px = |b: f64| LEFT + ((b.max(0.0) + 1.0).log2() - x0) / (x1 - x0) * (W - LEFT - RIGHT);
    let py = |y: f64| H - BOTTOM - (t(y) - ty0) / (ty1 - ty0) * (H - TOP - BOTTOM);
    if let Some((y, label)) = &limit {
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" x2="{:.1}" y1="{y1:.1}" y2="{y1:.1}" stroke="#999" stroke-dasharray="2 3"><title>{l}</title></line>"##,
            W - RIGHT,
            y1 = py(*y),
            l = esc(label)
        );
    }
    for (b, label) in marks {
        let x = px(f64::from(*b));
        let _ = write!(
            svg,
            r##"<line x1="{x:.1}" x2="{x:.1}" y1="{TOP}" y2="{:.1}" stroke="#2da44e" stroke-width="3" opacity="0.4"><title>{}</title></line>"##,
            H - BOTTOM,
            esc(label)
        );
    }
    for s in series {
        let pts: Vec<String> = s
            .points
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y)))
            .collect();
        let _ = write!(
            svg,
            r#"<polyline fill="none" stroke="{c}" stroke-width="2" stroke-dasharray="{d}" points="{p}"><title>{n}</title></polyline>"#,
            c = s.color,
            d = s.dash,
            p = pts.join(" "),
            n = esc(&s.name)
        );
        for (x, y) in &s.points {
            let _ = write!(
                svg,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{c}"><title>{n}: backlog {x}, {v}</title></circle>"#,
                px(*x),
                py(*y),
                c = s.color,
                n = esc(&s.name),
                v = y_label(*y)
            );
        }
    }
    for b in backlogs {
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle">{b}</text>"#,
            px(f64::from(*b)),
            H - BOTTOM + 16.0
        );
    }
    let inv = |v: f64| if log_y { 10f64.powf(v) } else { v };
    for v in [ty0, (ty0 + ty1) / 2.0, ty1] {
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">{}</text>"#,
            LEFT - 4.0,
            py(inv(v)) + 4.0,
            y_label(inv(v))
        );
    }
    svg.push_str("</svg>");
    // The legend below the chart, where it cannot hide a line.
    svg.push_str("<p style=\"font-size:12px\">");
    for s in series {
        let stroke = match s.dash {
            "" => "———",
            "6 3" => "– – –",
            _ => "·····",
        };
        let _ = write!(
            svg,
            "<span style=\"color:{};margin-right:14px\">{stroke} {}</span>",
            s.color,
            esc(&s.name)
        );
    }
    svg.push_str("</p>");
    svg
}

/// The page for a sweep (`sweep.html`).
pub fn render(r: &SweepReport) -> String {
    let mut s = String::new();
    page_head(&mut s, "stampede sweep");
    let _ = write!(
        s,
        "<p>{} connections per step; a recommended backlog has no ListenOverflows and p99 \
         connect latency under {}</p>",
        r.connections,
        ms(r.p99_max_us)
    );
    if let Some(why) = &r.stopped {
        let _ = write!(
            s,
            "<p><strong>stopped after {} steps: {}</strong>; the recommendations cover those</p>",
            r.steps.len(),
            esc(why)
        );
    }
    s.push_str("<h2>Recommendation</h2><ul>");
    for rec in &r.recommendations {
        let _ = write!(
            s,
            "<li>accept rate {}: <strong>{}</strong>{} (queue model: backlog ≥ {})</li>",
            esc(&rate_name(rec.accept_rate)),
            rec.backlog.map_or_else(
                || "no recommendation".to_owned(),
                |b| format!("backlog {b}, somaxconn ≥ {}", rec.somaxconn.unwrap_or(b))
            ),
            esc(&format!(": {}", rec.reason)),
            rec.model_backlog
        );
    }
    s.push_str("</ul>");
    // One colour per accept rate, in the order first run.
    let mut rates: Vec<Option<f64>> = Vec::new();
    for st in &r.steps {
        if !rates.contains(&st.accept_rate) {
            rates.push(st.accept_rate);
        }
    }
    let mut backlogs: Vec<i32> = r.steps.iter().map(|st| st.backlog).collect();
    backlogs.sort_unstable();
    backlogs.dedup();
    let series = |metric: &str, dash: &'static str, f: &dyn Fn(&Step) -> f64| {
        rates
            .iter()
            .enumerate()
            .map(|(i, rate)| Series {
                name: format!("{metric}, accept {}", rate_name(*rate)),
                color: COLORS[i % COLORS.len()],
                dash,
                points: r
                    .steps
                    .iter()
                    .filter(|st| st.accept_rate == *rate)
                    .map(|st| (f64::from(st.backlog), f(st)))
                    .collect(),
            })
            .collect::<Vec<_>>()
    };
    let marks: Vec<(i32, String)> = r
        .recommendations
        .iter()
        .filter_map(|rec| {
            rec.backlog.map(|b| {
                (
                    b,
                    format!("recommended at accept {}", rate_name(rec.accept_rate)),
                )
            })
        })
        .collect();
    let mut latency = series("p99", "", &|st| st.connect_latency_us.p99 as f64);
    latency.extend(series("p50", "6 3", &|st| st.connect_latency_us.p50 as f64));
    latency.extend(series("max", "2 3", &|st| st.connect_latency_us.max as f64));
    s.push_str("<h2>Connect latency against backlog</h2>");
    s.push_str(&backlog_svg(
        "connect latency (p50, p99, max) by backlog",
        &backlogs,
        &latency,
        true,
        |v| ms(v as u64),
        &marks,
        Some((r.p99_max_us as f64, "p99 threshold".to_owned())),
    ));
    let mut outcomes = series("established at once", "", &|st| {
        st.outcomes.established as f64
    });
    outcomes.extend(series("after SYN retransmits", "6 3", &|st| {
        st.outcomes.syn_retransmitted as f64
    }));
    outcomes.extend(series("ghost or failed", "2 3", &|st| {
        (st.outcomes.total() - st.outcomes.established - st.outcomes.syn_retransmitted) as f64
    }));
    s.push_str("<h2>Outcomes against backlog</h2>");
    s.push_str(&backlog_svg(
        "outcomes by backlog",
        &backlogs,
        &outcomes,
        false,
        |v| format!("{v:.0}"),
        &marks,
        None,
    ));
    s.push_str("<h2>ListenOverflows against backlog</h2>");
    s.push_str(&backlog_svg(
        "ListenOverflows by backlog",
        &backlogs,
        &series("overflows", "", &|st| st.listen_overflows as f64),
        false,
        |v| format!("{v:.0}"),
        &marks,
        None,
    ));
    s.push_str(
        "<h2>Steps</h2><table><tr><th>backlog</th><th>effective</th><th>accept rate</th>\
         <th>established</th><th>k ≥ 1</th><th>ghost</th><th>other</th><th>overflows</th>\
         <th>queue max</th><th>p50</th><th>p99</th><th>max</th></tr>",
    );
    for st in &r.steps {
        let o = &st.outcomes;
        let _ = write!(
            s,
            "<tr><td>{}{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            st.backlog,
            if st.partial { " (partial)" } else { "" },
            st.backlog_effective,
            esc(&rate_name(st.accept_rate)),
            o.established,
            o.syn_retransmitted,
            o.ghost,
            o.total() - o.established - o.syn_retransmitted - o.ghost,
            st.listen_overflows,
            st.accept_queue_max,
            ms(st.connect_latency_us.p50),
            ms(st.connect_latency_us.p99),
            ms(st.connect_latency_us.max),
        );
    }
    s.push_str("</table></body></html>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sweep::recommend::recommend;
    use crate::sweep::recommend::tests::{plan, step};

    /// The page shows the recommendation, three curves against the backlog with a point per
    /// step (x grows with the backlog), and the step table.
    #[test]
    fn sweep_page_plots_every_step_against_the_backlog() {
        let steps = vec![
            step(8, 50, 1_020_000, 60),
            step(64, 0, 900, 100),
            step(128, 0, 800, 100),
        ];
        let report = SweepReport {
            connections: 100,
            p99_max_us: 100_000,
            recommendations: vec![recommend(&plan(), Some(100.0), &steps)],
            steps,
            reports: Vec::new(),
            stopped: None,
        };
        let page = render(&report);
        assert_eq!(page.matches("<svg").count(), 3);
        assert!(page.contains("backlog 64, somaxconn ≥ 64"), "{page}");
        // Three series per chart for latency and outcomes, one for overflows; a point each.
        assert_eq!(page.matches("<circle").count(), (3 + 3 + 1) * 3);
        assert_eq!(page.matches("<tr><td>").count(), 3);
        // The overflows chart: the 8-backlog point lies left of (and above) the others.
        let chart = &page[page.rfind("<svg").unwrap()..];
        let xs: Vec<f64> = chart
            .match_indices("<circle cx=\"")
            .map(|(i, m)| {
                let rest = &chart[i + m.len()..];
                rest[..rest.find('"').unwrap()].parse().unwrap()
            })
            .collect();
        assert_eq!(xs.len(), 3);
        assert!(xs[0] < xs[1] && xs[1] < xs[2], "{xs:?}");
    }
}
