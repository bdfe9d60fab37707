//! report.html, sweep.html and capacity.html in a real browser (headless Chromium, stampede-lab's
//! `chromium`): each page loads with no console output at all (the pages have no scripts, so
//! any line is an error), and a check script appended to a copy of the page reads what the
//! browser built: every chart's SVG is SVG, has its axis titles and reference-line labels as
//! text, at least one visible mark in each series' colour, and its legend apart from the plot.

use std::path::Path;

use stampede::report::{AgentReport, Kernel, Outcomes, Report};
use stampede::sweep::{Recommendation, Step, SweepReport};
use stampede_lab::chromium::{Chromium, chromium_or_skip, with_script};
use stampede_proto::outcome::Outcome;
use stampede_proto::report::Latency;
use stampede_proto::tally::Tally;
use stampede_proto::target::TargetStats;
use stampede_proto::timeline::Timeline;

/// Runs in the page: one entry per chart figure, as JSON in `<pre id="stampede-check">`.
const CHECK: &str = r#"
(function () {
  const out = [];
  for (const f of document.querySelectorAll('figure.chart')) {
    const svg = f.querySelector('.plot svg');
    const legend = f.querySelector('ul.legend');
    const texts = svg ? [...svg.querySelectorAll('text')].map(t => t.textContent.trim()) : [];
    const visible = el => { const b = el.getBBox(); return b.width > 0 || b.height > 0; };
    const series = [...legend.querySelectorAll('li[data-color]')].map(li => {
      const c = li.dataset.color.toLowerCase();
      const marks = svg ? [...svg.querySelectorAll('*')].filter(el =>
        [el.getAttribute('fill'), el.getAttribute('stroke')]
          .some(v => (v || '').toLowerCase() === c) && visible(el)).length : 0;
      return { name: li.textContent.trim(), points: +li.dataset.points, marks };
    });
    const s = svg ? svg.getBoundingClientRect() : null, l = legend.getBoundingClientRect();
    out.push({
      id: f.dataset.chart, x: f.dataset.xTitle, y: f.dataset.yTitle,
      ns: svg ? svg.namespaceURI : null, texts, series,
      refs: [...legend.querySelectorAll('li.ref')].map(li => li.textContent.trim()),
      overlap: s ? !(l.right <= s.left || l.left >= s.right || l.bottom <= s.top || l.top >= s.bottom) : true,
    });
  }
  const pre = document.createElement('pre');
  pre.id = 'stampede-check';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();
"#;

/// Loads `page` as a user would, then with the check; returns the check's findings.
fn check(browser: &Chromium, page: &str, dir: &Path, name: &str) -> Vec<serde_json::Value> {
    let file = dir.join(name);
    std::fs::write(&file, page).unwrap();
    let plain = browser.load(&file).unwrap();
    assert!(
        plain.console.is_empty(),
        "{name}: console: {:?}",
        plain.console
    );
    assert!(plain.dom.contains("<figure class=\"chart\""), "{name}");
    let checked = browser
        .load(&with_script(page, CHECK, dir).unwrap())
        .unwrap();
    assert!(
        checked.console.is_empty(),
        "{name}: check script: {:?}",
        checked.console
    );
    let dom = &checked.dom;
    let open = "<pre id=\"stampede-check\">";
    let start = dom.find(open).expect("the check ran") + open.len();
    let json = &dom[start..start + dom[start..].find("</pre>").unwrap()];
    let json = json
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&");
    serde_json::from_str(&json).unwrap()
}

/// Every chart: SVG, axis titles, reference labels, a visible mark per series with data, the
/// legend off the plot. Returns the chart ids in page order.
fn assert_charts(charts: &[serde_json::Value]) -> Vec<String> {
    for c in charts {
        let id = &c["id"];
        assert_eq!(c["ns"], "http://www.w3.org/2000/svg", "{id}");
        let texts: Vec<&str> = c["texts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        for title in [&c["x"], &c["y"]] {
            let title = title.as_str().unwrap();
            assert!(
                !title.is_empty() && texts.contains(&title),
                "{id}: axis title {title:?} not in {texts:?}"
            );
        }
        for r in c["refs"].as_array().unwrap() {
            assert!(
                texts.contains(&r.as_str().unwrap()),
                "{id}: reference {r} unlabelled in {texts:?}"
            );
        }
        let series = c["series"].as_array().unwrap();
        assert!(!series.is_empty(), "{id}: no legend entries");
        for s in series {
            if s["points"].as_u64().unwrap() > 0 {
                assert!(
                    s["marks"].as_u64().unwrap() >= 1,
                    "{id}: series {} has no mark",
                    s["name"]
                );
            }
        }
        assert_eq!(c["overlap"], false, "{id}: the legend overlaps the plot");
    }
    charts
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect()
}

fn scratch(test: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("stampede-pages-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A run with established, k=1 and ghost completions, a target with its queue timeline.
fn run_page() -> String {
    let mut t = Tally::default();
    for i in 0..200u64 {
        let (o, at) = match i {
            0..150 => (Outcome::Established, 50 + i),
            150..180 => (Outcome::SynRetransmitted { k: 1 }, 1_030_000 + i * 100),
            _ => (Outcome::Ghost { k: 1 }, 1_031_000 + i * 100),
        };
        t.record(o);
        t.record_completion(o, at);
        t.connect_latency.record(at).unwrap();
        t.ttfb.record(at + 300).unwrap();
    }
    let kernel = Kernel {
        tcp_syn_retries: Some(6),
        tcp_syn_linear_timeouts: Some(4),
        ..Default::default()
    };
    let mut timeline = Timeline::new(10_000, 200);
    for i in 0..150u64 {
        timeline.record(i * 10_000, (i as u32 * 2).min(9), i);
    }
    let r = Report {
        run_id: "browser-1".into(),
        outcomes: t.outcomes,
        connect_latency_us: Latency::from(&t.connect_latency),
        ttfb_us: Latency::from(&t.ttfb),
        agents: vec![AgentReport {
            id: "a1".into(),
            kernel: kernel.clone(),
            ..Default::default()
        }],
        kernel,
        target: Some(TargetStats {
            backlog_requested: Some(8),
            backlog_effective: 8,
            timeline: Some(timeline),
            ..Default::default()
        }),
        ..Default::default()
    };
    stampede::report::html::render(&r, &t)
}

fn sweep_page() -> String {
    let step = |backlog: i32, p99: u64, overflows: u64, peak: u32| Step {
        backlog,
        accept_rate: Some(stampede::scenario::AcceptRate(100.0)),
        backlog_effective: backlog as u32,
        somaxconn: 4096,
        outcomes: Outcomes {
            established: 100 - overflows.min(100),
            syn_retransmitted: overflows.min(100),
            ..Default::default()
        },
        connect_latency_us: Latency {
            count: 100,
            p50: 300,
            p99,
            max: p99 * 2,
            ..Default::default()
        },
        ttfb_us: Latency {
            count: 100,
            p99: p99 + 900,
            max: p99 * 3,
            ..Default::default()
        },
        listen_overflows: overflows,
        syncookies_sent: 0,
        accept_queue_max: peak,
        accepted: 100,
        partial: false,
        issue_duration_us: Some(100_000),
        clean: overflows == 0,
        unclean: (overflows > 0).then(|| format!("{overflows} ListenOverflows")),
        runs: 1,
        clean_runs: u32::from(overflows == 0),
        model_backlog: 89,
        ..Default::default()
    };
    let r = SweepReport {
        connections: 100,
        p99_max_us: 50_000,
        steps: vec![
            step(8, 1_030_000, 60, 9),
            step(64, 900, 0, 50),
            step(128, 800, 0, 52),
        ],
        recommendations: vec![Recommendation {
            accept_rate: Some(stampede::scenario::AcceptRate(100.0)),
            backlog: Some(64),
            somaxconn: Some(64),
            model_backlog: 89,
            reason: "clean".into(),
            measured_queue_peak: Some(50),
            bracket: Some([8, 64]),
            ..Default::default()
        }],
        reports: Vec::new(),
        stopped: None,
    };
    stampede::sweep::html::render(&r)
}

#[test]
fn report_html_renders_in_chromium() {
    let Some(browser) = chromium_or_skip("report_html_renders_in_chromium") else {
        return;
    };
    let dir = scratch("report");
    let charts = check(&browser, &run_page(), &dir, "report.html");
    assert_eq!(
        assert_charts(&charts),
        ["completions", "percentiles", "queue"]
    );
    // The stack has its three classes, the SYN schedule its 1 s line.
    let names: Vec<&str> = charts[0]["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(
        charts[0]["refs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == "SYN #1 (1 s)")
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sweep_html_renders_in_chromium() {
    let Some(browser) = chromium_or_skip("sweep_html_renders_in_chromium") else {
        return;
    };
    let dir = scratch("sweep");
    let charts = check(&browser, &sweep_page(), &dir, "sweep.html");
    assert_eq!(
        assert_charts(&charts),
        ["sweep-latency", "sweep-outcomes", "sweep-queue"]
    );
    let latency = &charts[0];
    assert!(
        latency["texts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == "p99 limit 50.0ms")
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// capacity.html (`stampede history report`): an entry's runs over time, the regressed run
/// marked and labelled on every chart.
fn capacity_page() -> String {
    use stampede::history::record::{Figures, Kind, Record, Status};
    let run = |id: &str, p99: u64, ghosts: u64, verdict: &str| Record {
        run_id: id.into(),
        batch: id.into(),
        entry: "web-burst".into(),
        kind: Kind::Run,
        scenario_name: "burst".into(),
        scenario_hash: "h".into(),
        scenario_canonical: "{}".into(),
        started_at: "2026-11-27T03:00:00Z".into(),
        finished_at: "2026-11-27T03:00:05Z".into(),
        status: Status::Complete,
        reason: None,
        figures: Figures {
            outcomes: Outcomes {
                established: 100 - ghosts,
                ghost: ghosts,
                ..Default::default()
            },
            connect_us: Latency {
                count: 100,
                p50: 300,
                p99,
                ..Default::default()
            },
            ttfb_us: Latency {
                count: 100 - ghosts,
                p50: 400,
                p99: p99 + 100,
                ..Default::default()
            },
            listen_overflows: Some(ghosts * 2),
            ..Default::default()
        },
        verdict: verdict.into(),
        reasons: vec!["new ghosts".into()],
        baseline_run_id: None,
        report_json: None,
    };
    stampede::history::html::render(
        "web-burst",
        &[
            run("r1", 900, 0, "no-baseline"),
            run("r2", 950, 0, "pass"),
            run("r3", 1_030_000, 40, "regression"),
        ],
    )
}

#[test]
fn capacity_html_renders_in_chromium() {
    let Some(browser) = chromium_or_skip("capacity_html_renders_in_chromium") else {
        return;
    };
    let dir = scratch("capacity");
    let charts = check(&browser, &capacity_page(), &dir, "capacity.html");
    assert_eq!(
        assert_charts(&charts),
        ["connect", "first-byte", "outcomes", "overflows"]
    );
    for c in &charts {
        let refs = c["refs"].as_array().unwrap();
        assert_eq!(refs, &["run 3 regressed"], "{}", c["id"]);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
