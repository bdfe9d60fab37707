//! `/metrics` after a restart on the same history: what the metrics show of each entry (its
//! last run, when it last ran clean, its last measured histograms) is filled from the
//! history, so a coordinator restarted after its last clean run still shows it; histograms
//! kept from an older run after a failed one say which run they are from (`run_id`).
//!
//! The "restart" is a new `Metrics` over the history file reopened, as `stampede schedule`
//! and `stampede run --db --metrics` build theirs at start.

use stampede::history::{Entry, Kind, Ran, Status, Store, Thresholds};
use stampede::metrics::{self, Metrics};
use stampede::report::{Latency, Outcomes, Report};

/// The value of the one sample line `name{labels}` in `text`.
fn sample(text: &str, name_and_labels: &str) -> f64 {
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{name_and_labels} ")))
        .unwrap_or_else(|| panic!("no {name_and_labels} in\n{text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

#[test]
fn a_restart_on_the_same_history_shows_the_last_clean_run() {
    let dir = std::env::temp_dir().join(format!("stampede-mrestore-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("h.db");
    let _ = std::fs::remove_file(&path);
    let entry = Entry {
        name: "web".into(),
        kind: Kind::Run,
        scenario_name: "s".into(),
        scenario: serde_json::json!({"connections": 100}),
    };
    // A clean run with known latencies: 97 at 300 µs, 3 at 1.2 s.
    let mut connect = stampede_proto::histogram::new_latency();
    connect.record_n(300, 97).unwrap();
    connect.record_n(1_200_000, 3).unwrap();
    let ttfb = stampede_proto::histogram::new_latency();
    let report = Report {
        run_id: "r1".into(),
        outcomes: Outcomes {
            established: 97,
            syn_retransmitted: 3,
            ..Outcomes::default()
        },
        connect_latency_us: Latency::from(&connect),
        ..Report::default()
    };
    {
        let mut store = Store::open(&path).unwrap();
        let clean = entry.record("r1", "2026-11-27T03:00:00Z", Ran::Run(&report));
        store
            .insert_judged(&clean, &Thresholds::default(), Some((&connect, &ttfb)))
            .unwrap();
        // Then a run that failed: it measured nothing.
        let failed = entry.record(
            "r2",
            "2026-11-27T04:00:00Z",
            Ran::Nothing {
                status: Status::Failed,
                reason: "no agents".into(),
            },
        );
        store
            .insert_judged(&failed, &Thresholds::default(), None)
            .unwrap();
    }
    // The clean run finished an hour ago: the restored figure must count from then, not from
    // the restart (or from a run's start, or from now when a time is unreadable).
    let hour_ago = (chrono::Utc::now() - chrono::Duration::seconds(3600))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute(
            "UPDATE runs SET finished_at = ?1 WHERE run_id = 'r1'",
            [&hour_ago],
        )
        .unwrap();
    let store = Store::open(&path).unwrap();
    let m = Metrics::new();
    metrics::restore_from(&m, &store);
    let text = m.encode();
    let since = sample(
        &text,
        "stampede_seconds_since_last_clean_run{entry=\"web\"}",
    );
    assert!((3600.0..4200.0).contains(&since), "{since}");
    // The histograms are the clean run's, and say so: the failed run measured nothing.
    let h = "stampede_last_run_connect_latency_seconds";
    let labels = "{entry=\"web\",run_id=\"r1\"}";
    assert_eq!(sample(&text, &format!("{h}_count{labels}")), 100.0);
    assert_eq!(
        sample(
            &text,
            &format!("{h}_bucket{{le=\"0.0005\",entry=\"web\",run_id=\"r1\"}}")
        ),
        97.0
    );
    // The last run is the failed one: its verdict and outcomes.
    let verdict = |v: &str| {
        sample(
            &text,
            &format!("stampede_last_verdict{{entry=\"web\",verdict=\"{v}\"}}"),
        )
    };
    assert_eq!((verdict("not-judged"), verdict("no-baseline")), (1.0, 0.0));
    assert_eq!(
        sample(
            &text,
            "stampede_last_run_outcomes{entry=\"web\",class=\"established\"}"
        ),
        0.0
    );
    // Run counts are this process's: none yet.
    assert!(!text.contains("stampede_runs_total{"), "{text}");
    std::fs::remove_dir_all(&dir).unwrap();
}
