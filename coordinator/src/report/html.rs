//! `report.html`: one self-contained page (no scripts, no external files) with the summary,
//! per-agent table and two SVG plots drawn from the merged histogram: the connect-latency
//! percentile curve, and completions over time, where the kernel's SYN-retransmit steps
//! (1 s, 2 s, 3 s … on this kernel, KERNEL.md §2) show as separate towers. And the page for
//! a sweep ([`render_sweep`]): the step table, the recommendation, and curves against the
//! backlog of connect latency (p50, p99, max), outcomes and ListenOverflows.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use stampede_proto::outcome::OutcomeClass;

use super::Report;
use crate::sweep::{SweepReport, rate_name};

const W: f64 = 720.0;
const H: f64 = 260.0;
const LEFT: f64 = 64.0;
const BOTTOM: f64 = 36.0;
const TOP: f64 = 16.0;
const RIGHT: f64 = 44.0;

/// Escapes text for HTML content and attribute values.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Completions over time: `bins` equal buckets from 0 to the largest latency. Returns the
/// bucket width (µs) and the count in each; the counts add up to the histogram's count.
pub fn completion_bins(h: &Histogram<u64>, bins: usize) -> (u64, Vec<u64>) {
    if h.is_empty() || bins == 0 {
        return (1, Vec::new());
    }
    let max = h.max();
    let width = (max / bins as u64).max(1) + 1;
    let mut counts = vec![0u64; bins];
    for v in h.iter_recorded() {
        let i = ((v.value_iterated_to() / width) as usize).min(bins - 1);
        counts[i] += v.count_at_value();
    }
    (width, counts)
}

fn ms(us: u64) -> String {
    if us >= 10_000 {
        format!("{:.0} ms", us as f64 / 1000.0)
    } else {
        format!("{:.2} ms", us as f64 / 1000.0)
    }
}

fn frame(svg: &mut String, title: &str) {
    let _ = write!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" role="img" aria-label="{t}"><title>{t}</title><rect x="{LEFT}" y="{TOP}" width="{}" height="{}" fill="none" stroke="#999"/>"##,
        W - LEFT - RIGHT,
        H - TOP - BOTTOM,
        t = esc(title)
    );
}

/// Latency at percentiles 0 … 99.99 on a "nines" axis (x = −log10(1 − q)), log-scaled y.
fn percentile_svg(h: &Histogram<u64>) -> String {
    let mut svg = String::new();
    frame(&mut svg, "connect latency by percentile");
    if h.is_empty() {
        svg.push_str("</svg>");
        return svg;
    }
    let nines_max = 4.0; // 99.99
    let (lo, hi) = ((h.min().max(1)) as f64, (h.max().max(2)) as f64);
    let (ly0, ly1) = (lo.log10(), hi.log10().max(lo.log10() + 0.5));
    let px = |n: f64| LEFT + n / nines_max * (W - LEFT - RIGHT);
    let py = |v: f64| H - BOTTOM - (v.max(1.0).log10() - ly0) / (ly1 - ly0) * (H - TOP - BOTTOM);
    let mut points = String::new();
    for i in 0..=200 {
        let n = nines_max * f64::from(i) / 200.0;
        let q = 1.0 - 10f64.powf(-n);
        let v = h.value_at_quantile(q) as f64;
        let _ = write!(points, "{:.1},{:.1} ", px(n), py(v));
    }
    let _ = write!(
        svg,
        r##"<polyline fill="none" stroke="#1f6feb" stroke-width="2" points="{points}"/>"##
    );
    for (n, label) in [
        (0.0, "0%"),
        (1.0, "90%"),
        (2.0, "99%"),
        (3.0, "99.9%"),
        (4.0, "99.99%"),
    ] {
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle">{label}</text>"#,
            px(n),
            H - BOTTOM + 16.0
        );
    }
    for v in [lo, (lo * hi).sqrt(), hi] {
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">{}</text>"#,
            LEFT - 4.0,
            py(v) + 4.0,
            ms(v as u64)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// Completions per time bucket since each attempt's intended start.
fn completions_svg(h: &Histogram<u64>) -> String {
    let mut svg = String::new();
    frame(&mut svg, "completions over time");
    let (width, counts) = completion_bins(h, 120);
    let top = counts.iter().copied().max().unwrap_or(0).max(1) as f64;
    let bw = (W - LEFT - RIGHT) / counts.len().max(1) as f64;
    for (i, c) in counts.iter().enumerate() {
        if *c == 0 {
            continue;
        }
        let bh = *c as f64 / top * (H - TOP - BOTTOM);
        let _ = write!(
            svg,
            r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{bh:.1}" fill="#2da44e"><title>{}–{}: {c}</title></rect>"##,
            LEFT + i as f64 * bw,
            H - BOTTOM - bh,
            (bw - 0.5).max(0.5),
            ms(i as u64 * width),
            ms((i as u64 + 1) * width),
        );
    }
    let span = width * counts.len() as u64;
    for k in 0..=4u64 {
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle">{}</text>"#,
            LEFT + k as f64 / 4.0 * (W - LEFT - RIGHT),
            H - BOTTOM + 16.0,
            ms(span * k / 4)
        );
    }
    let _ = write!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">{}</text></svg>"#,
        LEFT - 4.0,
        TOP + 10.0,
        top as u64
    );
    svg
}

/// The page for a run: `connect` is the merged connect-latency histogram behind the report.
pub fn render(r: &Report, connect: &Histogram<u64>) -> String {
    let mut s = String::new();
    let status = if r.aborted {
        "aborted"
    } else if r.partial {
        "partial"
    } else {
        "complete"
    };
    page_head(&mut s, &format!("stampede run {}", r.run_id));
    let _ = write!(s, "<p>started {}, {status}</p>", esc(&r.started_at));
    if !r.lost_agents.is_empty() {
        let _ = write!(
            s,
            "<p><strong>lost agents:</strong> {}</p>",
            esc(&r.lost_agents.join(", "))
        );
    }
    s.push_str("<h2>Outcomes</h2><table><tr><th>class</th><th>attempts</th></tr>");
    for class in OutcomeClass::ALL {
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td></tr>",
            class.name(),
            r.outcomes.get(class)
        );
    }
    let _ = write!(
        s,
        "<tr><th>total</th><th>{}</th></tr></table>",
        r.outcomes.total()
    );
    if !r.syn_retransmits.is_empty() {
        s.push_str("<p>by SYN retransmits: ");
        let ks: Vec<String> = r
            .syn_retransmits
            .iter()
            .map(|(k, n)| format!("k={}: {n}", esc(k)))
            .collect();
        s.push_str(&ks.join(", "));
        s.push_str("</p>");
    }
    if let Some(caveat) = r.admission.caveat(r.outcomes.connected()) {
        let _ = write!(s, "<p><strong>{}</strong></p>", esc(&caveat));
    }
    let l = &r.connect_latency_us;
    let _ = write!(
        s,
        "<h2>Connect latency</h2><p>from each attempt's intended send time: p50 {} · p90 {} · p99 {} · p99.9 {} · max {} (n={})</p>",
        ms(l.p50),
        ms(l.p90),
        ms(l.p99),
        ms(l.p999),
        ms(l.max),
        l.count
    );
    s.push_str(&percentile_svg(connect));
    s.push_str("<h2>Completions over time</h2>");
    s.push_str(&completions_svg(connect));
    s.push_str("<h2>Agents</h2><table><tr><th>agent</th><th>host</th><th>attempts</th><th>p99</th><th>clock offset</th><th>± uncertainty</th><th>start error</th></tr>");
    for a in &r.agents {
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} µs</td><td>{} µs</td><td>{}</td></tr>",
            esc(&a.id),
            esc(&a.host),
            a.attempts,
            ms(a.connect_latency_us.p99),
            a.clock_offset_us,
            a.clock_uncertainty_us,
            a.start_error_us
                .map_or_else(|| "–".to_owned(), |e| format!("{e} µs"))
        );
    }
    s.push_str("</table>");
    if let Some(spread) = r.start_spread_us {
        let _ = write!(s, "<p>start spread across agents: {spread} µs</p>");
    }
    if let Some(t) = &r.target {
        s.push_str("<h2>Target</h2><table>");
        for key in stampede_target::stats::CONTRACT_KEYS {
            // null: observing another process's listener, which alone knows it.
            let v = t
                .get(key)
                .filter(|v| !v.is_null())
                .map_or_else(|| "–".to_owned(), |v| v.to_string());
            let _ = write!(s, "<tr><td>{key}</td><td>{}</td></tr>", esc(&v));
        }
        s.push_str("</table>");
    }
    s.push_str("</body></html>\n");
    s
}

/// Shared page head: title and the stylesheet.
fn page_head(s: &mut String, title: &str) {
    let _ = write!(
        s,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title>\
         <style>body{{font:14px system-ui,sans-serif;margin:24px;max-width:760px}}\
         table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}\
         th:first-child,td:first-child{{text-align:left}}</style></head><body>\
         <h1>{t}</h1>",
        t = esc(title),
    );
}

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
pub fn render_sweep(r: &SweepReport) -> String {
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
    let series = |metric: &str, dash: &'static str, f: &dyn Fn(&crate::sweep::Step) -> f64| {
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
    use crate::report::AgentReport;

    fn steps() -> Histogram<u64> {
        let mut h = stampede_proto::histogram::new_latency();
        for i in 0..900u64 {
            h.record(20 + i % 50).unwrap(); // at once
        }
        for i in 0..80u64 {
            h.record(1_024_000 + i * 10).unwrap(); // first SYN retransmit
        }
        for i in 0..20u64 {
            h.record(3_074_000 + i * 10).unwrap(); // third
        }
        h
    }

    #[test]
    fn bins_keep_every_completion_and_show_the_steps() {
        let h = steps();
        let (width, counts) = completion_bins(&h, 120);
        assert_eq!(counts.iter().sum::<u64>(), 1000);
        // The towers: the fast ones in the first bucket, the 1 s and 3 s steps in theirs.
        assert_eq!(counts[0], 900);
        assert_eq!(counts[(1_024_000 / width) as usize], 80);
        assert_eq!(counts[(3_074_000 / width) as usize].min(20), 20);
        assert_eq!(counts.iter().filter(|c| **c > 0).count(), 3);
    }

    #[test]
    fn page_is_self_contained_and_escapes_names() {
        let r = Report {
            run_id: "r1".into(),
            agents: vec![AgentReport {
                id: "<agent&1>".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let page = render(&r, &steps());
        assert_eq!(page.matches("<svg").count(), 2);
        assert!(page.contains("&lt;agent&amp;1&gt;"));
        assert!(!page.contains("<agent&1>"));
        assert!(
            !page.contains("<script") && !page.contains("http://")
                || page.contains("http://www.w3.org/2000/svg")
        );
        assert!(page.contains("99.99%"));
    }
}
