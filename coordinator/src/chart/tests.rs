//! The chart parts a reader relies on are in the SVG: axis titles, ticks, a mark per series
//! in its colour, labelled reference lines, and the legend outside the plot.

use super::*;

fn chart() -> Chart {
    Chart {
        id: "demo",
        title: "demo chart".into(),
        x: Axis::linear("time since the start (s)"),
        y: Axis::linear("completions per 0.1 s"),
        series: vec![
            Series {
                name: "established".into(),
                style: Style::fill("#009e73"),
                kind: Kind::Bars { width: 0.1 },
                points: vec![(0.0, 50.0), (1.0, 10.0)],
            },
            Series {
                name: "ghost".into(),
                style: Style::fill("#d55e00"),
                kind: Kind::Bars { width: 0.1 },
                points: vec![(1.0, 39.0)],
            },
            Series {
                name: "p99".into(),
                style: Style::nth(6),
                kind: Kind::Line,
                points: vec![(0.5, 20.0), (2.0, 30.0)],
            },
        ],
        refs: vec![
            RefLine::x(1.0, "SYN retransmit 1 (1 s)"),
            RefLine::y(45.0, "threshold 45"),
        ],
    }
}

#[test]
fn svg_has_titles_ticks_marks_and_labelled_references() {
    let c = chart();
    let page = render(&c).into_string();
    let svg = &page[page.find("<svg").unwrap()..page.find("</svg>").unwrap()];
    let texts = texts(svg);
    for text in [
        "time since the start (s)",
        "completions per 0.1 s",
        "SYN retransmit 1 (1 s)",
        "threshold 45",
    ] {
        assert!(texts.iter().any(|t| t == text), "{text} missing: {texts:?}");
    }
    // 1-2-5 ticks: 0 … 2.5 by 0.5 on x, 0 … 50 by 10 on y (the stack tops are 50 and 49).
    for tick in ["0.5", "1", "2", "10", "50"] {
        assert!(texts.iter().any(|t| t == tick), "tick {tick}: {texts:?}");
    }
    // A mark of each series in its colour (plotters writes colours in upper case).
    for s in &c.series {
        let color = s.style.color.to_uppercase();
        assert!(svg.contains(&color), "{} ({color}) has no mark", s.name);
    }
    // The legend is HTML after the SVG: every series and reference line, none inside the plot.
    let legend = &page[page.find("<ul class=\"legend\">").unwrap()..];
    for name in ["established", "ghost", "p99", "threshold 45"] {
        assert!(legend.contains(name), "{name}");
    }
    assert!(page.contains("data-x-title=\"time since the start (s)\""));
}

/// The text of every `<text>` element, trimmed.
fn texts(svg: &str) -> Vec<String> {
    svg.split("<text")
        .skip(1)
        .map(|t| {
            let body = &t[t.find('>').unwrap() + 1..t.find("</text>").unwrap()];
            body.trim().to_owned()
        })
        .collect()
}

#[test]
fn bars_stack_in_series_order() {
    let s = stacked(&chart());
    assert_eq!(s[0], vec![(0.0, 0.0, 50.0), (1.0, 0.0, 10.0)]);
    assert_eq!(s[1], vec![(1.0, 10.0, 49.0)]);
    assert!(s[2].is_empty());
}

#[test]
fn an_empty_series_keeps_its_legend_entry() {
    let mut c = chart();
    c.series[1].points.clear();
    let page = render(&c).into_string();
    assert!(page.contains("ghost (no data)"), "{page}");
}
