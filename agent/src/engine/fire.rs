//! Firing an armed plan: [`Armed::fire`], or [`Armed::fire_at`] behind a [`StartGate`].
//!
//! The run's threads start at once: one per worker share, each builds its [`Worker`] (every
//! allocation of the run) and waits at the gate for the start instant, then sleeps until it
//! and spins the last ~200 µs. The calling thread reports that every worker waits (`ready`),
//! reads the kernel's counters, learns the instant from the gate too, merges the workers'
//! reports as they come ([`Merge`]), joins them, and puts the [`RunResult`] together with the
//! kernel's own counters of the run. A start instant already past is refused when the gate
//! is opened ([`LATE_START_TOLERANCE`]); a stall during or after the wait is the workers' to
//! catch ([`LATE_BOUND`]: what fell due meanwhile is cancelled and counted, and the run is
//! partial).

use std::os::fd::AsFd;
use std::sync::{OnceLock, mpsc};
use std::time::{Duration, Instant, SystemTime};

use socket2::SockAddr;
use stampede_proto::histogram::HistogramError;
use stampede_proto::netstat::{RETRANS_FAIL, SYN_RETRANS};
use stampede_proto::report::Admission;
use tokio_util::sync::CancellationToken;

use super::context::{Cx, Settings};
use super::gate::{StartGate, StartWait};
use super::lateness::LATE_BOUND;
use super::merge::{Merge, Report, Totals};
use super::worker::Worker;
use crate::arm::{Armed, WorkerArms};
use crate::result::{Interval, RunResult};

/// A start this far in the past is refused rather than fired late.
pub const LATE_START_TOLERANCE: Duration = Duration::from_millis(5);

/// Why a run could not fire.
#[derive(Debug, thiserror::Error)]
pub enum FireError {
    /// The start instant had already passed.
    #[error("start instant passed {late:?} ago: refusing to fire late")]
    StartPassed {
        /// How late.
        late: Duration,
    },
    /// Histograms would not merge (a bug: they all share one layout).
    #[error(transparent)]
    Histogram(#[from] HistogramError),
    /// A worker thread panicked.
    #[error("worker thread panicked: {0}")]
    WorkerPanicked(String),
    /// The gate was opened twice, or closed (an Abort, the session's end, no Start within
    /// its bound) before it was opened.
    #[error("the run's threads no longer wait for a start (aborted, or no Start in time)")]
    NotWaiting,
    /// The gate closed before it opened: nothing fired.
    #[error("the run was called off before its start: nothing fired")]
    NeverStarted,
}

impl Armed {
    /// Fires the armed plan at `start` and blocks until every attempt is classified (or
    /// `cancel` fires). Each completed interval is sent to `intervals` (merged over workers)
    /// as soon as every worker has reported it. Call it from a blocking context
    /// (`spawn_blocking` under tokio); it runs one thread per worker.
    pub fn fire(
        self,
        start: Instant,
        cancel: &CancellationToken,
        intervals: Option<tokio::sync::mpsc::UnboundedSender<Interval>>,
    ) -> Result<RunResult, FireError> {
        let gate = StartGate::new(Duration::MAX);
        gate.open(start)?;
        self.fire_at(gate.waiter(), cancel, intervals, || {})
    }

    /// Starts the run's threads now; each builds its worker and waits for `gate` to open,
    /// and `ready` is called once every one waits. Then as [`Armed::fire`], from the
    /// instant the gate gives; [`FireError::NeverStarted`] (nothing fired, every socket
    /// closed) if it closes first. Blocks: call it from a blocking context.
    pub fn fire_at(
        self,
        gate: StartWait,
        cancel: &CancellationToken,
        intervals: Option<tokio::sync::mpsc::UnboundedSender<Interval>>,
        ready: impl FnOnce(),
    ) -> Result<RunResult, FireError> {
        let Armed {
            plan,
            workers,
            target,
            mut netstat,
            mut kernel,
        } = self;
        let config = plan.config();
        let settings = Settings::of(config);
        let merge = Merge::new(workers.len(), intervals);
        let threads = Threads {
            target: &target,
            settings,
            gate: &gate,
            cancel,
        };
        let mut counters_before = None;
        // Read on this thread once the gate opens (the workers wait for the instant): the
        // counters cover the lead and the run, not the wait for every agent's Ready.
        let (start, totals) = threads.run(workers, merge, ready, || {
            counters_before = netstat.as_mut().and_then(|n| n.read().ok());
        })?;

        let elapsed = Instant::now().saturating_duration_since(start);
        // Wall-clock time of `start`, for the first-SYN timestamp.
        let start_wall = SystemTime::now() - elapsed;
        if let (Some(before), Some(after)) = (
            counters_before,
            netstat.as_mut().and_then(|n| n.read().ok()),
        ) {
            let d = after.since(&before);
            kernel.retrans_fail = d.get(RETRANS_FAIL);
            kernel.syn_retrans = d.get(SYN_RETRANS);
        }
        let ns = Duration::from_nanos;
        let first_issue = totals.first_issue_ns;
        let cut_reason = stall_reason(totals.skipped_overdue, totals.issued_late);
        Ok(RunResult {
            connections: config.load.connections,
            tally: totals.tally,
            issue_duration: first_issue.map_or(Duration::ZERO, |f| ns(totals.last_issue_ns - f)),
            first_connect: first_issue.map(|f| start_wall + ns(f)),
            first_connect_offset: first_issue.map(ns),
            last_completion: totals.last_completion_ns.map(ns),
            unfinished: totals.unfinished,
            skipped_overdue: totals.skipped_overdue,
            issued_late: totals.issued_late,
            cut_reason,
            cancelled: cancel.is_cancelled(),
            elapsed,
            kernel,
            admission: Admission::of(config.load.expect_greeting, config.load.probe_admission),
        })
    }
}

/// Why a run that stalled is partial (`None`: it kept to its schedule).
fn stall_reason(skipped_overdue: u64, issued_late: u64) -> Option<String> {
    if skipped_overdue == 0 && issued_late == 0 {
        return None;
    }
    Some(format!(
        "the agent stalled: {skipped_overdue} attempts fell more than {LATE_BOUND:?} behind \
         schedule and were cancelled, {issued_late} were issued more than {LATE_BOUND:?} late"
    ))
}

/// What every worker thread of a run shares.
#[derive(Clone, Copy)]
struct Threads<'a> {
    target: &'a SockAddr,
    settings: Settings,
    gate: &'a StartWait,
    cancel: &'a CancellationToken,
}

impl Threads<'_> {
    /// Runs one thread per worker share; once every one has built its worker and waits at
    /// the gate, calls `ready`; then learns the start instant and merges their reports until
    /// every one has ended.
    fn run(
        self,
        workers: Vec<WorkerArms>,
        mut merge: Merge,
        ready: impl FnOnce(),
        opened: impl FnOnce(),
    ) -> Result<(Instant, Totals), FireError> {
        let (tx, rx) = mpsc::channel::<Report>();
        let (built_tx, built) = mpsc::channel::<()>();
        let (started, panicked) = std::thread::scope(|scope| -> Result<_, FireError> {
            let mut handles = Vec::with_capacity(workers.len());
            for (w, arms) in workers.into_iter().enumerate() {
                let (tx, built_tx) = (tx.clone(), built_tx.clone());
                let spawned = std::thread::Builder::new()
                    .name(format!("stampede-w{w}"))
                    .spawn_scoped(scope, move || self.work(arms, &tx, built_tx));
                match spawned {
                    Ok(handle) => handles.push(handle),
                    Err(e) => {
                        // The others must not wait for a run that cannot fire whole.
                        self.gate.close();
                        return Err(FireError::WorkerPanicked(format!(
                            "spawning worker {w}: {e}"
                        )));
                    }
                }
            }
            drop((tx, built_tx));
            // Ends once every worker has built its worker (or died): each drops its sender.
            // A worker that died building means the run cannot fire whole: no Ready, the
            // others go home (the join below reports the panic).
            if built.iter().count() == handles.len() {
                ready();
                if self.gate.opened().is_some() {
                    opened();
                }
            } else {
                self.gate.close();
            }
            for report in rx.iter() {
                merge.add(report)?;
            }
            let mut panicked = None;
            for h in handles {
                if let Err(p) = h.join() {
                    panicked = Some(
                        p.downcast_ref::<&str>()
                            .map(|s| s.to_string())
                            .or_else(|| p.downcast_ref::<String>().cloned())
                            .unwrap_or_else(|| "unknown panic".into()),
                    );
                }
            }
            // Opened even if a close came after: workers may have gone at it, and what they
            // did is reported (attempts not begun are unfinished), never dropped.
            Ok((self.gate.opened_at(), panicked))
        })?;
        if let Some(p) = panicked {
            return Err(FireError::WorkerPanicked(p));
        }
        let start = started.ok_or(FireError::NeverStarted)?;
        Ok((start, merge.finish()))
    }

    /// One worker thread: builds its worker and says so on `built`, waits at the gate, then
    /// runs from the start instant; or reports every attempt unfinished if the gate closes
    /// or the run is cancelled first.
    fn work(self, arms: WorkerArms, tx: &mpsc::Sender<Report>, built: mpsc::Sender<()>) {
        let WorkerArms { sockets, epoll } = arms;
        let attempts = sockets.len();
        let start_at = OnceLock::new();
        let cx = Cx {
            epoll: epoll.as_fd(),
            target: self.target,
            settings: self.settings,
            start: &start_at,
        };
        let worker = Worker::new(sockets, cx);
        let _ = built.send(());
        drop(built);
        let go = self.gate.opened().is_some_and(|start| {
            let _ = start_at.set(start);
            self.gate.until(start, self.cancel)
        });
        if go {
            worker.run(self.cancel, tx);
        } else {
            let _ = tx.send(Report::never_started(attempts));
        }
    }
}
