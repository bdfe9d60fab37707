//! The thread that renders and writes `report.hlog`'s seconds. Decoding and merging a
//! fleet's histograms takes CPU that the run's event loop (liveness, each agent's bounded
//! queue) must not wait for: the loop hands each complete second over a channel, in order,
//! and this thread writes them in that order, one write per second. A write that fails is
//! logged once and ends the log; what follows is dropped, not queued. Seconds wait in the
//! channel only while the thread is behind (a release build renders a 1,000-agent second in
//! milliseconds; a debug build on a starved machine may lag and then catches up).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write as _;
use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;

use stampede_proto::pb;

use super::{Series, second};

/// What the thread does, in the order sent.
pub(super) enum Job {
    /// Writes the lines of second `seq` (or of a late group) from these intervals.
    Lines {
        seq: u32,
        by_agent: BTreeMap<String, Vec<pb::IntervalResult>>,
        series: Series,
    },
    /// Answered once everything sent before it is written.
    #[cfg(test)]
    Barrier(mpsc::Sender<()>),
}

/// The writing thread and its channel.
#[derive(Debug)]
pub(super) struct Writer {
    tx: mpsc::Sender<Job>,
    thread: JoinHandle<Result<u64, String>>,
}

impl Writer {
    /// Creates `path` (`temporary`: a new file of ours, never through an existing name; else
    /// the user's, replaced), writes `header` and starts the thread.
    pub(super) fn start(path: &Path, header: &[u8], temporary: bool) -> Result<Writer, String> {
        let fail = |e: std::io::Error| format!("writing {}: {e}", path.display());
        let file = if temporary {
            create_new(path)
        } else {
            File::create(path)
        };
        let mut file = file.map_err(fail)?;
        file.write_all(header).map_err(fail)?;
        let (tx, rx) = mpsc::channel();
        let owned = path.to_owned();
        let thread = std::thread::Builder::new()
            .name("report.hlog".into())
            .spawn(move || write_all(&rx, file, &owned))
            .map_err(|e| format!("starting the report.hlog writer: {e}"))?;
        Ok(Writer { tx, thread })
    }

    /// Hands `job` over (dropped if the thread already gave up).
    pub(super) fn send(&self, job: Job) {
        let _ = self.tx.send(job);
    }

    /// Waits until everything sent so far is written (tests).
    #[cfg(test)]
    pub(super) fn barrier(&self) {
        let (tx, rx) = mpsc::channel();
        self.send(Job::Barrier(tx));
        let _ = rx.recv();
    }

    /// Waits for the thread to write everything sent and sync the file: the count of
    /// intervals left out as undecodable, or why the log failed.
    pub(super) fn finish(self) -> Result<u64, String> {
        drop(self.tx);
        self.thread
            .join()
            .unwrap_or_else(|_| Err("the report.hlog writer panicked".into()))
    }
}

/// The thread: each job in order until the channel closes.
fn write_all(rx: &mpsc::Receiver<Job>, mut file: File, path: &Path) -> Result<u64, String> {
    let mut undecodable = 0;
    let mut failed: Option<String> = None;
    for job in rx {
        match job {
            Job::Lines {
                seq,
                by_agent,
                series,
            } => {
                if failed.is_some() {
                    continue;
                }
                let written = second(seq, &by_agent, series, &mut undecodable)
                    .map_err(|e| e.to_string())
                    .and_then(|lines| file.write_all(&lines).map_err(|e| e.to_string()));
                if let Err(e) = written {
                    let e = format!("writing {}: {e}", path.display());
                    tracing::error!(cause = %e, "report.hlog will be incomplete");
                    failed = Some(e);
                }
            }
            #[cfg(test)]
            Job::Barrier(done) => {
                let _ = done.send(());
            }
        }
    }
    if failed.is_none()
        && let Err(e) = file.sync_all()
    {
        failed = Some(format!("writing {}: {e}", path.display()));
    }
    failed.map_or(Ok(undecodable), Err)
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
