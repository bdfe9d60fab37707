//! `report.html`: one self-contained page (no scripts, no external files) with the summary,
//! per-agent table and two SVG plots drawn from the merged histogram: the connect-latency
//! percentile curve, and completions over time, where the kernel's SYN-retransmit steps
//! (1 s, 2 s, 3 s … on this kernel, docs/kernel.md §2) show as separate towers. The page's
//! parts (head, escaping, chart frame, millisecond labels) are shared with the sweep's page,
//! `crate::sweep::html`, which builds on them; this module knows nothing of sweeps.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use stampede_proto::outcome::OutcomeClass;

use super::Report;

// A chart's size and the margins around its plot area, in SVG pixels (the sweep's charts
// share them).
pub(crate) const W: f64 = 720.0;
pub(crate) const H: f64 = 260.0;
pub(crate) const LEFT: f64 = 64.0;
pub(crate) const BOTTOM: f64 = 36.0;
pub(crate) const TOP: f64 = 16.0;
pub(crate) const RIGHT: f64 = 44.0;

/// Escapes text for HTML content and attribute values.
pub(crate) fn esc(s: &str) -> String {
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

/// A latency in µs as milliseconds, with decimals only where they matter.
pub(crate) fn ms(us: u64) -> String {
    if us >= 10_000 {
        format!("{:.0} ms", us as f64 / 1000.0)
    } else {
        format!("{:.2} ms", us as f64 / 1000.0)
    }
}

/// Opens a chart: the `<svg>` element, its title and the plot area's border.
pub(crate) fn frame(svg: &mut String, title: &str) {
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
    // The run in plain words first, as the terminal's summary ends on it.
    let _ = write!(
        s,
        "<p class=\"verdict\"><strong>Verdict:</strong> {}</p>",
        code_spans(&esc(&super::story::verdict(r)))
    );
    if !r.lost_agents.is_empty() {
        let _ = write!(
            s,
            "<p><strong>lost agents:</strong> {}</p>",
            esc(&r.lost_agents.join(", "))
        );
    }
    if r.skipped_overdue > 0 || r.issued_late > 0 {
        let _ = write!(
            s,
            "<p><strong>stalled:</strong> {} attempts skipped overdue (never fired late), {} issued late</p>",
            r.skipped_overdue, r.issued_late
        );
    }
    for (agent, why) in &r.cut_reasons {
        let _ = write!(
            s,
            "<p><strong>cut short:</strong> {}: {}</p>",
            esc(agent),
            esc(why)
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
        let ks = stampede_proto::report::k_counts(&r.syn_retransmits);
        let _ = write!(s, "<p>by SYN retransmits: {ks}</p>");
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
        for (key, v) in t.contract() {
            // "–": observing another process's listener, which alone knows it.
            let v = v.unwrap_or_else(|| "–".to_owned());
            let _ = write!(s, "<tr><td>{key}</td><td>{}</td></tr>", esc(&v));
        }
        s.push_str("</table>");
    }
    s.push_str("</body></html>\n");
    s
}

/// Text whose `backquoted` commands become `<code>` (the verdict is written for the terminal
/// too, where backquotes mark a command). Call it on escaped text.
fn code_spans(escaped: &str) -> String {
    // An unpaired backquote marks nothing: the text stays as it is.
    if !escaped.matches('`').count().is_multiple_of(2) {
        return escaped.to_owned();
    }
    let mut out = String::with_capacity(escaped.len());
    for (i, part) in escaped.split('`').enumerate() {
        // Odd parts are inside backquotes.
        if i % 2 == 1 {
            let _ = write!(out, "<code>{part}</code>");
        } else {
            out.push_str(part);
        }
    }
    out
}

/// Shared page head: title and the stylesheet.
pub(crate) fn page_head(s: &mut String, title: &str) {
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

    /// The verdict opens the page, escaped, right under the run's status.
    #[test]
    fn page_opens_on_the_verdict() {
        let r = Report {
            outcomes: crate::report::Outcomes {
                refused: 3,
                ..Default::default()
            },
            scenario: serde_json::json!({"target": "<host>:9"}),
            ..Default::default()
        };
        let page = render(&r, &steps());
        let verdict =
            page.find("<p class=\"verdict\"><strong>Verdict:</strong> All 3 were refused");
        let first_chart = page.find("<svg");
        assert!(verdict.is_some() && verdict < first_chart, "{page}");
        assert!(page.contains("no listener at &lt;host&gt;:9"), "{page}");
    }

    #[test]
    fn backquoted_commands_become_code() {
        assert_eq!(
            code_spans("see `stampede sweep` now"),
            "see <code>stampede sweep</code> now"
        );
        assert_eq!(code_spans("one ` alone"), "one ` alone");
    }
}
