//! Firing an armed plan: [`Armed::fire`].
//!
//! It refuses a start instant already past ([`LATE_START_TOLERANCE`]) before waiting for
//! it; a stall during or after the wait is the workers' to catch ([`LATE_BOUND`]: what fell
//! due meanwhile is cancelled and counted, and the run is partial). It starts one thread per
//! worker share (each builds its [`Worker`] before the start, waits for the start instant,
//! then runs), merges their reports on the calling thread as they come ([`Merge`]), joins
//! them, and puts the [`RunResult`] together with the kernel's own counters of the run.

use std::os::fd::AsFd;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use socket2::SockAddr;
use stampede_proto::histogram::HistogramError;
use stampede_proto::netstat::{RETRANS_FAIL, SYN_RETRANS};
use stampede_proto::report::Admission;
use tokio_util::sync::CancellationToken;

use super::context::{Cx, Settings};
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
        let late = Instant::now().saturating_duration_since(start);
        if late > LATE_START_TOLERANCE {
            return Err(FireError::StartPassed { late });
        }
        let Armed {
            plan,
            workers,
            target,
            mut netstat,
            mut kernel,
        } = self;
        let config = plan.config();
        let settings = Settings::of(config);
        let counters_before = netstat.as_mut().and_then(|n| n.read().ok());
        // Wall-clock time of `start`, for the first-SYN timestamp.
        let start_wall = SystemTime::now() + start.saturating_duration_since(Instant::now())
            - Instant::now().saturating_duration_since(start);

        let totals = run_workers(workers, &target, settings, start, cancel, intervals)?;

        let elapsed = Instant::now().saturating_duration_since(start);
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

/// Runs one thread per worker share and merges their reports until every one has ended.
fn run_workers(
    workers: Vec<WorkerArms>,
    target: &SockAddr,
    settings: Settings,
    start: Instant,
    cancel: &CancellationToken,
    intervals: Option<tokio::sync::mpsc::UnboundedSender<Interval>>,
) -> Result<Totals, FireError> {
    let (tx, rx) = mpsc::channel::<Report>();
    let mut merge = Merge::new(workers.len(), intervals);
    let (totals, panicked) = std::thread::scope(|scope| -> Result<_, FireError> {
        let mut handles = Vec::with_capacity(workers.len());
        for (w, arms) in workers.into_iter().enumerate() {
            let tx = tx.clone();
            let handle = std::thread::Builder::new()
                .name(format!("stampede-w{w}"))
                .spawn_scoped(scope, move || {
                    work(arms, target, settings, start, cancel, &tx);
                })
                .map_err(|e| FireError::WorkerPanicked(format!("spawning worker {w}: {e}")))?;
            handles.push(handle);
        }
        drop(tx);
        for report in rx.iter() {
            merge.add(report)?;
        }
        let totals = merge.finish();
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
        Ok((totals, panicked))
    })?;
    match panicked {
        Some(p) => Err(FireError::WorkerPanicked(p)),
        None => Ok(totals),
    }
}

/// One worker thread: its slots are built before the start; it runs from the start instant,
/// or reports every attempt unfinished if the run is cancelled first.
fn work(
    arms: WorkerArms,
    target: &SockAddr,
    settings: Settings,
    start: Instant,
    cancel: &CancellationToken,
    tx: &mpsc::Sender<Report>,
) {
    let WorkerArms { sockets, epoll } = arms;
    let attempts = sockets.len();
    let cx = Cx {
        epoll: epoll.as_fd(),
        target,
        settings,
        start,
    };
    let worker = Worker::new(sockets, cx);
    if wait_for_start(start, cancel) {
        worker.run(cancel, tx);
    } else {
        let _ = tx.send(Report::never_started(attempts));
    }
}

/// Waits until `start` (sleeping, then spinning the last ~200 µs), or cancellation.
fn wait_for_start(start: Instant, cancel: &CancellationToken) -> bool {
    loop {
        let now = Instant::now();
        if now >= start {
            return true;
        }
        if cancel.is_cancelled() {
            return false;
        }
        let left = start - now;
        if left > Duration::from_micros(300) {
            std::thread::sleep((left - Duration::from_micros(200)).min(Duration::from_millis(20)));
        } else {
            std::hint::spin_loop();
        }
    }
}
