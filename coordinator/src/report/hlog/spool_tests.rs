//! The interval spool over a long run (bounded by compaction, sums exact) and the writer
//! thread's side of the run: lost agents' open seconds counted, the event loop never blocked,
//! a writer that falls behind said so.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use stampede_proto::outcome::Outcome;
use stampede_proto::pb;
use stampede_proto::tally::{CarriesTally as _, Tally};

use super::spool::Spool;
use super::tests::closed;
use super::writer::{Backlog, Job, Said};
use super::{HlogTo, IntervalLog, MAX_OPEN_SECONDS};

/// A directory of this test's own (spools beside a --out log are named by run and pid).
pub(super) fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("stampede-spool-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Distinct intervals per agent: the others repeat them (a debug build encodes and decodes
/// histograms slowly).
const VARIANTS: u32 = 16;

/// `agent`'s interval for second `seq`: one of [`VARIANTS`] made by [`made`], renumbered.
pub(super) fn interval(agent: u64, seq: u32) -> pb::IntervalResult {
    thread_local! {
        static MADE: std::cell::RefCell<std::collections::BTreeMap<(u64, u32), pb::IntervalResult>> =
            Default::default();
    }
    let r = MADE.with(|m| {
        (m.borrow_mut().entry((agent, seq % VARIANTS)))
            .or_insert_with(|| made(agent, seq % VARIANTS))
            .clone()
    });
    pb::IntervalResult { seq, ..r }
}

/// What the report makes of `agent`'s intervals of seconds `seqs`, from each variant's
/// tally added as often as it was sent (exact, as adding each would be).
pub(super) fn expected(agent: u64, seqs: std::ops::Range<u32>) -> Tally {
    let variants: Vec<Tally> = (0..VARIANTS)
        .map(|v| Tally::from_wire(&interval(agent, v)).unwrap())
        .collect();
    let mut t = Tally::default();
    for seq in seqs {
        t.merge(&variants[(seq % VARIANTS) as usize]).unwrap();
    }
    t
}

/// A deterministic interval of `agent`'s second `seq`: a few outcomes (some errors, some
/// retransmits), latencies spread over six decades, first bytes and issue lag.
fn made(agent: u64, seq: u32) -> pb::IntervalResult {
    let mut t = Tally::default();
    let mut x = (agent + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ u64::from(seq);
    for _ in 0..(3 + seq % 5) {
        x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let outcome = match x >> 61 {
            0 => Outcome::Error { errno: 99 },
            1 => Outcome::SynRetransmitted { k: 1 },
            2 => Outcome::Refused,
            _ => Outcome::Established,
        };
        t.record(outcome);
        let v = 1 + (x >> 40) % 10u64.pow(1 + (x >> 20) as u32 % 6);
        t.connect_latency.record(v).unwrap();
        t.ttfb.record(v * 2).unwrap();
        t.issue_lag.record(1 + v % 900).unwrap();
    }
    let mut r = pb::IntervalResult {
        seq,
        run_id: "r".into(),
        ..Default::default()
    };
    r.set_wire_tally(t.to_wire().unwrap());
    r
}

/// What the report makes of `results`: each added in order, as `build_report` does.
pub(super) fn added(results: &[pb::IntervalResult]) -> Result<Tally, String> {
    let mut t = Tally::default();
    for r in results {
        t.add_wire(r).map_err(|e| e.to_string())?;
    }
    Ok(t)
}

fn on_disk(p: &Path) -> u64 {
    std::fs::metadata(p).map_or(0, |m| m.len())
}

/// Thousands of intervals of a few agents through a small threshold: the files never pass
/// the threshold plus one summed record per agent, and what comes back is, to the count and
/// the histogram bucket, what adding every interval gives.
#[test]
fn a_long_run_spool_stays_bounded_and_sums_exactly() {
    let d = dir("bounded");
    let path = d.join("intervals");
    let threshold = 16 << 10;
    let mut spool = Spool::create(path.clone(), threshold);
    let (agents, seconds) = (3, 1_200);
    let (mut appended, mut largest) = (0u64, 0u64);
    for seq in 0..seconds {
        for a in 0..agents {
            let r = interval(a, seq);
            appended += prost::Message::encoded_len(&r) as u64;
            spool.append(&format!("agent-{a}"), &r);
        }
        let on_disk = on_disk(&path).max(on_disk(&d.join("intervals.spare")));
        largest = largest.max(spool.size().0).max(on_disk);
    }
    // A summed record is a few KiB (its histograms encoded); every interval is far less.
    let bound = threshold + agents * (8 << 10);
    assert!(largest <= bound, "{largest} bytes > {bound}");
    assert!(appended > 10 * bound, "the run must be long: {appended}");
    assert!(spool.size().1 >= 10, "compactions: {}", spool.size().1);
    let all: BTreeSet<String> = (0..agents).map(|a| format!("agent-{a}")).collect();
    let back = spool.read(&all).unwrap();
    assert_eq!(back.len(), agents as usize);
    for a in 0..agents {
        let got = back[&format!("agent-{a}")].as_ref().unwrap();
        assert_eq!(got.len(), 1, "one summed record");
        let (want, got) = (expected(a, 0..seconds), added(got).unwrap());
        let samples = (0..seconds)
            .map(|s| u64::from(3 + s % VARIANTS % 5))
            .sum::<u64>();
        assert_eq!(want.outcomes.total(), samples);
        assert_eq!(got.outcomes.total(), samples);
        assert_eq!(got.errors, want.errors);
        assert_eq!(got.connect_latency.len(), samples);
        for q in [0.5, 0.99, 0.999, 1.0] {
            let v = |t: &Tally| t.connect_latency.value_at_quantile(q);
            assert_eq!(v(&got), v(&want), "q {q}");
        }
        assert_eq!(got, want, "every count and bucket");
    }
    drop(spool);
    assert!(!path.exists() && !d.join("intervals.spare").exists());
    std::fs::remove_dir_all(&d).unwrap();
}

/// An interval that cannot be added makes its agent unusable, through compactions, with the
/// same cause as when the report added each interval; the other agents are unaffected. Only
/// the agents asked about come back; a spool that cannot be created says where.
#[test]
fn an_unusable_interval_costs_its_agent_alone() {
    let d = dir("unusable");
    let mut spool = Spool::create(d.join("intervals"), 4 << 10);
    let bad = pb::IntervalResult {
        seq: 2,
        connect_latency_hist: vec![7; 40],
        ..Default::default()
    };
    let mut sent = vec![interval(0, 0), interval(0, 1), bad];
    for r in &sent {
        spool.append("a", r);
    }
    for seq in 3..200 {
        spool.append("a", &interval(0, seq));
        spool.append("b", &interval(1, seq));
        sent.push(interval(0, seq));
    }
    assert!(spool.size().1 > 0, "compacted");
    let back = spool.read(&BTreeSet::from(["a".to_owned()])).unwrap();
    assert_eq!(back.keys().collect::<Vec<_>>(), ["a"]);
    let e = added(&sent).unwrap_err();
    assert_eq!(back["a"].as_ref().unwrap_err(), &e);
    let b = spool.read(&BTreeSet::from(["b".to_owned()])).unwrap();
    assert_eq!(
        added(b["b"].as_ref().unwrap()).unwrap(),
        expected(1, 3..200)
    );
    drop(spool);
    // A file in the way (a symlink, another run's spool) is neither used nor removed.
    let theirs = d.join("theirs");
    std::fs::write(&theirs, "not ours").unwrap();
    let mut refused = Spool::create(theirs.clone(), 1 << 20);
    refused.append("a", &interval(0, 0));
    let e = refused.read(&BTreeSet::from(["a".to_owned()])).unwrap_err();
    assert!(e.contains("theirs"), "{e}");
    drop(refused);
    assert_eq!(std::fs::read_to_string(&theirs).unwrap(), "not ours");
    std::fs::remove_dir_all(&d).unwrap();
    let mut broken = Spool::create(PathBuf::from("/proc/no-such/spool"), 1 << 20);
    broken.append("a", &interval(0, 0));
    let e = broken.read(&BTreeSet::from(["a".to_owned()])).unwrap_err();
    assert!(e.contains("/proc/no-such/spool"), "{e}");
}

/// Through the log as a run feeds it, with a small threshold: the spool beside the log stays
/// bounded; an agent lost while its seconds are still open (waiting for a slower agent)
/// counts with them too; the log itself is unchanged by the spool.
#[test]
fn lost_agents_count_with_open_seconds_and_the_spool_stays_bounded() {
    let d = dir("log");
    let spool = d.join(format!(".report.hlog.r.{}.intervals", std::process::id()));
    let threshold = 8 << 10;
    let mut log = IntervalLog::new(HlogTo::File(d.join("report.hlog"))).compact_after(threshold);
    log.begin("r", 0, ["fast".to_owned(), "slow".to_owned()]);
    let (seconds, slow_until) = (600, 595);
    let mut largest = 0;
    for seq in 0..seconds {
        log.add("fast", interval(0, seq));
        if seq < slow_until {
            log.add("slow", interval(1, seq));
        }
        if seq % 50 == 0 {
            log.written();
            largest = largest.max(on_disk(&spool));
        }
    }
    assert!(
        largest > 0 && largest <= threshold + 2 * (8 << 10),
        "{largest}"
    );
    // "fast" is lost now: its last five seconds wait for "slow", never handed over yet.
    assert_eq!(log.open_seconds(), 5);
    let closed = closed(log, &["fast", "gone"]);
    let delivered = closed.delivered.unwrap();
    assert_eq!(
        delivered.keys().collect::<Vec<_>>(),
        ["fast"],
        "gone sent none"
    );
    let fast = delivered["fast"].as_ref().unwrap();
    assert_eq!(added(fast).unwrap(), expected(0, 0..seconds));
    assert!(!spool.exists(), "the spool is removed with the run");
    // Every sample in the log once: per second, both agents merged.
    let lines =
        stampede_proto::hlog::parse(&std::fs::read(d.join(".report.hlog.partial")).unwrap())
            .unwrap();
    let untagged: u64 = (lines.iter())
        .filter(|l| l.tag.is_none())
        .map(|l| l.histogram.len())
        .sum();
    let samples =
        |seqs: std::ops::Range<u32>| seqs.map(|s| u64::from(3 + s % VARIANTS % 5)).sum::<u64>();
    assert_eq!(untagged, samples(0..seconds) + samples(0..slow_until));
    drop(closed.log);
    std::fs::remove_dir_all(&d).unwrap();
}

/// Without a log (`stampede run` without --out) every interval still reaches the spool, so a
/// lost agent counts with all it sent.
#[test]
fn without_a_log_the_spool_still_counts_lost_agents() {
    let mut log = IntervalLog::new(HlogTo::Off);
    log.begin("off", 0, ["a".to_owned(), "b".to_owned()]);
    let sent: Vec<_> = (0..MAX_OPEN_SECONDS as u32 * 3)
        .map(|s| interval(5, s))
        .collect();
    for r in &sent {
        log.add("a", r.clone());
    }
    let closed = closed(log, &["a"]);
    assert!(matches!(closed.log, super::LogFile::None));
    let delivered = closed.delivered.unwrap();
    let a = delivered["a"].as_ref().unwrap();
    assert_eq!(added(a).unwrap(), added(&sent).unwrap());
}

/// `finish` waits for the thread without holding the runtime's one thread: a task on the
/// same current-thread runtime releases the held writer while `finish` is pending.
#[test]
fn finish_does_not_block_the_runtime() {
    let mut log = IntervalLog::new(HlogTo::Off);
    log.begin("hold", 0, ["a".to_owned()]);
    log.add("a", interval(0, 0));
    let (release, held_rx) = mpsc::channel();
    let (held, was_released) = mpsc::channel();
    log.send(Job::Hold {
        release: held_rx,
        held,
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let unfinished = BTreeSet::from(["a".to_owned()]);
    let closed = rt.block_on(async {
        let releaser = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            release.send(()).unwrap();
        };
        tokio::join!(log.finish(&unfinished), releaser).0
    });
    assert_eq!(
        was_released.recv(),
        Ok(true),
        "released by the runtime's task"
    );
    assert_eq!(closed.delivered.unwrap().len(), 1);
}

/// A writer behind by more than `BEHIND_WARN` says so, again only when the lag doubles, and
/// says when it caught up.
#[test]
fn a_writer_behind_says_so_as_the_lag_grows() {
    let s = Duration::from_secs;
    let mut b = Backlog::default();
    let said: Vec<Said> = [
        s(1),
        s(6),
        s(8),
        s(13),
        s(20),
        s(30),
        Duration::from_millis(500),
        s(2),
    ]
    .into_iter()
    .map(|lag| b.note(lag, 3))
    .collect();
    use Said::*;
    assert_eq!(
        said,
        [
            Nothing, Behind, Nothing, Behind, Nothing, Behind, CaughtUp, Nothing
        ]
    );
}
