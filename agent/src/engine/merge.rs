//! What the workers report to the firing thread, and how it merges them.
//!
//! Each worker ships its own [`Tally`] at every interval boundary ([`Report::Interval`]) and
//! once more when it ends ([`Report::Done`], with its [`WorkerSummary`]). [`Merge`] adds them
//! exactly (histograms are added, never averaged): interval `s` goes out on the `intervals`
//! channel once every worker has reported it or ended before it, and the whole run adds up
//! to the [`Totals`] of the [`RunResult`](crate::result::RunResult).

use std::collections::BTreeMap;

use stampede_proto::histogram::HistogramError;
use tokio::sync::mpsc::UnboundedSender;

use crate::result::{Interval, Tally};

/// What a worker sends to the firing thread.
pub(super) enum Report {
    /// Interval `seq` is over: its tally.
    Interval(u32, Tally),
    /// The worker ended during interval `seq`: that interval's tally so far, and the rest.
    Done(u32, Tally, Box<WorkerSummary>),
}

impl Report {
    /// A worker that never started (the run was cancelled before the start instant): all of
    /// its `attempts` unfinished.
    pub(super) fn never_started(attempts: usize) -> Report {
        Report::Done(
            0,
            Tally::default(),
            Box::new(WorkerSummary {
                first_issue_ns: None,
                last_issue_ns: 0,
                last_completion_ns: None,
                unfinished: attempts as u64,
                skipped_overdue: 0,
                issued_late: 0,
            }),
        )
    }
}

/// A worker's whole-run figures, sent once at its end. Times are ns after the start instant.
pub(super) struct WorkerSummary {
    pub(super) first_issue_ns: Option<u64>,
    pub(super) last_issue_ns: u64,
    pub(super) last_completion_ns: Option<u64>,
    /// Attempts never classified (cancelled runs only).
    pub(super) unfinished: u64,
    /// Attempts cancelled unissued because they fell due during a stall.
    pub(super) skipped_overdue: u64,
    /// Attempts issued more than the late bound past their time.
    pub(super) issued_late: u64,
}

/// The whole run, over every worker. Times are ns after the start instant.
pub(super) struct Totals {
    pub(super) tally: Tally,
    pub(super) first_issue_ns: Option<u64>,
    pub(super) last_issue_ns: u64,
    pub(super) last_completion_ns: Option<u64>,
    pub(super) unfinished: u64,
    pub(super) skipped_overdue: u64,
    pub(super) issued_late: u64,
}

/// The firing thread's merge of the workers' reports.
pub(super) struct Merge {
    workers: usize,
    intervals: Option<UnboundedSender<Interval>>,
    /// Intervals not yet emitted: their tally so far and how many workers reported them.
    pending: BTreeMap<u32, (Tally, usize)>,
    /// The interval each ended worker ended in.
    finished_at: Vec<u32>,
    /// The next interval to emit.
    next_emit: u32,
    totals: Totals,
}

impl Merge {
    /// A merge over `workers` workers, emitting intervals to `intervals` if given.
    pub(super) fn new(workers: usize, intervals: Option<UnboundedSender<Interval>>) -> Merge {
        Merge {
            workers,
            intervals,
            pending: BTreeMap::new(),
            finished_at: Vec::new(),
            next_emit: 0,
            totals: Totals {
                tally: Tally::default(),
                first_issue_ns: None,
                last_issue_ns: 0,
                last_completion_ns: None,
                unfinished: 0,
                skipped_overdue: 0,
                issued_late: 0,
            },
        }
    }

    /// Adds one report, then emits every interval it completed.
    pub(super) fn add(&mut self, report: Report) -> Result<(), HistogramError> {
        let (seq, tally) = match report {
            Report::Interval(seq, tally) => (seq, tally),
            Report::Done(seq, tally, summary) => {
                self.add_summary(&summary);
                self.finished_at.push(seq);
                (seq, tally)
            }
        };
        self.totals.tally.merge(&tally)?;
        let entry = self
            .pending
            .entry(seq)
            .or_insert_with(|| (Tally::default(), 0));
        entry.0.merge(&tally)?;
        entry.1 += 1;
        self.emit_complete();
        Ok(())
    }

    /// Every worker is done: anything still pending (cannot happen unless a worker died)
    /// goes out in order.
    pub(super) fn finish(mut self) -> Totals {
        for (seq, (tally, _)) in std::mem::take(&mut self.pending) {
            self.emit(seq, tally);
        }
        self.totals
    }

    fn add_summary(&mut self, summary: &WorkerSummary) {
        let totals = &mut self.totals;
        if let Some(f) = summary.first_issue_ns {
            totals.first_issue_ns = Some(totals.first_issue_ns.map_or(f, |x| x.min(f)));
        }
        totals.last_issue_ns = totals.last_issue_ns.max(summary.last_issue_ns);
        if let Some(c) = summary.last_completion_ns {
            totals.last_completion_ns = Some(totals.last_completion_ns.map_or(c, |x| x.max(c)));
        }
        totals.unfinished += summary.unfinished;
        totals.skipped_overdue += summary.skipped_overdue;
        totals.issued_late += summary.issued_late;
    }

    /// Emits intervals in order while every worker has reported the next one or ended
    /// before it.
    fn emit_complete(&mut self) {
        loop {
            let next = self.next_emit;
            let ended_before = self.finished_at.iter().filter(|f| **f < next).count();
            let complete = self
                .pending
                .get(&next)
                .is_some_and(|(_, got)| got + ended_before >= self.workers);
            if !complete {
                return;
            }
            let (tally, _) = self.pending.remove(&next).expect("checked just above");
            self.emit(next, tally);
            self.next_emit += 1;
        }
    }

    fn emit(&self, seq: u32, tally: Tally) {
        if let Some(tx) = &self.intervals {
            let _ = tx.send(Interval { seq, tally });
        }
    }
}

#[cfg(test)]
mod tests {
    use stampede_proto::outcome::Outcome;

    use super::*;

    fn tally(n: u64) -> Tally {
        let mut t = Tally::default();
        for _ in 0..n {
            t.record(Outcome::Established);
        }
        t
    }

    fn done(seq: u32, n: u64, first: u64, unfinished: u64) -> Report {
        let mut summary = match Report::never_started(0) {
            Report::Done(_, _, s) => s,
            Report::Interval(..) => unreachable!("never_started is a Done"),
        };
        summary.first_issue_ns = Some(first);
        summary.last_issue_ns = first + 10;
        summary.unfinished = unfinished;
        Report::Done(seq, tally(n), summary)
    }

    /// Interval s goes out once every worker reported it or ended before it, in order; the
    /// totals add up every report.
    #[test]
    fn intervals_wait_for_every_worker_then_go_out_in_order() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut merge = Merge::new(2, Some(tx));
        let mut emitted = || {
            let mut got = Vec::new();
            while let Ok(i) = rx.try_recv() {
                got.push((i.seq, i.tally.outcomes.total()));
            }
            got
        };
        merge.add(Report::Interval(0, tally(1))).unwrap();
        assert_eq!(emitted(), [], "worker B has not reported interval 0");
        merge.add(Report::Interval(1, tally(2))).unwrap();
        assert_eq!(emitted(), []);
        merge.add(done(0, 4, 7, 1)).unwrap();
        assert_eq!(emitted(), [(0, 5), (1, 2)], "B ended in 0: A alone makes 1");
        merge.add(done(2, 8, 3, 0)).unwrap();
        assert_eq!(emitted(), [(2, 8)]);
        let totals = merge.finish();
        assert_eq!(totals.tally.outcomes.total(), 15);
        assert_eq!(totals.first_issue_ns, Some(3));
        assert_eq!(totals.last_issue_ns, 17);
        assert_eq!(totals.unfinished, 1);
        assert_eq!(emitted(), []);
    }
}
