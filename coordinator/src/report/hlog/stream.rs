//! [`IntervalLog`]: `report.hlog` written while the run goes. The header goes out when the
//! start instant is chosen; interval results wait, still encoded, only until every agent
//! still running has sent (or gone past) their second, and that second is then handed whole
//! to the writer thread (`writer`), in the log's order. So the coordinator holds at most a
//! few seconds of the fleet's results whatever the run's length, and a run cut short
//! (Ctrl-C, a crash) leaves a valid log of every second written so far. The thread also
//! spools every interval it is handed (`spool`, bounded by compaction), and
//! [`IntervalLog::finish`] hands it the seconds still open before asking for the sums of the
//! agents lost before their final result. The run's event loop only sends on a channel: no
//! file I/O, no join. [`LogFile`] is the finished log.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::time::Instant;

use stampede_proto::{hlog, pb};

use super::spool::COMPACT_AFTER;
use super::writer::{Job, Setup, Writer};
use super::{Delivered, MAX_OPEN_SECONDS, Series, comments};

/// Where a run writes its `report.hlog`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum HlogTo {
    /// Nowhere: the run's reports are not written (`stampede run` without `--out`).
    Off,
    /// This file, as the run goes (`--out`'s `report.hlog`).
    File(PathBuf),
    /// A file in the temporary directory, removed with the run's result, which copies it
    /// wherever its reports are written (for callers that choose the directory afterwards).
    #[default]
    Spool,
}

/// The log's state.
#[derive(Debug)]
enum Out {
    /// Not begun yet.
    Nowhere,
    /// Its thread is running; `log`: where the log goes and whether that is a temporary
    /// file of ours; `header`: why it could not even begin, if so.
    Writing {
        writer: Writer,
        log: Option<(PathBuf, bool)>,
        header: Option<String>,
    },
    /// The thread could not start: nothing is kept.
    Failed(String),
}

/// `report.hlog` being written as the interval results arrive (module docs).
#[derive(Debug)]
pub struct IntervalLog {
    to: HlogTo,
    out: Out,
    /// Agents still sending, by the last second each has sent (`None`: none yet).
    through: BTreeMap<String, Option<u32>>,
    /// How many of those agents are at each `through`: the first key is the slowest's.
    behind: BTreeMap<Option<u32>, usize>,
    /// Seconds not handed over yet: each agent's interval results for it, as they came.
    open: BTreeMap<u32, BTreeMap<String, Vec<pb::IntervalResult>>>,
    /// Every second below this one has been handed over.
    next: u32,
    series: Series,
    /// Intervals that came after their second was handed over.
    late: u64,
    /// Bytes appended to the spool between compactions.
    compact_after: u64,
}

/// A finished [`IntervalLog`].
#[derive(Debug)]
pub struct Closed {
    /// The log.
    pub log: LogFile,
    /// Per agent asked about that delivered any interval: their sum, or why that agent's
    /// cannot be counted; or why every agent's is unknown (the spool failed).
    pub delivered: Result<Delivered, String>,
}

impl IntervalLog {
    /// A log to be written to `to` once [`IntervalLog::begin`] is called.
    pub fn new(to: HlogTo) -> IntervalLog {
        IntervalLog {
            to,
            out: Out::Nowhere,
            through: BTreeMap::new(),
            behind: BTreeMap::new(),
            open: BTreeMap::new(),
            next: 0,
            series: Series::default(),
            late: 0,
            compact_after: COMPACT_AFTER,
        }
    }

    /// The spool compacted after `bytes` appended (tests).
    #[cfg(test)]
    pub(super) fn compact_after(mut self, bytes: u64) -> IntervalLog {
        self.compact_after = bytes;
        self
    }

    /// Starts the writer thread, which creates the file and writes the header: run `run_id`,
    /// start instant `start_at` (unix nanoseconds, coordinator time), intervals expected from
    /// `agents`. A file that cannot be created costs the log, not the run: the thread logs
    /// the error, and [`LogFile::save_to`] returns it.
    pub fn begin(&mut self, run_id: &str, start_at: i64, agents: impl IntoIterator<Item = String>) {
        // Named by run and process: a file left by a run killed earlier (a container's
        // PID 1 has the same pid every time) is never in the way of a later run's.
        let run = file_part(run_id);
        let pid = std::process::id();
        let temp = |ext: &str| std::env::temp_dir().join(format!("stampede-{run}-{pid}.{ext}"));
        // The spool beside the log the user asked for (same disk, same cleanup), else in
        // the temporary directory.
        let spool = match &self.to {
            HlogTo::File(path) => {
                path.with_file_name(format!(".report.hlog.{run}.{pid}.intervals"))
            }
            HlogTo::Off | HlogTo::Spool => temp("intervals"),
        };
        let log = match &self.to {
            HlogTo::Off => None,
            // Beside it under another name until the report is saved (`LogFile::save_to`
            // renames it): a reused --out keeps the earlier run's log with its report.json.
            HlogTo::File(path) => Some((partial_of(path), false)),
            HlogTo::Spool => Some((temp("hlog"), true)),
        };
        let mut header = None;
        let setup = log.clone().and_then(|(path, temporary)| {
            match hlog::render(&comments(run_id), start_at, |_| Ok(())) {
                Ok(h) => Some((path, temporary, h)),
                Err(e) => {
                    tracing::error!(cause = %e, "report.hlog will be missing");
                    header = Some(e.to_string());
                    None
                }
            }
        });
        if setup.is_some() {
            // Without a log, each interval goes to the spool at once.
            self.through = agents.into_iter().map(|a| (a, None)).collect();
            self.behind = BTreeMap::from([(None, self.through.len())]);
        }
        self.out = match Writer::start(Setup {
            log: setup,
            spool: (spool, self.compact_after),
        }) {
            Ok(writer) => Out::Writing {
                writer,
                log,
                header,
            },
            Err(e) => {
                tracing::error!(cause = %e, "report.hlog will be missing");
                Out::Failed(e)
            }
        };
    }

    /// Records one of `agent`'s interval results, and hands over every second now complete.
    pub fn add(&mut self, agent: &str, r: pb::IntervalResult) {
        if !matches!(self.out, Out::Writing { .. }) {
            return;
        }
        self.series.see(&r);
        let seq = r.seq;
        if let Some(through) = self.through.get_mut(agent)
            && through.is_none_or(|t| seq > t)
        {
            let was = through.replace(seq);
            move_one(&mut self.behind, was, Some(Some(seq)));
        }
        if seq < self.next {
            // Its second is written: this one goes out alone, so nothing is lost or counted
            // twice.
            self.late += 1;
            self.write(seq, BTreeMap::from([(agent.to_owned(), vec![r])]));
        } else {
            let by_agent = self.open.entry(seq).or_default();
            by_agent.entry(agent.to_owned()).or_default().push(r);
        }
        self.write_complete();
    }

    /// `agent` sends no more intervals (its result arrived, it left or was declared lost):
    /// seconds no longer wait for it.
    pub fn done(&mut self, agent: &str) {
        if let Some(through) = self.through.remove(agent) {
            move_one(&mut self.behind, through, None);
            self.write_complete();
        }
    }

    /// Seconds held open now (for tests).
    pub fn open_seconds(&self) -> usize {
        self.open.len()
    }

    /// Hands over the seconds every agent still sending has gone past, oldest first; past
    /// [`MAX_OPEN_SECONDS`] open, the oldest regardless.
    fn write_complete(&mut self) {
        while let Some(&seq) = self.open.keys().next() {
            let slowest = self.behind.keys().next().copied();
            let complete = slowest.is_none_or(|t| t.is_some_and(|t| t >= seq));
            if !complete && self.open.len() <= MAX_OPEN_SECONDS {
                break;
            }
            let by_agent = self.open.remove(&seq).expect("the first key");
            self.next = seq.saturating_add(1);
            self.write(seq, by_agent);
        }
    }

    /// Hands second `seq`'s intervals to the writer.
    fn write(&mut self, seq: u32, by_agent: BTreeMap<String, Vec<pb::IntervalResult>>) {
        if let Out::Writing { writer, .. } = &self.out {
            writer.send(Job::Lines {
                seq,
                by_agent,
                series: self.series,
                sent: Instant::now(),
            });
        }
    }

    /// Waits until every second handed over is written and spooled (tests).
    #[cfg(test)]
    pub(super) fn written(&self) {
        if let Out::Writing { writer, .. } = &self.out {
            writer.barrier();
        }
    }

    /// Hands `job` to the writer (tests).
    #[cfg(test)]
    pub(super) fn send(&self, job: Job) {
        if let Out::Writing { writer, .. } = &self.out {
            writer.send(job);
        }
    }

    /// Hands over every second still open, in order, then (after them) asks the thread for
    /// the sums `unfinished` delivered, written seconds included, and the synced log.
    pub async fn finish(mut self, unfinished: &BTreeSet<String>) -> Closed {
        while let Some((seq, by_agent)) = self.open.pop_first() {
            self.write(seq, by_agent);
        }
        if self.late > 0 {
            tracing::warn!(
                late = self.late,
                "report.hlog: intervals written after their second, each as its own group"
            );
        }
        let asked = !matches!(self.to, HlogTo::Off);
        let (writer, path, header) = match std::mem::replace(&mut self.out, Out::Nowhere) {
            Out::Nowhere => {
                return Closed {
                    log: LogFile::None,
                    delivered: Ok(BTreeMap::new()),
                };
            }
            Out::Failed(e) => {
                return Closed {
                    log: if asked {
                        LogFile::Failed(e.clone())
                    } else {
                        LogFile::None
                    },
                    delivered: Err(e),
                };
            }
            Out::Writing {
                writer,
                log,
                header,
            } => (writer, log, header),
        };
        let closing = writer.finish(unfinished.clone()).await;
        // From here the log is removed, if temporary, by the `LogFile` made of it.
        closing.handed.keep();
        let log = match (path, closing.log, header) {
            (None, _, _) => LogFile::None,
            (Some(_), _, Some(e)) | (Some(_), Some(Err(e)), None) => LogFile::Failed(e),
            (Some((path, spool)), Some(Ok(undecodable)), None) => {
                if undecodable > 0 {
                    tracing::warn!(undecodable, "report.hlog: intervals left out");
                }
                LogFile::Written { path, spool }
            }
            // The thread had the log whenever its header was rendered.
            (Some(_), None, None) => LogFile::Failed("report.hlog was not begun".into()),
        };
        Closed {
            log,
            delivered: closing.delivered,
        }
    }
}

/// Moves one agent from `from` to `to` in the count by second (`None`: out of it).
fn move_one(behind: &mut BTreeMap<Option<u32>, usize>, from: Option<u32>, to: Option<Option<u32>>) {
    if let Some(n) = behind.get_mut(&from) {
        *n -= 1;
        if *n == 0 {
            behind.remove(&from);
        }
    }
    if let Some(to) = to {
        *behind.entry(to).or_default() += 1;
    }
}

/// A run's finished `report.hlog`.
#[derive(Debug)]
pub enum LogFile {
    /// None was asked for ([`HlogTo::Off`]).
    None,
    /// Complete at `path`; `spool`: a temporary file, removed when this is dropped.
    Written {
        /// Where it is.
        path: PathBuf,
        /// Ours to remove.
        spool: bool,
    },
    /// It could not be written; why.
    Failed(String),
}

impl LogFile {
    /// Puts it in `dir` as `report.hlog`: nothing to do when it was written there, else an
    /// atomic copy. Nothing when none was asked for; the error when it could not be written.
    pub fn save_to(&self, dir: &Path) -> io::Result<()> {
        let path = match self {
            LogFile::None => return Ok(()),
            LogFile::Failed(e) => return Err(io::Error::other(e.clone())),
            LogFile::Written { path, .. } => path,
        };
        let dest = dir.join("report.hlog");
        if same_file(path, &dest) {
            return Ok(());
        }
        // Written in this directory under its partial name: renamed into place.
        if *path == partial_of(&dest) && std::fs::rename(path, &dest).is_ok() {
            return Ok(());
        }
        let tmp = dir.join(format!(".report.hlog.tmp.{}", std::process::id()));
        // Copied into a file created as the report's others are (a temporary log is
        // owner-only; fs::copy would carry that over), then renamed into place.
        let copied = std::fs::File::open(path)
            .and_then(|mut from| std::io::copy(&mut from, &mut std::fs::File::create(&tmp)?))
            .and_then(|_| std::fs::rename(&tmp, &dest));
        if copied.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        copied.map_err(|e| io::Error::new(e.kind(), format!("writing {}: {e}", dest.display())))
    }
}

impl Drop for LogFile {
    fn drop(&mut self) {
        if let LogFile::Written { path, spool: true } = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// `run_id` as part of a file name: characters other than ASCII letters, digits, `-`, `_`
/// and `.` replaced by `_`, at most 64.
fn file_part(run_id: &str) -> String {
    (run_id.chars().take(64))
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' | '.' => c,
            _ => '_',
        })
        .collect()
}

/// Where a log bound for `path` is written until it is saved: `.NAME.partial` beside it.
pub(super) fn partial_of(path: &Path) -> PathBuf {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    path.with_file_name(format!(".{name}.partial"))
}

/// Whether `a` and `b` name one existing file.
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}
