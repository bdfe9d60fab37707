use std::path::{Path, PathBuf};

use super::*;

/// A file of this test's own under the temporary directory.
fn path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("stampede-hlog-{name}-{}", std::process::id()))
}

/// Where a log bound for `p` is while it is written.
fn live(p: &Path) -> PathBuf {
    super::stream::partial_of(p)
}

fn interval(seq: u32, samples: &[u64]) -> pb::IntervalResult {
    let mut h = histogram::new_latency();
    for s in samples {
        h.record(*s).unwrap();
    }
    pb::IntervalResult {
        seq,
        connect_latency_hist: histogram::encode(&h).unwrap(),
        ..Default::default()
    }
}

/// (tag, second, count, max) of each line of the log at `path`.
fn lines_of(path: &Path) -> Vec<(Option<String>, u32, u64, u64)> {
    hlog::parse(&std::fs::read(path).unwrap())
        .unwrap()
        .into_iter()
        .map(|l| (l.tag, l.seq, l.histogram.len(), l.histogram.max()))
        .collect()
}

/// Finishes `log` as a run does (awaited on a runtime): the log file.
pub(super) fn finish(log: IntervalLog) -> LogFile {
    closed(log, &[]).log
}

/// Finishes `log` as a run does, asking for what `unfinished` delivered.
pub(super) fn closed(log: IntervalLog, unfinished: &[&str]) -> Closed {
    let unfinished = unfinished.iter().map(|a| (*a).to_owned()).collect();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(log.finish(&unfinished))
}

/// A log of `agents` begun at a fixed instant, written to `path`.
fn log_at(path: &Path, agents: &[&str]) -> IntervalLog {
    let mut log = IntervalLog::new(HlogTo::File(path.to_owned()));
    let start = 1_764_000_000_123_000_000;
    log.begin("r1", start, agents.iter().map(|a| (*a).to_owned()));
    log
}

/// Two agents over two seconds: one tagged line per agent and second, then one untagged
/// line per second holding both agents' samples; timestamps relative to the start. The
/// same log whatever order the intervals came in.
#[test]
fn lines_per_second_merge_agents_and_tag_each() {
    let p = path("lines");
    let mut log = log_at(&p, &["a 1", "b"]);
    log.add("b", interval(0, &[40]));
    log.add("a 1", interval(0, &[10, 20, 30]));
    log.add("a 1", interval(1, &[1_030_000]));
    log.done("b");
    log.done("a 1");
    let file = finish(log);
    let text = String::from_utf8(std::fs::read(live(&p)).unwrap()).unwrap();
    assert!(text.starts_with("#stampede run r1\n"), "{text}");
    assert!(text.contains("#[StartTime: 1764000000.123"), "{text}");
    assert!(text.contains("#[BaseTime: 1764000000.123"), "{text}");
    // Small values are exact; 1.03 s is within the histogram's 0.1 %.
    let mut big = histogram::new_latency();
    big.record(1_030_000).unwrap();
    assert_eq!(
        lines_of(&live(&p)),
        vec![
            (Some("agent.a_1".to_owned()), 0, 3, 30),
            (Some("agent.b".to_owned()), 0, 1, 40),
            (None, 0, 4, 40),
            (Some("agent.a_1".to_owned()), 1, 1, big.max()),
            (None, 1, 1, big.max()),
        ]
    );
    // Written where asked, and not a spool: it stays.
    drop(file);
    assert!(live(&p).exists(), "a --out log is not ours to remove");
    std::fs::remove_file(live(&p)).unwrap();
}

/// Issue lag gets a merged `Tag=issue_lag` line per second holding every agent's samples
/// of that second.
#[test]
fn issue_lag_is_merged_per_second_under_its_tag() {
    let with_lag = |seq: u32, lags: &[u64]| {
        let mut h = histogram::new_latency();
        for l in lags {
            h.record(*l).unwrap();
        }
        pb::IntervalResult {
            issue_lag_hist: histogram::encode(&h).unwrap(),
            ..interval(seq, &[100])
        }
    };
    let p = path("lag");
    let mut log = log_at(&p, &["a", "b"]);
    log.add("a", with_lag(0, &[5, 7]));
    log.add("a", with_lag(1, &[900]));
    log.add("b", with_lag(0, &[2_000]));
    drop(finish(log));
    let lag: Vec<(u32, u64, u64)> = lines_of(&live(&p))
        .into_iter()
        .filter(|l| l.0.as_deref() == Some("issue_lag"))
        .map(|l| (l.1, l.2, l.3))
        .collect();
    let mut two_ms = histogram::new_latency();
    two_ms.record(2_000).unwrap();
    assert_eq!(lag, vec![(0, 3, two_ms.max()), (1, 1, 900)]);
    let text = String::from_utf8(std::fs::read(live(&p)).unwrap()).unwrap();
    assert!(text.contains("issue_lag: connect() call minus"), "{text}");
    std::fs::remove_file(live(&p)).unwrap();
}

/// A second is on disk as soon as every agent still sending has sent it, and not before;
/// an agent that is done (result in, or lost) is not waited for; nothing stays held.
#[test]
fn seconds_are_written_as_soon_as_every_agent_sent_them() {
    let p = path("stream");
    let mut log = log_at(&p, &["a", "b", "c"]);
    log.written();
    assert!(
        lines_of(&live(&p)).is_empty(),
        "the header alone is a valid log"
    );
    log.add("a", interval(0, &[1]));
    log.add("b", interval(0, &[2]));
    log.written();
    assert!(lines_of(&live(&p)).is_empty(), "c has not sent second 0");
    log.add("c", interval(0, &[3]));
    log.written();
    let seconds = |p: &Path| {
        let mut s: Vec<u32> = lines_of(p).iter().map(|l| l.1).collect();
        s.dedup();
        s
    };
    assert_eq!(seconds(&live(&p)), vec![0]);
    assert_eq!(
        lines_of(&live(&p)).last().unwrap().2,
        3,
        "merged line of second 0"
    );
    log.add("a", interval(1, &[4]));
    log.add("a", interval(2, &[5]));
    log.add("b", interval(2, &[6])); // b had nothing in second 1: it is past it
    log.written();
    assert_eq!(seconds(&live(&p)), vec![0], "c still owes seconds 1 and 2");
    log.done("c");
    log.written();
    assert_eq!(seconds(&live(&p)), vec![0, 1, 2]);
    assert_eq!(log.open_seconds(), 0);
    // An interval for a second already written (c sent it after it was declared lost)
    // goes out at once as its own group: its samples are in the log once.
    log.add("c", interval(1, &[7, 8]));
    drop(finish(log));
    let all = lines_of(&live(&p));
    let untagged: u64 = all.iter().filter(|l| l.0.is_none()).map(|l| l.2).sum();
    assert_eq!(untagged, 8, "{all:?}");
    assert_eq!(
        all[all.len() - 2..],
        [(Some("agent.c".to_owned()), 1, 2, 8), (None, 1, 2, 8)]
    );
    std::fs::remove_file(live(&p)).unwrap();
}

/// An agent that stops sending holds at most `MAX_OPEN_SECONDS` seconds open: the oldest
/// is written without it, and what it sends later still reaches the log once.
#[test]
fn a_silent_agent_holds_only_a_bounded_window() {
    let p = path("window");
    let mut log = log_at(&p, &["fast", "slow"]);
    let seconds = MAX_OPEN_SECONDS as u32 + 20;
    for seq in 0..seconds {
        log.add("fast", interval(seq, &[10]));
        assert!(log.open_seconds() <= MAX_OPEN_SECONDS, "{seq}");
    }
    log.add("slow", interval(0, &[20]));
    drop(finish(log));
    let all = lines_of(&live(&p));
    let untagged: u64 = all.iter().filter(|l| l.0.is_none()).map(|l| l.2).sum();
    assert_eq!(untagged, u64::from(seconds) + 1);
    // Time order per tag, but for the late group.
    let fast: Vec<u32> = (all.iter())
        .filter(|l| l.0.as_deref() == Some("agent.fast"))
        .map(|l| l.1)
        .collect();
    assert_eq!(fast, (0..seconds).collect::<Vec<_>>());
    std::fs::remove_file(live(&p)).unwrap();
}

/// A spooled log is copied where the reports go and removed with the run's result; one that
/// could not be written says why when saved; none asked for, none written.
#[test]
fn spooled_logs_are_copied_then_removed_and_failures_named() {
    let mut log = IntervalLog::new(HlogTo::Spool);
    log.begin("spooltest", 0, ["a".to_owned()]);
    log.add("a", interval(0, &[1, 2]));
    let file = finish(log);
    let LogFile::Written { path: spool, .. } = &file else {
        panic!("{file:?}")
    };
    let spool = spool.clone();
    let dir = path("saved");
    std::fs::create_dir_all(&dir).unwrap();
    file.save_to(&dir).unwrap();
    assert_eq!(lines_of(&dir.join("report.hlog")), lines_of(&spool));
    drop(file);
    assert!(!spool.exists(), "spool left behind");
    std::fs::remove_dir_all(&dir).unwrap();

    let mut log = IntervalLog::new(HlogTo::File(PathBuf::from("/proc/no-such/report.hlog")));
    log.begin("r", 0, ["a".to_owned()]);
    log.add("a", interval(0, &[1]));
    let e = finish(log).save_to(&std::env::temp_dir()).unwrap_err();
    assert!(
        e.to_string().contains("/proc/no-such/.report.hlog.partial"),
        "{e}"
    );

    let mut log = IntervalLog::new(HlogTo::Off);
    log.begin("r", 0, ["a".to_owned()]);
    log.add("a", interval(0, &[1]));
    assert!(matches!(finish(log), LogFile::None));
}

/// A reused --out keeps the earlier run's report.hlog until this run's report is saved: a run
/// that fails never leaves a new log beside the old report.json.
#[test]
fn a_reused_out_keeps_its_log_until_the_report_is_saved() {
    let dir = path("reused");
    std::fs::create_dir_all(&dir).unwrap();
    let dest = dir.join("report.hlog");
    std::fs::write(&dest, "#earlier run\n").unwrap();
    let mut log = log_at(&dest, &["a"]);
    log.add("a", interval(0, &[5]));
    log.done("a");
    let file = finish(log);
    assert_eq!(std::fs::read_to_string(&dest).unwrap(), "#earlier run\n");
    assert_eq!(
        lines_of(&live(&dest)).len(),
        2,
        "the agent's line and the merged one"
    );
    file.save_to(&dir).unwrap();
    assert!(!live(&dest).exists(), "renamed into place");
    assert_eq!(lines_of(&dest).first().map(|l| l.1), Some(0));
    std::fs::remove_dir_all(&dir).unwrap();
}
