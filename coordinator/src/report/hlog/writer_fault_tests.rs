//! The interval spool's files and the temporary log when something fails: a spool that
//! stops, a compaction that cannot write, `finish` cancelled, the writer thread panicking.
//! Nothing of ours is left behind, nothing of another's removed, nothing counted lost.

use std::collections::BTreeSet;
use std::sync::mpsc;

use super::spool::Spool;
use super::spool_tests::{added, dir, expected, interval};
use super::tests::closed;
use super::writer::Job;
use super::{HlogTo, IntervalLog};

fn on_disk(p: &std::path::Path) -> u64 {
    std::fs::metadata(p).map_or(0, |m| m.len())
}

/// A spool that stops (its file cannot be written) removes its files once: a file created
/// at the same name afterwards is not removed when the spool is dropped.
#[test]
fn a_stopped_spool_removes_its_files_once() {
    let d = dir("stopped");
    let path = d.join("intervals");
    let mut spool = Spool::create(path.clone(), 1 << 30);
    spool.break_side(0);
    let all = BTreeSet::from(["a".to_owned()]);
    // Appended to until its buffer must be written, which fails: the spool stops.
    for seq in 0..1_000 {
        spool.append("a", &interval(0, seq));
        if !path.exists() {
            break;
        }
    }
    assert!(!path.exists(), "removed when it stopped");
    let e = spool.read(&all).expect_err("writing failed");
    assert!(e.contains("writing") && e.contains("intervals"), "{e}");
    std::fs::write(&path, "someone else's").unwrap();
    drop(spool);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "someone else's");
    std::fs::remove_dir_all(&d).unwrap();
}

/// A compaction that cannot write the spare (a full disk) keeps the file appended to, and
/// the spool goes on: every interval still counts. One that succeeds empties the file it
/// leaves at once.
#[test]
fn a_failed_compaction_keeps_the_spool_and_a_done_one_frees_the_old_file() {
    let d = dir("compaction");
    let threshold = 4 << 10;
    let (path, spare) = (d.join("full"), d.join("full.spare"));
    let mut spool = Spool::create(path.clone(), threshold);
    spool.break_side(1);
    for seq in 0..200 {
        spool.append("a", &interval(0, seq));
        spool.append("b", &interval(1, seq));
    }
    assert_eq!(spool.size().1, 0, "no compaction could be written");
    assert!(on_disk(&path) > 10 * threshold, "{}", on_disk(&path));
    let back = spool.read(&BTreeSet::from(["a".to_owned(), "b".to_owned()]));
    let back = back.expect("the spool went on");
    assert_eq!(
        added(back["a"].as_ref().unwrap()).unwrap(),
        expected(0, 0..200)
    );
    assert_eq!(
        added(back["b"].as_ref().unwrap()).unwrap(),
        expected(1, 0..200)
    );
    drop(spool);
    assert!(!path.exists() && !spare.exists());

    let (path, spare) = (d.join("ok"), d.join("ok.spare"));
    let mut spool = Spool::create(path.clone(), threshold);
    for seq in 0..200 {
        spool.append("a", &interval(0, seq));
        let (bytes, compactions) = spool.size();
        let (live, old) = match compactions % 2 {
            0 => (&path, &spare),
            _ => (&spare, &path),
        };
        assert!(on_disk(live) <= bytes, "after {compactions} compactions");
        assert_eq!(on_disk(old), 0, "after {compactions} compactions");
    }
    assert!(spool.size().1 >= 2, "compacted: {}", spool.size().1);
    drop(spool);
    std::fs::remove_dir_all(&d).unwrap();
}

/// `finish` cancelled (its future dropped once it has asked the thread) leaves no
/// temporary log behind.
#[test]
fn a_cancelled_finish_removes_the_temporary_log() {
    let run = format!("cancelled-{}", std::process::id());
    let temp = std::env::temp_dir().join(format!("stampede-{run}-{}.hlog", std::process::id()));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut log = IntervalLog::new(HlogTo::Spool);
        log.begin(&run, 0, ["a".to_owned()]);
        log.add("a", interval(0, 0));
        log.written();
        assert!(temp.exists(), "{}", temp.display());
        let (release, wait) = mpsc::channel();
        let (held, was_held) = mpsc::channel();
        log.send(Job::Hold {
            release: wait,
            held,
        });
        let unfinished = BTreeSet::from(["a".to_owned()]);
        let mut finish = Box::pin(log.finish(&unfinished));
        tokio::select! {
            biased;
            _ = &mut finish => panic!("the thread is held: finish cannot be done"),
            () = std::future::ready(()) => {}
        }
        // Cancelled while the thread is held, with Finish queued behind the hold.
        drop(finish);
        release.send(()).unwrap();
        assert!(was_held.recv().unwrap(), "released, not timed out");
    });
    // The runtime waits for the thread's join (a blocking task) as it is dropped.
    drop(rt);
    assert!(!temp.exists(), "{} left behind", temp.display());
}

/// A writer thread that panics leaves no temporary log behind, and the run learns it.
#[test]
fn a_panicking_writer_removes_the_temporary_log() {
    let run = format!("panicked-{}", std::process::id());
    let temp = std::env::temp_dir().join(format!("stampede-{run}-{}.hlog", std::process::id()));
    let mut log = IntervalLog::new(HlogTo::Spool);
    log.begin(&run, 0, ["a".to_owned()]);
    log.add("a", interval(0, 0));
    log.written();
    assert!(temp.exists(), "{}", temp.display());
    log.send(Job::Panic);
    let closed = closed(log, &["a"]);
    let e = closed.delivered.unwrap_err();
    assert!(e.contains("writer stopped"), "{e}");
    let e = closed.log.save_to(&std::env::temp_dir()).unwrap_err();
    assert!(e.to_string().contains("writer stopped"), "{e}");
    assert!(!temp.exists(), "{} left behind", temp.display());
}
