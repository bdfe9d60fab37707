//! `/metrics` scraped over HTTP and parsed by an independent parser: Python's
//! prometheus_client OpenMetrics parser (`text_string_to_metric_families`). Without it the
//! tests fail under CI (`.ci/run` installs it) and are skipped loudly elsewhere.
//!
//! Two views: the library's endpoint fed one known run (every histogram bucket checked
//! against the samples recorded), and a running `stampede schedule` whose ticks fail, are
//! skipped while a run is in progress, and whose last run SIGTERM aborts.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use stampede::history::{Entry, Kind, Ran};
use stampede::metrics::{self, Metrics};
use stampede::report::{Latency, Outcomes, Report};
use stampede_lab::ChildGuard;
use tokio_util::sync::CancellationToken;

const BIN: &str = env!("CARGO_BIN_EXE_stampede");

/// One parsed sample: (sample name, labels, value).
type Sample = (String, BTreeMap<String, String>, f64);

const PARSER: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = []
for f in text_string_to_metric_families(sys.stdin.read()):
    out.append({"name": f.name, "type": f.type,
                "samples": [[s.name, s.labels, s.value] for s in f.samples]})
print(json.dumps(out))
"#;

/// The parser, or why the test cannot run (a failure under CI, a loud skip elsewhere).
fn parser_available(test: &str) -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import prometheus_client.openmetrics.parser"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return true;
    }
    assert!(
        !stampede_lab::gate::env_flag("CI"),
        "{test}: Python's prometheus_client is missing: pip install prometheus-client (.ci/run does)"
    );
    // libtest captures print!, not the process's stderr: the skip is seen.
    if let Ok(mut e) = std::fs::OpenOptions::new()
        .write(true)
        .open("/proc/self/fd/2")
    {
        let _ = writeln!(
            e,
            "SKIPPED {test}: Python's prometheus_client is missing (pip install prometheus-client)"
        );
    }
    false
}

/// Families by name: (type, samples).
fn parse(text: &str) -> BTreeMap<String, (String, Vec<Sample>)> {
    let mut child = Command::new("python3")
        .args(["-c", PARSER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the parser refused it: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let samples = f["samples"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| {
                    let labels = s[1]
                        .as_object()
                        .unwrap()
                        .iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                        .collect();
                    (
                        s[0].as_str().unwrap().to_owned(),
                        labels,
                        s[2].as_f64().unwrap(),
                    )
                })
                .collect();
            (
                f["name"].as_str().unwrap().to_owned(),
                (f["type"].as_str().unwrap().to_owned(), samples),
            )
        })
        .collect()
}

/// `GET /metrics` with an optional bearer token: (status line, body).
fn scrape(addr: SocketAddr, token: Option<&str>) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\n{auth}\r\n").unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    let (head, body) = reply.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

fn value(
    f: &BTreeMap<String, (String, Vec<Sample>)>,
    family: &str,
    sample: &str,
    labels: &[(&str, &str)],
) -> f64 {
    let (_, samples) = f
        .get(family)
        .unwrap_or_else(|| panic!("no family {family}"));
    samples
        .iter()
        .find(|(n, l, _)| {
            n == sample
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .unwrap_or_else(|| panic!("no {sample}{labels:?} in {samples:?}"))
        .2
}

#[tokio::test]
async fn one_run_is_exposed_exactly() {
    if !parser_available("one_run_is_exposed_exactly") {
        return;
    }
    // A run whose connect latencies are known: 90 at 300 µs, 10 at 1.2 s (SYN retransmits).
    let mut connect = stampede_proto::histogram::new_latency();
    connect.record_n(300, 90).unwrap();
    connect.record_n(1_200_000, 10).unwrap();
    let ttfb = stampede_proto::histogram::new_latency();
    let report = Report {
        run_id: "r1".into(),
        outcomes: Outcomes {
            established: 90,
            syn_retransmitted: 10,
            ghost: 3,
            ..Outcomes::default()
        },
        connect_latency_us: Latency::from(&connect),
        ..Report::default()
    };
    let entry = Entry {
        name: "web".into(),
        kind: Kind::Run,
        scenario_name: "s".into(),
        scenario: serde_json::json!({}),
    };
    let mut row = entry.record("r1", "2026-11-27T03:00:00Z", Ran::Run(&report));
    row.verdict = "regression".into();
    let m = Arc::new(Metrics::new());
    m.record(&row, Some((&connect, &ttfb)));
    let stop = CancellationToken::new();
    let token = stampede::auth::Token::new("s3cret");
    let addr = metrics::serve("127.0.0.1:0".parse().unwrap(), m, token, stop.clone())
        .await
        .unwrap();
    let (status, body, unauth) = tokio::task::spawn_blocking(move || {
        let (status, body) = scrape(addr, Some("s3cret"));
        (status, body, scrape(addr, Some("wrong")).0)
    })
    .await
    .unwrap();
    stop.cancel();
    assert!(unauth.contains("401"), "{unauth}");
    assert!(status.contains("200"), "{status}");
    let f = parse(&body);
    let h = "stampede_last_run_connect_latency_seconds";
    assert_eq!(f[h].0, "histogram");
    let web = [("entry", "web"), ("run_id", "r1")];
    assert_eq!(value(&f, h, &format!("{h}_count"), &web), 100.0);
    let bucket = |le: &str| {
        value(
            &f,
            h,
            &format!("{h}_bucket"),
            &[("entry", "web"), ("le", le)],
        )
    };
    assert_eq!(bucket("0.00025"), 0.0);
    assert_eq!(bucket("0.0005"), 90.0);
    assert_eq!(bucket("1.5"), 100.0);
    assert_eq!(bucket("+Inf"), 100.0);
    // HdrHistogram values are exact to 3 significant digits.
    let sum = value(&f, h, &format!("{h}_sum"), &web);
    assert!((sum - (90.0 * 0.0003 + 10.0 * 1.2)).abs() < 0.02, "{sum}");
    let outcome = |c: &str| {
        value(
            &f,
            "stampede_last_run_outcomes",
            "stampede_last_run_outcomes",
            &[("entry", "web"), ("class", c)],
        )
    };
    assert_eq!(
        (
            outcome("established"),
            outcome("syn_retransmitted"),
            outcome("ghost")
        ),
        (90.0, 10.0, 3.0)
    );
    assert_eq!(
        value(
            &f,
            "stampede_runs",
            "stampede_runs_total",
            &[("entry", "web"), ("result", "complete")]
        ),
        1.0
    );
    let verdict = |v: &str| {
        value(
            &f,
            "stampede_last_verdict",
            "stampede_last_verdict",
            &[("entry", "web"), ("verdict", v)],
        )
    };
    assert_eq!((verdict("regression"), verdict("pass")), (1.0, 0.0));
    // A regression is not a clean run: no "since the last clean run" yet.
    let since = f.get("stampede_seconds_since_last_clean_run");
    assert!(since.is_none_or(|(_, s)| s.is_empty()), "{since:?}");
}

/// A clean run starts the clock of `seconds_since_last_clean_run`; a later regression does
/// not reset it.
#[tokio::test]
async fn seconds_since_the_last_clean_run_count_from_the_clean_one() {
    if !parser_available("seconds_since_the_last_clean_run_count_from_the_clean_one") {
        return;
    }
    let entry = Entry {
        name: "web".into(),
        kind: Kind::Run,
        scenario_name: "s".into(),
        scenario: serde_json::json!({}),
    };
    let report = Report {
        run_id: "r1".into(),
        ..Report::default()
    };
    let mut clean = entry.record("r1", "2026-11-27T03:00:00Z", Ran::Run(&report));
    clean.verdict = "pass".into();
    let m = Arc::new(Metrics::new());
    m.record(&clean, None);
    let stop = CancellationToken::new();
    let addr = metrics::serve(
        "127.0.0.1:0".parse().unwrap(),
        m.clone(),
        None,
        stop.clone(),
    )
    .await
    .unwrap();
    let first = tokio::task::spawn_blocking(move || scrape(addr, None).1)
        .await
        .unwrap();
    let mut bad = clean.clone();
    bad.verdict = "regression".into();
    m.record(&bad, None);
    let second = tokio::task::spawn_blocking(move || scrape(addr, None).1)
        .await
        .unwrap();
    stop.cancel();
    let since = |body: &str| {
        let f = parse(body);
        assert_eq!(f["stampede_seconds_since_last_clean_run"].0, "gauge");
        value(
            &f,
            "stampede_seconds_since_last_clean_run",
            "stampede_seconds_since_last_clean_run",
            &[("entry", "web")],
        )
    };
    let (a, b) = (since(&first), since(&second));
    assert!((0.0..60.0).contains(&a), "{a}");
    assert!(b >= a, "the regression did not reset it: {a} then {b}");
    let f = parse(&second);
    assert_eq!(
        value(
            &f,
            "stampede_runs",
            "stampede_runs_total",
            &[("entry", "web"), ("result", "complete")]
        ),
        2.0
    );
}

/// A running scheduler: ticks every second, each run waits 2.5 s for an agent that never
/// comes, so the ticks in between are skipped; SIGTERM during a run aborts it.
#[test]
fn a_running_scheduler_counts_failed_skipped_and_aborted_runs() {
    if !parser_available("a_running_scheduler_counts_failed_skipped_and_aborted_runs") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("stampede-metrics-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("cap.toml"),
        "[[entry]]\nname = \"tick\"\ncron = \"* * * * * *\"\n[entry.scenario]\n\
         target = \"127.0.0.1:9\"\nagent_wait = \"2500ms\"\n",
    )
    .unwrap();
    let db = dir.join("h.db");
    let mut child = ChildGuard::spawn(
        Command::new(BIN)
            .arg("schedule")
            .arg(dir.join("cap.toml"))
            .args([
                "--listen",
                "127.0.0.1:0",
                "--metrics",
                "127.0.0.1:0",
                "--db",
            ])
            .arg(&db)
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    )
    .unwrap();
    let mut lines = BufReader::new(child.0.stderr.take().unwrap()).lines();
    let mut next = |what: &str| -> String {
        // Bounded: the scheduler logs each event within seconds; a dead one ends the stream.
        for _ in 0..10_000 {
            let line = lines
                .next()
                .unwrap_or_else(|| panic!("exited before {what}"))
                .unwrap();
            if line.contains(what) {
                return line;
            }
        }
        panic!("no {what} in 10000 lines");
    };
    let line = next("serving /metrics");
    let addr: SocketAddr = line.split("addr=").nth(1).unwrap().trim().parse().unwrap();
    // The first tick's run fails, then the ticks that fell due during it are skipped.
    next("judged");
    next("skipped");
    next("skipped");
    let (status, body) = scrape(addr, None);
    assert!(status.contains("200"), "{status}");
    let f = parse(&body);
    assert_eq!(
        value(
            &f,
            "stampede_agents_attached",
            "stampede_agents_attached",
            &[]
        ),
        0.0
    );
    let runs = |r: &str| {
        value(
            &f,
            "stampede_runs",
            "stampede_runs_total",
            &[("entry", "tick"), ("result", r)],
        )
    };
    assert!(runs("failed") >= 1.0 && runs("skipped") >= 2.0, "{body}");
    // SIGTERM while the next run waits for its agent: recorded as aborted, exit 1.
    next("tick entry=tick");
    child.signal(stampede_lab::SIGTERM).unwrap();
    let status = child
        .wait_exit(Duration::from_secs(30))
        .expect("exits on SIGTERM");
    assert_eq!(status.code(), Some(1));
    let out = Command::new(BIN)
        .args(["history", "list", "--json", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let statuses: Vec<&str> = rows.iter().map(|r| r["status"].as_str().unwrap()).collect();
    assert_eq!(statuses.first(), Some(&"failed"), "{statuses:?}");
    assert_eq!(statuses.last(), Some(&"aborted"), "{statuses:?}");
    assert!(
        statuses[1..3].iter().all(|s| *s == "skipped"),
        "{statuses:?}"
    );
    let skipped = &rows[1];
    assert!(
        skipped["reason"]
            .as_str()
            .unwrap()
            .contains("fell due while a run was in progress"),
        "{skipped}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
