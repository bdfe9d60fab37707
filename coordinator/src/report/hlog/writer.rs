//! The thread that does all of `report.hlog`'s file work: it creates the log and writes its
//! header, renders and writes its seconds, keeps the interval spool (`spool`), and at the
//! end reads the lost agents' sums back and syncs the log. Decoding and merging a fleet's
//! histograms takes CPU, and a file may block; the run's event loop (liveness, each agent's
//! bounded queue) must wait for neither: it only sends each complete second over a channel,
//! in order, and awaits the final answer (a oneshot), never a join.
//!
//! A write to the log that fails is logged once and ends the log; the spool goes on. The
//! channel is unbounded so the event loop never waits: seconds wait in it while the thread
//! is behind (a release build renders a 1,000-agent second in milliseconds; a debug build on
//! a starved machine may lag and then catches up), and none is dropped. Past
//! [`BEHIND_WARN`] behind the thread says so, with how far behind and how many seconds wait
//! (`Backlog`), again each time that doubles, and once it has caught up.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use stampede_proto::pb;
use tokio::sync::oneshot;

pub(super) use self::backlog::Backlog;
#[cfg(test)]
pub(super) use self::backlog::Said;
use super::spool::Spool;
use super::{Delivered, Series, second};

mod backlog;

/// How far behind the thread may fall before it warns.
pub(super) const BEHIND_WARN: Duration = Duration::from_secs(5);

/// What the thread does, in the order sent.
pub(super) enum Job {
    /// Spools these intervals and writes the lines of second `seq` (or of a late group).
    Lines {
        seq: u32,
        by_agent: BTreeMap<String, Vec<pb::IntervalResult>>,
        series: Series,
        /// When it was handed over.
        sent: Instant,
    },
    /// After everything sent before it: the sums `unfinished` delivered, the log synced.
    Finish {
        unfinished: BTreeSet<String>,
        reply: oneshot::Sender<Closing>,
    },
    /// Answered once everything sent before it is written.
    #[cfg(test)]
    Barrier(mpsc::Sender<()>),
    /// Panics the thread.
    #[cfg(test)]
    Panic,
    /// Holds the thread until `release` sends (or 10 s pass), then tells `held` which.
    #[cfg(test)]
    Hold {
        release: mpsc::Receiver<()>,
        held: mpsc::Sender<bool>,
    },
}

/// What the thread starts with.
pub(super) struct Setup {
    /// The log: where, whether it is a temporary file of ours, its header. `None`: none.
    pub(super) log: Option<(PathBuf, bool, Vec<u8>)>,
    /// The spool's path, and after how many bytes it is compacted.
    pub(super) spool: (PathBuf, u64),
}

/// The thread's answer to [`Job::Finish`].
pub(super) struct Closing {
    /// The log (`None`: none was asked for): intervals left out as undecodable, or why it
    /// failed (a temporary log that failed is removed).
    pub(super) log: Option<Result<u64, String>>,
    /// Per lost agent, the sum of what it delivered ([`Spool::read`]), or why unknown.
    pub(super) delivered: Result<Delivered, String>,
    /// The temporary log, removed unless [`Handed::keep`] is called (the answer dropped
    /// unread: `finish` was cancelled).
    pub(super) handed: Handed,
}

/// A temporary log handed over with the answer: removed if dropped before it is kept.
#[derive(Debug, Default)]
pub(super) struct Handed(Option<PathBuf>);

impl Handed {
    /// Its new owner removes it.
    pub(super) fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for Handed {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The thread and its channel.
#[derive(Debug)]
pub(super) struct Writer {
    tx: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    /// Seconds handed over and not yet taken up.
    queued: Arc<AtomicUsize>,
    /// Set when the log is dropped unfinished: what is queued is discarded.
    abandoned: Arc<AtomicBool>,
}

impl Writer {
    /// Starts the thread, which creates the files (errors are logged and answered at the
    /// end); an error only when the thread cannot start.
    pub(super) fn start(setup: Setup) -> Result<Writer, String> {
        let (tx, rx) = mpsc::channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let abandoned = Arc::new(AtomicBool::new(false));
        let state = (Arc::clone(&queued), Arc::clone(&abandoned));
        let thread = std::thread::Builder::new()
            .name("report.hlog".into())
            .spawn(move || work(setup, &rx, &state.0, &state.1))
            .map_err(|e| format!("starting the report.hlog writer: {e}"))?;
        Ok(Writer {
            tx: Some(tx),
            thread: Some(thread),
            queued,
            abandoned,
        })
    }

    /// Hands `job` over: never waits (dropped only if the thread is gone).
    pub(super) fn send(&self, job: Job) {
        let lines = matches!(job, Job::Lines { .. });
        if let Some(tx) = &self.tx {
            if lines {
                self.queued.fetch_add(1, Ordering::Relaxed);
            }
            if tx.send(job).is_err() && lines {
                self.queued.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// Waits until everything sent so far is done (tests).
    #[cfg(test)]
    pub(super) fn barrier(&self) {
        let (tx, rx) = mpsc::channel();
        self.send(Job::Barrier(tx));
        let _ = rx.recv();
    }

    /// Once everything sent is written: the log synced and the sums `unfinished` delivered.
    /// Awaited without blocking the runtime (the thread answers on a oneshot, then ends).
    pub(super) async fn finish(mut self, unfinished: BTreeSet<String>) -> Closing {
        let queued = self.queued.load(Ordering::Relaxed);
        if queued > 0 {
            tracing::debug!(queued, "waiting for report.hlog's writer");
        }
        let (reply, answer) = oneshot::channel();
        self.send(Job::Finish { unfinished, reply });
        self.tx = None;
        let closing = answer.await.unwrap_or_else(|_| {
            let e = "the report.hlog writer stopped".to_owned();
            Closing {
                log: Some(Err(e.clone())),
                delivered: Err(e),
                handed: Handed::default(),
            }
        });
        // It has answered: it is ending, but its join still is not the runtime's to wait on.
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        closing
    }
}

impl Drop for Writer {
    /// Unfinished (the run failed after its start): the thread drops what is queued,
    /// removes its temporary files and ends; joined off the runtime when there is one.
    fn drop(&mut self) {
        self.abandoned.store(true, Ordering::Relaxed);
        self.tx = None;
        if let Some(thread) = self.thread.take() {
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => drop(rt.spawn_blocking(move || thread.join())),
                Err(_) => drop(thread.join()),
            }
        }
    }
}

/// The thread: each job in order until [`Job::Finish`] or the channel closes.
fn work(setup: Setup, rx: &mpsc::Receiver<Job>, queued: &AtomicUsize, abandoned: &AtomicBool) {
    let mut log = setup
        .log
        .map(|(path, temporary, header)| Log::open(path, temporary, &header));
    let mut spool = Spool::create(setup.spool.0, setup.spool.1);
    let mut backlog = Backlog::default();
    for job in rx {
        match job {
            Job::Lines {
                seq,
                by_agent,
                series,
                sent,
            } => {
                let waiting = queued.fetch_sub(1, Ordering::Relaxed).saturating_sub(1);
                backlog.note(sent.elapsed(), waiting);
                if abandoned.load(Ordering::Relaxed) {
                    continue;
                }
                for (agent, results) in &by_agent {
                    for r in results {
                        spool.append(agent, r);
                    }
                }
                if let Some(log) = &mut log {
                    log.write(seq, &by_agent, series);
                }
            }
            Job::Finish { unfinished, reply } => {
                if abandoned.load(Ordering::Relaxed) {
                    // `finish` was cancelled: seconds queued before this were dropped.
                    if let Some(log) = log.filter(|l| !l.temporary && l.created) {
                        tracing::warn!(path = %log.path.display(),
                            "report.hlog left incomplete: the run's end was cancelled");
                    }
                    return;
                }
                let delivered = spool.read(&unfinished);
                drop(spool);
                let temporary = log.as_ref().filter(|l| l.temporary).map(|l| l.path.clone());
                let log = log.map(Log::close);
                // Only a log closed whole is handed over (a failed one is removed already).
                let handed = Handed(temporary.filter(|_| matches!(log, Some(Ok(_)))));
                let _ = reply.send(Closing {
                    log,
                    delivered,
                    handed,
                });
                return;
            }
            #[cfg(test)]
            Job::Barrier(done) => {
                let _ = done.send(());
            }
            #[cfg(test)]
            Job::Panic => panic!("the report.hlog writer panics (test)"),
            #[cfg(test)]
            Job::Hold { release, held } => {
                let released = release.recv_timeout(Duration::from_secs(10)).is_ok();
                let _ = held.send(released);
            }
        }
    }
    // Closed without Finish: the log was dropped unfinished (a temporary one is removed as
    // it is dropped, here or when the thread unwinds).
}

/// The log file being written; a temporary one is removed when it is dropped (unfinished,
/// failed, or the thread panicking) unless it was closed whole.
struct Log {
    path: PathBuf,
    /// A temporary file of ours (removed if it fails or is discarded).
    temporary: bool,
    /// It was created by us (a temporary one then is ours to remove).
    created: bool,
    file: Option<File>,
    /// Why writing stopped, if it did.
    failed: Option<String>,
    undecodable: u64,
    /// Closed whole: a temporary one is handed over, not removed.
    kept: bool,
}

impl Log {
    /// Creates `path` (`temporary`: a new file of ours, never through an existing name; else
    /// the user's, replaced) and writes `header`.
    fn open(path: PathBuf, temporary: bool, header: &[u8]) -> Log {
        let fail = |e: std::io::Error| format!("writing {}: {e}", path.display());
        let created = if temporary {
            create_new(&path)
        } else {
            File::create(&path)
        };
        let (file, failed) = match created.map_err(fail) {
            Err(e) => (None, Some(e)),
            Ok(mut f) => match f.write_all(header).map_err(fail) {
                Ok(()) => (Some(f), None),
                Err(e) => {
                    if temporary {
                        let _ = std::fs::remove_file(&path);
                    }
                    (None, Some(e))
                }
            },
        };
        if let Some(e) = &failed {
            tracing::error!(cause = %e, "report.hlog will be missing");
        }
        Log {
            created: file.is_some(),
            path,
            temporary,
            file,
            failed,
            undecodable: 0,
            kept: false,
        }
    }

    /// Writes the lines of second `seq` (nothing once writing failed).
    fn write(
        &mut self,
        seq: u32,
        by_agent: &BTreeMap<String, Vec<pb::IntervalResult>>,
        series: Series,
    ) {
        let Some(file) = &mut self.file else { return };
        let written = second(seq, by_agent, series, &mut self.undecodable)
            .map_err(|e| e.to_string())
            .and_then(|lines| file.write_all(&lines).map_err(|e| e.to_string()));
        if let Err(e) = written {
            let e = format!("writing {}: {e}", self.path.display());
            tracing::error!(cause = %e, "report.hlog will be incomplete");
            self.failed = Some(e);
            self.file = None;
        }
    }

    /// Syncs the file: the count of intervals left out, or why the log failed.
    fn close(mut self) -> Result<u64, String> {
        if let Some(file) = self.file.take()
            && let Err(e) = file.sync_all()
        {
            self.failed = Some(format!("writing {}: {e}", self.path.display()));
        }
        match self.failed.take() {
            None => {
                self.kept = true;
                Ok(self.undecodable)
            }
            Some(e) => Err(e),
        }
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        if self.temporary && self.created && !self.kept {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Creates `path` for writing, owner-only, failing if anything (a file, a symlink) is there
/// already: temporary files have predictable names, so an existing one is never followed or
/// truncated.
pub(super) fn create_new(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}
